//! `tollgate generate envoy`: a complete, runnable Envoy (1.40, V8) bootstrap around the filter.
//!
//! What the bootstrap contains:
//! - one listener (`--listen`) with an HTTP connection manager (`stat_prefix: tollgate`,
//!   `strip_any_host_port`, so `Host: api.example.com:8080` finds `api.example.com`);
//! - one virtual host per service whose `domains` are its hosts (lower-cased, without port; a
//!   host claimed by an earlier service stays with it, as the filter does), routing to the
//!   service's `api_backend`: `Host` becomes `hostname_rewrite`, else the backend's host (with
//!   its port only when it is not the scheme's default), and the backend's path is put in front
//!   of the request path (`http://h/v2`: `/x` → `/v2/x`, `/` → `/v2`, `/?a=1` → `/v2?a=1`).
//!   A service without `api_backend` answers 404, as APIcast does;
//! - a last virtual host (`*`) answering 404 itself, so an unknown host is never forwarded even
//!   without the filter;
//! - the http filters: `envoy.filters.http.wasm` (V8, the module from `--wasm` as given: a
//!   relative path is resolved from Envoy's working directory; the FilterConfig JSON of
//!   `tollgate generate filter` as a `StringValue`; `vm_id`/`root_id` `tollgate`;
//!   `FAIL_RELOAD`; `allow_on_headers_stop_iteration`, without which Envoy withholds the body
//!   the filter waits for), then the router;
//! - one cluster per distinct upstream (scheme, host, port), named `api_backend_<host>_<port>`
//!   (IPv6 without brackets) with every character other than `[A-Za-z0-9]` turned into `_`
//!   (`_tls` appended for https; a numeric suffix when two upstreams would share a name). `STATIC` for IP literals,
//!   `LOGICAL_DNS` (IPv4 preferred) for names, TLS with SNI for https;
//! - the control-service cluster, named by `control_service.cluster`, for `--backend-url`, else
//!   the services' `backend.endpoint` (they must agree; only scheme, host and port matter: the
//!   filter sends its own path and `:authority`);
//! - the admin interface, on a loopback address only.
//!
//! Not expressed: a query string in `api_backend` (APIcast replaces the request's query with
//! it); Envoy routes keep the request's query.
//!
//! https upstreams are verified: their certificate must chain to `upstream_ca` (default the
//! system bundle, [`SYSTEM_CA_BUNDLE`]) and name the host (DNS or IP SAN). Turning that off
//! is an explicit choice (`--upstream-ca none`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use tollgate::compile;
use tollgate::config::FilterConfigPaths;
use tollgate::diagnostics::Diagnostics;
use tollgate::service::{normalize_host, MAX_HOST_LEN};
use tollgate::url::HttpUrl;
use tollgate::FilterConfig;

/// The name of the listener, the HCM stat prefix, the filter's `vm_id` and `root_id`.
pub const NAME: &str = "tollgate";
/// Envoy's default; said explicitly so the file reads complete.
const CONNECT_TIMEOUT: &str = "5s";

/// What `render` needs besides the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// The filter module, written into the bootstrap as given.
    pub wasm: PathBuf,
    /// Where the listener accepts client traffic.
    pub listen: SocketAddr,
    /// The admin interface; must be a loopback address.
    pub admin: SocketAddr,
    /// The control service (3scale's Service Management API); `None`: the services'
    /// `backend.endpoint`.
    pub backend_url: Option<String>,
    /// CA bundle that https upstreams (APIs and the control service) must chain to; their
    /// certificate must also name the host. `None` turns verification off.
    pub upstream_ca: Option<PathBuf>,
}

/// Debian's and Ubuntu's system CA bundle (ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl EnvoyOptions {
    /// The defaults of `tollgate generate envoy`: listen on 127.0.0.1:8080, admin on
    /// 127.0.0.1:9901, the control service from the configuration.
    pub fn new(wasm: impl Into<PathBuf>) -> Self {
        Self {
            wasm: wasm.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            backend_url: None,
            upstream_ca: Some(PathBuf::from(SYSTEM_CA_BUNDLE)),
        }
    }
}

/// The Envoy bootstrap for `config` as YAML, or why there can be none.
pub fn render(config: &FilterConfig, options: &EnvoyOptions) -> Result<String, String> {
    let bootstrap = bootstrap(config, options)?;
    // Long single-line scalars (the `@type` URLs) stay on one line.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 1000 };
    let yaml = serde_saphyr::to_string_with_options(&bootstrap, options)
        .map_err(|e| format!("cannot write the Envoy bootstrap as YAML: {e}"))?;
    Ok(format!(
        "# Envoy bootstrap written by `tollgate generate envoy`. It embeds the service tokens: keep it private.\n{yaml}"
    ))
}

