//! The gateway as a provider runs it, on loopback: the example services pointed at the echo
//! upstream, rendered by `tollgate generate envoy`'s code, in a real Envoy with tollgate.wasm.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tollgate::FilterConfig;
use tollgate_cli::envoy::{render, EnvoyOptions};

use crate::client::{Answer, Client, Request};
use crate::echo::Echo;
use crate::envoy::{Envoy, TEST_WORKERS};
use crate::{free_port, tollgate_wasm, workspace, HarnessError, Result};

/// The services of every 3scale JSON file given (any of the three shapes), in one
/// `{"services": [...]}` document, each service's `api_backend` replaced by the local upstream
/// with the path `/<system_name>`, so tests see the backend path applied as a prefix.
pub fn local_services(examples: &[&str], upstream: SocketAddr) -> Result<Value> {
    let mut services = Vec::new();
    for example in examples {
        let path = workspace().join(example);
        let text = std::fs::read_to_string(&path)
            .map_err(HarnessError::io(format!("reading {}", path.display())))?;
        let doc: Value = serde_json::from_str(&text).map_err(|source| HarnessError::Json {
            what: format!("parsing {}", path.display()),
            source,
        })?;
        let found: Vec<Value> = if let Some(list) = doc.get("services").and_then(Value::as_array) {
            list.clone()
        } else if let Some(content) = doc.pointer("/proxy_config/content") {
            vec![content.clone()]
        } else if let Some(list) = doc.get("proxy_configs").and_then(Value::as_array) {
            list.iter()
                .filter_map(|c| c.pointer("/proxy_config/content").cloned())
                .collect()
        } else {
            return Err(HarnessError::NoServices {
                example: (*example).to_owned(),
            });
        };
        services.extend(found);
    }
    for service in &mut services {
        let name = service
            .get("system_name")
            .and_then(Value::as_str)
            .unwrap_or("api")
            .to_owned();
        if let Some(proxy) = service.get_mut("proxy").and_then(Value::as_object_mut) {
            proxy.insert(
                "api_backend".into(),
                Value::String(format!("http://{upstream}/{name}")),
            );
        }
    }
    Ok(serde_json::json!({ "services": services }))
}

/// Loads a configuration document into the FilterConfig the filter receives.
pub fn filter_config(doc: &Value) -> Result<FilterConfig> {
    let loaded = tollgate::load(doc.to_string().as_bytes());
    match loaded.config {
        Some(config) if loaded.compiled.is_some() => Ok(config),
        _ => Err(HarnessError::InvalidConfig {
            errors: loaded.diagnostics.errors().cloned().collect(),
        }),
    }
}

/// Envoy in front of the echo upstream, with tollgate calling the control service at
/// `control`. Stops Envoy and the upstream when dropped.
pub struct Gateway {
    pub envoy: Envoy,
    pub echo: Echo,
    pub port: u16,
    pub client: Client,
    pub bootstrap: String,
}

/// The node id of the tests' Envoy, which debug answers report as `X-3scale-hostname`.
pub const NODE_ID: &str = "tollgate-e2e";

impl Gateway {
    /// Starts the echo upstream and Envoy for `examples`; `tweak` may change the FilterConfig
    /// (e.g. the control-service timeout) before it is rendered.
    pub fn start(
        examples: &[&str],
        control: SocketAddr,
        tweak: impl FnOnce(&mut FilterConfig),
    ) -> Result<Self> {
        Self::serve(
            |upstream| local_services(examples, upstream),
            control,
            tweak,
            |_| {},
        )
    }

    /// Starts the echo upstream and Envoy for the 3scale document `services` writes for the
    /// upstream's address. The bootstrap is `generate envoy`'s with `--backend-url
    /// http://<control>` and `--node-id` [`NODE_ID`], unless `options` changes them.
    pub fn serve(
        services: impl FnOnce(SocketAddr) -> Result<Value>,
        control: SocketAddr,
        tweak: impl FnOnce(&mut FilterConfig),
        options: impl FnOnce(&mut EnvoyOptions),
    ) -> Result<Self> {
        let echo = Echo::start()?;
        let mut config = filter_config(&services(echo.addr)?)?;
        tweak(&mut config);
        let mut generate = EnvoyOptions::new(tollgate_wasm()?);
        generate.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        generate.admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        generate.backend_url = Some(format!("http://{control}"));
        generate.node_id = Some(NODE_ID.to_owned());
        options(&mut generate);
        let bootstrap = render(&config, &generate)?;
        let envoy = Envoy::start(&bootstrap, generate.admin.port(), TEST_WORKERS)?;
        let port = generate.listen.port();
        Ok(Self {
            envoy,
            echo,
            port,
            client: Client::new(port, Duration::from_secs(10)),
            bootstrap,
        })
    }

    pub fn send(&self, request: &Request<'_>) -> Result<Answer> {
        self.client.send(request)
    }

    /// The value of one of Envoy's counters (`/stats`), 0 when absent.
    pub fn counter(&self, name: &str) -> Result<u64> {
        let stats = self.envoy.admin("/stats?usedonly")?;
        Ok(stats
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }
}

/// One request the control service received, from its `/_tollgate/requests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The `Host` it named.
    pub host: Option<String>,
    /// The raw target, still percent-encoded.
    pub path_and_query: String,
}

/// What the control service at `control` received, oldest first.
pub fn received(control: SocketAddr) -> Result<Vec<Received>> {
    let url = format!("http://{control}/_tollgate/requests");
    let what = format!("GET {url}");
    let body = ureq::get(&url)
        .call()
        .map_err(HarnessError::http(&what))?
        .body_mut()
        .read_to_string()
        .map_err(HarnessError::http(&what))?;
    let list: Vec<Value> = serde_json::from_str(&body).map_err(|source| HarnessError::Json {
        what: format!("parsing {url}"),
        source,
    })?;
    Ok(list
        .iter()
        .map(|r| Received {
            host: r["host"].as_str().map(str::to_owned),
            path_and_query: r["path_and_query"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// The example files the tests and the demo serve.
pub const EXAMPLES: [&str; 2] = ["examples/sendgrid.json", "examples/twitter.json"];

/// The example control-service data.
pub fn control_data() -> Result<String> {
    let path = workspace().join("examples/control.yaml");
    std::fs::read_to_string(&path).map_err(HarnessError::io(format!("reading {}", path.display())))
}
