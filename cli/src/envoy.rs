//! `tollgate generate envoy`: a complete, runnable Envoy (1.40, V8) bootstrap around the filter.
//!
//! What the bootstrap contains:
//! - one listener (`--listen`) with an HTTP connection manager (`stat_prefix: tollgate`,
//!   `strip_any_host_port`, so `Host: api.example.com:8080` finds `api.example.com`);
//! - one virtual host per service whose `domains` are its hosts (lower-cased, without port; a
//!   host claimed by an earlier service stays with it, as the filter does), routing to the
//!   service's `api_backend`: `Host` becomes `hostname_rewrite`, else the backend's host (with
//!   its port only when it is not the scheme's default), and the backend's path is put in front
//!   of the request path (`http://h/v2`: `/x` → `/v2/x`, `/` → `/v2`, `/?a=1` → `/v2?a=1`;
//!   `http://h/v2/`: `/x` → `/v2/x`, `/` → `/v2/`, as APIcast).
//!   A service without `api_backend` answers 404, as APIcast does;
//! - a last virtual host (`*`) answering 404 itself, so an unknown host is never forwarded even
//!   without the filter;
//! - the http filters: `envoy.filters.http.wasm` (V8, the module from `--wasm` as given: a
//!   relative path is resolved from Envoy's working directory; the FilterConfig JSON of
//!   `tollgate generate filter` as a `StringValue`, with `control_service.authority` set to
//!   `--backend-url`'s host and port when it is given; `vm_id`/`root_id` `tollgate`;
//!   `FAIL_RELOAD`; `allow_on_headers_stop_iteration`, without which Envoy withholds the body
//!   the filter waits for), then the router;
//! - one cluster per distinct upstream (scheme, host, port), named `api_backend_<host>_<port>`
//!   (IPv6 without brackets) with every character other than `[A-Za-z0-9]` turned into `_`
//!   (`_tls` appended for https; a numeric suffix when two upstreams would share a name). `STATIC` for IP literals,
//!   `LOGICAL_DNS` (IPv4 preferred) for names, TLS with SNI for https;
//! - the control-service cluster, named by `control_service.cluster`, for `--backend-url`, else
//!   the services' `backend.endpoint` (they must agree; only scheme, host and port matter: the
//!   filter sends its own path, and the `:authority` of the URL the cluster targets);
//! - the admin interface, on a loopback address only;
//! - the node id (`--node-id`, default the machine's host name), which the filter reports in
//!   `X-3scale-hostname` as APIcast reports its host's name.
//!
//! Not expressed: a query string in `api_backend` (APIcast replaces the request's query with
//! it); Envoy routes keep the request's query.
//!
//! What the gateway is (domains, targets, the control service) comes from the core's
//! validated view ([`tollgate::model::gateway`]); this module only spells it in Envoy's terms,
//! through typed structs whose field order is the order of the YAML.
//!
//! https upstreams are verified: their certificate must chain to `upstream_ca` (default the
//! system bundle, the first of [`SYSTEM_CA_BUNDLES`] found) and name the host (DNS or IP SAN).
//! Turning that off is an explicit choice (`--upstream-ca none`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tollgate::config::FilterConfigPaths;
use tollgate::model::gateway::{Route, SubjectAltName, Target, NO_CONTROL_SERVICE};
use tollgate::url::{HttpUrl, UrlError};
use tollgate::{compile, Diagnostic, Diagnostics, FilterConfig};

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
    /// certificate must also name the host.
    pub upstream_ca: UpstreamCa,
    /// Envoy's node id, which the filter reports as `X-3scale-hostname` (APIcast: the
    /// machine's host name); `None` writes no node and the filter says `tollgate`.
    pub node_id: Option<String>,
}

/// What https upstreams must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCa {
    /// This system's bundle: the first of [`SYSTEM_CA_BUNDLES`] that exists here.
    System,
    File(PathBuf),
    /// No verification (`--upstream-ca none`): anyone on the path can read what is sent.
    Unverified,
}

