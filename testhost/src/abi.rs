//! The hostcalls (module imports `env.proxy_*`), with Envoy's statuses.

use std::collections::HashSet;

use wasmtime::{Caller, Extern, Linker, Module, Val, ValType};

use crate::hostile::HostileAnswer;
use crate::state::{lock, status::*, CallRecord, Deferred, MetricKind, StreamState, VmState, ROOT};
use crate::wire::{parse_pairs, property_path, serialize_pairs, Pairs};
use crate::{Headers, LogLevel, Reply};

type Cx<'a, 'b> = &'a mut Caller<'b, VmState>;
/// The outer error is a trap; the inner value is the status returned to the module.
type Hc = wasmtime::Result<u32>;

/// Early return of a status from a hostcall.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(s) => return Ok(s),
        }
    };
}

/// Hostcalls other than `proxy_log` trap while the module starts (`_initialize`), as in Envoy.
fn unrestricted(c: Cx<'_, '_>) -> wasmtime::Result<()> {
    if c.data().restricted {
        return Err(wasmtime::Error::msg(
            "restricted_callback: only proxy_log is allowed while the module starts",
        ));
    }
    Ok(())
}

fn memory(c: Cx<'_, '_>) -> Option<wasmtime::Memory> {
    c.get_export("memory").and_then(Extern::into_memory)
}

fn range(ptr: i32, len: i32) -> Result<std::ops::Range<usize>, u32> {
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len as u32 as usize)
        .ok_or(INVALID_MEMORY_ACCESS)?;
    Ok(start..end)
}

fn read(c: Cx<'_, '_>, ptr: i32, len: i32) -> Result<Vec<u8>, u32> {
    let r = range(ptr, len)?;
    let mem = memory(c).ok_or(INVALID_MEMORY_ACCESS)?;
    mem.data(&*c)
        .get(r)
        .map(<[u8]>::to_vec)
        .ok_or(INVALID_MEMORY_ACCESS)
}

