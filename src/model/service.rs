//! One service of the model: what its requests are matched against, where they go, how
//! the control service is asked about them and what the client gets when they are refused.

use crate::backend::answer::ControlAnswer;
use crate::backend::{self, percent, AuthrepRequest};
use crate::config::location::ErrorKind;
use crate::config::{BackendVersion, ControlServiceAuthKind, ErrorResponseConfig, Secret};
use crate::credentials::{CredentialSource, Credentials};
use crate::index::{MetricIndex, RuleIndex, ServiceIndex};
use crate::rules::RuleSet;
use crate::url::HttpUrl;

use super::cache::CachePolicy;
use super::decision::{Outcome, Reply, Response};
use super::limiter::Limiter;

/// An error answer, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u16,
    pub content_type: Box<str>,
    pub body: Box<str>,
}

impl From<&ErrorResponseConfig> for ErrorResponse {
    fn from(c: &ErrorResponseConfig) -> Self {
        Self {
            status: c.status,
            content_type: c.content_type.as_str().into(),
            body: c.body.as_str().into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct ServiceErrors {
    pub(super) auth_missing: ErrorResponse,
    pub(super) auth_failed: ErrorResponse,
    pub(super) no_match: ErrorResponse,
    pub(super) limits_exceeded: ErrorResponse,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub(super) name: Box<str>,
    /// `usage%5B<name>%5D`, ready for the control-service query.
    pub(super) usage_key: Box<str>,
}

impl Metric {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `usage%5B<name>%5D`, ready for the control-service query.
    pub fn usage_key(&self) -> &str {
        &self.usage_key
    }
}

/// Where requests of a service go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub(super) api_backend: Option<HttpUrl>,
    pub(super) hostname_rewrite: Option<Box<str>>,
    pub(super) secret_token: Option<Secret>,
}

impl Upstream {
    /// The API's base URL; `None`: APIcast answers 404 with an empty body after authorizing.
    pub fn api_backend(&self) -> Option<&HttpUrl> {
        self.api_backend.as_ref()
    }

    /// `Host` sent upstream instead of the `api_backend` host.
    pub fn hostname_rewrite(&self) -> Option<&str> {
        self.hostname_rewrite.as_deref()
    }

    /// The `Host` the upstream request carries: `hostname_rewrite`, else the `api_backend` host.
    pub fn host_header(&self) -> Option<String> {
        match (&self.hostname_rewrite, &self.api_backend) {
            (Some(h), _) => Some(h.to_string()),
            (None, Some(url)) => Some(url.host_header()),
            (None, None) => None,
        }
    }
}

/// One service, validated and precomputed.
#[derive(Debug, Clone)]
pub struct Service {
    pub(super) index: ServiceIndex,
    pub(super) id: Box<str>,
    pub(super) name: Box<str>,
    /// Whether requests are authorized with the control service (else forwarded as they are).
    pub(super) authorizes: bool,
    pub(super) backend_version: Option<BackendVersion>,
    /// `None`: calls carry no token.
    pub(super) auth_kind: Option<ControlServiceAuthKind>,
    /// Empty when calls carry no token.
    pub(super) auth_value: Secret,
    pub(super) backend_endpoint: Option<HttpUrl>,
    pub(super) backend_host: Option<Box<str>>,
    pub(super) upstream: Upstream,
    pub(super) control_authority: Box<str>,
    /// The hosts this service serves, normalised, without those an earlier service claimed.
    pub(super) domains: Box<[Box<str>]>,
    pub(super) credentials: CredentialSource,
    pub(super) errors: ServiceErrors,
    pub(super) rules: RuleSet,
    /// Metrics by id; ids follow name order, so usage sorted by id is sorted by name.
    pub(super) metrics: Vec<Metric>,
    /// Local limits, checked in order after the rules and before the control service.
    pub(super) limiters: Box<[Limiter]>,
    /// Whether responses carry `RateLimit-*` headers.
    pub(super) rate_limit_headers: bool,
    /// How authorizations are cached and usage reported.
    pub(super) cache: CachePolicy,
    /// `service_id=…&<auth>=…`, encoded once.
    pub(super) service_params: String,
}

impl Service {
    /// Position in [`super::Compiled::services`].
    pub fn index(&self) -> ServiceIndex {
        self.index
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// 3scale's `system_name`; may be empty.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether requests are authorized with the control service; `false`: they are forwarded
    /// upstream as they are ([`crate::Verdict::Forward`]).
    pub fn authorizes(&self) -> bool {
        self.authorizes
    }

    /// `None`: the service has none, so no request has credentials.
    pub fn backend_version(&self) -> Option<BackendVersion> {
        self.backend_version
    }

    /// How the gateway authenticates itself to the control service; `None`: it sends no
    /// token.
    pub fn auth_kind(&self) -> Option<ControlServiceAuthKind> {
        self.auth_kind
    }

    /// Where the control service is, when the configuration says.
    pub fn backend_endpoint(&self) -> Option<&HttpUrl> {
        self.backend_endpoint.as_ref()
    }

    /// Overrides the `Host` of control-service calls.
    pub fn backend_host(&self) -> Option<&str> {
        self.backend_host.as_deref()
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// `:authority` of control-service calls: the operator's `control_service.authority`,
    /// else `backend.host`, else the host of `backend.endpoint` (or of the control service
    /// the others name), else the cluster's name.
    pub fn control_authority(&self) -> &str {
        &self.control_authority
    }

    /// Sets [`Service::control_authority`] once the gateway's control service is known: the
    /// operator's `authority` (the URL the cluster really targets) wins, as APIcast's
    /// `BACKEND_ENDPOINT_OVERRIDE` wins over `backend.host`; a service that names no control
    /// service of its own is sent to the one `agreed` on.
    pub(super) fn settle_control_authority(
        &mut self,
        authority: Option<&str>,
        agreed: Option<&HttpUrl>,
        cluster: &str,
    ) {
        let host = self.backend_host.as_deref().filter(|h| !h.is_empty());
        self.control_authority = match (authority, host, self.backend_endpoint.as_ref(), agreed) {
            (Some(a), ..) => a.into(),
            (None, Some(h), ..) => h.into(),
            // APIcast names the endpoint's bare host, without its port (backend_client.lua).
            (None, None, Some(url), _) | (None, None, None, Some(url)) => url.host.as_str().into(),
            (None, None, None, None) => cluster.into(),
        };
    }

    /// The hosts this service serves (lower-case, without port or trailing dot), in
    /// configuration order, without those an earlier service claimed first.
    pub fn domains(&self) -> &[Box<str>] {
        &self.domains
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Metrics by id, in name order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Local limits, in configuration order.
    pub fn limiters(&self) -> &[Limiter] {
        &self.limiters
    }

    /// Whether responses carry `RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub fn rate_limit_headers(&self) -> bool {
        self.rate_limit_headers
    }

    /// `service_id=…&<service_token|provider_key>=…`, encoded: how every call names the service.
    pub fn service_params(&self) -> &str {
        &self.service_params
    }

    /// How this service's authorizations are cached and its usage reported.
    pub fn cache(&self) -> &CachePolicy {
        &self.cache
    }

    pub fn error(&self, kind: ErrorKind) -> &ErrorResponse {
        match kind {
            ErrorKind::AuthMissing => &self.errors.auth_missing,
            ErrorKind::AuthFailed => &self.errors.auth_failed,
            ErrorKind::NoMatch => &self.errors.no_match,
            ErrorKind::LimitsExceeded => &self.errors.limits_exceeded,
        }
    }

    pub fn metric_name(&self, id: MetricIndex) -> &str {
        self.metrics.get(id.as_usize()).map_or("", |m| &m.name)
    }

    /// What the client gets once the control service has answered: `None` lets the request
    /// through; otherwise the service's error, with `Retry-After` for exceeded limits. An
    /// unavailable control service is an auth failure for now (caching modes come later).
    pub fn reply_for(&self, answer: ControlAnswer) -> (Outcome, Option<Reply<'_>>) {
        let (outcome, kind, retry_after) = match answer {
            ControlAnswer::Authorized => return (Outcome::Authorized, None),
            ControlAnswer::LimitsExceeded { retry_after } => (
                Outcome::LimitsExceeded,
                ErrorKind::LimitsExceeded,
                retry_after,
            ),
            ControlAnswer::Denied => (Outcome::AuthFailed, ErrorKind::AuthFailed, None),
            ControlAnswer::Unavailable => {
                (Outcome::ControlServiceError, ErrorKind::AuthFailed, None)
            }
        };
        let e = self.error(kind);
        let reply = Reply {
            response: Response {
                status: e.status,
                content_type: &e.content_type,
                body: &e.body,
            },
            retry_after,
        };
        (outcome, Some(reply))
    }

    /// Appends the authrep call's path and query for this request to `out`.
    pub fn write_authrep(
        &self,
        credentials: &Credentials<'_>,
        usage: &[(MetricIndex, i64)],
        out: &mut String,
    ) {
        self.write_auth_call(backend::AuthCall::Authrep, credentials, usage, out);
    }

    /// Appends the path and query of an authrep or authorize call for this request to `out`.
    pub fn write_auth_call(
        &self,
        call: backend::AuthCall,
        credentials: &Credentials<'_>,
        usage: &[(MetricIndex, i64)],
        out: &mut String,
    ) {
        let mut pairs = usage.iter().filter_map(|&(m, delta)| {
            self.metrics
                .get(m.as_usize())
                .map(|metric| (&*metric.usage_key, delta))
        });
        backend::write_authrep(
            AuthrepRequest {
                call,
                // Without a version no request has credentials, so no call is written.
                version: self.backend_version.unwrap_or(BackendVersion::UserKey),
                service_params: &self.service_params,
                credentials,
                usage: &mut pairs,
            },
            out,
        );
    }

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
        matched_rules: &[RuleIndex],
        usage: &[(MetricIndex, i64)],
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
            if let Some(m) = self.metrics.get(metric.as_usize()) {
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
        let d = compiled.decide(&view, crate::time::Timestamp::default(), &mut scratch);
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
