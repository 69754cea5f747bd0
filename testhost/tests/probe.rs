//! The host's own tests: the probe filter (testhost/probe) exercises every hostcall and
//! reports what it saw; these tests pin Envoy's behaviour as the reference describes it.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

mod common;
use common::{builder, get, host, reply};
use tollgate_testhost::{Error, FailurePolicy, Host, LogLevel, Outcome, Stream, NO_HEADERS};

fn h(s: &Stream<'_>, name: &str) -> String {
    if let Some(trap) = s.host().traps().first() {
        let critical: Vec<_> = s
            .host()
            .logs()
            .into_iter()
            .filter(|l| l.level == LogLevel::Critical)
            .collect();
        panic!("trapped: {trap:?} {critical:?}");
    }
    reply(s)
        .header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", reply(s)))
}

fn no_traps(host: &Host) {
    assert!(host.traps().is_empty(), "{:#?}", host.traps());
}

#[test]
fn vms_start_like_envoy_canary_main_and_workers() {
    let host = host("");
    // canary + main + 2 workers, each on_vm_start and on_configure once.
    assert_eq!(host.metric("probe.configure_runs"), 4);
    assert_eq!(host.shared_data("probe.vm_starts").unwrap().0, b"4");
    assert_eq!(host.shared_data("probe.configures").unwrap().0, b"4");
    assert!(host
        .logs()
        .iter()
        .any(|l| l.message.contains("vm_config=vmcfg")));
    assert_eq!(host.workers(), 2);
    let host = builder("").canary(false).workers(1).build().unwrap();
    assert_eq!(host.metric("probe.configure_runs"), 2);
    no_traps(&host);
}

#[test]
fn configure_false_and_traps_fail_the_build() {
    let err = builder("fail_configure=1").build().unwrap_err();
    assert!(
        matches!(err, Error::Configure { ref vm, .. } if vm == "canary"),
        "{err}"
    );
    assert!(err.logs().iter().any(|l| l.message.contains("rejecting")));
    let err = builder("trap_configure=1").build().unwrap_err();
    let Error::Trap { trap, logs } = &err else {
        panic!("{err}")
    };
    assert_eq!(trap.callback, "proxy_on_configure");
    assert!(logs
        .iter()
        .any(|l| l.level == LogLevel::Critical && l.message.contains("probe panic")));
    let err = Host::builder("/nonexistent.wasm").build().unwrap_err();
    assert!(matches!(err, Error::Load(_)));
}

#[test]
fn local_replies_keep_repeated_headers_and_run_response_callbacks() {
    let host = host("");
    let s = get(&host, 0, "/deny");
    let r = reply(&s);
    assert_eq!(r.status, 429);
    assert_eq!(r.headers.get_all("x-tg"), ["a", "b"]);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));
    assert_eq!(r.header("content-length").as_deref(), Some("16"));
    assert_eq!(
        r.header("x-probe-resp").as_deref(),
        Some("1"),
        "on_response_headers ran"
    );
    assert_eq!(r.body_text(), r#"{"error":"deny"}"#);
    assert!(s.is_finished());
    // on_log saw the reply.
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("response.code=429")),
        "{:#?}",
        host.logs()
    );

    let r = reply(&get(&host, 0, "/deny-continue"));
    assert_eq!(r.status, 403);
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    let r = reply(&get(&host, 1, "/malformed-local"));
    assert_eq!((r.status, r.body_text().as_str()), (418, "teapot"));
    assert!(host
        .logs()
        .iter()
        .any(|l| l.message.contains("malformed local response status 0")));
    no_traps(&host);
}

#[test]
fn http_calls_go_to_known_clusters_with_pseudo_headers() {
    let host = host("");
    assert_eq!(h(&get(&host, 0, "/call?c=nope"), "x-dispatch-status"), "2");
    assert_eq!(
        h(&get(&host, 0, "/call?c=ctl&noauth=1"), "x-dispatch-status"),
        "2"
    );
    let s = get(&host, 0, "/call?c=ctl&t=250");
    assert_eq!(s.outcome(), Outcome::Paused);
    let calls = s.pending_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster(), "ctl");
    assert_eq!(call.header(":path").as_deref(), Some("/check"));
    assert_eq!(call.header(":authority").as_deref(), Some("control"));
    assert_eq!(call.header("x-from").as_deref(), Some("probe"));
    assert_eq!(call.header("content-length").as_deref(), Some("4"));
    assert_eq!(call.body(), b"ping");
    assert_eq!(call.timeout(), Some(Duration::from_millis(250)));
    assert_eq!(call.vm(), "worker0");
    host.pending_calls()
        .remove(0)
        .respond(201, &[("x-a", "1")], b"pong");
    let r = reply(&s);
    assert_eq!(r.header("x-call-status").as_deref(), Some("201"));
    assert_eq!(r.header("x-call-headers").as_deref(), Some("2"));
    assert_eq!(r.header("x-call-body").as_deref(), Some("pong"));
    assert_eq!(r.body_text(), "relayed");
    no_traps(&host);
}