fn write(c: Cx<'_, '_>, ptr: i32, bytes: &[u8]) -> Result<(), u32> {
    let len = i32::try_from(bytes.len()).map_err(|_| INVALID_MEMORY_ACCESS)?;
    let r = range(ptr, len)?;
    let mem = memory(c).ok_or(INVALID_MEMORY_ACCESS)?;
    mem.data_mut(&mut *c)
        .get_mut(r)
        .ok_or(INVALID_MEMORY_ACCESS)?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(c: Cx<'_, '_>, ptr: i32, v: u32) -> Result<(), u32> {
    write(c, ptr, &v.to_le_bytes())
}

/// Copies `data` into memory allocated by the module's allocator and writes (ptr, len) to the
/// out-pointers; empty data is (0, 0).
fn copy_out(c: Cx<'_, '_>, data: &[u8], rp: i32, rn: i32) -> wasmtime::Result<Result<(), u32>> {
    if data.is_empty() {
        return Ok(write_u32(c, rp, 0).and_then(|()| write_u32(c, rn, 0)));
    }
    let Ok(len) = i32::try_from(data.len()) else {
        return Ok(Err(INVALID_MEMORY_ACCESS));
    };
    let alloc = c
        .get_export("malloc")
        .or_else(|| c.get_export("proxy_on_memory_allocate"))
        .and_then(Extern::into_func);
    let Some(alloc) = alloc else {
        return Ok(Err(INVALID_MEMORY_ACCESS));
    };
    let alloc = alloc.typed::<i32, i32>(&*c)?;
    let ptr = alloc.call(&mut *c, len)?;
    if ptr == 0 {
        return Ok(Err(INVALID_MEMORY_ACCESS));
    }
    Ok(write(c, ptr, data)
        .and_then(|()| write_u32(c, rp, ptr as u32))
        .and_then(|()| write_u32(c, rn, len as u32)))
}

fn lower(name: &[u8]) -> Vec<u8> {
    name.to_ascii_lowercase()
}

/// Which header map of which context a map type names; `Err(BAD_ARGUMENT)` outside its phase.
#[derive(Clone, Copy)]
enum MapRef {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    CallHeaders,
    CallTrailers,
}

fn map_ref(map: i32) -> Result<MapRef, u32> {
    match map {
        0 => Ok(MapRef::RequestHeaders),
        1 => Ok(MapRef::RequestTrailers),
        2 => Ok(MapRef::ResponseHeaders),
        6 => Ok(MapRef::CallHeaders),
        7 => Ok(MapRef::CallTrailers),
        // Response trailers, gRPC metadata: never available here; unknown types too.
        _ => Err(BAD_ARGUMENT),
    }
}

fn with_map<R>(
    st: &mut VmState,
    map: MapRef,
    write: bool,
    f: impl FnOnce(&mut Pairs) -> R,
) -> Result<R, u32> {
    match map {
        MapRef::CallHeaders => st
            .call_response
            .as_mut()
            .map(|(h, _, _)| f(h))
            .ok_or(BAD_ARGUMENT),
        MapRef::CallTrailers => st
            .call_response
            .as_mut()
            .map(|(_, _, t)| f(t))
            .ok_or(BAD_ARGUMENT),
        _ => {
            let s = st.stream().ok_or(BAD_ARGUMENT)?;
            // In on_log Envoy serves read-only access-log copies; a missing one is NOT_FOUND.
            if s.in_log && write {
                return Err(BAD_ARGUMENT);
            }
            match map {
                MapRef::RequestHeaders if s.request_headers_open || s.in_log => {
                    Ok(f(&mut s.request_headers))
                }
                MapRef::RequestTrailers if s.request_headers_open || s.in_log => s
                    .request_trailers
                    .as_mut()
                    .map(f)
                    .ok_or(if s.in_log { NOT_FOUND } else { BAD_ARGUMENT }),
                MapRef::ResponseHeaders if s.response_headers_open || s.in_log => {
                    if s.in_log && s.response_headers.is_empty() {
                        return Err(NOT_FOUND);
                    }
                    Ok(f(&mut s.response_headers))
                }
                _ => Err(BAD_ARGUMENT),
            }
        }
    }
}

fn log(c: Cx<'_, '_>, level: i32, p: i32, n: i32) -> Hc {
    let message = tri!(read(c, p, n));
    let Some(level) = LogLevel::from_abi(level) else {
        return Ok(BAD_ARGUMENT);
    };
    c.data()
        .log(level, String::from_utf8_lossy(&message).into_owned());
    Ok(OK)
}

fn get_header_map_pairs(c: Cx<'_, '_>, map: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let map = tri!(map_ref(map));
    let pairs = tri!(with_map(c.data_mut(), map, false, |m| m.clone()));
    let bytes = if pairs.is_empty() {
        Vec::new()
    } else {
        serialize_pairs(&pairs)
    };
    tri!(copy_out(c, &bytes, rp, rn)?);
    Ok(OK)
}

fn set_header_map_pairs(c: Cx<'_, '_>, map: i32, p: i32, n: i32) -> Hc {
    unrestricted(c)?;
    let map = tri!(map_ref(map));
    let bytes = tri!(read(c, p, n));
    let pairs: Pairs = parse_pairs(&bytes)
        .into_iter()
        .map(|(k, v)| (lower(&k), v))
        .collect();
    tri!(with_map(c.data_mut(), map, true, |m| *m = pairs));
    Ok(OK)
}

fn get_header_map_value(c: Cx<'_, '_>, map: i32, kp: i32, kn: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let key = lower(&tri!(read(c, kp, kn)));
    let map = tri!(map_ref(map));
    let value = tri!(with_map(c.data_mut(), map, false, |m| {
        m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }));
    let value = tri!(value.ok_or(NOT_FOUND));
    tri!(copy_out(c, &value, rp, rn)?);
    Ok(OK)
}

fn add_header_map_value(c: Cx<'_, '_>, map: i32, kp: i32, kn: i32, vp: i32, vn: i32) -> Hc {
    unrestricted(c)?;
    let key = lower(&tri!(read(c, kp, kn)));
    let value = tri!(read(c, vp, vn));
    let map = tri!(map_ref(map));
    tri!(with_map(c.data_mut(), map, true, |m| m.push((key, value))));
    Ok(OK)
}

fn replace_header_map_value(c: Cx<'_, '_>, map: i32, kp: i32, kn: i32, vp: i32, vn: i32) -> Hc {
    unrestricted(c)?;
    let key = lower(&tri!(read(c, kp, kn)));
    let value = tri!(read(c, vp, vn));
    let map = tri!(map_ref(map));
    tri!(with_map(c.data_mut(), map, true, |m| {
        match m.iter().position(|(k, _)| *k == key) {
            Some(first) => {
                if let Some(slot) = m.get_mut(first) {
                    slot.1 = value;
                }
                let mut i = 0;
                m.retain(|(k, _)| {
                    let keep = *k != key || i == first;
                    i += 1;
                    keep
                });
            }
            None => m.push((key, value)),
        }
    }));
    Ok(OK)
}

fn remove_header_map_value(c: Cx<'_, '_>, map: i32, kp: i32, kn: i32) -> Hc {
    unrestricted(c)?;
    let key = lower(&tri!(read(c, kp, kn)));
    let map = tri!(map_ref(map));
    tri!(with_map(c.data_mut(), map, true, |m| m.retain(|(k, _)| *k != key)));
    Ok(OK)
}

fn get_header_map_size(c: Cx<'_, '_>, map: i32, rp: i32) -> Hc {
    unrestricted(c)?;
    let map = tri!(map_ref(map));
    let size = tri!(with_map(c.data_mut(), map, false, |m| serialize_pairs(m).len()));
    tri!(write_u32(c, rp, u32::try_from(size).unwrap_or(u32::MAX)));
    Ok(OK)
}

/// The buffer a type names, if available now.
fn buffer(st: &mut VmState, kind: i32) -> Result<Option<&mut Vec<u8>>, u32> {
    match kind {
        0 => Ok(st
            .streams
            .get_mut(&st.effective)
            .filter(|s| s.body_open)
            .map(|s| &mut s.body)),
        1 => Ok(st
            .streams
            .get_mut(&st.effective)
            .filter(|s| s.response_body_open)
            .map(|s| &mut s.response_body)),
        4 => Ok(st.call_response.as_mut().map(|(_, b, _)| b)),
        2 | 3 | 5 | 6 | 7 | 8 => Ok(None),
        _ => Err(BAD_ARGUMENT),
    }
}

fn get_buffer_bytes(c: Cx<'_, '_>, kind: i32, start: i32, max: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let start = start as u32 as usize;
    let max = max as u32 as usize;
    if start.checked_add(max).is_none() {
        return Ok(BAD_ARGUMENT);
    }
    let data = {
        let st = c.data_mut();
        match kind {
            6 => st.config.vm_config.clone(),
            // Envoy serves the plugin configuration only during on_configure.
            7 if st.in_configure => st.config.plugin_config.clone(),
            _ => tri!(tri!(buffer(st, kind)).ok_or(NOT_FOUND)).clone(),
        }
    };
    let end = start.saturating_add(max).min(data.len());
    let slice = data.get(start..end).unwrap_or(&[]);
    tri!(copy_out(c, slice, rp, rn)?);
    Ok(OK)
}

fn set_buffer_bytes(c: Cx<'_, '_>, kind: i32, start: i32, size: i32, p: i32, n: i32) -> Hc {
    unrestricted(c)?;
    let data = tri!(read(c, p, n));
    let start = start as u32 as usize;
    let size = size as u32 as usize;
    let buf = tri!(tri!(buffer(c.data_mut(), kind)).ok_or(NOT_FOUND));
    // Envoy's Buffer::copyFrom.
    if start == 0 {
        if size == 0 {
            let mut v = data;
            v.extend_from_slice(buf);
            *buf = v;
        } else if size >= buf.len() {
            *buf = data;
        } else {
            return Ok(BAD_ARGUMENT);
        }
    } else if start >= buf.len() {
        buf.extend_from_slice(&data);
    } else {
        return Ok(BAD_ARGUMENT);
    }
    Ok(OK)
}

fn get_buffer_status(c: Cx<'_, '_>, kind: i32, rp: i32, rf: i32) -> Hc {
    unrestricted(c)?;
    let len = {
        let st = c.data_mut();
        match kind {
            6 => st.config.vm_config.len(),
            7 if st.in_configure => st.config.plugin_config.len(),
            _ => tri!(tri!(buffer(st, kind)).ok_or(NOT_FOUND)).len(),
        }
    };
    tri!(write_u32(c, rp, u32::try_from(len).unwrap_or(u32::MAX)));
    tri!(write_u32(c, rf, 0));
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    c: Cx<'_, '_>,
    code: i32,
    dp: i32,
    dn: i32,
    bp: i32,
    bn: i32,
    hp: i32,
    hn: i32,
    _grpc: i32,
) -> Hc {
    unrestricted(c)?;
    let details = tri!(read(c, dp, dn));
    let body = tri!(read(c, bp, bn));
    let headers = tri!(read(c, hp, hn));
    let headers: Pairs = parse_pairs(&headers)
        .into_iter()
        .map(|(k, v)| (lower(&k), v))
        .collect();
    let Some(s) = c.data_mut().stream() else {
        return Ok(NOT_FOUND);
    };
    let status = u16::try_from(code).unwrap_or(500);
    s.deferred.push(Deferred::LocalReply(Reply {
        status,
        headers: Headers(headers),
        body,
        details: String::from_utf8_lossy(&details).replace(' ', "_"),
    }));
    Ok(OK)
}

fn continue_or_close(c: Cx<'_, '_>, kind: i32, close: bool) -> Hc {
    unrestricted(c)?;
    let Some(s) = c.data_mut().stream() else {
        return Ok(NOT_FOUND);
    };
    let action = match (kind, close) {
        (0, false) => Deferred::ContinueRequest,
        (1, false) => Deferred::ContinueResponse,
        (0 | 1, true) => Deferred::Reset,
        (2 | 3, _) => return Ok(UNIMPLEMENTED),
        _ => return Ok(BAD_ARGUMENT),
    };
    s.deferred.push(action);
    Ok(OK)
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    c: Cx<'_, '_>,
    up: i32,
    un: i32,
    hp: i32,
    hn: i32,
    bp: i32,
    bn: i32,
    tp: i32,
    tn: i32,
    timeout: i32,
    rtoken: i32,
) -> Hc {
    unrestricted(c)?;
    let cluster = String::from_utf8_lossy(&tri!(read(c, up, un))).into_owned();
    let headers: Pairs = parse_pairs(&tri!(read(c, hp, hn)))
        .into_iter()
        .map(|(k, v)| (lower(&k), v))
        .collect();
    let body = tri!(read(c, bp, bn));
    let trailers = parse_pairs(&tri!(read(c, tp, tn)));
    let st = c.data_mut();
    if !st.config.clusters.contains(&cluster) {
        return Ok(BAD_ARGUMENT);
    }
    let has = |name: &[u8]| headers.iter().any(|(k, _)| k == name);
    if !(has(b":method") && has(b":path") && has(b":authority")) {
        return Ok(BAD_ARGUMENT);
    }
    let mut headers = headers;
    if !body.is_empty() {
        headers.push((
            b"content-length".to_vec(),
            body.len().to_string().into_bytes(),
        ));
    }
    st.next_token = st.next_token.wrapping_add(1).max(1);
    let token = st.next_token;
    let stream = st.streams.get(&st.effective).map(|s| s.id);
    let timeout_ms = timeout as u32;
    let record = {
        let mut sh = lock(&st.shared);
        let record = CallRecord {
            vm: st.index,
            generation: st.generation,
            token,
            root: ROOT,
            stream,
            cluster,
            headers,
            body,
            trailers,
            timeout_ms,
            deadline_ns: (timeout_ms > 0).then(|| {
                sh.clock_ns
                    .saturating_add(u64::from(timeout_ms) * 1_000_000)
            }),
        };
        sh.calls.push(record.clone());
        record
    };
    if let Err(s) = write_u32(c, rtoken, record.token) {
        let mut sh = lock(&c.data().shared);
        sh.calls
            .retain(|r| !(r.vm == record.vm && r.token == record.token));
        return Ok(s);
    }
    Ok(OK)
}

fn get_status(c: Cx<'_, '_>, rcode: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let (code, message) = c.data().last_status.clone();
    tri!(write_u32(c, rcode, code));
    tri!(copy_out(c, &message, rp, rn)?);
    Ok(OK)
}

fn set_tick_period(c: Cx<'_, '_>, ms: i32) -> Hc {
    unrestricted(c)?;
    let st = c.data_mut();
    st.tick_period_ms = ms as u32;
    st.next_tick_ns = if ms == 0 {
        None
    } else {
        let now = lock(&st.shared).clock_ns;
        Some(now.saturating_add(u64::from(ms as u32) * 1_000_000))
    };
    Ok(OK)
}

fn get_time(c: Cx<'_, '_>, rp: i32) -> Hc {
    unrestricted(c)?;
    let now = lock(&c.data().shared).clock_ns;
    tri!(write(c, rp, &now.to_le_bytes()));
    Ok(OK)
}

fn get_log_level(c: Cx<'_, '_>, rp: i32) -> Hc {
    let level = c.data().config.log_level as u32;
    tri!(write_u32(c, rp, level));
    Ok(OK)
}

fn define_metric(c: Cx<'_, '_>, kind: i32, np: i32, nn: i32, rid: i32) -> Hc {
    unrestricted(c)?;
    let name = String::from_utf8_lossy(&tri!(read(c, np, nn))).into_owned();
    let (kind, slot) = match kind {
        0 => (MetricKind::Counter, 0),
        1 => (MetricKind::Gauge, 1),
        2 => (MetricKind::Histogram, 2),
        _ => return Ok(BAD_ARGUMENT),
    };
    let st = c.data_mut();
    {
        let mut sh = lock(&st.shared);
        let m = sh
            .metrics
            .entry(name.clone())
            .or_insert(crate::state::Metric {
                kind,
                value: 0,
                samples: Vec::new(),
            });
        if m.kind != kind {
            return Ok(BAD_ARGUMENT);
        }
    }
    // Envoy: ids step by 4, the low two bits are the type.
    let Some(next) = st.next_metric.get_mut(slot) else {
        return Ok(INTERNAL_FAILURE);
    };
    *next = next.wrapping_add(4);
    let id = *next;
    st.metric_ids.insert(id, name);
    tri!(write_u32(c, rid, id));
    Ok(OK)
}

fn metric_of(st: &VmState, id: i32) -> Result<(String, u32), u32> {
    let id = id as u32;
    let kind = id & 3;
    if kind == 3 {
        return Err(BAD_ARGUMENT);
    }
    st.metric_ids
        .get(&id)
        .map(|n| (n.clone(), kind))
        .ok_or(NOT_FOUND)
}

fn increment_metric(c: Cx<'_, '_>, id: i32, delta: i64) -> Hc {
    unrestricted(c)?;
    let st = c.data();
    let (name, kind) = tri!(metric_of(st, id));
    let mut sh = lock(&st.shared);
    let Some(m) = sh.metrics.get_mut(&name) else {
        return Ok(NOT_FOUND);
    };
    match kind {
        0 if delta > 0 => m.value = m.value.saturating_add(delta),
        1 => m.value = m.value.saturating_add(delta),
        _ => return Ok(BAD_ARGUMENT),
    }
    Ok(OK)
}

fn record_metric(c: Cx<'_, '_>, id: i32, value: i64) -> Hc {
    unrestricted(c)?;
    let st = c.data();
    // Envoy: an id of no known type is NOT_FOUND here (BAD_ARGUMENT elsewhere).
    let (name, kind) = tri!(metric_of(st, id).map_err(|_| NOT_FOUND));
    let mut sh = lock(&st.shared);
    let Some(m) = sh.metrics.get_mut(&name) else {
        return Ok(NOT_FOUND);
    };
    match kind {
        0 => m.value = m.value.saturating_add(value),
        1 => m.value = value,
        _ => m.samples.push(value as u64),
    }
    Ok(OK)
}

fn get_metric(c: Cx<'_, '_>, id: i32, rp: i32) -> Hc {
    unrestricted(c)?;
    let value = {
        let st = c.data();
        let (name, kind) = tri!(metric_of(st, id));
        if kind == 2 {
            return Ok(BAD_ARGUMENT);
        }
        let sh = lock(&st.shared);
        tri!(sh.metrics.get(&name).ok_or(NOT_FOUND)).value
    };
    tri!(write(c, rp, &value.to_le_bytes()));
    Ok(OK)
}

fn get_shared_data(c: Cx<'_, '_>, kp: i32, kn: i32, rp: i32, rn: i32, rcas: i32) -> Hc {
    unrestricted(c)?;
    let key = tri!(read(c, kp, kn));
    let found = {
        let st = c.data();
        let sh = lock(&st.shared);
        sh.data
            .get(&st.config.vm_id)
            .and_then(|m| m.get(&key))
            .cloned()
    };
    let (value, cas) = tri!(found.ok_or(NOT_FOUND));
    tri!(copy_out(c, &value, rp, rn)?);
    tri!(write_u32(c, rcas, cas));
    Ok(OK)
}

fn set_shared_data(c: Cx<'_, '_>, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32) -> Hc {
    unrestricted(c)?;
    let key = tri!(read(c, kp, kn));
    let value = tri!(read(c, vp, vn));
    let cas = cas as u32;
    let st = c.data();
    let mut sh = lock(&st.shared);
    let current = sh
        .data
        .get(&st.config.vm_id)
        .and_then(|m| m.get(&key))
        .map(|(_, c)| *c);
    // Envoy: a mismatch only for an existing key and a non-zero CAS.
    if matches!(current, Some(now) if cas != 0 && cas != now) {
        return Ok(CAS_MISMATCH);
    }
    // A racing writer (`Host::race_shared_data`) rewrites the key first: same value, new CAS.
    if cas != 0 && current.is_some() && sh.races > 0 {
        sh.races -= 1;
        let bumped = sh.next_cas();
        if let Some((_, c)) = sh
            .data
            .get_mut(&st.config.vm_id)
            .and_then(|m| m.get_mut(&key))
        {
            *c = bumped;
        }
        return Ok(CAS_MISMATCH);
    }
    let next = sh.next_cas();
    sh.data
        .entry(st.config.vm_id.clone())
        .or_default()
        .insert(key, (value, next));
    Ok(OK)
}

fn register_queue(c: Cx<'_, '_>, np: i32, nn: i32, rid: i32) -> Hc {
    unrestricted(c)?;
    let name = tri!(read(c, np, nn));
    let id = {
        let st = c.data();
        let vm_id = st.config.vm_id.clone();
        let registrant = (st.index, ROOT);
        let mut sh = lock(&st.shared);
        match sh
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            Some(i) => {
                if let Some(q) = sh.queues.get_mut(i) {
                    q.registrant = registrant;
                }
                i
            }
            None => {
                sh.queues.push(crate::state::Queue {
                    vm_id,
                    name,
                    items: Default::default(),
                    registrant,
                });
                sh.queues.len() - 1
            }
        }
    };
    tri!(write_u32(c, rid, queue_id(id)));
    Ok(OK)
}

