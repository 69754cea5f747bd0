//! Hostile mode, on the probe filter: a hostile call answers its status and does nothing, the
//! host records each such answer, and it covers every call the module imports.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::{get, host, reply};
use tollgate_testhost::{Error, Host, HostCall, Hostile, Outcome, Status};

fn hostile(call: HostCall, status: Status) -> Hostile {
    Hostile { call, status }
}

#[test]
fn a_hostile_call_answers_its_status_and_the_others_are_untouched() {
    let host = host("");
    // proxy_done answers NOT_FOUND in this host (no deferred on_done).
    assert_eq!(
        reply(&get(&host, 0, "/done")).header("x-status").as_deref(),
        Some("1")
    );
    host.set_hostile(&[hostile(HostCall::Done, Status::Code(77))]);
    let r = reply(&get(&host, 0, "/done"));
    assert_eq!(r.header("x-status").as_deref(), Some("77"));
    let answers = host.hostile_answers();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(
        (
            answers[0].vm.as_str(),
            answers[0].call.as_str(),
            answers[0].status
        ),
        ("worker0", "proxy_done", 77)
    );
    // Peaceful again.
    host.set_hostile(&[]);
    assert_eq!(
        reply(&get(&host, 0, "/done")).header("x-status").as_deref(),
        Some("1")
    );
    assert_eq!(host.hostile_answers().len(), 1);
    assert!(host.traps().is_empty(), "{:#?}", host.traps());
}

#[test]
fn a_hostile_call_has_no_effect() {
    let host = host("");
    host.set_hostile(&[hostile(
        HostCall::SendLocalResponse,
        Status::InternalFailure,
    )]);
    // The probe sends a local reply with the raw call and logs the status: no reply comes.
    let s = get(&host, 0, "/malformed-local");
    assert_eq!(s.outcome(), Outcome::Paused);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message == "malformed local response status 10"),
        "{:#?}",
        host.logs()
    );
}

#[test]
fn the_last_rule_naming_a_call_wins() {
    let host = host("");
    host.set_hostile(&[
        hostile(HostCall::Done, Status::Code(78)),
        hostile(HostCall::Done, Status::Code(79)),
    ]);
    let r = reply(&get(&host, 0, "/done"));
    assert_eq!(r.header("x-status").as_deref(), Some("79"));
}

#[test]
fn all_makes_every_call_hostile() {
    let host = host("");
    let configured = host.logs().len();
    host.set_hostile(&[hostile(HostCall::All, Status::BadArgument)]);
    let s = get(&host, 0, "/done");
    // The probe reads :path first, with the SDK's wrapper: it panics on BAD_ARGUMENT, and its
    // panic hook's log line is refused too (a hostile proxy_log drops the line).
    let answers: Vec<(String, u32)> = host
        .hostile_answers()
        .into_iter()
        .map(|a| (a.call, a.status))
        .collect();
    assert_eq!(
        answers,
        [
            ("proxy_get_header_map_value".to_owned(), 2),
            ("proxy_log".to_owned(), 2)
        ]
    );
    assert_eq!(host.logs()[configured..], []);
    assert_eq!(host.traps().len(), 1);
    assert!(reply(&s).is_failure_policy());
}

#[test]
fn hostile_from_the_start_applies_to_configuration() {
    let err = Host::builder(tollgate_testsupport::probe_wasm().unwrap())
        .hostile(hostile(HostCall::DefineMetric, Status::BadArgument))
        .build()
        .unwrap_err();
    // The probe defines its metrics with the SDK's wrapper, which panics on BAD_ARGUMENT.
    let Error::Trap { trap, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (trap.vm.as_str(), trap.callback.as_str()),
        ("canary", "proxy_on_configure")
    );
}

#[test]
fn every_import_of_the_probe_is_a_known_host_call() {
    let host = host("");
    let imports = host.imports();
    assert!(imports.contains(&"proxy_log".to_owned()), "{imports:?}");
    assert!(
        imports.contains(&"proxy_http_call".to_owned()),
        "{imports:?}"
    );
    for name in &imports {
        let call =
            HostCall::from_import(name).unwrap_or_else(|| panic!("{name} is not a HostCall"));
        assert_eq!(call.name(), name);
        assert!(HostCall::EVERY.contains(&call));
    }
    assert!(!HostCall::EVERY.contains(&HostCall::All));
}
