//! The ABI edge: every call into the host goes through this module, and every status the host
//! can give, including ones the ABI does not define, comes back as a [`HostError`]. Nothing
//! here panics, and no SDK wrapper (which would `panic!` on an unexpected status) is linked.
//!
//! Buffers the host returns were allocated through our exported allocator
//! ([`crate::exports::malloc`]), so they are taken over as `Vec`s without copying.

#![allow(unsafe_code)]

use std::fmt;
use std::ptr;

/// proxy-wasm's statuses, as far as a log line needs names for them.
const STATUS_NAMES: [(u32, &str); 10] = [
    (1, "NotFound"),
    (2, "BadArgument"),
    (3, "SerializationFailure"),
    (4, "ParseFailure"),
    (6, "InvalidMemoryAccess"),
    (7, "Empty"),
    (8, "CasMismatch"),
    (10, "InternalFailure"),
    (12, "Unimplemented"),
    (13, "BrokenConnection"),
];

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;

/// A host call that did not answer OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = STATUS_NAMES
            .iter()
            .find(|(s, _)| *s == self.status)
            .map_or("undefined", |(_, n)| n);
        write!(f, "{} answered status {} ({name})", self.call, self.status)
    }
}

pub type HostResult<T> = Result<T, HostError>;

fn check(call: &'static str, status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError { call, status })
    }
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Headers {
    Request = 0,
    Response = 2,
    CallResponse = 6,
}

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    PluginConfiguration = 7,
}

const STREAM_HTTP_REQUEST: u32 = 0;
const METRIC_COUNTER: u32 = 0;
/// No gRPC status on local replies.
const NO_GRPC_STATUS: i32 = -1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, len: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, len: *mut usize) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_len: usize,
        headers: *const u8,
        headers_len: usize,
        body: *const u8,
        body_len: usize,
        trailers: *const u8,
        trailers_len: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_close_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_get_current_time_nanoseconds(nanos: *mut u64) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_len: usize,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_len: usize,
        value: *mut *mut u8,
        value_len: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_len: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

/// Takes over a buffer the host filled through our allocator.
fn take(data: *mut u8, len: usize) -> Vec<u8> {
    if data.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host got `data` from `malloc(len)`, which hands out a `Vec<u8>` of exactly
    // `len` capacity, and wrote `len` bytes into it; it never touches it again.
    unsafe { Vec::from_raw_parts(data, len, len) }
}

pub fn log(level: LogLevel, message: &str) -> HostResult<()> {
    // SAFETY: the pointer and length describe a live string for the duration of the call.
    let s = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
    check("proxy_log", s)
}

/// A whole header map, serialized (see `tollgate::pairs`).
pub fn header_map(map: Headers) -> HostResult<Vec<u8>> {
    let (mut data, mut len) = (ptr::null_mut(), 0);
    // SAFETY: the out-pointers are valid for writes during the call.
    let s = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut len) };
    check("proxy_get_header_map_pairs", s)?;
    Ok(take(data, len))
}

pub fn add_header(map: Headers, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: both slices are live for the duration of the call.
    let s = unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    check("proxy_add_header_map_value", s)
}

pub fn replace_header(map: Headers, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: both slices are live for the duration of the call.
    let s = unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    check("proxy_replace_header_map_value", s)
}

pub fn remove_header(map: Headers, name: &str) -> HostResult<()> {
    // SAFETY: the slice is live for the duration of the call.
    let s = unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) };
    check("proxy_remove_header_map_value", s)
}

/// Up to `max` bytes of a buffer from its start. A missing buffer is empty.
pub fn buffer(buffer: Buffer, max: usize) -> HostResult<Vec<u8>> {
    let (mut data, mut len) = (ptr::null_mut(), 0);
    // SAFETY: the out-pointers are valid for writes during the call.
    let s = unsafe { proxy_get_buffer_bytes(buffer as u32, 0, max, &mut data, &mut len) };
    if s == NOT_FOUND {
        return Ok(Vec::new());
    }
    check("proxy_get_buffer_bytes", s)?;
    Ok(take(data, len))
}