#[test]
fn call_failures_arrive_as_envoy_does() {
    let host = host("");
    let s = get(&host, 0, "/call");
    s.pending_calls().remove(0).fail_503();
    assert_eq!(h(&s, "x-call-status"), "503");
    assert!(h(&s, "x-call-body").starts_with("upstream connect error"));

    let s = get(&host, 0, "/call");
    s.pending_calls().remove(0).reset();
    assert_eq!(h(&s, "x-call-headers"), "0");
    assert_eq!(h(&s, "x-call-status"), "none");
    assert_eq!(h(&s, "x-call-failure"), "11:reset");

    let s = get(&host, 1, "/call?t=300");
    host.advance_clock(Duration::from_millis(299));
    assert_eq!(s.outcome(), Outcome::Paused);
    host.advance_clock(Duration::from_millis(1));
    assert_eq!(h(&s, "x-call-status"), "504");
    assert_eq!(h(&s, "x-call-body"), "upstream request timeout");

    // Timeout 0 never times out.
    let s = get(&host, 1, "/call?t=0");
    host.advance_clock(Duration::from_secs(3600));
    assert_eq!(s.outcome(), Outcome::Paused);
    assert_eq!(s.pending_calls()[0].timeout(), None);
    no_traps(&host);
}

#[test]
fn resuming_after_a_call_sends_the_request_on_and_closes_its_headers() {
    let host = host("");
    let s = get(&host, 0, "/call?then=resume");
    s.pending_calls().remove(0).respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(up.headers.get("x-call-status").as_deref(), Some("200"));
    let r = s.response(&[(":status", "200")]).unwrap();
    // Continue is deferred: the headers were still readable in the callback.
    assert_eq!(r.header("x-hdr-after-resume").as_deref(), Some("0"));
    assert_eq!(r.header("x-probe-resp").as_deref(), Some("1"));
    no_traps(&host);
}

#[test]
fn response_paused_on_a_call_resumes() {
    let host = host("");
    let s = get(&host, 0, "/resp-call?c=ctl");
    assert!(s.outcome().upstream().is_some());
    assert_eq!(
        s.response(&[(":status", "200")]),
        None,
        "the filter holds the response"
    );
    s.pending_calls().remove(0).respond(200, NO_HEADERS, b"");
    let r = s.client_response().unwrap();
    assert_eq!(r.status, 200);
    assert!(s.is_finished());
    no_traps(&host);
}

#[test]
fn shared_data_cas_follows_envoy() {
    let host = host("");
    let s = get(&host, 0, "/cas?k=k1");
    assert_eq!(h(&s, "x-cas"), "0,8,0,8,0,0");
    let cas = h(&s, "x-after-remove");
    assert!(cas.starts_with("None,Some("), "{cas}");
    // Shared by every VM of the vm_id.
    assert_eq!(h(&get(&host, 0, "/shared-set?k=a&v=1"), "x-status"), "0");
    let got = get(&host, 1, "/shared-get?k=a");
    assert_eq!(h(&got, "x-value"), "1");
    let cas: u32 = h(&got, "x-cas").parse().unwrap();
    assert_eq!(
        h(
            &get(&host, 1, &format!("/shared-set?k=a&v=2&cas={}", cas + 1)),
            "x-status"
        ),
        "8"
    );
    assert_eq!(
        h(
            &get(&host, 1, &format!("/shared-set?k=a&v=2&cas={cas}")),
            "x-status"
        ),
        "0"
    );
    // The SDK maps NOT_FOUND to (None, None).
    assert_eq!(
        h(&get(&host, 0, "/shared-get?k=missing"), "x-value"),
        "none"
    );
    assert_eq!(host.shared_data("a").unwrap().0, b"2");
    host.set_shared_data("a", b"3");
    assert_eq!(h(&get(&host, 0, "/shared-get?k=a"), "x-value"), "3");
    // Another vm_id sees nothing.
    let other = builder("").vm_id("other").build().unwrap();
    assert_eq!(h(&get(&other, 0, "/shared-get?k=a"), "x-value"), "none");
    no_traps(&host);
}

