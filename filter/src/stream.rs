//! One HTTP stream: moves bytes between Envoy and the core's [`RequestFlow`] and carries out
//! the actions it returns. No decision is made here.

use std::rc::Rc;

use hashbrown::HashMap;
use tollgate::pairs::{self, HeaderMap};
use tollgate::runtime::cache::FlightKey;
use tollgate::runtime::outbox::{Outgoing, Ticket};
use tollgate::runtime::seams::Effects;
use tollgate::runtime::{
    on_outgoing_answer, Action, ControlCall, FlightOutcome, RequestFlow, UpstreamEdits, Workspace,
};
use tollgate::Compiled;
use tollgate::Reply;

use crate::effects::{log, HostClock, HostLog, HostPeer, HostStore};
use crate::host::{self, Buffer, Headers, HostError, LogLevel};
use crate::root::Configured;

/// Proxy-wasm's answers to a stream callback.
pub const CONTINUE: u32 = 0;
pub const PAUSE: u32 = 1;

/// What the streams of one VM share (a VM is single-threaded): working memory that, once
/// grown, makes deciding, replying and calling allocation-free, and the calls in flight.
#[derive(Default)]
pub struct Shared {
    pub workspace: Workspace,
    /// Serialized header maps on their way to the host.
    wire: Vec<u8>,
    /// The stream each call token belongs to (answers arrive on the root context).
    pub calls: HashMap<u32, u32>,
    /// The worker's own calls out, by token.
    pub outgoing: HashMap<u32, Ticket>,
    /// The streams waiting on each key's call.
    pub waiting: HashMap<FlightKey, Vec<u32>>,
    /// Calls that answered (failed to be sent) whose waiting streams are still to be told.
    pub landed: Vec<FlightOutcome>,
}

/// Calls sent in one go at most (each request queues at most one; answers one more).
const MAX_OUTGOING: usize = 64;

/// Sends every call the core queued for the worker. A call the host refuses is answered at
/// once as a failure; a key's call that lands that way goes to `shared.landed`.
pub fn send_outgoing(shared: &mut Shared, configured: &Configured) {
    let runtime = &configured.runtime;
    let fx = effects(configured);
    for _ in 0..MAX_OUTGOING {
        let Some(out) = shared.workspace.pop_outgoing() else {
            return;
        };
        match dispatch_outgoing(&mut shared.wire, runtime.model(), &out) {
            Ok(token) => {
                shared.outgoing.insert(token, out.ticket);
            }
            Err(e) => {
                host_failure(
                    &format!(
                        "cannot call the control service (cluster {})",
                        runtime.model().control_cluster()
                    ),
                    e,
                );
                if let Some(o) =
                    on_outgoing_answer(runtime, &mut shared.workspace, out.ticket, None, fx)
                {
                    shared.landed.push(o);
                }
            }
        }
    }
}

/// The answer to one of the worker's calls (`num_headers == 0`: no answer).
pub fn on_outgoing_answer_from_host(
    shared: &mut Shared,
    configured: &Configured,
    ticket: Ticket,
    num_headers: usize,
) {
    let answer = if num_headers == 0 {
        None
    } else {
        read_headers(Headers::CallResponse, "the control service's answer")
    };
    if let Some(o) = on_outgoing_answer(
        &configured.runtime,
        &mut shared.workspace,
        ticket,
        answer.as_ref(),
        effects(configured),
    ) {
        shared.landed.push(o);
    }
    send_outgoing(shared, configured);
}

/// The root's timer: the core's periodic work, and the calls it queues.
pub fn on_tick(shared: &mut Shared, configured: &Configured) {
    tollgate::runtime::on_tick(
        &configured.runtime,
        &mut shared.workspace,
        effects(configured),
    );
    send_outgoing(shared, configured);
}

fn dispatch_outgoing(
    wire: &mut Vec<u8>,
    model: &Compiled,
    out: &Outgoing,
) -> Result<u32, HostError> {
    pairs::encode(
        out.headers(model)
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        wire,
    );
    host::http_call(
        model.control_cluster(),
        wire,
        &out.body,
        &NO_TRAILERS,
        model.control_timeout_ms(),
    )
}

/// The trailers of a call: none, serialized.
const NO_TRAILERS: [u8; 4] = [0; 4];

pub struct Stream {
    configured: Option<Rc<Configured>>,
    flow: RequestFlow,
    /// The token of this stream's call while it is out.
    call: Option<u32>,
}

/// Where an action is carried out: it decides what "go on" means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request callback: go on by returning Continue.
    Request,
    /// In a call's answer: go on by resuming the held request.
    CallAnswer,
}

fn effects(configured: &Configured) -> Effects<'_> {
    Effects {
        clock: &HostClock,
        counters: &configured.counters,
        log: &HostLog,
        store: &HostStore,
        peer: &HostPeer,
    }
}

