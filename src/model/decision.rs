//! `decide`: one request in, APIcast's decision out, in APIcast's order (reference §3.2):
//! the request target as NGINX parses it, the service by host, the credentials, the mapping
//! rules. What happens after (the control service's answer) belongs to the caller.

use std::fmt;

use crate::config::location::ErrorKind;
use crate::config::DEFAULT_ERROR_CONTENT_TYPE;
use crate::credentials::Credentials;
use crate::index::{MetricIndex, RuleIndex};
use crate::path::{BadPath, PathBuffers};
use crate::rules::MatchScratch;

use super::Service;

/// Why a request is answered without asking the control service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The request line is longer than `request_line_max_bytes`: NGINX's 414, before anything
    /// else is looked at.
    UriTooLong,
    /// NGINX would refuse the request target with 400.
    BadRequest(BadPath),
    /// Matching the path against the service's rules would cost more than the bound on one
    /// decision ([`crate::rules::MatchLimits`]): refused like a request line that is too
    /// long (414), rather than authorized with less usage than APIcast would count.
    MatchLimit,
    /// No service has the request's host: 404, empty body.
    UnknownService,
    /// The service's credentials are missing (401 by default).
    AuthMissing,
    /// No mapping rule matched, or only rules with delta 0 (404 by default).
    NoMatch,
}

impl DenyReason {
    /// A stable name for logs, stats and `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UriTooLong => "uri_too_long",
            DenyReason::BadRequest(_) => "bad_request",
            DenyReason::MatchLimit => "match_limit",
            DenyReason::UnknownService => "unknown_service",
            DenyReason::AuthMissing => "auth_missing",
            DenyReason::NoMatch => "no_match",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::UriTooLong => f.write_str("the request line is too long"),
            DenyReason::BadRequest(why) => write!(f, "bad request: {why}"),
            DenyReason::MatchLimit => {
                f.write_str("matching the path would cost more than the bound on one decision")
            }
            DenyReason::UnknownService => f.write_str("no service for this host"),
            DenyReason::AuthMissing => f.write_str("credentials missing"),
            DenyReason::NoMatch => f.write_str("no mapping rule matched"),
        }
    }
}

impl DenyReason {
    pub fn outcome(self) -> Outcome {
        match self {
            DenyReason::UriTooLong => Outcome::UriTooLong,
            DenyReason::BadRequest(_) => Outcome::BadRequest,
            DenyReason::MatchLimit => Outcome::MatchLimit,
            DenyReason::UnknownService => Outcome::UnknownService,
            DenyReason::AuthMissing => Outcome::AuthMissing,
            DenyReason::NoMatch => Outcome::NoMatch,
        }
    }
}

/// Every way a request ends, as counted in stats (`tollgate.<name>`) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Authorized,
    AuthMissing,
    AuthFailed,
    NoMatch,
    UnknownService,
    LimitsExceeded,
    /// The control service was unreachable, failed or timed out (the client gets the
    /// auth-failed error).
    ControlServiceError,
    BadRequest,
    UriTooLong,
    /// Refused because matching would cost more than the bound on one decision.
    MatchLimit,
    /// Forwarded without authorization: the service does not authorize with 3scale (its
    /// policy chain has no `apicast` policy).
    Forwarded,
    /// Refused by a local limiter, without asking the control service.
    RateLimited,
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
        Outcome::Authorized,
        Outcome::AuthMissing,
        Outcome::AuthFailed,
        Outcome::NoMatch,
        Outcome::UnknownService,
        Outcome::LimitsExceeded,
        Outcome::ControlServiceError,
        Outcome::BadRequest,
        Outcome::UriTooLong,
        Outcome::MatchLimit,
        Outcome::Forwarded,
        Outcome::RateLimited,
    ];

    /// The outcome's position in [`Outcome::ALL`] (its declaration order), for tables.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Authorized => "authorized",
            Outcome::AuthMissing => "auth_missing",
            Outcome::AuthFailed => "auth_failed",
            Outcome::NoMatch => "no_match",
            Outcome::UnknownService => "unknown_service",
            Outcome::LimitsExceeded => "limits_exceeded",
            Outcome::ControlServiceError => "control_service_error",
            Outcome::BadRequest => "bad_request",
            Outcome::UriTooLong => "uri_too_long",
            Outcome::MatchLimit => "match_limit",
            Outcome::Forwarded => "forwarded",
            Outcome::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the control service (authrep) with the credentials and usage.
    Authorize,
    /// Send the request upstream without asking anyone: the service does not authorize with
    /// 3scale (no `apicast` policy in its chain), so no credentials or rules were looked at.
    Forward,
    Deny(DenyReason),
}

/// The answer a client gets for a local denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'c> {
    pub status: u16,
    pub content_type: &'c str,
    pub body: &'c str,
}

/// A local answer after the control service: the error and, for exceeded limits, when to
/// retry (seconds, sent as `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'c> {
    pub response: Response<'c>,
    pub retry_after: Option<u64>,
}

impl Reply<'static> {
    /// The answer when the gateway itself cannot work (no configuration, a host failure).
    pub const INTERNAL_ERROR: Reply<'static> = Reply {
        response: Response {
            status: 500,
            content_type: "text/plain; charset=utf-8",
            body: "",
        },
        retry_after: None,
    };
}

