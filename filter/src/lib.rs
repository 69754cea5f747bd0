//! tollgate as a proxy-wasm filter (`tollgate.wasm`), the only crate that imports `proxy_wasm`.
//!
//! Glue only: the core decides ([`tollgate::Compiled::decide`]), interprets the control
//! service's answer ([`tollgate::backend::answer`]) and says what to change on the way
//! ([`tollgate::forward`]); this crate moves bytes between Envoy and the core.
//!
//! Never panic (a panic traps the VM and Envoy then fails requests): only the `hostcalls`
//! functions that return a `Result` are used, header values are read as bytes, and every
//! status is handled. Credentials and tokens are never logged.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use tollgate::backend::answer::{self, AnswerHeaders};
use tollgate::backend::{OPTIONS_HEADER, OPTIONS_VALUE};
use tollgate::forward::{DEBUG_HEADER, SECRET_TOKEN_HEADER};
use tollgate::{
    Compiled, Credentials, MetricIndex, Outcome, RequestView, RuleIndex, Scratch, ServiceIndex,
    Severity, Verdict,
};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::default()));
}}

thread_local! {
    // Decisions borrow their working memory; one per VM (a VM is single-threaded) means no
    // per-request allocation once it has grown.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// What every request context shares: the compiled configuration and the outcome counters.
struct Filter {
    compiled: Compiled,
    /// Counter ids by [`Outcome::ALL`] index, when Envoy accepted them.
    counters: Vec<Option<u32>>,
}

impl Filter {
    fn count(&self, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome);
        if let Some(Some(id)) = index.and_then(|i| self.counters.get(i)) {
            // A counter that cannot be incremented is not worth failing a request for.
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

fn log(level: LogLevel, message: &str) {
    // Logging is best effort: a host refusing a log line must not take the request down.
    let _ = hostcalls::log(level, message);
}

#[derive(Default)]
struct Root {
    filter: Option<Rc<Filter>>,
}

impl Context for Root {}

impl RootContext for Root {
    /// Runs for the canary VM, the main thread and every worker, and again after a reload:
    /// everything here is idempotent.
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                log(LogLevel::Error, "the plugin configuration is empty");
                return false;
            }
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        let loaded = tollgate::load(&bytes);
        for d in loaded.diagnostics.iter() {
            let level = match d.severity {
                Severity::Error => LogLevel::Error,
                Severity::Warning => LogLevel::Warn,
            };
            log(level, &format!("configuration {}", redact(&d.to_string())));
        }
        let Some(compiled) = loaded.compiled else {
            log(
                LogLevel::Error,
                &format!(
                    "configuration rejected ({} errors)",
                    loaded.diagnostics.errors().count()
                ),
            );
            return false;
        };
        let counters = Outcome::ALL
            .iter()
            .map(|o| {
                let name = format!("tollgate.{}", o.name());
                match hostcalls::define_metric(MetricType::Counter, &name) {
                    Ok(id) => Some(id),
                    Err(status) => {
                        log(LogLevel::Warn, &format!("no counter {name}: {status:?}"));
                        None
                    }
                }
            })
            .collect();
        log(
            LogLevel::Info,
            &format!("configured {} services", compiled.services().len()),
        );
        self.filter = Some(Rc::new(Filter { compiled, counters }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            filter: self.filter.clone(),
            headers: Vec::new(),
            waiting_for_body: false,
            pending: None,
            debug_headers: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Configuration errors may quote values (a mistyped token, say): logs show none of them.
/// serde writes strings in double quotes and numbers in backticks after their type.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                let number_follows =
                    c == '`' && (out.ends_with("integer ") || out.ends_with("floating point "));
                if c == '"' || number_follows {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// A request waiting for the control service.
struct Pending {
    service: ServiceIndex,
    credentials: Credentials<'static>,
    matched: Vec<RuleIndex>,
    usage: Vec<(MetricIndex, i64)>,
    debug: bool,
}

struct Request {
    filter: Option<Rc<Filter>>,
    /// The request headers, copied: Envoy stops serving them once the request goes on.
    headers: Vec<(String, Vec<u8>)>,
    waiting_for_body: bool,
    pending: Option<Pending>,
    /// Added to the response for a client that asked with the service's token.
    debug_headers: Vec<(&'static str, String)>,
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let (Some(filter), Some(pending)) = (self.filter.clone(), self.pending.take()) else {
            return;
        };
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default()
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
        };
        let status = find(":status")
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        let answer = answer::interpret(
            status,
            AnswerHeaders {
                rejection_reason: find(answer::REJECTION_REASON),
                limit_reset: find(answer::LIMIT_RESET),
                limit_max_value: find(answer::LIMIT_MAX_VALUE),
            },
        );
        let Some(service) = filter.compiled.service(pending.service) else {
            return;
        };
        let (outcome, reply) = service.reply_for(answer);
        filter.count(outcome);
        if outcome == Outcome::ControlServiceError {
            log(
                LogLevel::Warn,
                &format!(
                    "control service unavailable for service {} (status {})",
                    service.id(),
                    status.map_or("none".to_owned(), |s| s.to_string())
                ),
            );
        }
        if let Some(reply) = reply {
            let retry_after = reply.retry_after.map(|s| s.to_string());
            let mut extra = Vec::new();
            if let Some(r) = retry_after.as_deref() {
                extra.push(("retry-after", r));
            }
            respond(reply.response, &extra);
            return;
        }
        forward_edits(service.secret_token());
        if pending.debug {
            self.debug_headers = service.debug_headers(
                &pending.credentials,
                &pending.matched,
                &pending.usage,
                &hostname(),
            );
        }
        if let Err(status) = hostcalls::resume_http_request() {
            log(
                LogLevel::Error,
                &format!("cannot resume the request: {status:?}"),
            );
        }
    }
}

/// The name of this gateway for `X-3scale-hostname`: Envoy's node id when it has one.
fn hostname() -> String {
    match hostcalls::get_property(vec!["node", "id"]) {
        Ok(Some(id)) if !id.is_empty() => String::from_utf8_lossy(&id).into_owned(),
        _ => "tollgate".to_owned(),
    }
}

/// The upstream gets the service's secret token (and never a client's version of it, nor
/// the debug header).
fn forward_edits(secret_token: Option<&str>) {
    let result =
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, DEBUG_HEADER).and_then(|()| {
            hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                SECRET_TOKEN_HEADER,
                secret_token,
            )
        });
    if let Err(status) = result {
        log(
            LogLevel::Error,
            &format!("cannot edit the upstream request: {status:?}"),
        );
    }
}

/// Sends a local reply with the service's status, content type and body.
fn respond(response: tollgate::Response<'_>, extra: &[(&str, &str)]) {
    let mut headers = vec![("content-type", response.content_type)];
    headers.extend_from_slice(extra);
    let body = (!response.body.is_empty()).then_some(response.body.as_bytes());
    if let Err(status) = hostcalls::send_http_response(u32::from(response.status), headers, body) {
        log(
            LogLevel::Error,
            &format!("cannot send the local reply: {status:?}"),
        );
    }
}

/// A local reply when the filter cannot work at all (no configuration, a host failure).
fn internal_error() -> Action {
    let _ = hostcalls::send_http_response(
        500,
        vec![("content-type", "text/plain; charset=utf-8")],
        None,
    );
    Action::Pause
}

impl Request {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// `:method` and `:authority` (else `Host`), empty when absent.
    fn method_and_authority(&self) -> (&[u8], &[u8]) {
        let method = self.header(":method").unwrap_or_default();
        let authority = self
            .header(":authority")
            .or_else(|| self.header("host"))
            .unwrap_or_default();
        (method, authority)
    }

    /// Decides the request and acts: a local reply, or a call to the control service.
    fn decide(&mut self, body: Option<&[u8]>) -> Action {
        let Some(filter) = self.filter.clone() else {
            return internal_error();
        };
        let (method, authority) = self.method_and_authority();
        let target = self.header(":path").unwrap_or_default();
        let view = RequestView {
            method,
            authority,
            target,
            headers: &self.headers,
            body,
        };
        let debug = self.header(DEBUG_HEADER);
        let decided = SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => plan(&filter, &view, debug, &mut scratch),
            // Cannot happen (nothing re-enters a decision), but never panic for it.
            Err(_) => plan(&filter, &view, debug, &mut Scratch::new()),
        });
        match decided {
            Plan::Reply(outcome) => {
                filter.count(outcome);
                Action::Pause
            }
            Plan::Call { path, pending } => self.call(&filter, &path, pending),
            Plan::Failed => internal_error(),
        }
    }

    fn call(&mut self, filter: &Filter, path: &str, pending: Pending) -> Action {
        let Some(service) = filter.compiled.service(pending.service) else {
            return internal_error();
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", service.control_authority()),
            (OPTIONS_HEADER, OPTIONS_VALUE),
        ];
        let timeout = Duration::from_millis(u64::from(filter.compiled.control_timeout_ms()));
        match hostcalls::dispatch_http_call(
            filter.compiled.control_cluster(),
            headers,
            None,
            vec![],
            timeout,
        ) {
            Ok(_token) => {
                self.pending = Some(pending);
                Action::Pause
            }
            Err(status) => {
                // Most likely an unknown cluster: the control service is unavailable.
                log(
                    LogLevel::Error,
                    &format!(
                        "cannot call the control service (cluster {}): {status:?}",
                        filter.compiled.control_cluster()
                    ),
                );
                let (outcome, reply) = service.reply_for(answer::ControlAnswer::Unavailable);
                filter.count(outcome);
                if let Some(reply) = reply {
                    respond(reply.response, &[]);
                }
                Action::Pause
            }
        }
    }
}

/// What a decision asks the filter to do.
enum Plan {
    /// A local reply was sent; count it.
    Reply(Outcome),
    /// Ask the control service.
    Call { path: String, pending: Pending },
    /// An authorization without its service or credentials: cannot happen, answered 500.
    Failed,
}

fn plan(
    filter: &Filter,
    view: &RequestView<'_>,
    debug: Option<&[u8]>,
    scratch: &mut Scratch,
) -> Plan {
    let decision = filter.compiled.decide(view, scratch);
    match decision.verdict {
        Verdict::Deny(reason) => {
            if let Some(response) = decision.response() {
                respond(response, &[]);
            }
            Plan::Reply(reason.outcome())
        }
        Verdict::Authorize => {
            let (Some(service), Some(credentials)) = (decision.service, decision.credentials)
            else {
                return Plan::Failed;
            };
            let mut path = String::with_capacity(256);
            service.write_authrep(&credentials, scratch.usage(), &mut path);
            let debug = debug.is_some_and(|v| service.debug_requested(v));
            Plan::Call {
                path,
                pending: Pending {
                    service: service.index(),
                    credentials: credentials.into_owned(),
                    matched: if debug {
                        scratch.matched_rules().to_vec()
                    } else {
                        Vec::new()
                    },
                    usage: if debug {
                        scratch.usage().to_vec()
                    } else {
                        Vec::new()
                    },
                    debug,
                },
            }
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => self.headers = headers,
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the request headers: {status:?}"),
                );
                return internal_error();
            }
        }
        let Some(filter) = self.filter.clone() else {
            return internal_error();
        };
        let (method, authority) = self.method_and_authority();
        let too_long = self
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > filter.compiled.request_body_max_bytes());
        if !end_of_stream
            && !too_long
            && filter.compiled.wants_body(method, authority, &self.headers)
        {
            // Decide when the body is in (urlencoded arguments may be credentials or match
            // query conditions).
            self.waiting_for_body = true;
            return Action::Pause;
        }
        self.decide(None)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_some() {
            // The authrep answer decides; returning Continue here would let the request go
            // upstream before it (headers only stopped iteration).
            return Action::Pause;
        }
        if !self.waiting_for_body {
            return Action::Continue;
        }
        let limit = self
            .filter
            .as_ref()
            .map_or(0, |f| f.compiled.request_body_max_bytes());
        if body_size > limit {
            // APIcast ignores a body larger than its buffer.
            self.waiting_for_body = false;
            return self.decide(None);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.waiting_for_body = false;
        match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                self.decide(Some(&body))
            }
            Err(status) => {
                log(
                    LogLevel::Warn,
                    &format!("cannot read the request body: {status:?}"),
                );
                self.decide(None)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.pending.is_some() {
            return Action::Pause;
        }
        if !self.waiting_for_body {
            return Action::Continue;
        }
        // The body ended with trailers: decide with what came.
        self.waiting_for_body = false;
        match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX) {
            Ok(body) => {
                let body = body.unwrap_or_default();
                self.decide(Some(&body))
            }
            Err(_) => self.decide(None),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.debug_headers) {
            if let Err(status) =
                hostcalls::add_map_value(MapType::HttpResponseHeaders, name, &value)
            {
                log(LogLevel::Warn, &format!("cannot add {name}: {status:?}"));
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn quoted_values_never_reach_logs() {
        assert_eq!(
            redact(r#"error: control_service_auth.value: invalid type: string "s3cret", expected"#),
            r#"error: control_service_auth.value: invalid type: string "…", expected"#
        );
        assert_eq!(redact("no quotes here"), "no quotes here");
        assert_eq!(
            redact("x: invalid type: integer `12345`, expected a string"),
            "x: invalid type: integer `…`, expected a string"
        );
        assert_eq!(
            redact("unknown field `surprise`"),
            "unknown field `surprise`"
        );
        assert_eq!(redact(r#"unclosed "abc"#), r#"unclosed ""#);
    }
}
