// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::ToSocketAddrs;

use serde_json::{json, Value};

use super::*;
use tollgate::Diagnostic;

/// A 3scale service with the given `proxy` fields over sensible defaults.
fn service(id: u64, proxy: Value) -> Value {
    let mut p = json!({
        "hosts": [format!("s{id}.example")],
        "backend": {"endpoint": "http://127.0.0.1:3001"},
        "proxy_rules": [{"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}]
    });
    for (k, v) in proxy.as_object().unwrap() {
        p[k] = v.clone();
    }
    json!({
        "id": id,
        "backend_version": "1",
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "token",
        "proxy": p
    })
}

fn config(services: Vec<Value>) -> FilterConfig {
    let doc = json!({ "services": services });
    let loaded = tollgate::load(doc.to_string().as_bytes());
    loaded
        .config
        .unwrap_or_else(|| panic!("invalid test config: {:?}", loaded.diagnostics))
}

fn options() -> EnvoyOptions {
    EnvoyOptions::new("/opt/tollgate/tollgate.wasm")
}

fn tree(config: &FilterConfig, options: &EnvoyOptions) -> Value {
    serde_json::to_value(bootstrap(config, options).unwrap()).unwrap()
}

fn hcm(t: &Value) -> &Value {
    &t["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn vhosts(t: &Value) -> &Vec<Value> {
    hcm(t)["route_config"]["virtual_hosts"].as_array().unwrap()
}

/// The FilterConfig the filter receives.
fn embedded(t: &Value) -> Value {
    let value = &hcm(t)["http_filters"][0]["typed_config"]["config"]["configuration"]["value"];
    serde_json::from_str(value.as_str().unwrap()).unwrap()
}

fn clusters(t: &Value) -> &Vec<Value> {
    t["static_resources"]["clusters"].as_array().unwrap()
}

fn cluster<'a>(t: &'a Value, name: &str) -> &'a Value {
    clusters(t)
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {t:#}"))
}

/// The routes of the (only) service's virtual host.
fn routes_of(api_backend: &str) -> Vec<Value> {
    let t = tree(
        &config(vec![service(1, json!({"api_backend": api_backend}))]),
        &options(),
    );
    vhosts(&t)[0]["routes"].as_array().unwrap().clone()
}

#[test]
fn backend_without_path_needs_no_rewrite() {
    for backend in ["http://h", "http://h/", "http://h:8080/?x=1"] {
        let routes = routes_of(backend);
        assert_eq!(routes.len(), 1, "{backend}");
        assert_eq!(routes[0]["match"], json!({"prefix": "/"}));
        assert!(
            routes[0]["route"].get("prefix_rewrite").is_none(),
            "{backend}"
        );
    }
}

#[test]
fn backend_path_is_put_in_front_of_the_request_path() {
    // APIcast (upstream.lua's prefix_path): `/` becomes the backend's path as written, any
    // other path is joined to it with `/` and the slashes merged.
    for (backend, exact, prefix) in [
        ("http://h/v2", "/v2", "/v2/"),
        ("http://h/v2/", "/v2/", "/v2/"),
        ("http://h/api-backend/", "/api-backend/", "/api-backend/"),
        ("http://h/a/b?x=1", "/a/b", "/a/b/"),
        ("http://h/a//b//", "/a//b//", "/a/b/"),
        ("http://h:8080//", "//", "/"),
    ] {
        let routes = routes_of(backend);
        assert_eq!(routes.len(), 2, "{backend}");
        // `/` goes to exactly the backend path (APIcast), everything else below it.
        assert_eq!(routes[0]["match"], json!({"path": "/"}));
        assert_eq!(routes[0]["route"]["prefix_rewrite"], exact, "{backend}");
        assert_eq!(routes[1]["match"], json!({"prefix": "/"}));
        assert_eq!(routes[1]["route"]["prefix_rewrite"], prefix, "{backend}");
    }
}

#[test]
fn host_header_is_hostname_rewrite_else_backend_host() {
    let host = |proxy: Value| {
        let t = tree(&config(vec![service(1, proxy)]), &options());
        vhosts(&t)[0]["routes"][0]["route"]["host_rewrite_literal"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        host(json!({"api_backend": "https://api.example:443", "hostname_rewrite": "internal"})),
        "internal"
    );
    assert_eq!(
        host(json!({"api_backend": "https://API.example:443"})),
        "api.example"
    );
    assert_eq!(
        host(json!({"api_backend": "http://api.example:80"})),
        "api.example"
    );
    assert_eq!(
        host(json!({"api_backend": "http://api.example:8080"})),
        "api.example:8080"
    );
    assert_eq!(
        host(json!({"api_backend": "https://api.example:80"})),
        "api.example:80"
    );
    // An empty hostname_rewrite is no rewrite (APIcast).
    assert_eq!(
        host(json!({"api_backend": "http://api.example", "hostname_rewrite": ""})),
        "api.example"
    );
}

#[test]
fn clusters_are_named_per_scheme_host_and_port() {
    let t = tree(
        &config(vec![
            service(1, json!({"api_backend": "http://api.example/v1"})),
            service(2, json!({"api_backend": "http://api.example:80/v2"})),
            service(3, json!({"api_backend": "https://api.example"})),
            service(4, json!({"api_backend": "http://api.example:8080"})),
            service(5, json!({"api_backend": "http://[::1]:9000"})),
        ]),
        &options(),
    );
    let names: Vec<&str> = clusters(&t)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "api_backend_api_example_80",
            "api_backend_api_example_443_tls",
            "api_backend_api_example_8080",
            "api_backend___1_9000",
            "tollgate_control_service",
        ]
    );
    let cluster_of = |i: usize| vhosts(&t)[i]["routes"][0]["route"]["cluster"].clone();
    // Services 1 and 2 share one upstream.
    assert_eq!(cluster_of(0), "api_backend_api_example_80");
    assert_eq!(cluster_of(1), "api_backend_api_example_80");
    assert_eq!(cluster_of(2), "api_backend_api_example_443_tls");
}

#[test]
fn cluster_names_never_collide() {
    let mut c = config(vec![
        service(1, json!({"api_backend": "http://a.b"})),
        service(2, json!({"api_backend": "http://a-b"})),
    ]);
    c.control_service.cluster = "api_backend_a_b_80".into();
    let t = tree(&c, &options());
    let names: Vec<&str> = clusters(&t)
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "api_backend_a_b_80_2",
            "api_backend_a_b_80_3",
            "api_backend_a_b_80"
        ]
    );
    assert_eq!(
        cluster(&t, "api_backend_a_b_80_3")["load_assignment"]["cluster_name"],
        "api_backend_a_b_80_3"
    );
}