#[test]
fn metrics_statuses_and_aggregation() {
    let host = host("");
    assert_eq!(h(&get(&host, 0, "/metric?d=0"), "x-status"), "2");
    assert_eq!(h(&get(&host, 0, "/metric?d=-1"), "x-status"), "2");
    assert_eq!(h(&get(&host, 0, "/metric?d=3"), "x-status"), "0");
    assert_eq!(h(&get(&host, 1, "/metric?d=2"), "x-status"), "0");
    // Summed across workers; every request also counted itself.
    assert_eq!(host.metric("probe.requests"), 4 + 5);
    let g = get(&host, 0, "/gauge?v=5&d=-2");
    assert_eq!(
        (h(&g, "x-status"), h(&g, "x-value")),
        ("0,0,0".into(), "3".into())
    );
    assert_eq!(host.gauge("probe.gauge"), Some(3));
    assert_eq!(h(&get(&host, 0, "/hist?v=7"), "x-status"), "0,2,2");
    assert_eq!(host.histogram("probe.latency"), [7]);
    assert_eq!(
        h(&get(&host, 0, "/metric-raw?id=9999"), "x-status"),
        "2,1,2"
    );
    assert_eq!(h(&get(&host, 0, "/metric-raw?id=100"), "x-status"), "1,1,1");
    no_traps(&host);
}

#[test]
fn queues_notify_the_last_registrant() {
    let host = host("register_queue=flush");
    let s = get(&host, 0, "/queue?vm=tollgate&name=flush&item=a");
    assert_eq!(
        (h(&s, "x-resolve"), h(&s, "x-enqueue")),
        ("0".into(), "0".into())
    );
    // worker1 registered last: it drained the queue.
    let drained: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|l| l.message.contains("drained=1 items=a"))
        .collect();
    assert_eq!(drained.len(), 1, "{:#?}", host.logs());
    assert_eq!(drained[0].vm, "worker1");
    assert_eq!(host.metric("probe.queue_items"), 1);
    assert_eq!(host.queue_items("flush"), Some(vec![]));
    // An empty vm_id is the caller's own; unknown names are NOT_FOUND.
    let s = get(&host, 1, "/queue?vm=&name=flush&item=b");
    assert_eq!(h(&s, "x-resolve"), "0");
    let s = get(&host, 1, "/queue?vm=tollgate&name=nope&item=c");
    assert_eq!(
        (h(&s, "x-resolve"), h(&s, "x-enqueue")),
        ("1".into(), "1".into())
    );
    assert_eq!(h(&get(&host, 0, "/dequeue?id=1"), "x-status"), "7");
    assert_eq!(h(&get(&host, 0, "/dequeue?id=9999"), "x-status"), "1");
    no_traps(&host);
}

#[test]
fn ticks_fire_on_every_vm_with_a_period() {
    let host = host("tick_ms=100");
    assert_eq!(host.main().tick_period(), Some(Duration::from_millis(100)));
    host.advance_clock(Duration::from_millis(99));
    assert_eq!(host.metric("probe.ticks"), 0);
    host.advance_clock(Duration::from_millis(1));
    assert_eq!(host.metric("probe.ticks"), 3, "main + 2 workers");
    host.advance_clock(Duration::from_millis(250));
    assert_eq!(host.metric("probe.ticks"), 9);
    host.tick();
    assert_eq!(host.metric("probe.ticks"), 12);
    let at: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|l| l.message.contains("tick n=1 "))
        .collect();
    assert!(
        at[0]
            .message
            .ends_with(&format!("at_ms={}", 1_767_225_600_000u64 + 100)),
        "{at:?}"
    );
    no_traps(&host);
}

#[test]
fn a_trap_fails_the_vm_closed() {
    let host = host("");
    let r = reply(&get(&host, 0, "/panic"));
    assert!(r.is_failure_policy());
    assert_eq!((r.status, r.body.len()), (503, 0));
    assert!(host.worker(0).is_failed());
    let traps = host.traps();
    assert_eq!(traps.len(), 1);
    assert_eq!(
        (traps[0].vm.as_str(), traps[0].callback.as_str()),
        ("worker0", "proxy_on_request_headers")
    );
    assert!(reply(&get(&host, 0, "/deny")).is_failure_policy());
    // The other worker still serves.
    assert_eq!(reply(&get(&host, 1, "/deny")).status, 429);
    assert!(host.logs().iter().any(|l| l.level == LogLevel::Critical));
}

