//! One request's life in the gateway, from its headers to its end, without I/O.
//!
//! A binding feeds a [`RequestFlow`] the events its host delivers (request headers, body,
//! trailers, the control service's answer or failure, the stream's end) and carries out the
//! [`Action`] each returns. Everything the gateway decides lives here, so every binding
//! behaves the same and the whole flow is tested natively:
//!
//! ```text
//! headers ─┬─ body can change the decision ─▶ Pause … body end / trailers ─▶ ReadBody ─▶ on_body ─┐
//!          └──────────────────────────────────────────────────────────────────────────────────┴▶ decide
//! decide ─┬─ denied ─▶ Reply(service error)
//!         └─ authorize ─▶ Call(authrep) … on_call_answer ─┬─ authorized ─▶ Forward(edits)
//!                                       / on_call_failed  └─ refused or unavailable ─▶ Reply
//! ```

pub mod batch;
#[cfg(test)]
mod batch_tests;
pub mod cache;
#[cfg(test)]
mod cache_tests;
pub mod fakes;
pub mod limiting;
#[cfg(test)]
mod limiting_tests;
pub mod outbox;
pub mod seams;
#[cfg(test)]
mod tests;

use std::mem;

use crate::backend::answer::{self, AnswerHeaders, ControlAnswer};
use crate::backend::AuthCall;
use crate::backend::{OPTIONS_HEADER, OPTIONS_VALUE};
use crate::credentials::Credentials;
use crate::forward::{DEBUG_HEADER, SECRET_TOKEN_HEADER};
use crate::index::{MetricIndex, RuleIndex, ServiceIndex};
use crate::model::decision::{Outcome, Reply, Scratch, Verdict};
use crate::model::Compiled;
use crate::pairs::HeaderMap;
use crate::request::RequestView;

use cache::{FlightKey, Joined, ReportPlan, ReportTicket};
use limiting::{LimitInput, LimitVerdict, RateInfo};
use outbox::{CallMethod, Outgoing, Ticket};
use seams::{CacheEvent, Effects, Level};

/// Room for a worker call's path and query, so writing one allocates once.
const CALL_PATH_CAPACITY: usize = 512;

/// The name a gateway gives itself in `X-3scale-hostname` when the host has none.
pub const DEFAULT_NODE_NAME: &str = "tollgate";

/// The compiled configuration and what a binding learns about its host once, at configure
/// time: everything requests share.
#[derive(Debug)]
pub struct Runtime {
    model: Compiled,
    node_name: Box<str>,
    /// Tells this configuration's worker state from another's in a VM that serves several.
    id: u64,
}

/// The next [`Runtime::id`].
static NEXT_RUNTIME_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Runtime {
    /// `node_name` is the host's name for this gateway (Envoy's node id), if it has one.
    pub fn new(model: Compiled, node_name: Option<&[u8]>) -> Self {
        let node_name = match node_name {
            Some(n) if !n.is_empty() => String::from_utf8_lossy(n).into(),
            _ => DEFAULT_NODE_NAME.into(),
        };
        let id = NEXT_RUNTIME_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Runtime {
            model,
            node_name,
            id,
        }
    }

    /// Unique among the runtimes of this process: a VM may serve several configurations
    /// (root contexts), which share its [`Workspace`].
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn model(&self) -> &Compiled {
        &self.model
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }
}

/// Working memory requests borrow in turn (one per single-threaded VM): once grown, deciding
/// and building calls allocate nothing.
#[derive(Debug, Default)]
pub struct Workspace {
    decision: Scratch,
    call_path: String,
    limits: limiting::LimitBuffers,
    worker: Worker,
}

/// What the worker keeps across requests for the cache and reports.
#[derive(Debug, Default)]
struct Worker {
    cache_key: Vec<u8>,
    cache: cache::CacheBuffers,
    /// The calls this worker's misses wait on.
    flights: cache::Flights,
    /// Cached requests' usage still to report.
    reports: cache::Reports,
    /// Batched services' answers this worker read, until they expire.
    memo: cache::Memo,
    /// This worker's part in batched reporting.
    flusher: batch::Flusher,
    /// Calls for the worker, to send from the root context.
    outbox: Vec<Outgoing>,
}