/// The bootstrap as a tree (what `render` serializes).
pub fn bootstrap(config: &FilterConfig, options: &EnvoyOptions) -> Result<Node, String> {
    if !options.admin.ip().is_loopback() {
        return Err(format!(
            "the admin address {} is not a loopback address: Envoy's admin interface must not be \
             reachable from other machines",
            options.admin
        ));
    }
    let mut diags = Diagnostics::new();
    let Some(compiled) = compile(config, &FilterConfigPaths, &mut diags) else {
        let errors: Vec<String> = diags.errors().map(ToString::to_string).collect();
        return Err(format!(
            "the configuration is not valid:\n{}",
            errors.join("\n")
        ));
    };
    let control_cluster = config.control_service.cluster.as_str();
    let control = control_url(config, options.backend_url.as_deref())?;

    let mut names = Names::default();
    names.reserve(control_cluster);
    let mut clusters: Vec<Node> = Vec::new();
    // (https, host, port) → cluster name
    let mut upstreams: BTreeMap<(bool, String, u16), String> = BTreeMap::new();
    let mut virtual_hosts = Vec::new();
    let mut claimed: Vec<String> = Vec::new();
    let mut vhost_names = Names::default();

    for (svc, service) in config.services.iter().zip(compiled.services()) {
        let mut domains = Vec::new();
        for host in &svc.hosts {
            let domain = domain(host)?;
            if !claimed.contains(&domain) {
                claimed.push(domain.clone());
                domains.push(Node::from(domain));
            }
        }
        if domains.is_empty() {
            continue;
        }
        let routes = match &service.upstream().api_backend() {
            None => vec![not_found_route()],
            Some(url) => {
                let key = (url.https, url.host.clone(), url.effective_port());
                let cluster = match upstreams.get(&key) {
                    Some(name) => name.clone(),
                    None => {
                        let name = names.allocate(&upstream_cluster_name(url));
                        clusters.push(cluster(&name, url, options.upstream_ca.as_deref()));
                        upstreams.insert(key, name.clone());
                        name
                    }
                };
                let host = service.upstream().host_header().unwrap_or_default();
                upstream_routes(&cluster, &host, &url.path)
            }
        };
        let name = vhost_names.allocate(&format!("service_{}", sanitize(&svc.id)));
        virtual_hosts.push(map([
            ("name", Node::from(name)),
            ("domains", Node::List(domains)),
            ("routes", Node::List(routes)),
        ]));
    }
    virtual_hosts.push(map([
        ("name", Node::from("unknown_host")),
        ("domains", Node::List(vec![Node::from("*")])),
        ("routes", Node::List(vec![not_found_route()])),
    ]));
    clusters.push(cluster(
        control_cluster,
        &control,
        options.upstream_ca.as_deref(),
    ));

    let filter_json = embeddable_json(config);
    let wasm_filter = map([
        ("name", Node::from("envoy.filters.http.wasm")),
        (
            "typed_config",
            map([
                (
                    "@type",
                    Node::from("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
                ),
                (
                    "config",
                    map([
                        ("name", Node::from(NAME)),
                        ("root_id", Node::from(NAME)),
                        (
                            "vm_config",
                            map([
                                ("vm_id", Node::from(NAME)),
                                ("runtime", Node::from("envoy.wasm.runtime.v8")),
                                (
                                    "code",
                                    map([(
                                        "local",
                                        map([(
                                            "filename",
                                            Node::from(options.wasm.display().to_string()),
                                        )]),
                                    )]),
                                ),
                            ]),
                        ),
                        (
                            "configuration",
                            map([
                                (
                                    "@type",
                                    Node::from("type.googleapis.com/google.protobuf.StringValue"),
                                ),
                                ("value", Node::from(filter_json)),
                            ]),
                        ),
                        ("failure_policy", Node::from("FAIL_RELOAD")),
                        // The filter pauses in on_request_headers to read urlencoded body
                        // arguments; without this Envoy holds the body back until the
                        // headers resume and the request hangs.
                        ("allow_on_headers_stop_iteration", Node::Bool(true)),
                    ]),
                ),
            ]),
        ),
    ]);
    let router = map([
        ("name", Node::from("envoy.filters.http.router")),
        (
            "typed_config",
            map([(
                "@type",
                Node::from("type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"),
            )]),
        ),
    ]);
    let hcm = map([
        (
            "name",
            Node::from("envoy.filters.network.http_connection_manager"),
        ),
        (
            "typed_config",
            map([
                ("@type", Node::from("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")),
                ("stat_prefix", Node::from(NAME)),
                ("strip_any_host_port", Node::Bool(true)),
                (
                    "route_config",
                    map([
                        ("name", Node::from(NAME)),
                        ("virtual_hosts", Node::List(virtual_hosts)),
                    ]),
                ),
                ("http_filters", Node::List(vec![wasm_filter, router])),
            ]),
        ),
    ]);
    let listener = map([
        ("name", Node::from(NAME)),
        ("address", socket_address(options.listen)),
        (
            "filter_chains",
            Node::List(vec![map([("filters", Node::List(vec![hcm]))])]),
        ),
    ]);
    Ok(map([
        (
            "static_resources",
            map([
                ("listeners", Node::List(vec![listener])),
                ("clusters", Node::List(clusters)),
            ]),
        ),
        ("admin", map([("address", socket_address(options.admin))])),
    ]))
}

/// The FilterConfig JSON exactly as `tollgate generate filter` writes it, except for U+0085:
/// the YAML writer escapes it as `\N`, which Envoy's YAML reader turns into a lone byte that
/// is not UTF-8. JSON's `\u0085` (it can only occur inside a JSON string) means the same.
pub fn embeddable_json(config: &FilterConfig) -> String {
    let mut json = config.to_json_pretty();
    json.push('\n');
    if json.contains('\u{85}') {
        json = json.replace('\u{85}', "\\u0085");
    }
    json
}

/// The control service's URL: `--backend-url`, else the one `backend.endpoint` every service
/// that states one agrees on.
fn control_url(config: &FilterConfig, backend_url: Option<&str>) -> Result<HttpUrl, String> {
    if let Some(raw) = backend_url {
        let url = HttpUrl::parse(raw).map_err(|e| format!("--backend-url {raw}: {e}"))?;
        if !url.path.is_empty() || url.query.is_some() {
            return Err(format!(
                "--backend-url {raw}: give only scheme, host and port (the filter sends its own path)"
            ));
        }
        return Ok(url);
    }
    let mut found: Option<(HttpUrl, &str)> = None;
    for svc in &config.services {
        let Some(raw) = svc.backend.endpoint.as_deref().filter(|e| !e.is_empty()) else {
            continue;
        };
        let url = HttpUrl::parse(raw)
            .map_err(|e| format!("service {}: backend.endpoint {raw}: {e}", svc.id))?;
        match &found {
            None => found = Some((url, svc.id.as_str())),
            Some((first, first_id)) => {
                if (first.https, &first.host, first.effective_port())
                    != (url.https, &url.host, url.effective_port())
                {
                    return Err(format!(
                        "services {first_id} and {} name different control services ({first} and \
                         {url}); one Envoy cluster serves them all: choose with --backend-url",
                        svc.id
                    ));
                }
            }
        }
    }
    found.map(|(url, _)| url).ok_or_else(|| {
        "no service names its control service (backend.endpoint): give --backend-url".to_owned()
    })
}

/// A host as an Envoy domain: lower-cased, without port or trailing dot.
fn domain(host: &str) -> Result<String, String> {
    let mut buf = [0u8; MAX_HOST_LEN];
    let normalized = normalize_host(host.as_bytes(), &mut buf)
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_default();
    if normalized.is_empty()
        || normalized
            .bytes()
            .any(|b| b == b'*' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "host '{host}' cannot be an Envoy virtual host domain"
        ));
    }
    Ok(normalized)
}

