//! tollgate.wasm against a hostile host: for every hostcall the module imports (read from its
//! import section, so a new import is covered without touching this file), that call answers
//! a status it does not expect (BAD_ARGUMENT, NOT_FOUND, INTERNAL_FAILURE, or 77, which the ABI
//! does not define) while requests of each kind are driven: a local deny, one authorized
//! through the control service, and a POST whose credentials are in the body. The filter must
//! answer each (a local reply below 600, or the request goes on), log what failed at warn or
//! error, and never trap.
//!
//! Each test reports every (call, status) that fails, not just the first.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use tollgate_testhost::{Error, HostCall, Hostile, LogLevel, Status};

const SG: &str = "api.sendgrid.example";

/// The host's answer is a legitimate "absent" for lookups, so the filter need not log it.
fn expected(call: HostCall, status: Status) -> bool {
    status == Status::NotFound
        && matches!(
            call,
            HostCall::GetHeaderMapValue
                | HostCall::GetProperty
                | HostCall::GetSharedData
                | HostCall::ResolveSharedQueue
                | HostCall::DequeueSharedQueue
                | HostCall::GetBufferBytes
                | HostCall::GetBufferStatus
                | HostCall::Done
                | HostCall::CallForeignFunction
        )
}

/// The hostcalls tollgate.wasm imports; an import the test host does not know fails here.
fn imported() -> Vec<HostCall> {
    let host = host(sendgrid());
    let imports = host.imports();
    assert!(imports.len() > 10, "{imports:?}");
    imports
        .iter()
        .map(|name| {
            HostCall::from_import(name)
                .unwrap_or_else(|| panic!("tollgate.wasm imports {name}, unknown to HostCall"))
        })
        .collect()
}

fn post_body_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/api/mail.send.json".into()),
        (":authority", SG.into()),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("content-length", body.len().to_string()),
    ]
}

/// The kinds of request driven against each hostile call.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// 404, no mapping rule: decided without a callout.
    LocalDeny,
    /// Through the control service's authrep call, then upstream.
    Authorized,
    /// A POST waiting for its body's credentials, then the call, then upstream.
    BodyCredentials,
}

const KINDS: [Kind; 3] = [Kind::LocalDeny, Kind::Authorized, Kind::BodyCredentials];

fn start<'h>(host: &'h Host, kind: Kind) -> Stream<'h> {
    match kind {
        Kind::LocalDeny => get(host, 0, SG, "/nothing/here?api_user=a&api_key=b"),
        Kind::Authorized => get(host, 0, SG, "/api/mail.send.json?api_user=a&api_key=b"),
        Kind::BodyCredentials => {
            let body = b"api_user=bob&api_key=k";
            let s = host.worker(0).request_streaming(post_body_headers(body));
            s.body(body, true);
            s
        }
    }
}

/// Drives one request to its end as Envoy would (answering its callout with 200 and sending
/// the upstream's 200 if it goes on); what is wrong with how it ended, if anything.
///
/// Two calls leave the filter no way to answer, and it then fails closed, never letting the
/// request through: without `proxy_send_local_response` it resets the stream, and without
/// `proxy_set_effective_context` the call's answer cannot reach the stream at all, which
/// stays held until Envoy's stream idle timeout ends it.
fn drive(s: &Stream<'_>, call: HostCall) -> Option<String> {
    if let Some(call) = s.pending_calls().into_iter().next() {
        call.respond(200, NO_HEADERS, b"");
    }
    match s.outcome() {
        Outcome::LocalReply(r) if r.status < 600 && !r.is_failure_policy() => None,
        Outcome::LocalReply(r) => Some(format!("reply {} ({})", r.status, r.details)),
        Outcome::Continued(_) => match s.response(&[(":status", "200")]) {
            Some(r) if r.status < 600 => None,
            Some(r) => Some(format!("went on, the client got {}", r.status)),
            None => Some("went on, the response never reached the client".to_owned()),
        },
        Outcome::Reset if call == HostCall::SendLocalResponse => None,
        Outcome::Paused if call == HostCall::SetEffectiveContext => None,
        other => Some(format!("never answered ({other:?})")),
    }
}