impl Workspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls queued for the worker since the last time: send each and report its answer
    /// with [`on_outgoing_answer`].
    pub fn take_outgoing(&mut self) -> std::vec::Drain<'_, Outgoing> {
        self.worker.outbox.drain(..)
    }

    /// The oldest queued call, to send.
    pub fn pop_outgoing(&mut self) -> Option<Outgoing> {
        if self.worker.outbox.is_empty() {
            None
        } else {
            Some(self.worker.outbox.remove(0))
        }
    }

    /// The decision's working memory (the matched rules and usage of the last decision).
    pub fn decision(&self) -> &Scratch {
        &self.decision
    }
}

/// A call to the control service: `GET <path>` to `cluster`, with `Host: <authority>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlCall<'a> {
    /// The host's name for where control-service calls go (an Envoy cluster).
    pub cluster: &'a str,
    pub authority: &'a str,
    /// `/transactions/authrep.xml?…`, every value percent-encoded.
    pub path: &'a str,
    pub timeout_ms: u32,
}

impl<'a> ControlCall<'a> {
    /// The call's headers, pseudo-headers first.
    pub fn headers(&self) -> [(&'a str, &'a str); 4] {
        [
            (":method", "GET"),
            (":path", self.path),
            (":authority", self.authority),
            (OPTIONS_HEADER, OPTIONS_VALUE),
        ]
    }
}

/// What changes on the request before it goes upstream: the debug header never leaves, and
/// the secret-token header is the service's (or absent), never the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamEdits<'a> {
    pub secret_token: Option<&'a str>,
    /// What the client sent of the headers removed: a header it did not send costs no host
    /// call to remove.
    pub sent: SentHeaders,
}

/// Which of the headers the gateway never lets through the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SentHeaders {
    /// `X-3scale-Debug`.
    pub debug: bool,
    /// `X-3scale-proxy-secret-token`.
    pub secret_token: bool,
}

impl UpstreamEdits<'_> {
    /// Removed from every forwarded request (when the client sent it).
    pub const DEBUG: &'static str = DEBUG_HEADER;
    /// The header set to [`UpstreamEdits::secret_token`] (removed when there is none).
    pub const SECRET_TOKEN: &'static str = SECRET_TOKEN_HEADER;
}

