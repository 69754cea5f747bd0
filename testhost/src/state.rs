//! What the host keeps: per VM (inside each wasmtime `Store`) and shared by every VM of a host.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::hostile::{Hostile, HostileAnswer};
use crate::wire::Pairs;
use crate::{FailurePolicy, Headers, LogLevel, LogLine, Outcome, Reply};

/// Statuses of the ABI (Envoy's `WasmResult`).
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// A key, queue, metric, buffer or context that does not exist.
    pub const NOT_FOUND: u32 = 1;
    /// A bad argument, or a map outside its phase.
    pub const BAD_ARGUMENT: u32 = 2;
    /// A value that could not be serialized.
    pub const SERIALIZATION_FAILURE: u32 = 3;
    /// A pointer and length outside the module's memory.
    pub const INVALID_MEMORY_ACCESS: u32 = 6;
    /// An empty queue.
    pub const EMPTY: u32 = 7;
    /// A shared-data write with a stale CAS.
    pub const CAS_MISMATCH: u32 = 8;
    /// The host could not do it.
    pub const INTERNAL_FAILURE: u32 = 10;
    /// A callout reset (`proxy_get_status` after `num_headers == 0`).
    pub const BROKEN_CONNECTION: u32 = 11;
    /// Not implemented by this host (or by Envoy).
    pub const UNIMPLEMENTED: u32 = 12;
}

/// The host's configuration, shared read-only by every VM.
#[derive(Debug, Clone)]
pub struct Config {
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    pub clusters: Vec<String>,
    pub failure_policy: FailurePolicy,
    pub allow_on_headers_stop_iteration: bool,
    pub log_level: LogLevel,
    pub node_id: Option<String>,
    pub properties: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub kind: MetricKind,
    pub value: i64,
    pub samples: Vec<u64>,
}

#[derive(Debug)]
pub struct Queue {
    pub vm_id: String,
    pub name: Vec<u8>,
    pub items: VecDeque<Vec<u8>>,
    /// (VM index, root context id) notified on enqueue: the last registrant.
    pub registrant: (usize, u32),
}

/// A callout made by a VM and not yet answered.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub vm: usize,
    pub generation: u32,
    pub token: u32,
    pub root: u32,
    pub stream: Option<u64>,
    pub cluster: String,
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
    pub timeout_ms: u32,
    pub deadline_ns: Option<u64>,
}

/// Shared data of one vm_id: key → (value, CAS).
pub type SharedData = HashMap<Vec<u8>, (Vec<u8>, u32)>;

/// Shared by every VM of one host: Envoy's process-wide stores.
#[derive(Debug, Default)]
pub struct Shared {
    pub clock_ns: u64,
    pub data: HashMap<String, SharedData>,
    pub last_cas: u32,
    pub queues: Vec<Queue>,
    pub queue_ready: VecDeque<(usize, u32, u32)>,
    pub metrics: BTreeMap<String, Metric>,
    pub logs: Vec<LogLine>,
    pub calls: Vec<CallRecord>,
    /// Hostile mode's rules, and the answers they gave.
    pub hostile: Vec<Hostile>,
    pub hostile_answers: Vec<HostileAnswer>,
    /// Races still to lose: see `Host::race_shared_data`.
    pub races: u32,
}

impl Shared {
    pub fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            self.last_cas = 1;
        }
        self.last_cas
    }
}

pub type SharedRef = Arc<Mutex<Shared>>;

/// Locks the shared store; a poisoned lock (a panicking test thread) is still usable.
pub fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a callback asked the host to do once it returns (Envoy defers these).
#[derive(Debug, Clone)]
pub enum Deferred {
    LocalReply(Reply),
    ContinueRequest,
    ContinueResponse,
    Reset,
}

/// How far the request got past this filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStop {
    /// Headers went upstream.
    Passed,
    /// Stopped, later data is buffered without calling the filter (Envoy's default for Pause).
    All,
    /// Stopped, data still goes to the filter (`allow_on_headers_stop_iteration`).
    Iteration,
}

/// One HTTP stream inside a VM.
#[derive(Debug)]
pub struct StreamState {
    pub id: u64,
    pub view: View,
    pub request_headers: Pairs,
    pub request_headers_open: bool,
    pub request_trailers: Option<Pairs>,
    pub headers_stop: HeadersStop,
    /// Data held by Envoy while the filter stopped everything: the filter has not seen it.
    pub held: Vec<u8>,
    pub held_eos: Option<bool>,
    /// The body buffer the filter sees (`HTTP_REQUEST_BODY`).
    pub body: Vec<u8>,
    pub body_open: bool,
    pub client_eos: bool,
    pub response_headers: Pairs,
    pub response_headers_open: bool,
    pub response_body: Vec<u8>,
    pub response_body_open: bool,
    pub response_paused: bool,
    pub response_pending_body: Option<Vec<u8>>,
    pub deferred: Vec<Deferred>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub in_log: bool,
    pub started_ns: u64,
}

/// What a test can see of a stream, kept after the stream is gone.
#[derive(Debug, Clone)]
pub struct View {
    pub request: Headers,
    pub outcome: Outcome,
    pub response: Option<Reply>,
    pub finished: bool,
    pub upstream_headers: Option<Pairs>,
    pub upstream_body: Vec<u8>,
}

/// Per VM: the data every hostcall of that VM sees.
pub struct VmState {
    pub index: usize,
    pub generation: u32,
    pub label: String,
    pub config: Arc<Config>,
    pub shared: SharedRef,
    pub restricted: bool,
    pub in_configure: bool,
    /// The context of the running callback, and the one set by `proxy_set_effective_context`.
    pub effective: u32,
    pub streams: HashMap<u32, StreamState>,
    pub next_context: u32,
    pub next_token: u32,
    pub call_response: Option<(Pairs, Vec<u8>, Pairs)>,
    pub last_status: (u32, Vec<u8>),
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub metric_ids: HashMap<u32, String>,
    pub next_metric: [u32; 3],
    /// Envoy caps a VM's linear memory at 1 GiB.
    pub limits: wasmtime::StoreLimits,
}

pub const ROOT: u32 = 1;

impl VmState {
    pub fn stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }

    pub fn log(&self, level: LogLevel, message: String) {
        if level >= self.config.log_level {
            lock(&self.shared).logs.push(LogLine {
                vm: self.label.clone(),
                level,
                message,
            });
        }
    }
}
