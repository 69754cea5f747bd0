//! Allocation counting, on the probe filter (which exports `tollgate_allocations` over a
//! counting allocator): per stream, across its callbacks, and `None` without the export.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::{get, host};
use tollgate_testhost::{Host, Outcome, NO_HEADERS};

/// The allocations of `/alloc?n=N` after the same three requests on a fresh host, and the
/// growth of the VM's counter across it.
fn alloc(n: u32) -> (u64, u64) {
    let host = host("");
    for _ in 0..3 {
        get(&host, 0, "/alloc?n=0");
    }
    let before = host.worker(0).allocations().unwrap();
    let counted = get(&host, 0, &format!("/alloc?n={n}"))
        .allocations()
        .unwrap();
    let grown = host.worker(0).allocations().unwrap() - before;
    assert!(host.traps().is_empty(), "{:#?}", host.traps());
    (counted, grown)
}

#[test]
fn allocations_are_counted_per_stream() {
    // The same history on fresh hosts: the requests differ only by the probe's N boxes.
    let (none, grown) = alloc(0);
    assert!(none > 0, "reading :path allocates its copy");
    // Every allocation of the VM during the request is the stream's.
    assert_eq!(grown, none);
    let (five, grown) = alloc(5);
    assert_eq!(five, none + 5);
    assert_eq!(grown, five);
}

#[test]
fn the_answer_to_a_callout_counts_for_its_stream() {
    let host = host("");
    let s = get(&host, 0, "/call?c=ctl");
    assert_eq!(s.outcome(), Outcome::Paused);
    let sent = s.allocations().unwrap();
    let before = host.worker(0).allocations().unwrap();
    s.pending_calls()
        .remove(0)
        .respond(200, NO_HEADERS, b"pong");
    assert!(s.outcome().local_reply().is_some());
    // on_http_call_response runs on the root context, on behalf of this stream: all that the
    // answer and the reply allocated is the stream's.
    let answered = s.allocations().unwrap() - sent;
    assert!(answered > 0);
    assert_eq!(host.worker(0).allocations().unwrap() - before, answered);
}

#[test]
fn allocations_are_none_without_the_export() {
    let host = Host::builder(tollgate_testsupport::passthrough_wasm().unwrap())
        .build()
        .unwrap();
    let s = get(&host, 0, "/");
    assert!(s.outcome().upstream().is_some());
    assert_eq!(s.allocations(), None);
    assert_eq!(host.worker(0).allocations(), None);
}