/// What a binding does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Let this phase go on untouched (nothing of ours is pending).
    Continue,
    /// Hold the request: more body is coming, or the control service has the call.
    Pause,
    /// The body is complete: read what the host buffered and pass it to
    /// [`RequestFlow::on_body`].
    ReadBody,
    /// Send this call, hold the request, and report the answer with
    /// [`RequestFlow::on_call_answer`] (or [`RequestFlow::on_call_failed`] if it cannot be sent).
    Call(ControlCall<'a>),
    /// Hold the request until the call for this key answers (one call per key per worker):
    /// the binding then passes the answer of [`on_outgoing_answer`] to
    /// [`RequestFlow::on_flight_answer`] of every request that joined it.
    Join(FlightKey),
    /// Answer the client; the request goes no further. The headers of
    /// [`RequestFlow::on_response_headers`] (the debug headers, after a call) go with it.
    Reply(Reply<'a>),
    /// Apply the edits and let the request go upstream (resume it if it was held).
    Forward(UpstreamEdits<'a>),
}

/// Where a request is.
#[derive(Debug, Default)]
enum State {
    /// Nothing seen yet.
    #[default]
    Start,
    /// Held for its body; the headers are kept (a host stops serving them once the request
    /// goes on, and reading them once is cheaper anyway).
    WaitingForBody(HeaderMap),
    /// The control service has the call.
    Calling(Pending),
    /// Waiting for the call its key's first miss made.
    Joined(Box<Joiner>),
    /// Forwarded or answered: later events pass through.
    Done,
}

/// What an authorization keeps while the control service answers.
#[derive(Debug)]
struct Pending {
    service: ServiceIndex,
    /// The tightest local limit, for `RateLimit-*` headers.
    rate: Option<RateInfo>,
    /// Only for a client that asked for the debug headers.
    debug: Option<Box<DebugCapture>>,
}

/// A miss waiting on its key's call.
#[derive(Debug)]
struct Joiner {
    pending: Pending,
    flight: FlightKey,
    /// This request's call it is (its usage went out with it, in authrep mode).
    leader: bool,
    key: Box<[u8]>,
    credentials: Credentials<'static>,
    usage: Vec<(MetricIndex, i64)>,
}

#[derive(Debug)]
struct DebugCapture {
    credentials: Credentials<'static>,
    matched: Vec<RuleIndex>,
    usage: Vec<(MetricIndex, i64)>,
}

/// The gateway's side of one request.
#[derive(Debug, Default)]
pub struct RequestFlow {
    state: State,
    response_headers: Vec<(&'static str, String)>,
    /// Seen when the request was decided.
    sent: SentHeaders,
}

const METHOD: &[u8] = b":method";
const AUTHORITY: &[u8] = b":authority";
const HOST: &[u8] = b"host";
const PATH: &[u8] = b":path";
const CONTENT_LENGTH: &[u8] = b"content-length";
const STATUS: &[u8] = b":status";
/// apisonator's `limit_headers` extension: what is left of the tightest 3scale limit.
const LIMIT_REMAINING: &str = "3scale-limit-remaining";

impl RequestFlow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the control service has this request's call.
    pub fn is_calling(&self) -> bool {
        matches!(self.state, State::Calling(_) | State::Joined(_))
    }

    /// The request headers arrived. `end_of_stream`: no body follows.
    pub fn on_request_headers<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        headers: HeaderMap,
        end_of_stream: bool,
        effects: Effects<'_>,
    ) -> Action<'a> {
        if !matches!(self.state, State::Start) {
            return Action::Continue;
        }
        let model = &runtime.model;
        let known = Known::find(&headers);
        // APIcast reads no body larger than its buffer, so a request announcing one is
        // decided at once.
        let too_large = known
            .content_length
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|n| n > model.request_body_max_bytes());
        if !end_of_stream && !too_large && model.wants_body(known.method, known.authority, &headers)
        {
            self.state = State::WaitingForBody(headers);
            return Action::Pause;
        }
        self.decide(runtime, workspace, &headers, &known, None, effects)
    }

    /// Body data arrived: `buffered` bytes so far.
    pub fn on_request_body<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        buffered: usize,
        end_of_stream: bool,
        effects: Effects<'_>,
    ) -> Action<'a> {
        match &self.state {
            // The answer decides; letting this phase go on would send the request upstream
            // before it.
            State::Calling(_) | State::Joined(_) => Action::Pause,
            State::WaitingForBody(_) if buffered > runtime.model.request_body_max_bytes() => {
                // APIcast ignores a body larger than its buffer.
                self.decide_held(runtime, workspace, None, effects)
            }
            State::WaitingForBody(_) if end_of_stream => Action::ReadBody,
            State::WaitingForBody(_) => Action::Pause,
            State::Start | State::Done => Action::Continue,
        }
    }

    /// Trailers arrived: the body (if any) is complete.
    pub fn on_request_trailers(&mut self) -> Action<'static> {
        match self.state {
            State::Calling(_) | State::Joined(_) => Action::Pause,
            State::WaitingForBody(_) => Action::ReadBody,
            State::Start | State::Done => Action::Continue,
        }
    }

    /// The body the host buffered, after [`Action::ReadBody`]; `None` if it could not be read
    /// (the request is then decided without it, as APIcast does without a body).
    pub fn on_body<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        body: Option<&[u8]>,
        effects: Effects<'_>,
    ) -> Action<'a> {
        match self.state {
            State::WaitingForBody(_) => self.decide_held(runtime, workspace, body, effects),
            State::Calling(_) | State::Joined(_) => Action::Pause,
            State::Start | State::Done => Action::Continue,
        }
    }

    /// The control service answered with these headers (`None`: the call failed without an
    /// answer).
    pub fn on_call_answer<'a>(
        &mut self,
        runtime: &'a Runtime,
        answer: Option<&HeaderMap>,
        effects: Effects<'_>,
    ) -> Action<'a> {
        // Only the request's own call answers here (a request waiting on its key's call is
        // told by `on_flight_answer`).
        if !matches!(self.state, State::Calling(_)) {
            return Action::Continue;
        }
        let State::Calling(pending) = mem::replace(&mut self.state, State::Done) else {
            return Action::Continue;
        };
        let read = ReadAnswer::of(answer);
        self.settle(
            runtime,
            pending,
            read.answer,
            read.status,
            read.limits,
            effects,
        )
    }

    /// The call this request joined answered: `outcome` is what [`on_outgoing_answer`]
    /// returned for it.
    pub fn on_flight_answer<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        outcome: &FlightOutcome,
        effects: Effects<'_>,
    ) -> Action<'a> {
        if !matches!(&self.state, State::Joined(j) if j.flight == outcome.flight) {
            return Action::Continue;
        }
        let State::Joined(joiner) = mem::replace(&mut self.state, State::Done) else {
            return Action::Continue;
        };
        let Joiner {
            pending,
            flight,
            leader,
            key,
            credentials,
            usage,
        } = *joiner;
        let Some(service) = runtime.model.service(pending.service) else {
            return Action::Reply(Reply::INTERNAL_ERROR);
        };
        let answer = outcome.settled.answer;
        if answer == ControlAnswer::Authorized {
            // The call reported the leader's usage only when it was an authrep that answered.
            let reported =
                leader && service.cache().batching().is_none() && !outcome.settled.unreported;
            if !reported {
                workspace.worker.report_cached(
                    runtime.id,
                    service,
                    flight.hash,
                    &key,
                    &credentials,
                    &usage,
                    effects,
                );
            }
        }
        // The miss itself was counted when the call went out; a stale or assumed answer is
        // counted once, for the call.
        if leader && outcome.settled.event != CacheEvent::Miss {
            effects.counters.cache(outcome.settled.event);
        }
        self.settle(
            runtime,
            pending,
            answer,
            outcome.status,
            outcome.limits,
            effects,
        )
    }

    /// The call could not be sent (the host refused it: an unknown cluster, say).
    pub fn on_call_failed<'a>(&mut self, runtime: &'a Runtime, effects: Effects<'_>) -> Action<'a> {
        if !matches!(self.state, State::Calling(_)) {
            return Action::Continue;
        }
        let State::Calling(pending) = mem::replace(&mut self.state, State::Done) else {
            return Action::Continue;
        };
        self.settle(
            runtime,
            pending,
            ControlAnswer::Unavailable,
            None,
            None,
            effects,
        )
    }

    /// The response headers are on their way to the client (the upstream's, or a reply of
    /// ours): these are added to them, once.
    pub fn on_response_headers(&mut self) -> Vec<(&'static str, String)> {
        mem::take(&mut self.response_headers)
    }

    /// The stream ended (the client went away, or the request is complete). A late answer
    /// to its call is ignored.
    pub fn on_stream_end(&mut self) {
        self.state = State::Done;
    }

    fn decide_held<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        body: Option<&[u8]>,
        effects: Effects<'_>,
    ) -> Action<'a> {
        let State::WaitingForBody(headers) = mem::replace(&mut self.state, State::Done) else {
            return Action::Continue;
        };
        let known = Known::find(&headers);
        self.decide(runtime, workspace, &headers, &known, body, effects)
    }

    fn decide<'a>(
        &mut self,
        runtime: &'a Runtime,
        workspace: &'a mut Workspace,
        headers: &HeaderMap,
        known: &Known<'_>,
        body: Option<&[u8]>,
        effects: Effects<'_>,
    ) -> Action<'a> {
        self.state = State::Done;
        self.sent = SentHeaders {
            debug: known.debug.is_some(),
            secret_token: known.secret_token,
        };
        let model = &runtime.model;
        let view = RequestView {
            method: known.method,
            authority: known.authority,
            target: known.path,
            headers,
            body,
        };
        let Workspace {
            decision: scratch,
            call_path,
            limits,
            worker,
        } = workspace;
        let decision = model.decide(&view, effects.clock.now(), scratch);
        let mut rate = None;
        if let (Some(service), Verdict::Authorize | Verdict::Forward) =
            (decision.service, decision.verdict)
        {
            if !service.limiters().is_empty() {
                let input = LimitInput {
                    service,
                    credentials: decision.credentials.as_ref(),
                    headers,
                    usage: scratch.usage(),
                };
                match limiting::check(&input, effects, limits) {
                    LimitVerdict::Admitted(info) => rate = info,
                    LimitVerdict::Limited {
                        retry_after,
                        status,
                        info,
                    } => {
                        effects.counters.increment(Outcome::RateLimited);
                        if service.rate_limit_headers() {
                            self.response_headers.extend(info.headers());
                        }
                        let e = service.error(crate::config::ErrorKind::LimitsExceeded);
                        return Action::Reply(Reply {
                            response: crate::model::decision::Response {
                                status: status.unwrap_or(e.status),
                                content_type: &e.content_type,
                                body: &e.body,
                            },
                            retry_after,
                        });
                    }
                }
            }
        }
        match decision.verdict {
            // No apicast policy: no call, and no secret token (APIcast's apicast policy sets
            // it), so the client's is removed too.
            Verdict::Forward => {
                effects.counters.increment(Outcome::Forwarded);
                if let Some(info) =
                    rate.filter(|_| decision.service.is_some_and(|s| s.rate_limit_headers()))
                {
                    self.response_headers.extend(info.headers());
                }
                Action::Forward(UpstreamEdits {
                    secret_token: None,
                    sent: self.sent,
                })
            }
            Verdict::Deny(reason) => {
                effects.counters.increment(reason.outcome());
                let reply = decision
                    .response()
                    .map_or(Reply::INTERNAL_ERROR, |response| Reply {
                        response,
                        retry_after: None,
                    });
                Action::Reply(reply)
            }
            Verdict::Authorize => {
                let (Some(service), Some(credentials)) = (decision.service, decision.credentials)
                else {
                    effects.log.log(
                        Level::Error,
                        format_args!("an authorization without its service or credentials"),
                    );
                    return Action::Reply(Reply::INTERNAL_ERROR);
                };
                let debug_requested = known.debug.is_some_and(|v| service.debug_requested(v));
                let pending = Pending {
                    service: service.index(),
                    rate,
                    debug: None,
                };
                let asked = AuthRequest {
                    service,
                    credentials: &credentials,
                    scratch,
                    debug_requested,
                };
                if let Some(action) =
                    self.authorize_cached(runtime, worker, &asked, pending, effects)
                {
                    return action;
                }
                call_path.clear();
                service.write_authrep(&credentials, scratch.usage(), call_path);
                let debug = debug_capture(debug_requested, &credentials, scratch);
                self.state = State::Calling(Pending {
                    service: service.index(),
                    rate,
                    debug,
                });
                Action::Call(ControlCall {
                    cluster: model.control_cluster(),
                    authority: service.control_authority(),
                    path: call_path,
                    timeout_ms: model.control_timeout_ms(),
                })
            }
        }
    }

    /// The cache's part of an authorization: a fresh answer settles the request at once (an
    /// authorized one queues its report); otherwise the request joins its key's call. `None`:
    /// the service keeps no cache, or the key cannot be cached (or shares a hash with another
    /// key's call): the request makes its own call.
    fn authorize_cached<'a>(
        &mut self,
        runtime: &'a Runtime,
        worker: &mut Worker,
        asked: &AuthRequest<'_, '_>,
        pending: Pending,
        effects: Effects<'_>,
    ) -> Option<Action<'a>> {
        let AuthRequest {
            service,
            credentials,
            scratch,
            debug_requested,
        } = *asked;
        let policy = service.cache();
        if !policy.caches() {
            return None;
        }
        if !cache::write_key(service, credentials, scratch.usage(), &mut worker.cache_key) {
            effects.counters.cache(CacheEvent::Uncacheable);
            return None;
        }
        let key = worker.cache_key.as_slice();
        let hash = cache::key_hash(policy, key);
        let now = effects.clock.now().as_nanos();
        let at = (runtime.id, service.index());
        let found = match policy.batching() {
            None => cache::lookup(policy, effects, key, hash, &mut worker.cache)
                .filter(|e| e.is_fresh(now)),
            Some(_) => worker.memo.get(at, hash, key, now).or_else(|| {
                let e = cache::lookup(policy, effects, key, hash, &mut worker.cache)
                    .filter(|e| e.is_fresh(now))?;
                worker.memo.put(at, hash, key, e);
                Some(e)
            }),
        };
        if let Some(entry) = found {
            if debug_requested {
                self.response_headers.extend(service.debug_headers(
                    credentials,
                    scratch.matched_rules(),
                    scratch.usage(),
                    &runtime.node_name,
                ));
            }
            let answer = match entry.kind {
                cache::Kind::Authorized => {
                    effects.counters.cache(CacheEvent::Hit);
                    // The key is lent out of the buffer the report's bookkeeping sits next to.
                    let key = std::mem::take(&mut worker.cache_key);
                    worker.report_cached(
                        runtime.id,
                        service,
                        hash,
                        &key,
                        credentials,
                        scratch.usage(),
                        effects,
                    );
                    worker.cache_key = key;
                    ControlAnswer::Authorized
                }
                cache::Kind::Denied => {
                    effects.counters.cache(CacheEvent::DeniedHit);
                    ControlAnswer::Denied
                }
                cache::Kind::LimitsExceeded => {
                    effects.counters.cache(CacheEvent::DeniedHit);
                    ControlAnswer::LimitsExceeded {
                        retry_after: cache::retry_after(entry, now),
                    }
                }
            };
            return Some(self.settle(runtime, pending, answer, Some(200), None, effects));
        }
        let flight = FlightKey {
            runtime: runtime.id,
            service: service.index(),
            hash,
        };
        let leader = match worker.flights.join(flight, key) {
            Joined::Collision => return None,
            Joined::Leader => true,
            Joined::Follower => false,
        };
        if leader {
            effects.counters.cache(CacheEvent::Miss);
            let call = match policy.batching() {
                Some(_) => AuthCall::Authorize,
                None => AuthCall::Authrep,
            };
            let mut path = String::with_capacity(CALL_PATH_CAPACITY);
            service.write_auth_call(call, credentials, scratch.usage(), &mut path);
            // Requests wait on it: ahead of the background reports and flushes (a binding
            // sends a bounded number per callback), behind earlier such calls.
            let ahead = worker
                .outbox
                .iter()
                .take_while(|o| matches!(o.ticket, Ticket::Flight(_)))
                .count();
            worker.outbox.insert(
                ahead,
                Outgoing {
                    service: service.index(),
                    method: CallMethod::Get,
                    path,
                    body: Vec::new(),
                    ticket: Ticket::Flight(flight),
                },
            );
        } else {
            effects.counters.cache(CacheEvent::Joined);
        }
        self.state = State::Joined(Box::new(Joiner {
            pending: Pending {
                debug: debug_capture(debug_requested, credentials, scratch),
                ..pending
            },
            flight,
            leader,
            key: worker.cache_key.as_slice().into(),
            credentials: credentials.clone().into_owned(),
            usage: scratch.usage().to_vec(),
        }));
        Some(Action::Join(flight))
    }

    fn settle<'a>(
        &mut self,
        runtime: &'a Runtime,
        pending: Pending,
        answer: ControlAnswer,
        status: Option<u16>,
        limits: Option<RateInfo>,
        effects: Effects<'_>,
    ) -> Action<'a> {
        let Some(service) = runtime.model.service(pending.service) else {
            return Action::Reply(Reply::INTERNAL_ERROR);
        };
        let (outcome, reply) = service.reply_for(answer);
        effects.counters.increment(outcome);
        if outcome == Outcome::ControlServiceError {
            match status {
                Some(s) => effects.log.log(
                    Level::Warn,
                    format_args!(
                        "control service unavailable for service {} (status {s})",
                        service.id()
                    ),
                ),
                None => effects.log.log(
                    Level::Warn,
                    format_args!(
                        "control service unavailable for service {} (no answer)",
                        service.id()
                    ),
                ),
            }
        }
        // APIcast sets them once credentials and usage are known, before asking: whatever
        // the control service answers (a 403, a 429, none at all), the client gets them.
        if let Some(debug) = pending.debug {
            self.response_headers.extend(service.debug_headers(
                &debug.credentials,
                &debug.matched,
                &debug.usage,
                &runtime.node_name,
            ));
        }
        if let Some(reply) = reply {
            return Action::Reply(reply);
        }
        if service.rate_limit_headers() {
            let threescale = limits.filter(|l| l.reset_secs > 0);
            let tightest = match (pending.rate, threescale) {
                (a, Some(b)) => Some(RateInfo::tighter(a, b)),
                (a, None) => a,
            };
            if let Some(info) = tightest {
                self.response_headers.extend(info.headers());
            }
        }
        Action::Forward(UpstreamEdits {
            secret_token: service.secret_token(),
            sent: self.sent,
        })
    }
}