/// Routes to `cluster` with `Host: host`, the backend's `path` put in front of the request's.
fn upstream_routes(cluster: &str, host: &str, path: &str) -> Vec<Node> {
    let action = |rewrite: Option<String>| {
        let mut route = vec![
            ("cluster".to_owned(), Node::from(cluster)),
            ("host_rewrite_literal".to_owned(), Node::from(host)),
        ];
        if let Some(r) = rewrite {
            route.push(("prefix_rewrite".to_owned(), Node::from(r)));
        }
        Node::Map(route)
    };
    let prefix = map([("prefix", Node::from("/"))]);
    if path.is_empty() || path == "/" {
        return vec![map([("match", prefix), ("route", action(None))])];
    }
    let prefix_path = path.trim_end_matches('/');
    vec![
        // APIcast: request `/` goes to exactly the backend's path.
        map([
            ("match", map([("path", Node::from("/"))])),
            ("route", action(Some(prefix_path.to_owned()))),
        ]),
        map([
            ("match", prefix),
            ("route", action(Some(format!("{prefix_path}/")))),
        ]),
    ]
}

fn not_found_route() -> Node {
    map([
        ("match", map([("prefix", Node::from("/"))])),
        ("direct_response", map([("status", Node::Int(404))])),
    ])
}

/// `api_backend_<host>_<port>[_tls]`, sanitized.
pub fn upstream_cluster_name(url: &HttpUrl) -> String {
    let tls = if url.https { "_tls" } else { "" };
    format!(
        "api_backend_{}_{}{tls}",
        sanitize(unbracketed(&url.host)),
        url.effective_port()
    )
}