/// One request of `kind` on a fresh host with `call` hostile (so a trap in one kind hides
/// nothing of another); every way the filter failed.
fn survives(call: HostCall, status: Status, kind: Kind) -> Vec<String> {
    let host = Host::builder(wasm())
        .plugin_config(sendgrid())
        .cluster(CLUSTER)
        .allow_on_headers_stop_iteration(true)
        .build()
        .unwrap_or_else(|e| panic!("the filter did not configure: {e}"));
    let configured = host.logs().len();
    host.set_hostile(&[Hostile { call, status }]);
    let s = start(&host, kind);
    let mut failures: Vec<String> = drive(&s, call).into_iter().collect();
    if let Some(trap) = host.traps().first() {
        let first_line = trap.message.lines().next().unwrap_or_default();
        failures.push(format!("trapped in {}: {first_line}", trap.callback));
    }
    let refused = !host.hostile_answers().is_empty();
    let warned = host.logs()[configured..]
        .iter()
        .any(|l| l.level >= LogLevel::Warn);
    // A refused proxy_log cannot be logged; an "absent" answer is not a failure.
    if refused && !warned && call != HostCall::Log && !expected(call, status) {
        failures.push("nothing logged at warn or error".to_owned());
    }
    failures
        .into_iter()
        .map(|f| format!("{call} -> {status:?}, {kind:?}: {f}"))
        .collect()
}

/// Fails with every failure listed, not just the first.
fn assert_none(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn every_import_answering(status: Status) {
    let failures: Vec<String> = imported()
        .into_iter()
        .flat_map(|call| {
            KINDS
                .into_iter()
                .flat_map(move |kind| survives(call, status, kind))
        })
        .collect();
    assert_none(&failures);
}

#[test]
fn every_import_answering_bad_argument() {
    every_import_answering(Status::BadArgument);
}

#[test]
fn every_import_answering_not_found() {
    every_import_answering(Status::NotFound);
}

#[test]
fn every_import_answering_internal_failure() {
    every_import_answering(Status::InternalFailure);
}

#[test]
fn every_import_answering_a_status_the_abi_does_not_define() {
    every_import_answering(Status::Code(77));
}

/// Hostile while configuring (on the canary first): the configuration is accepted or refused
/// with an error logged, never by a trap.
#[test]
fn a_hostile_configuration_phase_never_traps() {
    let mut failures = Vec::new();
    for call in imported() {
        for status in Status::UNEXPECTED {
            let built = Host::builder(wasm())
                .plugin_config(sendgrid())
                .cluster(CLUSTER)
                .hostile(Hostile { call, status })
                .build();
            match built {
                Ok(_) => {}
                Err(Error::Configure { logs, .. }) => {
                    if call != HostCall::Log && !logs.iter().any(|l| l.level >= LogLevel::Error) {
                        failures.push(format!("{call} -> {status:?}: refused without an error"));
                    }
                }
                Err(e) => {
                    let first_line = e.to_string().lines().next().unwrap_or_default().to_owned();
                    failures.push(format!("{call} -> {status:?}: {first_line}"));
                }
            }
        }
    }
    assert_none(&failures);
}

/// Every call hostile at once, after configuring: nothing can be answered or logged, and the
/// filter still never traps and never lets a request through.
#[test]
fn every_import_hostile_at_once_fails_closed() {
    for status in Status::UNEXPECTED {
        for kind in KINDS {
            let host = Host::builder(wasm())
                .plugin_config(sendgrid())
                .cluster(CLUSTER)
                .build()
                .unwrap();
            host.set_hostile(&[Hostile {
                call: HostCall::All,
                status,
            }]);
            let s = start(&host, kind);
            assert!(
                host.traps().is_empty(),
                "{status:?} {kind:?}: {:?}",
                host.traps()
            );
            assert!(
                !matches!(s.outcome(), Outcome::Continued(_)),
                "{status:?} {kind:?}: the request went upstream"
            );
        }
    }
}