/// An authorization the decision asks for.
#[derive(Clone, Copy)]
struct AuthRequest<'a, 'r> {
    service: &'a crate::model::Service,
    credentials: &'a Credentials<'r>,
    scratch: &'a Scratch,
    debug_requested: bool,
}

/// What the debug headers need after a call, for a client that asked for them.
fn debug_capture(
    requested: bool,
    credentials: &Credentials<'_>,
    scratch: &Scratch,
) -> Option<Box<DebugCapture>> {
    requested.then(|| {
        Box::new(DebugCapture {
            credentials: credentials.clone().into_owned(),
            matched: scratch.matched_rules().to_vec(),
            usage: scratch.usage().to_vec(),
        })
    })
}

/// What an answer to a call says, read once.
struct ReadAnswer {
    answer: ControlAnswer,
    status: Option<u16>,
    /// APIcast's rate_limit_headers policy: the control service's own limit, if it says.
    limits: Option<RateInfo>,
}

impl ReadAnswer {
    fn of(answer: Option<&HeaderMap>) -> Self {
        let status = answer.and_then(|h| h.get(STATUS)).and_then(parse_status);
        let interpreted = match answer {
            Some(h) => answer::interpret(
                status,
                AnswerHeaders {
                    rejection_reason: h.get(answer::REJECTION_REASON.as_bytes()),
                    limit_reset: h.get(answer::LIMIT_RESET.as_bytes()),
                    limit_max_value: h.get(answer::LIMIT_MAX_VALUE.as_bytes()),
                },
            ),
            None => ControlAnswer::Unavailable,
        };
        let limits = answer.and_then(|h| {
            let number = |name: &str| {
                h.get(name.as_bytes())
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            Some(RateInfo {
                limit: u64::try_from(number(answer::LIMIT_MAX_VALUE)?.max(0)).unwrap_or(0),
                remaining: u64::try_from(number(LIMIT_REMAINING)?.max(0)).unwrap_or(0),
                reset_secs: u64::try_from(number(answer::LIMIT_RESET)?.max(0)).unwrap_or(0),
            })
        });
        ReadAnswer {
            answer: interpreted,
            status,
            limits,
        }
    }
}

/// What the call a key's misses waited on came to, for each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightOutcome {
    pub flight: FlightKey,
    settled: cache::Settled,
    status: Option<u16>,
    limits: Option<RateInfo>,
}