fn queue_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

fn queue_index(id: i32) -> usize {
    (id as u32 as usize).wrapping_sub(1)
}

fn resolve_queue(c: Cx<'_, '_>, vp: i32, vn: i32, np: i32, nn: i32, rid: i32) -> Hc {
    unrestricted(c)?;
    let vm = tri!(read(c, vp, vn));
    let name = tri!(read(c, np, nn));
    let found = {
        let st = c.data();
        let vm_id = if vm.is_empty() {
            st.config.vm_id.clone()
        } else {
            String::from_utf8_lossy(&vm).into_owned()
        };
        let sh = lock(&st.shared);
        sh.queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
    };
    let index = tri!(found.ok_or(NOT_FOUND));
    tri!(write_u32(c, rid, queue_id(index)));
    Ok(OK)
}

fn enqueue(c: Cx<'_, '_>, id: i32, p: i32, n: i32) -> Hc {
    unrestricted(c)?;
    let item = tri!(read(c, p, n));
    let st = c.data();
    let mut sh = lock(&st.shared);
    let Some(q) = sh.queues.get_mut(queue_index(id)) else {
        return Ok(NOT_FOUND);
    };
    q.items.push_back(item);
    let (vm, root) = q.registrant;
    sh.queue_ready.push_back((vm, root, id as u32));
    Ok(OK)
}

