//! The compiled model: every service, validated and precomputed, and the gateway-wide
//! settings. Only [`compile`] makes one, so a [`Compiled`] is always a configuration that
//! passed every check; its fields are read through methods.

pub mod cache;
pub mod compiler;
pub mod decision;
pub mod gateway;
pub mod limiter;
pub mod service;

pub use compiler::compile;
pub use service::{ErrorResponse, Metric, Service, Upstream};

use crate::args::RequestArgs;
use crate::credentials::Sources;
use crate::index::ServiceIndex;
use crate::path;
use crate::request::{any_header_contains, Headers, RequestView};
use crate::rules::Evaluated;
use crate::service::HostIndex;
use crate::time::Timestamp;
use crate::url::HttpUrl;
use decision::{request_line_len, Decision, DenyReason, Scratch, Verdict};

/// Everything the filter needs at request time, built once at configure time.
#[derive(Debug, Clone)]
pub struct Compiled {
    services: Vec<Service>,
    hosts: HostIndex,
    request_body_max_bytes: usize,
    /// Longest request line answered (method, target, `HTTP/1.1`, CRLF); longer gets 414.
    request_line_max_bytes: usize,
    /// The Envoy cluster control-service calls go to.
    control_cluster: Box<str>,
    control_timeout_ms: u32,
    /// The control service every service that names one agrees on.
    control_url: Option<HttpUrl>,
}

const METHODS_WITH_BODY: [&[u8]; 3] = [b"POST", b"PUT", b"PATCH"];
const URLENCODED: &[u8] = b"application/x-www-form-urlencoded";

impl Compiled {
    /// Every service, in configuration order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn service(&self, index: ServiceIndex) -> Option<&Service> {
        self.services.get(index.as_usize())
    }

    pub fn service_for_authority(&self, authority: &[u8]) -> Option<&Service> {
        self.hosts.lookup(authority).and_then(|i| self.service(i))
    }

    /// urlencoded request bodies longer than this are not read for arguments or credentials.
    pub fn request_body_max_bytes(&self) -> usize {
        self.request_body_max_bytes
    }

    /// The longest request line answered (method, target, `HTTP/1.1`, CRLF); longer gets 414.
    pub fn request_line_max_bytes(&self) -> usize {
        self.request_line_max_bytes
    }

    /// The Envoy cluster control-service calls go to.
    pub fn control_cluster(&self) -> &str {
        &self.control_cluster
    }

    /// How long a control-service call may take.
    pub fn control_timeout_ms(&self) -> u32 {
        self.control_timeout_ms
    }

    /// What a proxy configuration generator renders: virtual hosts, upstream and
    /// control-service targets, rules. Validated when this model was compiled.
    pub fn gateway(&self) -> gateway::Gateway<'_> {
        gateway::Gateway::new(self)
    }

    /// Decides one request. `scratch` receives the normalised path, matched rules and usage.
    ///
    /// `now` is the host's clock: local limits and the authorization cache decide by it.
    pub fn decide<'c, 'r>(
        &'c self,
        req: &RequestView<'r>,
        _now: Timestamp,
        scratch: &mut Scratch,
    ) -> Decision<'c, 'r> {
        scratch.rules.matched.clear();
        scratch.rules.usage.clear();
        scratch.trim_after_large_decision();
        let deny = |service, credentials, reason| Decision {
            service,
            credentials,
            verdict: Verdict::Deny(reason),
        };
        if request_line_len(req.method, req.target) > self.request_line_max_bytes {
            scratch.path.clear();
            return deny(None, None, DenyReason::UriTooLong);
        }
        let matched_path = match path::normalize(req.target, &mut scratch.path) {
            Ok(p) => p,
            Err(why) => return deny(None, None, DenyReason::BadRequest(why)),
        };
        let Some(service) = self.service_for_authority(req.authority) else {
            return deny(None, None, DenyReason::UnknownService);
        };
        if !service.authorizes {
            return Decision {
                service: Some(service),
                credentials: None,
                verdict: Verdict::Forward,
            };
        }
        let args = RequestArgs {
            query: path::raw_query(req.target),
            body: self.body_args(req),
        };
        let credentials = service.credentials.extract(Sources {
            headers: req.headers,
            query: args.query,
            body: args.body,
        });
        let Some(credentials) = credentials else {
            return deny(Some(service), None, DenyReason::AuthMissing);
        };
        let evaluated = service
            .rules
            .evaluate(req.method, matched_path, &args, &mut scratch.rules);
        if evaluated == Evaluated::Exhausted {
            return deny(Some(service), Some(credentials), DenyReason::MatchLimit);
        }
        if scratch.rules.usage.is_empty() {
            return deny(Some(service), Some(credentials), DenyReason::NoMatch);
        }
        Decision {
            service: Some(service),
            credentials: Some(credentials),
            verdict: Verdict::Authorize,
        }
    }

    /// Whether the request's body can change the decision, so a proxy should wait for it:
    /// POST, PUT or PATCH with an urlencoded `Content-Type`, to a service that reads
    /// credentials from the query (the body is their fallback) or has query conditions.
    pub fn wants_body(&self, method: &[u8], authority: &[u8], headers: &dyn Headers) -> bool {
        if self.request_body_max_bytes == 0 || !METHODS_WITH_BODY.contains(&method) {
            return false;
        }
        let Some(service) = self.service_for_authority(authority) else {
            return false;
        };
        service.authorizes
            && (service.credentials.reads_body() || service.rules.has_conditions())
            && any_header_contains(headers, b"content-type", URLENCODED)
    }

    /// The urlencoded body, when APIcast would read its arguments: POST, PUT or PATCH with a
    /// `Content-Type` containing `application/x-www-form-urlencoded`, and not larger than the
    /// configured buffer (APIcast ignores a body it had to spool to disk).
    fn body_args<'r>(&self, req: &RequestView<'r>) -> Option<&'r [u8]> {
        let body = req.body?;
        if body.len() > self.request_body_max_bytes || !METHODS_WITH_BODY.contains(&req.method) {
            return None;
        }
        any_header_contains(req.headers, b"content-type", URLENCODED).then_some(body)
    }
}
