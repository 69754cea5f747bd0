//! 3scale proxy-configuration documents (the JSON the filter and the CLI load), built from
//! defaults that tests override only where they matter.

use serde_json::{json, Value};

/// The host a [`Service`] answers for unless told otherwise.
pub const HOST: &str = "api.example.com";

/// A mapping rule: `method pattern` counts `metric` by 1.
pub fn rule(method: &str, pattern: &str, metric: &str) -> Value {
    json!({"http_method": method, "pattern": pattern, "metric_system_name": metric, "delta": 1})
}

/// `{"services": [...]}`, the shape `tollgate::load` and the CLI read.
pub fn document(services: Vec<Value>) -> Value {
    json!({ "services": services })
}

/// One service of a 3scale document. Defaults: backend version 1 (user_key), a service token,
/// [`HOST`], an upstream on 127.0.0.1 and no rules.
#[derive(Debug, Clone)]
pub struct Service(Value);

impl Service {
    /// A service with id `id` and the defaults.
    pub fn new(id: u64) -> Self {
        Self(json!({
            "id": id,
            "backend_version": 1,
            "backend_authentication_type": "service_token",
            "backend_authentication_value": format!("st-{id}"),
            "proxy": {
                "hosts": [HOST],
                "api_backend": "http://127.0.0.1:1",
                "proxy_rules": [],
            }
        }))
    }

    /// Sets a top-level field (`backend_version`, `backend_authentication_value`, ...).
    pub fn field(mut self, name: &str, value: Value) -> Self {
        if let Some(map) = self.0.as_object_mut() {
            map.insert(name.to_owned(), value);
        }
        self
    }

    /// Sets a field of `proxy` (`credentials_location`, `api_backend`, ...).
    pub fn proxy(mut self, name: &str, value: Value) -> Self {
        if let Some(map) = self.0.get_mut("proxy").and_then(Value::as_object_mut) {
            map.insert(name.to_owned(), value);
        }
        self
    }

    /// The hosts it answers for.
    pub fn hosts(self, hosts: &[&str]) -> Self {
        self.proxy("hosts", json!(hosts))
    }

    /// Its mapping rules, in order.
    pub fn rules(self, rules: Vec<Value>) -> Self {
        self.proxy("proxy_rules", Value::Array(rules))
    }

    /// The service's JSON.
    pub fn build(self) -> Value {
        self.0
    }

    /// A document of this service alone, as bytes to load.
    pub fn document_bytes(self) -> Vec<u8> {
        document(vec![self.0]).to_string().into_bytes()
    }
}