fn dequeue(c: Cx<'_, '_>, id: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let item = {
        let st = c.data();
        let mut sh = lock(&st.shared);
        let Some(q) = sh.queues.get_mut(queue_index(id)) else {
            return Ok(NOT_FOUND);
        };
        tri!(q.items.pop_front().ok_or(EMPTY))
    };
    tri!(copy_out(c, &item, rp, rn)?);
    Ok(OK)
}

fn u64_le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn request_property(s: &StreamState, field: &str, rest: &[String], now: u64) -> Option<Vec<u8>> {
    let req = &s.view.request;
    let path = req.get_bytes(":path").unwrap_or_default();
    let (url_path, query) = match path.iter().position(|b| *b == b'?') {
        Some(i) => (
            path.get(..i).unwrap_or_default().to_vec(),
            path.get(i + 1..).unwrap_or_default().to_vec(),
        ),
        None => (path.clone(), Vec::new()),
    };
    match (field, rest) {
        ("path", []) => Some(path),
        ("url_path", []) => Some(url_path),
        ("query", []) => Some(query),
        ("host", []) => req
            .get_bytes(":authority")
            .or_else(|| req.get_bytes("host")),
        ("method", []) => req.get_bytes(":method"),
        ("scheme", []) => Some(req.get_bytes(":scheme").unwrap_or_else(|| b"http".to_vec())),
        ("protocol", []) => Some(b"HTTP/1.1".to_vec()),
        ("id", []) => Some(
            req.get_bytes("x-request-id")
                .unwrap_or_else(|| format!("tollgate-testhost-{}", s.id).into_bytes()),
        ),
        ("time", []) => Some(u64_le(s.started_ns)),
        ("duration", []) => Some(u64_le(now.saturating_sub(s.started_ns))),
        ("headers", [name]) => {
            let values: Vec<Vec<u8>> = req
                .0
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v.clone())
                .collect();
            (!values.is_empty()).then(|| values.join(&b","[..]))
        }
        ("headers", []) => Some(serialize_pairs(&req.0)),
        _ => None,
    }
}