fn host_failure(what: &str, e: HostError) {
    log(LogLevel::Error, &format!("{what}: {e}"));
}

/// What the flow is told next.
enum Event {
    Headers(HeaderMap, bool),
    Body { buffered: usize, end: bool },
    Trailers,
    BodyRead(Option<Vec<u8>>),
    CallAnswer(Option<HeaderMap>),
    CallFailed,
    FlightAnswer(FlightOutcome),
}

/// An event leads to at most: read the body, decide, fail to call, reply.
const MAX_STEPS: usize = 4;

impl Stream {
    pub fn new(configured: Option<Rc<Configured>>) -> Self {
        Stream {
            configured,
            flow: RequestFlow::new(),
            call: None,
        }
    }

    /// The token of this stream's call, if one is out.
    pub fn call(&self) -> Option<u32> {
        self.call
    }

    pub fn on_request_headers(&mut self, id: u32, shared: &mut Shared, end_of_stream: bool) -> u32 {
        if self.configured.is_none() {
            log(
                LogLevel::Error,
                "a request arrived before any configuration",
            );
            return reply(&mut shared.wire, Reply::INTERNAL_ERROR);
        }
        match read_headers(Headers::Request, "the request headers") {
            Some(headers) => self.run(
                id,
                shared,
                Event::Headers(headers, end_of_stream),
                Phase::Request,
            ),
            None => reply(&mut shared.wire, Reply::INTERNAL_ERROR),
        }
    }

    pub fn on_request_body(&mut self, id: u32, shared: &mut Shared, size: usize, end: bool) -> u32 {
        let event = Event::Body {
            buffered: size,
            end,
        };
        self.run(id, shared, event, Phase::Request)
    }

    pub fn on_request_trailers(&mut self, id: u32, shared: &mut Shared) -> u32 {
        self.run(id, shared, Event::Trailers, Phase::Request)
    }

    pub fn on_response_headers(&mut self) -> u32 {
        for (name, value) in self.flow.on_response_headers() {
            if let Err(e) = host::add_header(Headers::Response, name, &value) {
                log(LogLevel::Warn, &format!("cannot add {name}: {e}"));
            }
        }
        CONTINUE
    }

    /// The control service answered (`num_headers == 0`: the call failed without an answer).
    pub fn on_call_answer(&mut self, id: u32, shared: &mut Shared, num_headers: usize) {
        self.call = None;
        if let Err(e) = host::set_effective_context(id) {
            // Nothing can reach this stream now; Envoy ends it at its idle timeout.
            host_failure("cannot act on the request the answer is for", e);
            self.flow.on_stream_end();
            return;
        }
        let answer = if num_headers == 0 {
            None
        } else {
            read_headers(Headers::CallResponse, "the control service's answer")
        };
        self.run(id, shared, Event::CallAnswer(answer), Phase::CallAnswer);
    }

    /// The call this stream's key waited on answered.
    pub fn on_flight_answer(&mut self, id: u32, shared: &mut Shared, outcome: FlightOutcome) {
        if let Err(e) = host::set_effective_context(id) {
            host_failure("cannot act on the request the answer is for", e);
            self.flow.on_stream_end();
            return;
        }
        self.run(id, shared, Event::FlightAnswer(outcome), Phase::CallAnswer);
    }

    pub fn on_done(&mut self) {
        self.flow.on_stream_end();
    }

    /// Tells the flow `event` and carries out what it answers, until the stream is held,
    /// goes on or is answered.
    fn run(&mut self, id: u32, shared: &mut Shared, event: Event, phase: Phase) -> u32 {
        let Some(configured) = self.configured.clone() else {
            return CONTINUE;
        };
        let result = self.run_flow(id, shared, &configured, event, phase);
        send_outgoing(shared, &configured);
        result
    }

