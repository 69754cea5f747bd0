//! What changes on the way to the upstream and back (reference §4.1): the secret token the API
//! checks, the debug header that must not leak upstream, and APIcast's debug headers on the
//! response for a client that proved it knows the service's token.

use crate::backend::percent;
use crate::compile::Service;
use crate::credentials::Credentials;

/// Sent upstream with the service's `secret_token`, so the API can refuse traffic that did not
/// come through the gateway.
pub const SECRET_TOKEN_HEADER: &str = "x-3scale-proxy-secret-token";
/// A client sends this with the service's token to get the debug headers; never forwarded.
pub const DEBUG_HEADER: &str = "x-3scale-debug";

impl Service {
    /// The secret-token header value for the upstream request, if the service has one.
    pub fn secret_token(&self) -> Option<&str> {
        self.upstream.secret_token.as_ref().map(|t| t.expose())
    }

    /// Whether `X-3scale-Debug: <value>` asks for the debug headers: the value must equal the
    /// service's `backend_authentication_value`.
    pub fn debug_requested(&self, value: &[u8]) -> bool {
        let expected = self.auth_value.expose().as_bytes();
        !expected.is_empty() && value == expected
    }

    /// APIcast's debug response headers, in its order.
    pub fn debug_headers(
        &self,
        credentials: &Credentials<'_>,
        matched_rules: &[u32],
        usage: &[(u32, i64)],
        hostname: &str,
    ) -> Vec<(&'static str, String)> {
        let matched = matched_rules
            .iter()
            .map(|&id| self.rules.pattern(id))
            .collect::<Vec<_>>()
            .join(", ");
        let mut creds = String::new();
        for (name, value) in credentials.params() {
            if !creds.is_empty() {
                creds.push('&');
            }
            creds.push_str(name);
            creds.push('=');
            percent::encode_into(value, &mut creds);
        }
        let mut encoded_usage = String::new();
        for &(metric, delta) in usage {
            if let Some(m) = self.metrics.get(metric as usize) {
                if !encoded_usage.is_empty() {
                    encoded_usage.push('&');
                }
                encoded_usage.push_str(&m.usage_key);
                encoded_usage.push('=');
                encoded_usage.push_str(&delta.to_string());
            }
        }
        vec![
            ("x-3scale-matched-rules", header_safe(&matched)),
            ("x-3scale-credentials", creds),
            ("x-3scale-usage", encoded_usage),
            ("x-3scale-hostname", header_safe(hostname)),
            ("x-3scale-service-id", header_safe(&self.id)),
            ("x-3scale-service-name", header_safe(&self.name)),
        ]
    }
}

/// A header value cannot carry control characters (patterns and names come from the
/// configuration, which does not forbid them): those become spaces.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::{load, RequestView, Scratch};
    use serde_json::json;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn debug_headers_follow_apicast() {
        let config = json!({"services": [{
            "id": 42, "system_name": "words\napi", "backend_version": 1,
            "backend_authentication_type": "service_token",
            "backend_authentication_value": "tok",
            "proxy": {
                "api_backend": "http://127.0.0.1:1",
                "secret_token": "s3cret",
                "proxy_rules": [
                    {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1},
                    {"http_method": "GET", "pattern": "/w/{w}", "metric_system_name": "words", "delta": 2}
                ]
            }
        }]});
        let compiled = load(config.to_string().as_bytes()).compiled.unwrap();
        let headers: Vec<(&str, &str)> = vec![];
        let view = RequestView {
            method: b"GET",
            authority: b"localhost",
            target: b"/w/x?user_key=a%20b+c",
            headers: &headers,
            body: None,
        };
        let mut scratch = Scratch::new();
        let d = compiled.decide(&view, &mut scratch);
        let service = d.service.unwrap();
        assert_eq!(service.secret_token(), Some("s3cret"));
        assert!(service.debug_requested(b"tok"));
        assert!(!service.debug_requested(b"tok "));
        assert!(!service.debug_requested(b""));
        let h = service.debug_headers(
            d.credentials.as_ref().unwrap(),
            scratch.matched_rules(),
            scratch.usage(),
            "gw-1",
        );
        assert_eq!(
            h,
            vec![
                ("x-3scale-matched-rules", "/, /w/{w}".to_owned()),
                ("x-3scale-credentials", "user_key=a%2520b%2Bc".to_owned()),
                (
                    "x-3scale-usage",
                    "usage%5Bhits%5D=1&usage%5Bwords%5D=2".to_owned()
                ),
                ("x-3scale-hostname", "gw-1".to_owned()),
                ("x-3scale-service-id", "42".to_owned()),
                ("x-3scale-service-name", "words api".to_owned()),
            ]
        );
    }
}