impl Worker {
    /// Sends (or queues) the report of a request admitted without its own authrep: a cache
    /// hit, or a request that waited on another's call.
    #[allow(clippy::too_many_arguments)]
    fn report_cached(
        &mut self,
        runtime_id: u64,
        service: &crate::model::Service,
        hash: u64,
        key: &[u8],
        credentials: &Credentials<'_>,
        usage: &[(MetricIndex, i64)],
        effects: Effects<'_>,
    ) {
        if service.cache().batching().is_some() {
            // Counted (queued or dropped) and logged by the batcher.
            let _ = batch::add_usage(service, credentials, usage, effects);
            return;
        }
        match self
            .reports
            .offer(runtime_id, service, hash, key, credentials, usage)
        {
            ReportPlan::Send(ticket) => send_report(service, ticket, &mut self.outbox, effects),
            ReportPlan::Coalesced => effects.counters.cache(CacheEvent::Coalesced),
            ReportPlan::Dropped => {
                effects.counters.cache(CacheEvent::ReportDropped);
                cache::log_dropped(service, effects);
            }
        }
    }
}

fn send_report(
    service: &crate::model::Service,
    ticket: ReportTicket,
    outbox: &mut Vec<Outgoing>,
    effects: Effects<'_>,
) {
    effects.counters.cache(CacheEvent::Report);
    let mut path = String::with_capacity(CALL_PATH_CAPACITY);
    service.write_authrep(&ticket.credentials, &ticket.usage, &mut path);
    outbox.push(Outgoing {
        service: service.index(),
        method: CallMethod::Get,
        path,
        body: Vec::new(),
        ticket: Ticket::Report(ticket),
    });
}