    fn run_flow(
        &mut self,
        id: u32,
        shared: &mut Shared,
        configured: &Configured,
        mut event: Event,
        phase: Phase,
    ) -> u32 {
        let runtime = &configured.runtime;
        let fx = effects(configured);
        for _ in 0..MAX_STEPS {
            let action = match event {
                Event::Headers(headers, end) => {
                    self.flow
                        .on_request_headers(runtime, &mut shared.workspace, headers, end, fx)
                }
                Event::Body { buffered, end } => {
                    self.flow
                        .on_request_body(runtime, &mut shared.workspace, buffered, end, fx)
                }
                Event::Trailers => self.flow.on_request_trailers(),
                Event::BodyRead(body) => {
                    self.flow
                        .on_body(runtime, &mut shared.workspace, body.as_deref(), fx)
                }
                Event::CallAnswer(answer) => self.flow.on_call_answer(runtime, answer.as_ref(), fx),
                Event::CallFailed => self.flow.on_call_failed(runtime, fx),
                Event::FlightAnswer(outcome) => {
                    self.flow
                        .on_flight_answer(runtime, &mut shared.workspace, &outcome, fx)
                }
            };
            event = match action {
                Action::Continue => return CONTINUE,
                Action::Pause => return PAUSE,
                Action::Reply(r) => {
                    // The debug headers go with the reply itself, whether or not Envoy runs
                    // the response callbacks for it.
                    let debug = self.flow.on_response_headers();
                    return reply_with(&mut shared.wire, r, &debug);
                }
                Action::Forward(edits) => return forward(&mut shared.wire, edits, phase),
                Action::ReadBody => match host::buffer(Buffer::RequestBody, usize::MAX) {
                    Ok(body) => Event::BodyRead(Some(body)),
                    Err(e) => {
                        log(
                            LogLevel::Warn,
                            &format!("cannot read the request body: {e}"),
                        );
                        Event::BodyRead(None)
                    }
                },
                Action::Join(flight) => {
                    shared.waiting.entry(flight).or_default().push(id);
                    send_outgoing(shared, configured);
                    // The host refused the call, so it has answered already: this stream goes
                    // on in this callback; others that joined are woken by the caller.
                    let Some(outcome) = shared.landed.iter().copied().find(|o| o.flight == flight)
                    else {
                        return PAUSE;
                    };
                    if let Some(w) = shared.waiting.get_mut(&flight) {
                        w.retain(|s| *s != id);
                        if w.is_empty() {
                            shared.waiting.remove(&flight);
                            shared.landed.retain(|o| o.flight != flight);
                        }
                    }
                    Event::FlightAnswer(outcome)
                }
                Action::Call(call) => match dispatch(&mut shared.wire, call) {
                    Ok(token) => {
                        shared.calls.insert(token, id);
                        self.call = Some(token);
                        return PAUSE;
                    }
                    Err(e) => {
                        host_failure(
                            &format!("cannot call the control service (cluster {})", call.cluster),
                            e,
                        );
                        Event::CallFailed
                    }
                },
            };
        }
        log(LogLevel::Error, "the request flow did not settle");
        reply(&mut shared.wire, Reply::INTERNAL_ERROR)
    }
}

/// One header map from the host, read and checked; a failure is logged as `what`'s.
fn read_headers(which: Headers, what: &str) -> Option<HeaderMap> {
    match host::header_map(which).map(HeaderMap::parse) {
        Ok(Ok(headers)) => Some(headers),
        Ok(Err(e)) => {
            log(
                LogLevel::Error,
                &format!("the host sent malformed {what}: {e}"),
            );
            None
        }
        Err(e) => {
            host_failure(&format!("cannot read {what}"), e);
            None
        }
    }
}

fn dispatch(wire: &mut Vec<u8>, call: ControlCall<'_>) -> Result<u32, HostError> {
    let headers = call.headers();
    pairs::encode(
        headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        wire,
    );
    host::http_call(call.cluster, wire, &[], &NO_TRAILERS, call.timeout_ms)
}

/// Sends a local reply. If the host refuses it, the stream is reset rather than let through:
/// a request the gateway did not authorize never reaches the upstream.
fn reply(wire: &mut Vec<u8>, reply: Reply<'_>) -> u32 {
    reply_with(wire, reply, &[])
}

/// [`reply`], with `extra` headers.
fn reply_with(wire: &mut Vec<u8>, reply: Reply<'_>, extra: &[(&'static str, String)]) -> u32 {
    reply.encode_headers_with(extra, wire);
    if let Err(e) = host::send_local_response(reply.response.status, wire, reply.response.body) {
        host_failure("cannot send the local reply", e);
        if let Err(e) = host::close_request() {
            host_failure("cannot reset the request either", e);
        }
    }
    PAUSE
}

/// Applies the upstream edits and lets the request go on. If an edit fails, the request is
/// answered with 500 instead: the client's own secret-token header must not reach the API.
fn forward(wire: &mut Vec<u8>, edits: UpstreamEdits<'_>, phase: Phase) -> u32 {
    // Only what the client sent is removed: a header it did not send costs no host call.
    let removed = if edits.sent.debug {
        host::remove_header(Headers::Request, UpstreamEdits::DEBUG)
    } else {
        Ok(())
    };
    let edited = removed.and_then(|()| match edits.secret_token {
        Some(token) => host::replace_header(Headers::Request, UpstreamEdits::SECRET_TOKEN, token),
        None if edits.sent.secret_token => {
            host::remove_header(Headers::Request, UpstreamEdits::SECRET_TOKEN)
        }
        None => Ok(()),
    });
    if let Err(e) = edited {
        host_failure("cannot edit the upstream request", e);
        return reply(wire, Reply::INTERNAL_ERROR);
    }
    match phase {
        Phase::Request => CONTINUE,
        Phase::CallAnswer => {
            if let Err(e) = host::resume_request() {
                host_failure("cannot resume the request", e);
                return reply(wire, Reply::INTERNAL_ERROR);
            }
            CONTINUE
        }
    }
}