impl Reply<'_> {
    /// The headers the client receives with this reply besides `:status` and
    /// `content-length`: its content type when it has a body, and `Retry-After` when it has
    /// one. Envoy drops the content type of a local reply without a body
    /// (`Utility::prepareLocalReply`), so the filter does not send it and `explain` does not
    /// show it; both read this one list. `digits` holds `Retry-After`'s value.
    pub fn headers<'a>(
        &'a self,
        digits: &'a mut [u8; 20],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        let content_type = (!self.response.body.is_empty())
            .then_some((&b"content-type"[..], self.response.content_type.as_bytes()));
        let retry = self
            .retry_after
            .map(|s| (&b"retry-after"[..], decimal(s, digits)));
        content_type.into_iter().chain(retry)
    }

    /// Serializes [`Reply::headers`] as a host's header map into `out`.
    pub fn encode_headers(&self, out: &mut Vec<u8>) {
        self.encode_headers_with(&[], out);
    }

    /// As [`Reply::encode_headers`], followed by `extra` (the debug headers a request asked
    /// for, from [`crate::runtime::RequestFlow::on_response_headers`]).
    pub fn encode_headers_with(&self, extra: &[(&'static str, String)], out: &mut Vec<u8>) {
        let mut digits = [0u8; 20];
        let extra = extra.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        crate::pairs::encode(self.headers(&mut digits).chain(extra), out);
    }
}

/// `n` in decimal, without allocating.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// What the gateway decided about one request. The matched rules and the usage are in the
/// [`Scratch`] the decision was made with.
#[derive(Debug, Clone)]
pub struct Decision<'c, 'r> {
    pub service: Option<&'c Service>,
    pub credentials: Option<Credentials<'r>>,
    pub verdict: Verdict,
}

impl<'c> Decision<'c, '_> {
    /// The local answer, for a denial.
    pub fn response(&self) -> Option<Response<'c>> {
        let Verdict::Deny(reason) = self.verdict else {
            return None;
        };
        let kind = match reason {
            DenyReason::UriTooLong | DenyReason::MatchLimit => return Some(URI_TOO_LONG),
            DenyReason::BadRequest(_) => return Some(plain(400)),
            DenyReason::UnknownService => return Some(plain(404)),
            DenyReason::AuthMissing => ErrorKind::AuthMissing,
            DenyReason::NoMatch => ErrorKind::NoMatch,
        };
        let e = self.service?.error(kind);
        Some(Response {
            status: e.status,
            content_type: &e.content_type,
            body: &e.body,
        })
    }
}

/// NGINX's own answer to a request line that does not fit its header buffer, byte for byte.
const URI_TOO_LONG: Response<'static> = Response {
    status: 414,
    content_type: "text/html",
    body: "<html>\r\n<head><title>414 Request-URI Too Large</title></head>\r\n<body>\r\n\
           <center><h1>414 Request-URI Too Large</h1></center>\r\n\
           <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
};

/// How long NGINX counts a request line: method, space, target, space, `HTTP/1.1`, CRLF.
pub fn request_line_len(method: &[u8], target: &[u8]) -> usize {
    method.len() + target.len() + " HTTP/1.1\r\n".len() + 1
}

/// An empty-bodied answer NGINX or APIcast gives before a service's own errors apply.
fn plain(status: u16) -> Response<'static> {
    Response {
        status,
        content_type: DEFAULT_ERROR_CONTENT_TYPE,
        body: "",
    }
}

/// Working memory reused across requests, so a decision allocates nothing once warmed up
/// (credentials decoded from a body or Basic auth are the exception).
///
/// Bounded: during a decision it holds about `6 × request_line_max_bytes` for the path (the
/// decoded and re-escaped copies; an escape can triple a raw byte), at most
/// [`crate::rules::trie::WalkLimits::DEFAULT`]'s cache for the matcher, and 4 bytes per
/// candidate rule. Each decision starts by giving back whatever the previous one grew beyond
/// [`SCRATCH_RETAIN_BYTES`] per buffer, so a worker keeps little after an oversized request.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    pub(super) path: PathBuffers,
    pub(super) rules: MatchScratch,
}

/// What a [`Scratch`] keeps per buffer between decisions.
pub const SCRATCH_RETAIN_BYTES: usize = 32 * 1024;

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Heap bytes held (for tests and benchmarks).
    pub fn capacity_bytes(&self) -> usize {
        self.path.capacity_bytes() + self.rules.capacity_bytes()
    }

    /// Gives back what an unusually large previous decision grew (a long path, a walk that
    /// built DFA states or stepped many positions); cheap to check otherwise.
    pub(super) fn trim_after_large_decision(&mut self) {
        if self.path.capacity_bytes() > 2 * SCRATCH_RETAIN_BYTES
            || self.rules.may_hold_more_than(SCRATCH_RETAIN_BYTES)
        {
            self.path.trim(SCRATCH_RETAIN_BYTES);
            self.rules.trim(SCRATCH_RETAIN_BYTES);
        }
    }

    /// What the last decision's matching spent.
    pub fn match_work(&self) -> crate::rules::trie::WalkWork {
        self.rules.work()
    }

    /// The rules' working memory, for what else it can tell (arguments read, regex work).
    pub fn rules(&self) -> &MatchScratch {
        &self.rules
    }

    /// The path the rules were matched against (normalised and re-escaped).
    pub fn matched_path(&self) -> &[u8] {
        self.path.matched()
    }

    /// The rules that matched, in evaluation order.
    pub fn matched_rules(&self) -> &[RuleIndex] {
        &self.rules.matched
    }

    /// `(metric, total)`, totals > 0, in metric-name order.
    pub fn usage(&self) -> &[(MetricIndex, i64)] {
        &self.rules.usage
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn outcome_indices_are_positions_in_all() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
    }
}