/// A local reply; `headers` is a serialized header map.
pub fn send_local_response(status: u16, headers: &[u8], body: &str) -> HostResult<()> {
    // SAFETY: every slice is live for the duration of the call.
    let s = unsafe {
        proxy_send_local_response(
            u32::from(status),
            ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            NO_GRPC_STATUS,
        )
    };
    check("proxy_send_local_response", s)
}

/// An HTTP call to `cluster`; `headers` and `trailers` are serialized maps, `body` may be
/// empty. Returns the call's token.
pub fn http_call(
    cluster: &str,
    headers: &[u8],
    body: &[u8],
    trailers: &[u8],
    timeout_ms: u32,
) -> HostResult<u32> {
    let mut token = 0;
    // SAFETY: every slice is live and the out-pointer valid during the call.
    let s = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            if body.is_empty() {
                ptr::null()
            } else {
                body.as_ptr()
            },
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    check("proxy_http_call", s)?;
    Ok(token)
}

/// Lets a held request go on.
pub fn resume_request() -> HostResult<()> {
    // SAFETY: no pointers.
    check("proxy_continue_stream", unsafe {
        proxy_continue_stream(STREAM_HTTP_REQUEST)
    })
}

/// Resets the request's stream: the last resort when no reply can be sent.
pub fn close_request() -> HostResult<()> {
    // SAFETY: no pointers.
    check("proxy_close_stream", unsafe {
        proxy_close_stream(STREAM_HTTP_REQUEST)
    })
}

/// Makes later calls act on `context` (a callout's answer arrives on the root context).
pub fn set_effective_context(context: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check("proxy_set_effective_context", unsafe {
        proxy_set_effective_context(context)
    })
}

pub fn now_nanos() -> HostResult<u64> {
    let mut nanos = 0;
    // SAFETY: the out-pointer is valid for writes during the call.
    let s = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    check("proxy_get_current_time_nanoseconds", s)?;
    Ok(nanos)
}

/// A property by its path (segments joined with NUL). `None` when the host has no value.
pub fn property(path: &[u8]) -> HostResult<Option<Vec<u8>>> {
    let (mut data, mut len) = (ptr::null_mut(), 0);
    // SAFETY: the slice is live and the out-pointers valid during the call.
    let s = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut len) };
    if s == NOT_FOUND {
        return Ok(None);
    }
    check("proxy_get_property", s)?;
    Ok(Some(take(data, len)))
}

/// A shared-data value and its CAS; `None` for a missing key.
pub fn shared_data(key: &[u8]) -> HostResult<Option<(Vec<u8>, u32)>> {
    let (mut data, mut len, mut cas) = (ptr::null_mut(), 0, 0);
    // SAFETY: the slice is live and the out-pointers valid during the call.
    let s =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut len, &mut cas) };
    if s == NOT_FOUND {
        return Ok(None);
    }
    check("proxy_get_shared_data", s)?;
    Ok(Some((take(data, len), cas)))
}

/// Whether the write happened: `false` when the key's CAS is no longer `cas`.
pub fn set_shared_data(key: &[u8], value: &[u8], cas: u32) -> HostResult<bool> {
    // SAFETY: the slices are live during the call.
    let s =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    if s == CAS_MISMATCH {
        return Ok(false);
    }
    check("proxy_set_shared_data", s)?;
    Ok(true)
}

pub fn define_counter(name: &str) -> HostResult<u32> {
    let mut id = 0;
    // SAFETY: the slice is live and the out-pointer valid during the call.
    let s = unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
    check("proxy_define_metric", s)?;
    Ok(id)
}

pub fn increment_counter(id: u32) -> HostResult<()> {
    increment_counter_by(id, 1)
}

pub fn increment_counter_by(id: u32, delta: i64) -> HostResult<()> {
    // SAFETY: no pointers.
    check("proxy_increment_metric", unsafe {
        proxy_increment_metric(id, delta)
    })
}

/// Asks for `proxy_on_tick` on the current root context every `ms` (0: never).
pub fn set_tick_period(ms: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    check("proxy_set_tick_period_milliseconds", unsafe {
        proxy_set_tick_period_milliseconds(ms)
    })
}