/// A worker's call answered (`answer` `None`: it failed, or could not be sent). For the call
/// of a key's misses, returns what to tell each request that joined it.
pub fn on_outgoing_answer(
    runtime: &Runtime,
    workspace: &mut Workspace,
    ticket: Ticket,
    answer: Option<&HeaderMap>,
    effects: Effects<'_>,
) -> Option<FlightOutcome> {
    let model = &runtime.model;
    match ticket {
        Ticket::Flight(flight) => {
            let key = workspace.worker.flights.land(flight)?;
            let service = model.service(flight.service)?;
            let read = ReadAnswer::of(answer);
            let settled = cache::settle(
                service,
                effects,
                &key,
                flight.hash,
                read.answer,
                &mut workspace.worker.cache,
            );
            Some(FlightOutcome {
                flight,
                settled,
                status: read.status,
                limits: read.limits,
            })
        }
        Ticket::Report(ticket) => {
            let service = model.service(ticket.service)?;
            let read = ReadAnswer::of(answer);
            // The answer refreshes the entry, or evicts it, as the mode says.
            let _ = cache::settle(
                service,
                effects,
                &ticket.key,
                ticket.hash,
                read.answer,
                &mut workspace.worker.cache,
            );
            let ok = read.answer != ControlAnswer::Unavailable;
            if !ok {
                effects.counters.cache(CacheEvent::ReportFailed);
                match read.status {
                    Some(s) => effects.log.log(
                        Level::Warn,
                        format_args!(
                            "service {}: a background report failed (status {s}); it is retried",
                            service.id()
                        ),
                    ),
                    None => effects.log.log(
                        Level::Warn,
                        format_args!(
                            "service {}: a background report got no answer; it is retried",
                            service.id()
                        ),
                    ),
                }
            }
            let now = effects.clock.now().as_nanos();
            match workspace.worker.reports.answered(service, ticket, ok, now) {
                Ok(Some(next)) => send_report(service, next, &mut workspace.worker.outbox, effects),
                Ok(None) => {}
                Err(_) => {
                    effects.counters.cache(CacheEvent::ReportDropped);
                    cache::log_dropped(service, effects);
                }
            }
            None
        }
        Ticket::Flush(ticket) => {
            let status = answer.and_then(|h| h.get(STATUS)).and_then(parse_status);
            workspace
                .worker
                .flusher
                .on_flush_answer(model, ticket, status, effects);
            None
        }
    }
}