/// Where systems keep their CA bundle, in the order they are looked for.
pub const SYSTEM_CA_BUNDLES: [&str; 5] = [
    // Debian, Ubuntu (ca-certificates), Arch, Gentoo
    "/etc/ssl/certs/ca-certificates.crt",
    // RHEL, CentOS, Fedora, Amazon Linux (ca-certificates)
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    // openSUSE, SLES
    "/etc/ssl/ca-bundle.pem",
    // Alpine, macOS, the BSDs
    "/etc/ssl/cert.pem",
];

/// The first of `candidates` that is a file, or why there is none (naming where it looked).
pub fn find_ca_bundle(candidates: &[&str]) -> Result<PathBuf, EnvoyError> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| EnvoyError::NoCaBundle(candidates.join(", ")))
}

/// An address Envoy binds: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (127.0.0.1) or
/// `NAME:PORT`, resolved here (Envoy listens on addresses, not names) to its first IPv4
/// address, else its first.
pub fn parse_address(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = raw.rsplit_once(':') else {
        return Err(format!(
            "'{raw}' is not HOST:PORT (127.0.0.1:8080, localhost:8080)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' in '{raw}' is not a port"))?;
    if host.is_empty() || host.starts_with('[') {
        return Err(format!(
            "'{raw}' is not HOST:PORT (127.0.0.1:8080, [::1]:8080)"
        ));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

impl EnvoyOptions {
    /// The defaults of `tollgate generate envoy`: listen on 127.0.0.1:8080, admin on
    /// 127.0.0.1:9901, the control service from the configuration.
    pub fn new(wasm: impl Into<PathBuf>) -> Self {
        Self {
            wasm: wasm.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            backend_url: None,
            upstream_ca: UpstreamCa::System,
            node_id: None,
        }
    }
}

/// This machine's host name, as `hostname` prints it (APIcast's `X-3scale-hostname` is
/// NGINX's `$hostname`): the kernel's, else `$HOSTNAME`, else `/etc/hostname`; `None` when
/// none of them says.
pub fn machine_hostname() -> Option<String> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    [
        read("/proc/sys/kernel/hostname"),
        std::env::var("HOSTNAME").ok(),
        read("/etc/hostname"),
    ]
    .into_iter()
    .flatten()
    .map(|name| name.trim().to_owned())
    .find(|name| !name.is_empty())
}

/// Why there is no bootstrap: the operator's options, the configuration, or (never expected)
/// the YAML writer.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyError {
    #[error(
        "the admin address {0} is not a loopback address: Envoy's admin interface must not be \
         reachable from other machines"
    )]
    AdminNotLoopback(SocketAddr),
    #[error("--backend-url {raw}: {source}")]
    BackendUrl { raw: String, source: UrlError },
    #[error("--backend-url {0}: give the scheme too (http://{0} or https://{0})")]
    BackendUrlNoScheme(String),
    #[error("--backend-url {0}: give only scheme, host and port (the filter sends its own path)")]
    BackendUrlNotBare(String),
    #[error(
        "no CA bundle for the https upstreams: none of {0} exists here; give --upstream-ca \
         FILE, or --upstream-ca none to send without verifying"
    )]
    NoCaBundle(String),
    #[error("--node-id {0:?}: a node id is sent in a header; give a non-empty name without control characters")]
    NodeId(String),
    /// The configuration's errors, as `tollgate check` reports them.
    #[error("the configuration is not valid:\n{}", lines(.0))]
    Config(Vec<Diagnostic>),
    #[error("{NO_CONTROL_SERVICE}")]
    NoControlService,
    #[error("cannot write the Envoy bootstrap as YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// The Envoy bootstrap for `config` as YAML, or why there can be none.
pub fn render(config: &FilterConfig, options: &EnvoyOptions) -> Result<String, EnvoyError> {
    let bootstrap = bootstrap(config, options)?;
    // Long single-line scalars (the `@type` URLs) stay on one line.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 1000 };
    let yaml = serde_saphyr::to_string_with_options(&bootstrap, options)?;
    Ok(format!(
        "# Envoy bootstrap written by `tollgate generate envoy`. It embeds the service tokens: keep it private.\n{yaml}"
    ))
}