#[test]
fn a_worker_that_does_not_exist_answers_like_a_failed_vm() {
    let host = host("");
    let s = get(&host, 5, "/deny");
    let r = reply(&s);
    assert!(r.is_failure_policy());
    assert_eq!((r.status, r.body.len()), (503, 0));
    assert!(s.is_finished());
    assert!(host.worker(5).is_failed());
    no_traps(&host);
}

#[test]
fn a_trap_in_the_response_fails_the_stream() {
    let host = host("");
    let s = get(&host, 1, "/panic-response");
    assert!(s.outcome().upstream().is_some());
    assert!(s
        .response(&[(":status", "200")])
        .unwrap()
        .is_failure_policy());
    assert!(host.worker(1).is_failed());
}

#[test]
fn fail_reload_and_fail_open() {
    let host = builder("")
        .failure_policy(FailurePolicy::FailReload)
        .build()
        .unwrap();
    assert!(reply(&get(&host, 0, "/panic")).is_failure_policy());
    assert_eq!(host.reloads(), 1);
    assert_eq!(reply(&get(&host, 0, "/deny")).status, 429);
    assert_eq!(host.metric("probe.configure_runs"), 5);

    let host = builder("")
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .unwrap();
    let s = get(&host, 0, "/panic");
    assert!(s.outcome().upstream().is_some());
    assert!(
        get(&host, 0, "/deny").outcome().upstream().is_some(),
        "bypassed"
    );
}

#[test]
fn header_maps_follow_their_phases() {
    let host = host("");
    let s = host.worker(0).request_streaming(&[
        (":method", "POST"),
        (":path", "/hdr-after-continue"),
        (":authority", "probe.example"),
        ("x-dup", "a"),
        ("X-Dup", "b"),
    ]);
    assert_eq!(s.outcome(), Outcome::Incomplete);
    s.body(b"x", true);
    let r = s.response(&[(":status", "200")]).unwrap();
    let get = |n: &str| r.header(n).unwrap_or_default();
    assert_eq!(get("x-resp-hdr-in-req"), "2");
    assert_eq!(get("x-call-hdr-outside"), "2");
    assert_eq!(get("x-absent"), "1");
    assert_eq!(get("x-dup-status"), "0");
    assert_eq!(get("x-dup"), "a");
    assert_eq!(get("x-plugin-config-status"), "1");
    assert_eq!(get("x-req-hdr-in-body"), "2");
    assert_eq!(get("x-req-hdr-in-resp"), "2");
    // on_log reads the access-log copies.
    assert!(
        host.logs().iter().any(|l| l
            .message
            .contains("path_status=0 path=/hdr-after-continue resp_status=0 status=200")),
        "{:#?}",
        host.logs()
    );
    no_traps(&host);
}

#[test]
fn bodies_and_header_edits_reach_upstream() {
    let host = host("");
    let s = host.worker(0).request_streaming(&[
        (":method", "POST"),
        (":path", "/body"),
        (":authority", "p"),
    ]);
    s.body(b"hello ", false);
    assert_eq!(s.outcome(), Outcome::Paused);
    s.body(b"world", true);
    assert_eq!(s.outcome().upstream().unwrap().body, b"HELLO WORLD");

    let s = host.worker(1).request(&[
        (":method", "GET"),
        (":path", "/hdrs"),
        (":authority", "p"),
        ("x-replace", "old"),
        ("x-remove", "1"),
    ]);
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(up.headers.get_all("x-added"), ["1", "2"]);
    assert_eq!(up.headers.get_all("x-replace"), ["new"]);
    assert!(!up.headers.contains("x-remove"));
    no_traps(&host);
}