/// The root context's timer fired: batched reports that are due, and retries of failed
/// background reports.
pub fn on_tick(runtime: &Runtime, workspace: &mut Workspace, effects: Effects<'_>) {
    let model = &runtime.model;
    let worker = &mut workspace.worker;
    worker.flusher.on_tick(model, effects, &mut worker.outbox);
    let mut due = Vec::new();
    worker
        .reports
        .due(effects.clock.now().as_nanos(), runtime.id, &mut due);
    for ticket in due {
        if let Some(service) = model.service(ticket.service) {
            send_report(service, ticket, &mut worker.outbox, effects);
        }
    }
}

/// How often a configuration needs [`on_tick`]: `None` when nothing waits for a timer.
pub fn tick_period_ms(model: &Compiled) -> Option<u32> {
    let caches = model
        .services()
        .iter()
        .any(|s| s.authorizes() && s.cache().caches());
    batch::tick_period_ms(model).or(caches.then_some(1000))
}

/// The headers the flow itself reads, found in one pass (the first of each, as NGINX takes
/// them; `:authority`, else `Host`).
struct Known<'h> {
    method: &'h [u8],
    authority: &'h [u8],
    path: &'h [u8],
    content_length: Option<&'h [u8]>,
    debug: Option<&'h [u8]>,
    secret_token: bool,
}

impl<'h> Known<'h> {
    fn find(headers: &'h HeaderMap) -> Self {
        let (mut method, mut authority, mut host, mut path) = (None, None, None, None);
        let (mut content_length, mut debug) = (None, None);
        let mut secret_token = false;
        for (name, value) in headers.iter() {
            let slot = match name {
                METHOD => &mut method,
                AUTHORITY => &mut authority,
                PATH => &mut path,
                n if n.eq_ignore_ascii_case(HOST) => &mut host,
                n if n.eq_ignore_ascii_case(CONTENT_LENGTH) => &mut content_length,
                n if n.eq_ignore_ascii_case(DEBUG_HEADER.as_bytes()) => &mut debug,
                n if n.eq_ignore_ascii_case(SECRET_TOKEN_HEADER.as_bytes()) => {
                    secret_token = true;
                    continue;
                }
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        Known {
            method: method.unwrap_or_default(),
            authority: authority.or(host).unwrap_or_default(),
            path: path.unwrap_or_default(),
            content_length,
            debug,
            secret_token,
        }
    }
}

/// A `:status` value: three digits, nothing else.
fn parse_status(value: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(value).ok()?;
    if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