#[test]
fn names_resolve_by_dns_and_ip_literals_are_static() {
    let t = tree(
        &config(vec![
            service(1, json!({"api_backend": "http://api.example"})),
            service(2, json!({"api_backend": "http://10.0.0.1:81"})),
            service(3, json!({"api_backend": "http://[::1]:82"})),
        ]),
        &options(),
    );
    let c = cluster(&t, "api_backend_api_example_80");
    assert_eq!(c["type"], "LOGICAL_DNS");
    assert_eq!(c["dns_lookup_family"], "V4_PREFERRED");
    let sa = |c: &Value| {
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]
            .clone()
    };
    assert_eq!(sa(c), json!({"address": "api.example", "port_value": 80}));
    let c = cluster(&t, "api_backend_10_0_0_1_81");
    assert_eq!(c["type"], "STATIC");
    assert!(c.get("dns_lookup_family").is_none());
    assert_eq!(sa(c), json!({"address": "10.0.0.1", "port_value": 81}));
    let c = cluster(&t, "api_backend___1_82");
    assert_eq!(c["type"], "STATIC");
    assert_eq!(sa(c), json!({"address": "::1", "port_value": 82}));
    assert!(c.get("transport_socket").is_none());
}

#[test]
fn https_upstreams_use_tls_with_sni_and_default_port_443() {
    let t = tree(
        &config(vec![
            service(1, json!({"api_backend": "https://api.example"})),
            service(2, json!({"api_backend": "https://127.0.0.1"})),
        ]),
        &options(),
    );
    let c = cluster(&t, "api_backend_api_example_443_tls");
    assert_eq!(
        c["transport_socket"],
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "api.example",
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": "api.example"}}
                    ]
                }}
            }
        })
    );
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"],
        443
    );
    // No SNI for an IP address (TLS forbids it), but still TLS.
    let c = cluster(&t, "api_backend_127_0_0_1_443_tls");
    assert!(c["transport_socket"]["typed_config"].get("sni").is_none());
    assert_eq!(
        c["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
            ["match_typed_subject_alt_names"][0],
        json!({"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}})
    );
    // Verification off is explicit.
    let mut unverified = options();
    unverified.upstream_ca = UpstreamCa::Unverified;
    let t = tree(
        &config(vec![service(
            1,
            json!({"api_backend": "https://api.example"}),
        )]),
        &unverified,
    );
    let c = cluster(&t, "api_backend_api_example_443_tls");
    assert!(c["transport_socket"]["typed_config"]
        .get("common_tls_context")
        .is_none());
}

#[test]
fn control_service_cluster_from_backend_url_or_endpoint() {
    let c = config(vec![service(
        1,
        json!({"api_backend": "http://api.example", "backend": {"endpoint": "https://su1.3scale.net"}}),
    )]);
    let t = tree(&c, &options());
    let control = cluster(&t, "tollgate_control_service");
    assert_eq!(control["type"], "LOGICAL_DNS");
    assert_eq!(
        control["transport_socket"]["typed_config"]["sni"],
        "su1.3scale.net"
    );
    let mut o = options();
    o.backend_url = Some("http://127.0.0.1:3001".into());
    let t = tree(&c, &o);
    let control = cluster(&t, "tollgate_control_service");
    assert_eq!(control["type"], "STATIC");
    assert!(control.get("transport_socket").is_none());
    assert_eq!(
        control["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"],
        json!({"address": "127.0.0.1", "port_value": 3001})
    );
    // The filter's calls name the host they really reach, without its port (as APIcast).
    assert_eq!(embedded(&t)["control_service"]["authority"], "127.0.0.1");
    for (url, authority) in [
        ("https://backend.example:443", "backend.example"),
        ("http://localhost:80", "localhost"),
        ("https://[::1]:8443", "[::1]"),
    ] {
        o.backend_url = Some(url.into());
        assert_eq!(
            embedded(&tree(&c, &o))["control_service"]["authority"],
            authority,
            "{url}"
        );
    }
    // Without --backend-url the cluster is the services' endpoint: each service's own
    // backend.host or endpoint host names its calls, as in `generate filter`'s output.
    let t = tree(&c, &options());
    assert!(
        embedded(&t)["control_service"].get("authority").is_none(),
        "{t:#}"
    );
    // The cluster's name is the configuration's.
    let mut renamed = c.clone();
    renamed.control_service.cluster = "threescale_backend".into();
    let t = tree(&renamed, &o);
    assert_eq!(clusters(&t).last().unwrap()["name"], "threescale_backend");
}

/// The FilterConfig of `services` with `edit` applied, and what `check` and `generate envoy`
/// say of it.
fn check_and_generate(
    services: Vec<Value>,
    edit: impl FnOnce(&mut FilterConfig),
) -> (tollgate::Loaded, Result<Bootstrap, EnvoyError>) {
    let mut c = config(services);
    edit(&mut c);
    let checked = tollgate::load(c.to_json_pretty().as_bytes());
    (checked, bootstrap(&c, &options()))
}

/// A change to a valid configuration that makes it invalid.
type Edit = Box<dyn FnOnce(&mut FilterConfig)>;

/// Every configuration `generate envoy` refuses, `check` refuses with the same diagnostics.
#[test]
fn check_refuses_what_generate_refuses() {
    let endpoint = |id, url: &str| service(id, json!({"backend": {"endpoint": url}}));
    let cases: Vec<(&str, Vec<Value>, Edit)> = vec![
        (
            "control services that disagree",
            vec![
                endpoint(1, "https://su1.3scale.net"),
                endpoint(2, "https://su1.3scale.net:443/"),
                endpoint(3, "https://su1.3scale.net"),
            ],
            Box::new(|c| c.services[2].backend.endpoint = Some("https://su2.3scale.net".into())),
        ),
        (
            "a wildcard host",
            vec![service(1, json!({}))],
            Box::new(|c| c.services[0].hosts = vec!["*.example".into()]),
        ),
        (
            "a host with a space",
            vec![service(1, json!({}))],
            Box::new(|c| c.services[0].hosts = vec!["a b.example".into()]),
        ),
        (
            "an api_backend no proxy can route to",
            vec![service(1, json!({}))],
            Box::new(|c| c.services[0].upstream.api_backend = Some("ftp://x".into())),
        ),
    ];
    for (what, services, edit) in cases {
        let (checked, generated) = check_and_generate(services, edit);
        assert!(checked.compiled.is_none(), "{what}: check accepts it");
        let checked: Vec<Diagnostic> = checked.diagnostics.errors().cloned().collect();
        match generated {
            Err(EnvoyError::Config(refused)) => assert_eq!(refused, checked, "{what}"),
            other => panic!("{what}: generate envoy answers {other:?}"),
        }
    }
}

#[test]
fn disagreeing_control_services_are_named_where() {
    let endpoint = |id, url: &str| service(id, json!({"backend": {"endpoint": url}}));
    let (checked, generated) = check_and_generate(
        vec![
            endpoint(1, "https://su1.3scale.net"),
            endpoint(2, "https://SU1.3scale.net:443/"),
            endpoint(3, "https://su1.3scale.net"),
        ],
        |c| c.services[2].backend.endpoint = Some("https://su2.3scale.net".into()),
    );
    let errors: Vec<String> = checked
        .diagnostics
        .errors()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        ["error: services[2].backend.endpoint: the control service https://su2.3scale.net is not \
          the one services[0].backend.endpoint names (https://su1.3scale.net): one \
          control-service cluster serves every service"]
    );
    assert!(matches!(generated, Err(EnvoyError::Config(_))));
}

/// Without a control service in the configuration, the filter still works (with a cluster
/// the operator defines), so `check` only warns; `generate envoy` needs `--backend-url`, and
/// says so in the words of the warning.
#[test]
fn a_missing_control_service_is_a_warning_and_needs_backend_url() {
    let (checked, generated) =
        check_and_generate(vec![service(1, json!({"backend": null}))], |_| {});
    assert!(checked.compiled.is_some());
    let warnings: Vec<&str> = checked
        .diagnostics
        .warnings()
        .filter(|d| d.path == "services")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(warnings, [NO_CONTROL_SERVICE]);
    let err = generated.unwrap_err();
    assert!(matches!(err, EnvoyError::NoControlService));
    assert_eq!(err.to_string(), NO_CONTROL_SERVICE);

    let c = config(vec![service(1, json!({"backend": null}))]);
    let mut o = options();
    o.backend_url = Some("http://127.0.0.1:3001".into());
    assert!(bootstrap(&c, &o).is_ok());
    // The same endpoint written twice, or a service stating none, is fine.
    let c = config(vec![
        service(
            1,
            json!({"backend": {"endpoint": "https://su1.3scale.net"}}),
        ),
        service(
            2,
            json!({"backend": {"endpoint": "https://SU1.3scale.net:443"}}),
        ),
        service(3, json!({"backend": null})),
    ]);
    assert!(bootstrap(&c, &options()).is_ok());
}

#[test]
fn backend_url_must_be_scheme_host_and_port() {
    let c = config(vec![service(1, json!({}))]);
    let mut o = options();
    o.backend_url = Some("localhost:3001".into());
    assert_eq!(
        bootstrap(&c, &o).unwrap_err().to_string(),
        "--backend-url localhost:3001: give the scheme too (http://localhost:3001 or \
         https://localhost:3001)"
    );
    // A name is Envoy's to resolve.
    o.backend_url = Some("http://localhost:3001".into());
    let t = tree(&c, &o);
    let control = cluster(&t, "tollgate_control_service");
    assert_eq!(control["type"], "LOGICAL_DNS");
    assert_eq!(
        control["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"],
        json!({"address": "localhost", "port_value": 3001})
    );
    for bad in ["127.0.0.1:3001", "ftp://x", "http://h/path", "http://h?q=1"] {
        let mut o = options();
        o.backend_url = Some(bad.into());
        let err = bootstrap(&c, &o).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--backend-url {bad}: ")),
            "{bad}: {err}"
        );
    }
}