#[test]
fn streams_pause_reset_and_misc_hostcalls() {
    let host = builder("").node_id("n1").build().unwrap();
    assert_eq!(get(&host, 0, "/pause-forever").outcome(), Outcome::Paused);
    assert_eq!(get(&host, 0, "/close").outcome(), Outcome::Reset);
    let s = get(&host, 0, "/plugin-config");
    assert_eq!(
        (
            h(&s, "x-status"),
            h(&s, "x-vm-status"),
            h(&s, "x-vm-config")
        ),
        ("1".into(), "0".into(), "vmcfg".into())
    );
    let s = get(&host, 0, "/time");
    assert_eq!(h(&s, "x-now-ns"), "1767225600000000000");
    assert_eq!(h(&s, "x-log-level"), "0");
    let s = get(&host, 0, "/foreign");
    assert_eq!(
        (h(&s, "x-status"), h(&s, "x-grpc")),
        ("1".into(), "12".into())
    );
    assert_eq!(h(&get(&host, 0, "/bad-ptr"), "x-status"), "6,6");
    assert_eq!(h(&get(&host, 0, "/effective"), "x-status"), "2,0,0");
    assert_eq!(h(&get(&host, 0, "/done"), "x-status"), "1");
    assert_eq!(h(&get(&host, 0, "/set-prop"), "x-value"), "v1");
    let s = get(
        &host,
        0,
        "/props?p=request.path,source.port,plugin_vm_id,xds.node.id,node.id,no.such",
    );
    assert_eq!(
        h(&s, "x-prop-request.path"),
        hex(b"/props?p=request.path,source.port,plugin_vm_id,xds.node.id,node.id,no.such")
    );
    assert_eq!(h(&s, "x-prop-source.port"), hex(&50000u64.to_le_bytes()));
    assert_eq!(h(&s, "x-prop-plugin_vm_id"), hex(b"tollgate"));
    assert_eq!(h(&s, "x-prop-xds.node.id"), hex(b"n1"));
    // As in Envoy 1.40: the node is found under `xds` only.
    assert_eq!(h(&s, "x-prop-node.id"), "none");
    assert_eq!(h(&s, "x-prop-no.such"), "none");
    no_traps(&host);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn log_levels_filter_lines() {
    let host = builder("").log_level(LogLevel::Info).build().unwrap();
    let _ = get(&host, 0, "/log?s=zz");
    let logs = host.logs();
    assert!(logs
        .iter()
        .any(|l| l.message == "probe log zz" && l.level == LogLevel::Warn));
    assert!(!logs.iter().any(|l| l.message.contains("probe debug")));
}

#[test]
fn a_local_reply_from_the_response_replaces_it() {
    let host = host("");
    let s = get(&host, 0, "/reply-in-response");
    let r = s
        .response_with_body(&[(":status", "200")], b"upstream")
        .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-replaced").as_deref(), Some("1"));
    assert_eq!(r.body_text(), "replaced");
    assert!(s.outcome().upstream().is_some());
    no_traps(&host);
}

#[test]
fn body_waits_while_headers_are_paused_then_reaches_the_filter() {
    let host = host("");
    let s = host.worker(0).request_streaming(&[
        (":method", "POST"),
        (":path", "/call?then=resume"),
        (":authority", "p"),
    ]);
    s.body(b"abc", true);
    // Paused from the headers: Envoy holds the body, the request stays paused.
    assert_eq!(s.outcome(), Outcome::Paused);
    s.pending_calls().remove(0).respond(200, NO_HEADERS, b"");
    let up = s.outcome().upstream().cloned().unwrap();
    assert_eq!(up.body, b"abc");
    assert_eq!(up.headers.get("x-call-status").as_deref(), Some("200"));
    no_traps(&host);
}

#[test]
fn raw_answers_client_resets_and_the_shared_data_key_list() {
    let host = host("");
    // An answer with a malformed :status, and one without any.
    let s = get(&host, 0, "/call");
    s.pending_calls()
        .remove(0)
        .respond_raw(&[(":status", "2x0"), ("x-a", "b")], b"pong");
    assert_eq!(h(&s, "x-call-status"), "2x0");
    assert_eq!(h(&s, "x-call-headers"), "2");
    assert_eq!(h(&s, "x-call-body"), "pong");
    let s = get(&host, 0, "/call");
    s.pending_calls()
        .remove(0)
        .respond_raw(&[("x-a", "b")], b"");
    assert_eq!(h(&s, "x-call-status"), "none");

    // The client goes away while the filter holds the request: the stream ends (on_log
    // runs) and the call it made stays pending, as a root's call does in Envoy.
    let s = get(&host, 1, "/call");
    assert_eq!(s.outcome(), Outcome::Paused);
    s.client_reset();
    assert!(s.is_finished());
    assert_eq!(s.outcome(), Outcome::Reset);
    assert!(host
        .logs()
        .iter()
        .any(|l| l.vm == "worker1" && l.message.contains("on_log") && l.message.contains("/call")));
    assert_eq!(host.pending_calls().len(), 1);
    // A finished stream is left alone.
    s.client_reset();
    assert_eq!(s.outcome(), Outcome::Reset);

    let before = host.shared_data_keys();
    get(&host, 0, "/shared-set?k=zz&v=1");
    get(&host, 1, "/shared-set?k=aa&v=1");
    let after = host.shared_data_keys();
    let mut want = before.clone();
    want.extend([b"aa".to_vec(), b"zz".to_vec()]);
    want.sort();
    assert_eq!(after, want);
    no_traps(&host);
}