fn property(st: &mut VmState, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(v) = st
        .streams
        .get(&st.effective)
        .and_then(|s| s.properties.get(path))
    {
        return Some(v.clone());
    }
    let segments = property_path(path);
    let joined = segments.join(".");
    if let Some((_, v)) = st.config.properties.iter().find(|(k, _)| *k == joined) {
        return Some(v.clone());
    }
    let now = lock(&st.shared).clock_ns;
    let stream = st.streams.get(&st.effective);
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    match seg.as_slice() {
        ["plugin_name"] => Some(st.config.plugin_name.clone().into_bytes()),
        ["plugin_root_id"] => Some(st.config.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => Some(st.config.vm_id.clone().into_bytes()),
        // Envoy 1.40 serves the node under `xds` (`node.id` is not found there).
        ["xds", "node", "id"] => st.config.node_id.clone().map(String::into_bytes),
        ["request", field, ..] => {
            request_property(stream?, field, segments.get(2..).unwrap_or_default(), now)
        }
        ["response", "code"] => stream?
            .view
            .response
            .as_ref()
            .map(|r| u64_le(u64::from(r.status))),
        ["source", "address"] => stream.map(|_| b"127.0.0.1:50000".to_vec()),
        ["source", "port"] => stream.map(|_| u64_le(50000)),
        ["destination", "address"] => stream.map(|_| b"127.0.0.1:10000".to_vec()),
        ["destination", "port"] => stream.map(|_| u64_le(10000)),
        ["connection", "id"] => stream.map(|s| u64_le(s.id)),
        ["connection", "mtls"] => stream.map(|_| vec![0]),
        _ => None,
    }
}

fn get_property(c: Cx<'_, '_>, pp: i32, pn: i32, rp: i32, rn: i32) -> Hc {
    unrestricted(c)?;
    let path = tri!(read(c, pp, pn));
    let value = tri!(property(c.data_mut(), &path).ok_or(NOT_FOUND));
    tri!(copy_out(c, &value, rp, rn)?);
    Ok(OK)
}

fn set_property(c: Cx<'_, '_>, pp: i32, pn: i32, vp: i32, vn: i32) -> Hc {
    unrestricted(c)?;
    let path = tri!(read(c, pp, pn));
    let value = tri!(read(c, vp, vn));
    let Some(s) = c.data_mut().stream() else {
        return Ok(NOT_FOUND);
    };
    s.properties.insert(path, value);
    Ok(OK)
}

fn set_effective_context(c: Cx<'_, '_>, id: i32) -> Hc {
    unrestricted(c)?;
    let st = c.data_mut();
    let id = id as u32;
    if id == ROOT || st.streams.contains_key(&id) {
        st.effective = id;
        Ok(OK)
    } else {
        Ok(BAD_ARGUMENT)
    }
}

/// Hostile mode: the status `name` answers instead of running, if a rule names it (the last
/// rule that does wins). Not while the module starts, where only `proxy_log` is allowed.
fn hostile(c: Cx<'_, '_>, name: &str) -> Option<u32> {
    let st = c.data();
    if st.restricted {
        return None;
    }
    let mut sh = lock(&st.shared);
    let status = sh
        .hostile
        .iter()
        .rev()
        .find(|h| h.call.covers(name))?
        .status
        .code();
    sh.hostile_answers.push(HostileAnswer {
        vm: st.label.clone(),
        call: name.to_owned(),
        status,
    });
    Some(status)
}

fn continue_stream(c: Cx<'_, '_>, kind: i32) -> Hc {
    continue_or_close(c, kind, false)
}

fn close_stream(c: Cx<'_, '_>, kind: i32) -> Hc {
    continue_or_close(c, kind, true)
}

/// No deferred `proxy_done` in this host: `on_done`'s answer is not waited for.
fn done(c: Cx<'_, '_>) -> Hc {
    unrestricted(c)?;
    Ok(NOT_FOUND)
}

/// Envoy registers a few foreign functions; this host none.
fn call_foreign_function(
    c: Cx<'_, '_>,
    _np: i32,
    _nn: i32,
    _ap: i32,
    _an: i32,
    _rp: i32,
    _rn: i32,
) -> Hc {
    unrestricted(c)?;
    Ok(NOT_FOUND)
}

/// Builds the linker: every `env` import the module declares is defined, the ones this host
/// does not implement return UNIMPLEMENTED; any other module's imports trap when called.
pub fn linker(engine: &wasmtime::Engine, module: &Module) -> wasmtime::Result<Linker<VmState>> {
    let mut l: Linker<VmState> = Linker::new(engine);
    let mut defined: HashSet<&'static str> = HashSet::new();

    macro_rules! hostcall {
        ($name:literal, $f:path, ($($a:ident : $t:ty),*)) => {
            l.func_wrap("env", $name, |mut c: Caller<'_, VmState>, $($a: $t),*| -> wasmtime::Result<i32> {
                if let Some(s) = hostile(&mut c, $name) {
                    return Ok(s as i32);
                }
                $f(&mut c, $($a),*).map(|s| s as i32)
            })?;
            defined.insert($name);
        };
    }

    hostcall!("proxy_log", log, (level: i32, p: i32, n: i32));
    hostcall!("proxy_get_log_level", get_log_level, (rp: i32));
    hostcall!("proxy_get_header_map_pairs", get_header_map_pairs, (m: i32, rp: i32, rn: i32));
    hostcall!("proxy_set_header_map_pairs", set_header_map_pairs, (m: i32, p: i32, n: i32));
    hostcall!("proxy_get_header_map_value", get_header_map_value, (m: i32, kp: i32, kn: i32, rp: i32, rn: i32));
    hostcall!("proxy_add_header_map_value", add_header_map_value, (m: i32, kp: i32, kn: i32, vp: i32, vn: i32));
    hostcall!("proxy_replace_header_map_value", replace_header_map_value, (m: i32, kp: i32, kn: i32, vp: i32, vn: i32));
    hostcall!("proxy_remove_header_map_value", remove_header_map_value, (m: i32, kp: i32, kn: i32));
    hostcall!("proxy_get_header_map_size", get_header_map_size, (m: i32, rp: i32));
    hostcall!("proxy_get_buffer_bytes", get_buffer_bytes, (t: i32, s: i32, m: i32, rp: i32, rn: i32));
    hostcall!("proxy_set_buffer_bytes", set_buffer_bytes, (t: i32, s: i32, z: i32, p: i32, n: i32));
    hostcall!("proxy_get_buffer_status", get_buffer_status, (t: i32, rp: i32, rf: i32));
    hostcall!("proxy_send_local_response", send_local_response, (code: i32, dp: i32, dn: i32, bp: i32, bn: i32, hp: i32, hn: i32, g: i32));
    hostcall!("proxy_http_call", http_call, (up: i32, un: i32, hp: i32, hn: i32, bp: i32, bn: i32, tp: i32, tn: i32, timeout: i32, rt: i32));
    hostcall!("proxy_get_status", get_status, (rc: i32, rp: i32, rn: i32));
    hostcall!("proxy_set_tick_period_milliseconds", set_tick_period, (ms: i32));
    hostcall!("proxy_get_current_time_nanoseconds", get_time, (rp: i32));
    hostcall!("proxy_define_metric", define_metric, (k: i32, np: i32, nn: i32, rid: i32));
    hostcall!("proxy_increment_metric", increment_metric, (id: i32, d: i64));
    hostcall!("proxy_record_metric", record_metric, (id: i32, v: i64));
    hostcall!("proxy_get_metric", get_metric, (id: i32, rp: i32));
    hostcall!("proxy_get_shared_data", get_shared_data, (kp: i32, kn: i32, rp: i32, rn: i32, rc: i32));
    hostcall!("proxy_set_shared_data", set_shared_data, (kp: i32, kn: i32, vp: i32, vn: i32, cas: i32));
    hostcall!("proxy_register_shared_queue", register_queue, (np: i32, nn: i32, rid: i32));
    hostcall!("proxy_resolve_shared_queue", resolve_queue, (vp: i32, vn: i32, np: i32, nn: i32, rid: i32));
    hostcall!("proxy_enqueue_shared_queue", enqueue, (id: i32, p: i32, n: i32));
    hostcall!("proxy_dequeue_shared_queue", dequeue, (id: i32, rp: i32, rn: i32));
    hostcall!("proxy_get_property", get_property, (pp: i32, pn: i32, rp: i32, rn: i32));
    hostcall!("proxy_set_property", set_property, (pp: i32, pn: i32, vp: i32, vn: i32));
    hostcall!("proxy_set_effective_context", set_effective_context, (id: i32));

    hostcall!("proxy_continue_stream", continue_stream, (t: i32));
    hostcall!("proxy_close_stream", close_stream, (t: i32));
    hostcall!("proxy_done", done, ());
    hostcall!("proxy_call_foreign_function", call_foreign_function, (np: i32, nn: i32, ap: i32, an: i32, rp: i32, rn: i32));

    // Everything else the module imports from `env` (gRPC, foreign functions, ...).
    for import in module.imports() {
        if import.module() != "env" || defined.contains(import.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = import.ty() {
            let results: Vec<ValType> = ty.results().collect();
            let name = import.name().to_owned();
            l.func_new(
                "env",
                import.name(),
                ty.clone(),
                move |mut c, _params, out| {
                    unrestricted(&mut c)?;
                    let status = hostile(&mut c, &name).unwrap_or(UNIMPLEMENTED);
                    for (slot, t) in out.iter_mut().zip(results.iter()) {
                        *slot = match t {
                            ValType::I32 => Val::I32(status as i32),
                            ValType::I64 => Val::I64(i64::from(status)),
                            ValType::F32 => Val::F32(0),
                            ValType::F64 => Val::F64(0),
                            _ => Val::null_func_ref(),
                        };
                    }
                    c.data()
                        .log(LogLevel::Trace, format!("host: {name} is not implemented"));
                    Ok(())
                },
            )?;
        }
    }
    l.define_unknown_imports_as_traps(module)?;
    Ok(l)
}