#[test]
fn admin_must_be_loopback() {
    let c = config(vec![service(1, json!({}))]);
    for bad in ["0.0.0.0:9901", "10.1.2.3:9901", "[::]:9901"] {
        let mut o = options();
        o.admin = bad.parse().unwrap();
        let err = bootstrap(&c, &o).unwrap_err();
        assert!(
            matches!(err, EnvoyError::AdminNotLoopback(a) if a == o.admin),
            "{err}"
        );
    }
    for good in ["127.0.0.1:9901", "127.0.0.2:1", "[::1]:9901"] {
        let mut o = options();
        o.admin = good.parse().unwrap();
        let t = tree(&c, &o);
        let addr: SocketAddr = good.parse().unwrap();
        assert_eq!(
            t["admin"]["address"]["socket_address"]["address"],
            addr.ip().to_string()
        );
    }
}

#[test]
fn the_node_id_names_the_gateway() {
    let c = config(vec![service(1, json!({}))]);
    let t = tree(&c, &options());
    assert!(t.get("node").is_none(), "{t:#}");
    let mut o = options();
    o.node_id = Some("edge-7.example".into());
    let yaml = render(&c, &o).unwrap();
    // First in the file, as Envoy's own examples have it.
    assert!(
        yaml.contains("\nnode:\n  id: edge-7.example\nstatic_resources:\n"),
        "{yaml}"
    );
    for bad in ["", "two\nlines", "tab\there"] {
        o.node_id = Some(bad.into());
        let err = bootstrap(&c, &o).unwrap_err();
        assert!(matches!(&err, EnvoyError::NodeId(id) if id == bad), "{err}");
    }
}

