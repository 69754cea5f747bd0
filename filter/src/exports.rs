//! The module's exports: the callbacks Envoy calls, the allocator it returns data through,
//! and the ABI version marker. Contexts live in one table per VM; an id the table does not
//! know (a host bug, or a stream created before a root) is logged and answered safely, never
//! a panic.

#![allow(unsafe_code)]

use std::cell::RefCell;

use hashbrown::HashMap;

use crate::effects::log;
use crate::host::LogLevel;
use crate::root::Root;
use crate::stream::{self, Shared, Stream, CONTINUE};

/// Every context of this VM (a VM is single-threaded).
#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, Root>,
    streams: HashMap<u32, Stream>,
    shared: Shared,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the context table; `otherwise` if it is busy (nothing re-enters the module
/// from a host call, so it never is).
fn with<R>(otherwise: R, f: impl FnOnce(&mut Contexts) -> R) -> R {
    CONTEXTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut contexts) => f(&mut contexts),
        Err(_) => {
            log(LogLevel::Error, "the context table is busy (re-entered)");
            otherwise
        }
    })
}

/// Tells the streams that waited on calls that have landed, until none is left (a woken
/// stream may land more: a refused call answers at once).
fn wake(c: &mut Contexts) {
    for _ in 0..MAX_WAKES {
        let Some(outcome) = c.shared.landed.pop() else {
            return;
        };
        for id in c.shared.waiting.remove(&outcome.flight).unwrap_or_default() {
            if let Some(s) = c.streams.get_mut(&id) {
                s.on_flight_answer(id, &mut c.shared, outcome);
            }
        }
    }
}

/// Rounds of waking at most per callback.
const MAX_WAKES: usize = 64;

fn unknown(callback: &str, id: u32) {
    log(
        LogLevel::Error,
        &format!("{callback} for unknown context {id}"),
    );
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host hands data to the module in buffers it gets here; `host::take` takes them over.
/// Exported only from the module: in a native build it would replace the C library's.
#[cfg_attr(target_arch = "wasm32", no_mangle)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub extern "C" fn malloc(size: usize) -> *mut u8 {
    let mut buffer: Vec<u8> = Vec::with_capacity(size);
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    ptr
}

/// Allocations since the VM started, for the test host's per-request figures.
#[no_mangle]
pub extern "C" fn tollgate_allocations() -> i64 {
    i64::try_from(crate::alloc::allocations()).unwrap_or(i64::MAX)
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    with((), |c| {
        if parent == 0 {
            c.roots.insert(id, Root::default());
        } else {
            // A stream of a root that never configured answers 500.
            let configured = c.roots.get(&parent).and_then(|r| r.configured.clone());
            c.streams.insert(id, Stream::new(configured));
        }
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> u32 {
    with(0, |c| match c.roots.get_mut(&root) {
        Some(r) => u32::from(r.on_configure(size)),
        None => {
            unknown("on_configure", root);
            0
        }
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _headers: usize, end_of_stream: u32) -> u32 {
    with(CONTINUE, |c| {
        let action = match c.streams.get_mut(&id) {
            Some(s) => s.on_request_headers(id, &mut c.shared, end_of_stream != 0),
            None => {
                unknown("on_request_headers", id);
                CONTINUE
            }
        };
        wake(c);
        action
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, end_of_stream: u32) -> u32 {
    with(CONTINUE, |c| {
        let action = match c.streams.get_mut(&id) {
            Some(s) => s.on_request_body(id, &mut c.shared, size, end_of_stream != 0),
            None => CONTINUE,
        };
        wake(c);
        action
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(id: u32, _trailers: usize) -> u32 {
    with(CONTINUE, |c| {
        let action = match c.streams.get_mut(&id) {
            Some(s) => s.on_request_trailers(id, &mut c.shared),
            None => CONTINUE,
        };
        wake(c);
        action
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _headers: usize, _end: u32) -> u32 {
    with(CONTINUE, |c| match c.streams.get_mut(&id) {
        Some(s) => s.on_response_headers(),
        None => CONTINUE,
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_id: u32, _size: usize, _end: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_id: u32, _trailers: usize) -> u32 {
    CONTINUE
}

/// A call's answer. Envoy delivers it on the root context that owns the call; the token
/// says which stream it is for, if that stream still exists, or which of the worker's own
/// calls it answers.
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root: u32,
    token: u32,
    headers: usize,
    _body: usize,
    _trailers: usize,
) {
    with((), |c| {
        if let Some(ticket) = c.shared.outgoing.remove(&token) {
            match c.roots.get(&root).and_then(|r| r.configured.clone()) {
                Some(configured) => {
                    stream::on_outgoing_answer_from_host(
                        &mut c.shared,
                        &configured,
                        ticket,
                        headers,
                    );
                    wake(c);
                }
                None => unknown("on_http_call_response", root),
            }
            return;
        }
        let Some(id) = c.shared.calls.remove(&token) else {
            // Its request ended first (the client went away): nothing to do.
            log(
                LogLevel::Info,
                &format!("the answer to call {token} came after its request ended"),
            );
            return;
        };
        if let Some(s) = c.streams.get_mut(&id) {
            s.on_call_answer(id, &mut c.shared, headers);
        }
        wake(c);
    })
}

/// The root's timer: batched reports and retries of background reports.
#[no_mangle]
pub extern "C" fn proxy_on_tick(root: u32) {
    with((), |c| {
        match c.roots.get(&root).and_then(|r| r.configured.clone()) {
            Some(configured) => stream::on_tick(&mut c.shared, &configured),
            None => unknown("on_tick", root),
        }
        wake(c);
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_done(id: u32) -> u32 {
    with(1, |c| {
        if let Some(s) = c.streams.get_mut(&id) {
            s.on_done();
        }
        1
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    with((), |c| {
        if let Some(stream) = c.streams.remove(&id) {
            // A call still out for this stream will find nobody.
            if let Some(token) = stream.call() {
                c.shared.calls.remove(&token);
            }
        } else {
            c.roots.remove(&id);
        }
    })
}
