//! One request's whole life through `runtime::RequestFlow`, with the events in any order a host
//! might deliver them: the flow must never panic, and what it asks for must make sense as the
//! filter carries it out:
//! - a call is asked for at most once (its own, or joining its key's), and its target is an
//!   authrep path;
//! - the request goes upstream (`Forward`) only after the control service answered 200;
//! - replies have a status from 200 to 599;
//! - after a reply or forwarding, request events pass through (`Continue`);
//! - the body is asked for (`ReadBody`) only while the flow is held for it.
//!
//! Input: the last byte says how many bytes before it (at most 24) are the event script; the
//! rest is a `decide` input (src/lib.rs), whose request becomes the header map and whose body is
//! what the host hands over when the flow asks for it.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use tollgate::pairs::{encode, HeaderMap};
use tollgate::runtime::fakes::FakeHost;
use tollgate::runtime::outbox::Ticket;
use tollgate::runtime::{on_outgoing_answer, Action, RequestFlow, Runtime, Workspace};
use tollgate_fuzz::{ConfigChoice, DecideInput};

thread_local! {
    static FIXED: Vec<(Runtime, Vec<String>)> = tollgate_fuzz::fixed_config_sources()
        .into_iter()
        .filter_map(|(name, text)| tollgate_fuzz::load(&name, text.as_bytes()))
        .map(|f| (Runtime::new(f.compiled, Some(b"fuzz")), f.hosts))
        .collect();
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::new());
}

const MAX_SCRIPT: usize = 24;

/// Control-service answers the script can pick.
const ANSWERS: [&[(&str, &str)]; 6] = [
    &[(":status", "200")],
    &[
        (":status", "409"),
        ("3scale-rejection-reason", "limits_exceeded"),
        ("3scale-limit-reset", "12"),
    ],
    &[
        (":status", "403"),
        ("3scale-rejection-reason", "user_key_invalid"),
    ],
    &[(":status", "503")],
    &[(":status", "2000")],
    &[("content-length", "0")],
];

fn header_map(pairs: &[(&[u8], &[u8])]) -> HeaderMap {
    let mut bytes = Vec::new();
    encode(pairs.iter().copied(), &mut bytes);
    HeaderMap::parse(bytes).expect("what encode writes parses")
}

#[derive(Default)]
struct Seen {
    calls: usize,
    /// The control service's answer (or its failure) settled the request.
    answered: bool,
    settled: bool,
    waiting_for_body: bool,
}

impl Seen {
    /// Checks one action; `from_answer`: it came from the control service's answer.
    fn check(&mut self, action: &Action<'_>, from_answer: bool, ok_answer: bool) {
        match action {
            Action::Call(call) => {
                assert!(!self.settled, "a call after the request was settled");
                self.calls += 1;
                assert_eq!(self.calls, 1, "a second call");
                assert!(call.path.starts_with("/transactions/"), "{:?}", call.path);
                self.waiting_for_body = false;
            }
            Action::Forward(_) => {
                assert!(from_answer && ok_answer, "forwarded without a 200 answer");
                self.settled = true;
                self.answered = true;
            }
            Action::Reply(r) => {
                assert!(
                    (200..=599).contains(&r.response.status),
                    "status {}",
                    r.response.status
                );
                self.settled = true;
                self.answered |= from_answer;
                self.waiting_for_body = false;
            }
            Action::Join(_) => {
                assert!(!self.settled, "joined a call after the request was settled");
                self.calls += 1;
                assert_eq!(self.calls, 1, "a second call");
                self.waiting_for_body = false;
            }
            Action::ReadBody => assert!(self.waiting_for_body, "the body asked for out of turn"),
            Action::Pause => {}
            Action::Continue => {}
        }
    }
}