#[test]
fn the_machine_hostname_is_the_kernels() {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(machine_hostname().as_deref(), Some(kernel.trim()));
}

#[test]
fn addresses_may_name_localhost_or_a_host() {
    for (raw, addr) in [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("[::1]:9901", "[::1]:9901"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("localhost:8080", "127.0.0.1:8080"),
        ("LocalHost:9901", "127.0.0.1:9901"),
    ] {
        assert_eq!(parse_address(raw), Ok(addr.parse().unwrap()), "{raw}");
    }
    // A name is resolved here, IPv4 first: the machine's own name resolves on any host.
    let me = machine_hostname().unwrap();
    let resolved = parse_address(&format!("{me}:8080")).unwrap();
    assert_eq!(resolved.port(), 8080);
    let all: Vec<SocketAddr> = (me.as_str(), 8080).to_socket_addrs().unwrap().collect();
    assert!(all.contains(&resolved), "{resolved} not in {all:?}");
    assert!(resolved.is_ipv4() || all.iter().all(SocketAddr::is_ipv6));
    for (bad, says) in [
        ("8080", "is not HOST:PORT"),
        (":8080", "is not HOST:PORT"),
        ("localhost:http", "is not a port"),
        ("localhost:70000", "is not a port"),
        ("[::1:80", "is not HOST:PORT"),
        (
            "no-such-host.invalid:80",
            "cannot resolve 'no-such-host.invalid'",
        ),
    ] {
        let err = parse_address(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[test]
fn the_ca_bundle_is_the_first_system_bundle_found() {
    let dir = std::env::temp_dir().join(format!("tollgate-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rhel = dir.join("tls-ca-bundle.pem");
    std::fs::write(&rhel, "").unwrap();
    let missing = dir.join("ca-certificates.crt");
    let (missing, rhel) = (missing.to_str().unwrap(), rhel.to_str().unwrap());
    assert_eq!(find_ca_bundle(&[missing, rhel]).unwrap(), Path::new(rhel));
    let err = find_ca_bundle(&[missing, missing]).unwrap_err().to_string();
    assert!(
        err.contains(&format!("none of {missing}, {missing} exists here")),
        "{err}"
    );
    assert!(err.contains("--upstream-ca"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Debian's and the RHEL family's are among those looked for.
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    ] {
        assert!(SYSTEM_CA_BUNDLES.contains(&path), "{path}");
    }
    // Nothing to verify, nothing looked for: plain http needs no bundle.
    let c = config(vec![service(
        1,
        json!({"api_backend": "http://api.example"}),
    )]);
    assert!(!serde_json::to_string(&tree(&c, &options()))
        .unwrap()
        .contains("trusted_ca"));
}

#[test]
fn listener_address_and_defaults() {
    let c = config(vec![service(1, json!({}))]);
    let t = tree(&c, &options());
    assert_eq!(
        t["static_resources"]["listeners"][0]["address"],
        json!({"socket_address": {"address": "127.0.0.1", "port_value": 8080}})
    );
    assert_eq!(
        t["admin"],
        json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}})
    );
    let mut o = options();
    o.listen = "[::]:80".parse().unwrap();
    let t = tree(&c, &o);
    assert_eq!(
        t["static_resources"]["listeners"][0]["address"]["socket_address"],
        json!({"address": "::", "port_value": 80})
    );
    assert_eq!(hcm(&t)["stat_prefix"], "tollgate");
    assert_eq!(hcm(&t)["strip_any_host_port"], true);
}

#[test]
fn virtual_hosts_follow_the_filter_host_rules() {
    let t = tree(
        &config(vec![
            service(
                1,
                json!({"api_backend": "http://a", "hosts": ["API.example:8080", "api.example.", "x.example"]}),
            ),
            service(
                2,
                json!({"api_backend": "http://b", "hosts": ["x.example", "y.example"]}),
            ),
            service(
                3,
                json!({"api_backend": "http://c", "hosts": ["x.example"]}),
            ),
            service(4, json!({"api_backend": null, "hosts": ["z.example"]})),
        ]),
        &options(),
    );
    let v = vhosts(&t);
    assert_eq!(v.len(), 4, "{v:#?}");
    assert_eq!(v[0]["name"], "service_1");
    assert_eq!(v[0]["domains"], json!(["api.example", "x.example"]));
    // The first service keeps a shared host, as in the filter.
    assert_eq!(v[1]["domains"], json!(["y.example"]));
    // Service 3 has no host left: no virtual host. Service 4 has no upstream: 404.
    assert_eq!(v[2]["name"], "service_4");
    assert_eq!(
        v[2]["routes"],
        json!([{"match": {"prefix": "/"}, "direct_response": {"status": 404}}])
    );
    assert_eq!(v[3]["domains"], json!(["*"]));
    assert_eq!(
        v[3]["routes"],
        json!([{"match": {"prefix": "/"}, "direct_response": {"status": 404}}])
    );
    // No cluster for the unreachable service 3.
    assert!(clusters(&t).iter().all(|c| c["name"] != "api_backend_c_80"));
}

#[test]
fn wasm_filter_then_router() {
    let c = config(vec![service(1, json!({}))]);
    let t = tree(&c, &options());
    let filters = hcm(&t)["http_filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[0]["name"], "envoy.filters.http.wasm");
    let wasm = &filters[0]["typed_config"]["config"];
    assert_eq!(wasm["root_id"], "tollgate");
    assert_eq!(wasm["vm_config"]["vm_id"], "tollgate");
    assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        wasm["vm_config"]["code"]["local"]["filename"],
        "/opt/tollgate/tollgate.wasm"
    );
    assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
    assert_eq!(wasm["allow_on_headers_stop_iteration"], true);
    assert_eq!(
        wasm["configuration"]["@type"],
        "type.googleapis.com/google.protobuf.StringValue"
    );
    assert_eq!(
        wasm["configuration"]["value"].as_str().unwrap(),
        format!("{}\n", c.to_json_pretty())
    );
    assert_eq!(filters[1]["name"], "envoy.filters.http.router");
}

/// The YAML text reads back as the tree, the embedded JSON included, whatever the strings
/// in the configuration contain.
#[test]
fn yaml_reads_back_exactly() {
    let awkward = "x\u{85}a\u{7f}b\u{80}c\u{a0}d\u{2028}e\u{2029}f\u{feff}g\u{1F600}: # 'q' \"dq\" \\ \t end ";
    let c = config(vec![service(
        1,
        json!({"api_backend": "https://api.example/v1", "error_no_match": awkward,
               "hostname_rewrite": "true", "hosts": ["null", "123"]}),
    )]);
    let yaml = render(&c, &options()).unwrap();
    let back: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(back, tree(&c, &options()));
    let value = hcm(&back)["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    // Only U+0085 is written as a JSON escape (see `embeddable_json`).
    assert_eq!(
        value,
        format!("{}\n", c.to_json_pretty()).replace('\u{85}', "\\u0085")
    );
    let parsed: FilterConfig = serde_json::from_str(&value).unwrap();
    assert_eq!(parsed, c);
}