/// Every character other than ASCII letters and digits becomes `_` (Envoy splits stat names
/// on dots).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An IPv6 literal without its brackets; anything else as is.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The host as an IP address, if it is a literal one.
fn ip_literal(host: &str) -> Option<IpAddr> {
    unbracketed(host).parse().ok()
}

fn cluster(name: &str, url: &HttpUrl, ca: Option<&std::path::Path>) -> Node {
    let ip = ip_literal(&url.host);
    let address = match ip {
        Some(ip) => ip.to_string(),
        None => url.host.clone(),
    };
    let mut fields = vec![
        ("name".to_owned(), Node::from(name)),
        (
            "type".to_owned(),
            Node::from(if ip.is_some() {
                "STATIC"
            } else {
                "LOGICAL_DNS"
            }),
        ),
        ("connect_timeout".to_owned(), Node::from(CONNECT_TIMEOUT)),
    ];
    if ip.is_none() {
        fields.push(("dns_lookup_family".to_owned(), Node::from("V4_PREFERRED")));
    }
    let endpoint = map([(
        "endpoint",
        map([(
            "address",
            map([(
                "socket_address",
                map([
                    ("address", Node::from(address)),
                    ("port_value", Node::Int(url.effective_port().into())),
                ]),
            )]),
        )]),
    )]);
    fields.push((
        "load_assignment".to_owned(),
        map([
            ("cluster_name", Node::from(name)),
            (
                "endpoints",
                Node::List(vec![map([("lb_endpoints", Node::List(vec![endpoint]))])]),
            ),
        ]),
    ));
    if url.https {
        let mut tls = vec![(
            "@type".to_owned(),
            Node::from(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            ),
        )];
        if ip.is_none() {
            tls.push(("sni".to_owned(), Node::from(url.host.as_str())));
        }
        if let Some(ca) = ca {
            // Chain to the CA bundle and name the host we dialled: without both, anyone on
            // the path could read the service token and the caller's credentials.
            let (san_type, san_value) = match ip {
                Some(ip) => ("IP_ADDRESS", ip.to_string()),
                None => ("DNS", url.host.clone()),
            };
            let san = map([
                ("san_type", Node::from(san_type)),
                ("matcher", map([("exact", Node::from(san_value.as_str()))])),
            ]);
            let validation = map([
                (
                    "trusted_ca",
                    map([("filename", Node::from(ca.display().to_string().as_str()))]),
                ),
                ("match_typed_subject_alt_names", Node::List(vec![san])),
            ]);
            tls.push((
                "common_tls_context".to_owned(),
                map([("validation_context", validation)]),
            ));
        }
        fields.push((
            "transport_socket".to_owned(),
            map([
                ("name", Node::from("envoy.transport_sockets.tls")),
                ("typed_config", Node::Map(tls)),
            ]),
        ));
    }
    Node::Map(fields)
}

fn socket_address(addr: SocketAddr) -> Node {
    map([(
        "socket_address",
        map([
            ("address", Node::from(addr.ip().to_string())),
            ("port_value", Node::Int(addr.port().into())),
        ]),
    )])
}

/// Unique names: a taken name gets `_2`, `_3`, ….
#[derive(Default)]
struct Names(Vec<String>);

impl Names {
    fn reserve(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }

    fn allocate(&mut self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut n = 1u32;
        while self.0.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.0.push(name.clone());
        name
    }
}

/// A YAML/JSON tree that keeps its keys in the order they were written (serde_json's map
/// sorts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Str(String),
    Int(u64),
    Bool(bool),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn map<const N: usize>(entries: [(&str, Node); N]) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

impl From<&str> for Node {
    fn from(s: &str) -> Self {
        Node::Str(s.to_owned())
    }
}

impl From<String> for Node {
    fn from(s: String) -> Self {
        Node::Str(s)
    }
}

impl From<&String> for Node {
    fn from(s: &String) -> Self {
        Node::Str(s.clone())
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Str(s) => serializer.serialize_str(s),
            Node::Int(n) => serializer.serialize_u64(*n),
            Node::Bool(b) => serializer.serialize_bool(*b),
            Node::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut m = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests;