fn run(runtime: &Runtime, hosts: &[String], input: &DecideInput, script: &[u8]) {
    let method = input.method_bytes();
    let authority = input.authority(hosts);
    let mut pairs: Vec<(&[u8], &[u8])> = vec![
        (b":method", &method),
        (b":path", &input.target),
        (b":authority", &authority),
    ];
    let extra = input.header_list();
    pairs.extend(extra.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
    let headers = header_map(&pairs);
    let body = input.body.clone().unwrap_or_default();
    let host = FakeHost::default();
    WORKSPACE.with(|ws| {
        let ws = &mut *ws.borrow_mut();
        let mut flow = RequestFlow::new();
        let mut seen = Seen::default();
        let end_of_stream = script.first().is_some_and(|b| b & 1 == 1);
        let action = flow.on_request_headers(runtime, ws, headers, end_of_stream, host.effects());
        seen.waiting_for_body = action == Action::Pause && !flow.is_calling();
        seen.check(&action, false, false);
        for &event in script {
            let settled_before = seen.settled;
            let (action, from_answer, ok) = match event % 8 {
                0 => {
                    let size = usize::from(event / 8) * body.len().max(1) / 8;
                    (
                        flow.on_request_body(runtime, ws, size, event & 8 != 0, host.effects()),
                        false,
                        false,
                    )
                }
                1 => (flow.on_request_trailers(), false, false),
                2 => (
                    flow.on_body(runtime, ws, Some(&body), host.effects()),
                    false,
                    false,
                ),
                3 => {
                    let answer = ANSWERS[usize::from(event / 8) % ANSWERS.len()];
                    let ok = answer.first() == Some(&(":status", "200"));
                    let pairs: Vec<(&[u8], &[u8])> = answer
                        .iter()
                        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                        .collect();
                    let map = header_map(&pairs);
                    let action = match answer_flight(runtime, ws, &host, Some(&map)) {
                        Some(o) => flow.on_flight_answer(runtime, ws, &o, host.effects()),
                        None => flow.on_call_answer(runtime, Some(&map), host.effects()),
                    };
                    (action, true, ok)
                }
                4 => {
                    let action = match answer_flight(runtime, ws, &host, None) {
                        Some(o) => flow.on_flight_answer(runtime, ws, &o, host.effects()),
                        None => flow.on_call_answer(runtime, None, host.effects()),
                    };
                    (action, true, false)
                }
                5 => {
                    let action = match answer_flight(runtime, ws, &host, None) {
                        Some(o) => flow.on_flight_answer(runtime, ws, &o, host.effects()),
                        None => flow.on_call_failed(runtime, host.effects()),
                    };
                    (action, true, false)
                }
                6 => {
                    let added = flow.on_response_headers();
                    assert!(
                        added.is_empty() || seen.answered,
                        "debug headers before the control service answered"
                    );
                    continue;
                }
                _ => {
                    flow.on_stream_end();
                    seen.settled = true;
                    continue;
                }
            };
            if settled_before && !from_answer {
                assert_eq!(
                    action,
                    Action::Continue,
                    "a settled request did not pass through"
                );
            }
            if from_answer && seen.calls == 0 {
                assert_eq!(
                    action,
                    Action::Continue,
                    "an answer without a call changed things"
                );
            }
            seen.check(&action, from_answer, ok);
        }
        // Every worker call lands (Envoy answers or times out each), so the next run starts
        // with no call out.
        while let Some(out) = ws.pop_outgoing() {
            let _ = on_outgoing_answer(runtime, ws, out.ticket, None, host.effects());
        }
    });
}

/// Answers the key's call the flow joined, if one is queued: what its requests are told.
fn answer_flight(
    runtime: &Runtime,
    ws: &mut Workspace,
    host: &FakeHost,
    answer: Option<&HeaderMap>,
) -> Option<tollgate::runtime::FlightOutcome> {
    let out = ws.pop_outgoing()?;
    if !matches!(out.ticket, Ticket::Flight(_)) {
        let _ = on_outgoing_answer(runtime, ws, out.ticket, None, host.effects());
        return None;
    }
    on_outgoing_answer(runtime, ws, out.ticket, answer, host.effects())
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&n, rest)) = bytes.split_last() else {
        return;
    };
    let n = usize::from(n).min(MAX_SCRIPT).min(rest.len());
    let (request, script) = rest.split_at(rest.len() - n);
    let input = DecideInput::decode(request);
    match &input.config {
        ConfigChoice::Fixed(i) => FIXED.with(|fixed| {
            if let Some((runtime, hosts)) = fixed.get(usize::from(*i) % fixed.len().max(1)) {
                run(runtime, hosts, &input, script);
            }
        }),
        ConfigChoice::Fuzzed(doc) => {
            if let Some(f) = tollgate_fuzz::load("fuzzed", doc) {
                let runtime = Runtime::new(f.compiled, None);
                run(&runtime, &f.hosts, &input, script);
            }
        }
    }
});