/// The bootstrap (what `render` serializes).
pub fn bootstrap(config: &FilterConfig, options: &EnvoyOptions) -> Result<Bootstrap, EnvoyError> {
    if !options.admin.ip().is_loopback() {
        return Err(EnvoyError::AdminNotLoopback(options.admin));
    }
    if let Some(id) = &options.node_id {
        if id.is_empty() || id.chars().any(char::is_control) {
            return Err(EnvoyError::NodeId(id.clone()));
        }
    }
    let mut diags = Diagnostics::new();
    let Some(compiled) = compile(config, &FilterConfigPaths, &mut diags) else {
        return Err(EnvoyError::Config(diags.errors().cloned().collect()));
    };
    let gateway = compiled.gateway();
    // Pointed elsewhere, the cluster's target names the calls' `:authority` too, as APIcast's
    // BACKEND_ENDPOINT_OVERRIDE does.
    let mut embedded = config.clone();
    let control = match options.backend_url.as_deref() {
        Some(raw) => {
            let target = backend_url(raw)?;
            embedded.control_service.authority = Some(target.host().to_owned());
            target
        }
        None => gateway
            .control()
            .cloned()
            .ok_or(EnvoyError::NoControlService)?,
    };
    let tls = control.tls() || gateway.upstreams().iter().any(Target::tls);
    let ca = match &options.upstream_ca {
        UpstreamCa::File(path) => Some(path.clone()),
        UpstreamCa::System if tls => Some(find_ca_bundle(&SYSTEM_CA_BUNDLES)?),
        UpstreamCa::System | UpstreamCa::Unverified => None,
    };
    let ca = ca.as_deref();

    let mut names = Names::default();
    names.reserve(gateway.control_cluster());
    let mut clusters: Vec<Cluster> = Vec::new();
    let upstream_names: Vec<String> = gateway
        .upstreams()
        .iter()
        .map(|target| {
            let name = names.allocate(&upstream_cluster_name(target));
            clusters.push(Cluster::new(&name, target, ca));
            name
        })
        .collect();
    let mut vhost_names = Names::default();
    let mut virtual_hosts: Vec<VirtualHost> = gateway
        .virtual_hosts()
        .iter()
        .map(|vh| {
            let routes = match vh.route() {
                Route::NotFound => vec![RouteEntry::not_found()],
                Route::Upstream(up) => {
                    let cluster = upstream_names.get(up.upstream()).map_or("", String::as_str);
                    upstream_routes(cluster, up.host_header(), up.root_path(), up.path_prefix())
                }
            };
            VirtualHost {
                name: vhost_names.allocate(&format!("service_{}", sanitize(vh.service().id()))),
                domains: vh.domains().iter().map(ToString::to_string).collect(),
                routes,
            }
        })
        .collect();
    virtual_hosts.push(VirtualHost {
        name: "unknown_host".into(),
        domains: vec!["*".into()],
        routes: vec![RouteEntry::not_found()],
    });
    clusters.push(Cluster::new(gateway.control_cluster(), &control, ca));

    let wasm = HttpFilter {
        name: "envoy.filters.http.wasm",
        typed_config: HttpFilterConfig::Wasm(WasmFilter {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            config: WasmPlugin {
                name: NAME,
                root_id: NAME,
                vm_config: VmConfig {
                    vm_id: NAME,
                    runtime: "envoy.wasm.runtime.v8",
                    code: Code {
                        local: DataSource {
                            filename: options.wasm.display().to_string(),
                        },
                    },
                },
                configuration: StringValue {
                    type_url: "type.googleapis.com/google.protobuf.StringValue",
                    value: embeddable_json(&embedded),
                },
                failure_policy: "FAIL_RELOAD",
                // The filter pauses in on_request_headers to read urlencoded body arguments;
                // without this Envoy holds the body back until the headers resume and the
                // request hangs.
                allow_on_headers_stop_iteration: true,
            },
        }),
    };
    let router = HttpFilter {
        name: "envoy.filters.http.router",
        typed_config: HttpFilterConfig::Router(TypeOnly {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        }),
    };
    let hcm = NetworkFilter {
        name: "envoy.filters.network.http_connection_manager",
        typed_config: HttpConnectionManager {
            type_url: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix: NAME,
            strip_any_host_port: true,
            route_config: RouteConfig {
                name: NAME,
                virtual_hosts,
            },
            http_filters: vec![wasm, router],
        },
    };
    Ok(Bootstrap {
        node: options.node_id.clone().map(|id| Node { id }),
        static_resources: StaticResources {
            listeners: vec![Listener {
                name: NAME,
                address: Address::socket(options.listen.ip().to_string(), options.listen.port()),
                filter_chains: vec![FilterChain { filters: vec![hcm] }],
            }],
            clusters,
        },
        admin: Admin {
            address: Address::socket(options.admin.ip().to_string(), options.admin.port()),
        },
    })
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

/// `--backend-url`: scheme, host and port only.
fn backend_url(raw: &str) -> Result<Target, EnvoyError> {
    if !raw.contains("://") {
        return Err(EnvoyError::BackendUrlNoScheme(raw.to_owned()));
    }
    let url = HttpUrl::parse(raw).map_err(|source| EnvoyError::BackendUrl {
        raw: raw.to_owned(),
        source,
    })?;
    if !url.path.is_empty() || url.query.is_some() {
        return Err(EnvoyError::BackendUrlNotBare(raw.to_owned()));
    }
    Ok(Target::of(&url))
}

/// Routes to `cluster` with `Host: host`: a request for `/` goes to `root` (the backend's
/// path as written), any other below `prefix` (that path merged, without a trailing `/`).
fn upstream_routes(cluster: &str, host: &str, root: &str, prefix: &str) -> Vec<RouteEntry> {
    let action = |prefix_rewrite: Option<String>| RouteAction {
        cluster: cluster.to_owned(),
        host_rewrite_literal: host.to_owned(),
        prefix_rewrite,
    };
    if root.is_empty() {
        return vec![RouteEntry::to(RouteMatch::prefix("/"), action(None))];
    }
    vec![
        // APIcast: request `/` goes to exactly the backend's path, `/x` to `<prefix>/x`.
        RouteEntry::to(RouteMatch::path("/"), action(Some(root.to_owned()))),
        RouteEntry::to(RouteMatch::prefix("/"), action(Some(format!("{prefix}/")))),
    ]
}

/// `api_backend_<host>_<port>[_tls]`, sanitized.
pub fn upstream_cluster_name(target: &Target) -> String {
    let tls = if target.tls() { "_tls" } else { "" };
    format!(
        "api_backend_{}_{}{tls}",
        sanitize(target.bare_host()),
        target.port()
    )
}

/// Every character other than ASCII letters and digits becomes `_` (Envoy splits stat names
/// on dots).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
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

// Envoy's v3 bootstrap, as much of it as tollgate writes. Field order is YAML key order.

#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    pub static_resources: StaticResources,
    pub admin: Admin,
}

/// Who this Envoy is; the filter reads `id` as the gateway's name.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StaticResources {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub address: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct Address {
    pub socket_address: SocketAddress,
}

impl Address {
    fn socket(address: String, port_value: u16) -> Self {
        Self {
            socket_address: SocketAddress {
                address,
                port_value,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SocketAddress {
    pub address: String,
    pub port_value: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: &'static str,
    pub address: Address,
    pub filter_chains: Vec<FilterChain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterChain {
    pub filters: Vec<NetworkFilter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkFilter {
    pub name: &'static str,
    pub typed_config: HttpConnectionManager,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConnectionManager {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub stat_prefix: &'static str,
    /// `Host: api.example.com:8080` finds `api.example.com`, as in the filter.
    pub strip_any_host_port: bool,
    pub route_config: RouteConfig,
    pub http_filters: Vec<HttpFilter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: &'static str,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RouteEntry>,
}

/// A route: forwarded (`route`) or answered by Envoy (`direct_response`).
#[derive(Debug, Clone, Serialize)]
pub struct RouteEntry {
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
}

impl RouteEntry {
    fn to(matcher: RouteMatch, action: RouteAction) -> Self {
        Self {
            matcher,
            route: Some(action),
            direct_response: None,
        }
    }

    fn not_found() -> Self {
        Self {
            matcher: RouteMatch::prefix("/"),
            route: None,
            direct_response: Some(DirectResponse { status: 404 }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl RouteMatch {
    fn prefix(p: &str) -> Self {
        Self {
            prefix: Some(p.to_owned()),
            path: None,
        }
    }

    fn path(p: &str) -> Self {
        Self {
            prefix: None,
            path: Some(p.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteAction {
    pub cluster: String,
    pub host_rewrite_literal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    pub status: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpFilter {
    pub name: &'static str,
    pub typed_config: HttpFilterConfig,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum HttpFilterConfig {
    Wasm(WasmFilter),
    Router(TypeOnly),
}

/// A typed config with nothing but its type.
#[derive(Debug, Clone, Serialize)]
pub struct TypeOnly {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct WasmFilter {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub config: WasmPlugin,
}

#[derive(Debug, Clone, Serialize)]
pub struct WasmPlugin {
    pub name: &'static str,
    pub root_id: &'static str,
    pub vm_config: VmConfig,
    pub configuration: StringValue,
    pub failure_policy: &'static str,
    pub allow_on_headers_stop_iteration: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmConfig {
    pub vm_id: &'static str,
    pub runtime: &'static str,
    pub code: Code,
}

#[derive(Debug, Clone, Serialize)]
pub struct Code {
    pub local: DataSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataSource {
    pub filename: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StringValue {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    /// `STATIC` for an IP literal, `LOGICAL_DNS` for a name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub connect_timeout: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_lookup_family: Option<&'static str>,
    pub load_assignment: LoadAssignment,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<TransportSocket>,
}

impl Cluster {
    fn new(name: &str, target: &Target, ca: Option<&Path>) -> Self {
        let ip = target.ip();
        let address = match ip {
            Some(ip) => ip.to_string(),
            None => target.host().to_owned(),
        };
        let transport_socket = target.tls().then(|| TransportSocket {
            name: "envoy.transport_sockets.tls",
            typed_config: UpstreamTlsContext {
                type_url:
                    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                sni: target.sni().map(str::to_owned),
                // Chain to the CA bundle and name the host we dialled: without both, anyone on
                // the path could read the service token and the caller's credentials.
                common_tls_context: ca.map(|ca| CommonTlsContext {
                    validation_context: ValidationContext {
                        trusted_ca: DataSource {
                            filename: ca.display().to_string(),
                        },
                        match_typed_subject_alt_names: vec![SanMatcher::of(
                            target.subject_alt_name(),
                        )],
                    },
                }),
            },
        });
        Self {
            name: name.to_owned(),
            kind: if ip.is_some() {
                "STATIC"
            } else {
                "LOGICAL_DNS"
            },
            connect_timeout: CONNECT_TIMEOUT,
            dns_lookup_family: ip.is_none().then_some("V4_PREFERRED"),
            load_assignment: LoadAssignment {
                cluster_name: name.to_owned(),
                endpoints: vec![LocalityEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        endpoint: Endpoint {
                            address: Address::socket(address, target.port()),
                        },
                    }],
                }],
            },
            transport_socket,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadAssignment {
    pub cluster_name: String,
    pub endpoints: Vec<LocalityEndpoints>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalityEndpoints {
    pub lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub address: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransportSocket {
    pub name: &'static str,
    pub typed_config: UpstreamTlsContext,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTlsContext {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_tls_context: Option<CommonTlsContext>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommonTlsContext {
    pub validation_context: ValidationContext,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationContext {
    pub trusted_ca: DataSource,
    pub match_typed_subject_alt_names: Vec<SanMatcher>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SanMatcher {
    pub san_type: &'static str,
    pub matcher: ExactMatcher,
}

impl SanMatcher {
    fn of(san: SubjectAltName) -> Self {
        let (san_type, exact) = match san {
            SubjectAltName::Dns(name) => ("DNS", name),
            SubjectAltName::Ip(ip) => ("IP_ADDRESS", ip.to_string()),
        };
        Self {
            san_type,
            matcher: ExactMatcher { exact },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExactMatcher {
    pub exact: String,
}

#[cfg(test)]
mod tests;
