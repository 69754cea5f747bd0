//! A wasmtime host of the proxy-wasm ABI (v0.2.1) that drives a filter as Envoy 1.40 does, for
//! tests that assert what a client, the upstream and a callout's cluster would see.
//!
//! One [`Host`] per test (no global state; tests run in parallel): a main-thread VM plus N
//! worker VMs, each its own instance of the module, all configured like Envoy (a canary first,
//! then main, then the workers: `on_context_create`, `on_vm_start`, `on_configure`), sharing a
//! vm_id-keyed store for shared data, queues and metrics, a controllable clock and a log.
//!
//! ```no_run
//! use tollgate_testhost::{Host, Outcome, NO_HEADERS};
//! # fn main() -> Result<(), tollgate_testhost::Error> {
//! let host = Host::builder("target/tollgate.wasm")
//!     .plugin_config(std::fs::read("examples/sendgrid.json").unwrap_or_default())
//!     .cluster("tollgate_control_service")
//!     .workers(2)
//!     .build()?;
//! let stream = host.worker(0).request(&[
//!     (":method", "GET"),
//!     (":path", "/v3/mail?api_user=a&api_key=b"),
//!     (":authority", "api.sendgrid.example"),
//! ]);
//! assert!(matches!(stream.outcome(), Outcome::Paused));
//! let call = host.pending_calls().remove(0);
//! call.respond(200, NO_HEADERS, b"");
//! let upstream = stream.outcome();
//! # Ok(()) }
//! ```
//!
//! Envoy behaviours reproduced (see `shared/reference/proxy-wasm-envoy.md`):
//! - statuses for misuse (maps outside their phase are BAD_ARGUMENT, CAS semantics, EMPTY
//!   queues, unknown clusters, out-of-bounds pointers...);
//! - `Pause` from `on_request_headers` stops everything: body data is buffered and not shown
//!   to the filter until it resumes (unless [`Builder::allow_on_headers_stop_iteration`]);
//! - local replies and `continue_stream` take effect when the callback returns, and local
//!   replies go through the filter's response callbacks;
//! - callout failures arrive as Envoy-generated 503/504 responses, a reset as
//!   `num_headers == 0` with `proxy_get_status` = (BrokenConnection, "reset");
//! - a trap fails the VM: later requests on it get the failure policy (FAIL_CLOSED: 503,
//!   empty body, details `wasm_fail_stream`), and [`Host::traps`] records it.
//!
//! Beyond Envoy, for tests:
//! - hostile mode ([`Host::set_hostile`], [`Builder::hostile`]): chosen hostcalls, or all
//!   ([`HostCall::All`]), answer a [`Status`] the module does not expect and do nothing;
//!   [`Host::hostile_answers`] lists what was refused, [`Host::imports`] what the module
//!   imports, so a test can make each of them hostile in turn;
//! - allocation counting: when the module exports [`ALLOCATIONS_EXPORT`]
//!   (`tollgate_allocations() -> i64`), [`Stream::allocations`] is what it allocated for that
//!   stream, over all the callbacks run for it, and [`VmRef::allocations`] the VM's total.
//! - a racing writer ([`Host::race_shared_data`]): the next N conditional writes of shared
//!   data lose a compare-and-swap, as if another worker wrote the key in between;
//! - [`Host::restart_vm`]: a VM replaced by a fresh instance without a trap.

mod abi;
mod hostile;
mod state;
mod wire;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, Instance, Linker, Module, Store, TypedFunc};

pub use hostile::{HostCall, Hostile, HostileAnswer, Status};
pub use state::status;
use state::{
    lock, CallRecord, Config, Deferred, HeadersStop, SharedRef, StreamState, View, VmState, ROOT,
};
use wire::Pairs;

/// Log levels of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    fn from_abi(level: i32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

/// One line the module logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `canary`, `main` or `worker<N>`.
    pub vm: String,
    /// Its level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} {:?}] {}", self.vm, self.level, self.message)
    }
}

/// Envoy's `failure_policy` for a VM that trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Every request on the failed VM gets 503 with an empty body (Envoy's default).
    #[default]
    FailClosed,
    /// The filter is bypassed on the failed VM.
    FailOpen,
    /// A fresh instance (new memory, same shared store) is configured for new requests.
    FailReload,
}

/// A header list in order, duplicates kept; names are lower-case.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(Vec<u8>, Vec<u8>)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

impl Headers {
    /// The first value of `name` (case-insensitive), lossily as text.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// The first value of `name` (case-insensitive).
    pub fn get_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.clone())
    }

    /// Every value of `name`, lossily as text.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// The names, lossily as text, in order.
    pub fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// An empty header list (`&[]` alone leaves the item type to infer).
pub const NO_HEADERS: &[(&str, &str)] = &[];

/// Header lists tests can write: `&[("name", "value")]`, byte strings, or owned pairs.
pub trait IntoHeaders {
    /// The pairs, names lower-cased as Envoy's codecs do.
    fn into_headers(self) -> Headers;
}

fn collect<K: AsRef<[u8]>, V: AsRef<[u8]>>(it: impl Iterator<Item = (K, V)>) -> Headers {
    Headers(
        it.map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
            .collect(),
    )
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> IntoHeaders for &[(K, V)] {
    fn into_headers(self) -> Headers {
        collect(self.iter().map(|(k, v)| (k, v)))
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> IntoHeaders for &[(K, V); N] {
    fn into_headers(self) -> Headers {
        collect(self.iter().map(|(k, v)| (k, v)))
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> IntoHeaders for Vec<(K, V)> {
    fn into_headers(self) -> Headers {
        collect(self.into_iter())
    }
}

impl IntoHeaders for Headers {
    fn into_headers(self) -> Headers {
        self
    }
}

/// A response as the client sees it (a local reply, or the upstream's after the filter).
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers without `:status`.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
    /// Envoy's response code details (`wasm_fail_stream` for the failure policy).
    pub details: String,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("details", &self.details)
            .finish()
    }
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }

    /// The body, lossily as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether this is the failure policy's reply for a failed VM.
    pub fn is_failure_policy(&self) -> bool {
        self.details == "wasm_fail_stream"
    }
}

/// A request as it went upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The request headers after the filter.
    pub headers: Headers,
    /// The body after the filter.
    pub body: Vec<u8>,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole request went upstream.
    Continued(Upstream),
    /// The client got a local reply (the filter's, or the failure policy's).
    LocalReply(Reply),
    /// The filter holds the request (paused, e.g. on a callout).
    Paused,
    /// The filter let everything so far through; the client has not finished the request.
    Incomplete,
    /// The filter reset the stream (`proxy_close_stream`).
    Reset,
}

impl Outcome {
    /// The upstream request, if it went on.
    pub fn upstream(&self) -> Option<&Upstream> {
        match self {
            Outcome::Continued(u) => Some(u),
            _ => None,
        }
    }

    /// The local reply, if any.
    pub fn local_reply(&self) -> Option<&Reply> {
        match self {
            Outcome::LocalReply(r) => Some(r),
            _ => None,
        }
    }
}

/// A trap: the VM is failed from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// The VM's label.
    pub vm: String,
    /// The export that trapped.
    pub callback: String,
    /// wasmtime's message (with the module's backtrace).
    pub message: String,
}

/// Why a host could not be built.
#[derive(Debug)]
pub enum Error {
    /// The module could not be read or compiled.
    Load(String),
    /// The module is not a proxy-wasm module this host can run (no ABI marker, allocator...).
    Module(String),
    /// `on_vm_start` returned false.
    VmStart {
        /// The VM.
        vm: String,
        /// Every log line so far.
        logs: Vec<LogLine>,
    },
    /// `on_configure` returned false: Envoy rejects the configuration.
    Configure {
        /// The VM.
        vm: String,
        /// Every log line so far.
        logs: Vec<LogLine>,
    },
    /// The module trapped while starting or being configured.
    Trap {
        /// What trapped.
        trap: Trap,
        /// Every log line so far.
        logs: Vec<LogLine>,
    },
}

impl Error {
    /// The log lines at the time of the failure (empty for load errors).
    pub fn logs(&self) -> &[LogLine] {
        match self {
            Error::Load(_) | Error::Module(_) => &[],
            Error::VmStart { logs, .. }
            | Error::Configure { logs, .. }
            | Error::Trap { logs, .. } => logs,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(m) => write!(f, "cannot load the module: {m}"),
            Error::Module(m) => write!(f, "not a usable proxy-wasm module: {m}"),
            Error::VmStart { vm, .. } => write!(f, "on_vm_start returned false on {vm}"),
            Error::Configure { vm, .. } => write!(f, "on_configure returned false on {vm}"),
            Error::Trap { trap, .. } => {
                write!(
                    f,
                    "{} trapped in {}: {}",
                    trap.vm, trap.callback, trap.message
                )
            }
        }?;
        for line in self.logs() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Compiled modules by (path, size, mtime): compiling is the slow part and the result is
/// immutable, so hosts of the same process share it. No other state is shared.
type Compiled = (PathBuf, u64, Option<SystemTime>, Engine, Module);
static COMPILED: Mutex<Vec<Compiled>> = Mutex::new(Vec::new());

fn compile(path: &Path) -> Result<(Engine, Module), Error> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::Load(format!("{}: {e}", path.display())))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let mut cache = COMPILED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, _, _, e, m)) = cache
        .iter()
        .find(|(p, l, t, _, _)| (p, l, t) == (&key.0, &key.1, &key.2))
    {
        return Ok((e.clone(), m.clone()));
    }
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    // A module stuck in a loop traps (out of fuel) instead of hanging the test.
    config.consume_fuel(true);
    let engine = Engine::new(&config).map_err(|e| Error::Load(e.to_string()))?;
    let module = Module::from_file(&engine, path).map_err(|e| Error::Load(format!("{e:#}")))?;
    cache.push((key.0, key.1, key.2, engine.clone(), module.clone()));
    Ok((engine, module))
}

/// Configures a [`Host`].
#[derive(Debug, Clone)]
pub struct Builder {
    path: PathBuf,
    config: Config,
    workers: usize,
    canary: bool,
    start: SystemTime,
    hostile: Vec<Hostile>,
}

impl Builder {
    /// The plugin configuration (`PLUGIN_CONFIGURATION`, read in `on_configure`).
    pub fn plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.plugin_config = bytes.into();
        self
    }

    /// The VM configuration (`VM_CONFIGURATION`, read in `on_vm_start`).
    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.vm_config = bytes.into();
        self
    }

    /// The vm_id: shared data and queues are keyed by it (default `tollgate`).
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.config.vm_id = vm_id.to_owned();
        self
    }

    /// The root_id (`plugin_root_id`), default empty.
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.config.root_id = root_id.to_owned();
        self
    }

    /// A cluster `proxy_http_call` may call; any other is BAD_ARGUMENT.
    pub fn cluster(mut self, name: &str) -> Self {
        self.config.clusters.push(name.to_owned());
        self
    }

    /// Number of worker VMs (default 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Whether a canary VM is configured first and dropped, as Envoy does (default true).
    pub fn canary(mut self, canary: bool) -> Self {
        self.canary = canary;
        self
    }

    /// What a trap does to later requests (default FAIL_CLOSED).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.config.failure_policy = policy;
        self
    }

    /// Envoy's `allow_on_headers_stop_iteration`: with it, `Pause` from the headers callback
    /// still shows body data to the filter; without it (default) the data waits.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.config.allow_on_headers_stop_iteration = allow;
        self
    }

    /// Lines below this level are dropped (default TRACE: everything is kept).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.config.log_level = level;
        self
    }

    /// Envoy's node id (the `xds.node.id` property); absent by default.
    pub fn node_id(mut self, id: &str) -> Self {
        self.config.node_id = Some(id.to_owned());
        self
    }

    /// A property value for a dotted path (`xds.cluster_name`), served before the built-ins.
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.config.properties.push((path.to_owned(), value.into()));
        self
    }

    /// The clock's start (default 2026-01-01T00:00:00Z).
    pub fn start_time(mut self, t: SystemTime) -> Self {
        self.start = t;
        self
    }

    /// Hostile mode from the start (after the module's own start): see [`Host::set_hostile`].
    /// A hostile configuration phase may make the build fail.
    pub fn hostile(mut self, rule: Hostile) -> Self {
        self.hostile.push(rule);
        self
    }

    /// Loads the module and configures the canary, main and worker VMs.
    pub fn build(self) -> Result<Host, Error> {
        let (engine, module) = compile(&self.path)?;
        let linker = abi::linker(&engine, &module).map_err(|e| Error::Module(format!("{e:#}")))?;
        let shared: SharedRef = Arc::default();
        lock(&shared).hostile = self.hostile;
        lock(&shared).clock_ns = self
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let config = Arc::new(self.config);
        let mut inner = Inner {
            engine,
            module,
            linker,
            config,
            shared: shared.clone(),
            vms: Vec::new(),
            traps: Vec::new(),
            finished: HashMap::new(),
            live: HashMap::new(),
            next_stream: 0,
            reloads: 0,
            allocations: HashMap::new(),
            answering: None,
        };
        let mut labels = Vec::new();
        if self.canary {
            labels.push("canary".to_owned());
        }
        labels.push("main".to_owned());
        labels.extend((0..self.workers).map(|i| format!("worker{i}")));
        for label in labels {
            let index = inner.vms.len();
            let vm = inner.start_vm(index, 0, &label)?;
            if label == "canary" {
                // Envoy kills the canary once it is configured.
                continue;
            }
            inner.vms.push(vm);
        }
        let host = Host {
            inner: RefCell::new(inner),
            shared,
        };
        host.pump();
        Ok(host)
    }
}

struct Vm {
    label: String,
    store: Store<VmState>,
    instance: Instance,
    failed: Option<String>,
    generation: u32,
    /// The module's allocation counter (export `tollgate_allocations`), if it has one.
    allocations: Option<TypedFunc<(), i64>>,
}

impl Vm {
    /// The module's allocation counter now; `None` without the export or when reading traps.
    fn allocations(&mut self) -> Option<u64> {
        let f = self.allocations.clone()?;
        f.call(&mut self.store, ())
            .ok()
            .and_then(|n| u64::try_from(n).ok())
    }
}

struct Inner {
    engine: Engine,
    module: Module,
    linker: Linker<VmState>,
    config: Arc<Config>,
    shared: SharedRef,
    vms: Vec<Vm>,
    traps: Vec<Trap>,
    finished: HashMap<u64, View>,
    /// Live streams: id → (VM index, generation, context id).
    live: HashMap<u64, (usize, u32, u32)>,
    next_stream: u64,
    reloads: usize,
    /// Allocations counted per stream id, across every callback run on its behalf.
    allocations: HashMap<u64, u64>,
    /// The stream whose callout's answer is being delivered (the callback runs on the root).
    answering: Option<u64>,
}

/// The export that counts the module's allocations since its VM started: `() -> i64`.
pub const ALLOCATIONS_EXPORT: &str = "tollgate_allocations";

/// Instructions a module may run per callback before it traps.
const FUEL_PER_CALL: u64 = 2_000_000_000;
/// Envoy's cap on a VM's linear memory.
const MAX_MEMORY: usize = 1 << 30;

/// A call's result: `Ok(value)`, or the VM trapped (already recorded, streams failed).
type Called<T> = Result<T, ()>;

impl Inner {
    fn logs(&self) -> Vec<LogLine> {
        lock(&self.shared).logs.clone()
    }

    /// Instantiates and configures a VM as Envoy does.
    fn start_vm(&mut self, index: usize, generation: u32, label: &str) -> Result<Vm, Error> {
        let state = VmState {
            index,
            generation,
            label: label.to_owned(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            restricted: true,
            in_configure: false,
            effective: ROOT,
            streams: HashMap::new(),
            next_context: ROOT,
            next_token: 0,
            call_response: None,
            last_status: (0, Vec::new()),
            tick_period_ms: 0,
            next_tick_ns: None,
            metric_ids: HashMap::new(),
            next_metric: [0, 1, 2],
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|st| &mut st.limits);
        // Startup and configuration share one allowance.
        let _ = store.set_fuel(FUEL_PER_CALL);
        let trap = |callback: &str, e: wasmtime::Error, logs: Vec<LogLine>| Error::Trap {
            trap: Trap {
                vm: label.to_owned(),
                callback: callback.to_owned(),
                message: format!("{e:#}"),
            },
            logs,
        };
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(|e| trap("instantiate", e, self.logs()))?;
        if instance
            .get_export(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            return Err(Error::Module(
                "Missing or unknown Proxy-Wasm ABI version".to_owned(),
            ));
        }
        if instance.get_export(&mut store, "malloc").is_none()
            && instance
                .get_export(&mut store, "proxy_on_memory_allocate")
                .is_none()
        {
            return Err(Error::Module(
                "Wasm module is missing malloc function".to_owned(),
            ));
        }
        let allocations = instance
            .get_typed_func::<(), i64>(&mut store, ALLOCATIONS_EXPORT)
            .ok();
        let mut vm = Vm {
            label: label.to_owned(),
            store,
            instance,
            failed: None,
            generation,
            allocations,
        };
        if let Ok(f) = vm
            .instance
            .get_typed_func::<(), ()>(&mut vm.store, "_initialize")
        {
            f.call(&mut vm.store, ())
                .map_err(|e| trap("_initialize", e, self.logs()))?;
            if let Ok(m) = vm
                .instance
                .get_typed_func::<(i32, i32), i32>(&mut vm.store, "main")
            {
                m.call(&mut vm.store, (0, 0))
                    .map_err(|e| trap("main", e, self.logs()))?;
            }
        } else if let Ok(f) = vm
            .instance
            .get_typed_func::<(), ()>(&mut vm.store, "_start")
        {
            f.call(&mut vm.store, ())
                .map_err(|e| trap("_start", e, self.logs()))?;
        }
        vm.store.data_mut().restricted = false;
        vm.store.data_mut().next_context = ROOT + 1;
        vm.call_void("proxy_on_context_create", (ROOT as i32, 0))
            .map_err(|e| trap("proxy_on_context_create", e, self.logs()))?;
        let vm_config = len_i32(self.config.vm_config.len());
        let started = vm
            .call_i32("proxy_on_vm_start", (ROOT as i32, vm_config))
            .map_err(|e| trap("proxy_on_vm_start", e, self.logs()))?;
        if started == Some(0) {
            return Err(Error::VmStart {
                vm: label.to_owned(),
                logs: self.logs(),
            });
        }
        vm.store.data_mut().in_configure = true;
        let plugin_config = len_i32(self.config.plugin_config.len());
        let configured = vm.call_i32("proxy_on_configure", (ROOT as i32, plugin_config));
        vm.store.data_mut().in_configure = false;
        let configured = configured.map_err(|e| trap("proxy_on_configure", e, self.logs()))?;
        if configured == Some(0) {
            return Err(Error::Configure {
                vm: label.to_owned(),
                logs: self.logs(),
            });
        }
        Ok(vm)
    }

    fn vm(&mut self, index: usize) -> Option<&mut Vm> {
        self.vms.get_mut(index)
    }

    /// Records a trap on VM `index` and fails its streams per the policy.
    fn fail(&mut self, index: usize, callback: &str, error: &wasmtime::Error) {
        let policy = self.config.failure_policy;
        let Some(vm) = self.vms.get_mut(index) else {
            return;
        };
        let message = format!("{error:#}");
        vm.failed = Some(message.clone());
        self.traps.push(Trap {
            vm: vm.label.clone(),
            callback: callback.to_owned(),
            message,
        });
        let streams: Vec<StreamState> = vm
            .store
            .data_mut()
            .streams
            .drain()
            .map(|(_, s)| s)
            .collect();
        let generation = vm.generation;
        let label = vm.label.clone();
        lock(&self.shared)
            .calls
            .retain(|c| !(c.vm == index && c.generation == generation));
        for mut s in streams {
            if !s.view.finished {
                match policy {
                    FailurePolicy::FailOpen if s.view.response.is_none() => {
                        s.view.upstream_headers = Some(s.view.request.0.clone());
                        s.view.outcome = Outcome::Continued(Upstream {
                            headers: s.view.request.clone(),
                            body: s.view.upstream_body.clone(),
                        });
                    }
                    _ => {
                        let reply = failure_reply();
                        s.view.response = Some(reply.clone());
                        s.view.outcome = Outcome::LocalReply(reply);
                    }
                }
                s.view.finished = true;
            }
            self.live.remove(&s.id);
            self.finished.insert(s.id, s.view);
        }
        if policy == FailurePolicy::FailReload {
            let next = generation.wrapping_add(1);
            if let Ok(fresh) = self.start_vm(index, next, &label) {
                if let Some(slot) = self.vms.get_mut(index) {
                    *slot = fresh;
                    self.reloads += 1;
                }
            }
        }
    }

    /// Calls an export for VM `index` with the effective context set to `ctx`.
    fn call<P, R>(&mut self, index: usize, ctx: u32, name: &str, params: P) -> Called<Option<R>>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        let answering = self.answering;
        // The field, not `self.vm()`: the allocation count below borrows another field.
        let Some(vm) = self.vms.get_mut(index) else {
            return Err(());
        };
        if vm.failed.is_some() {
            return Err(());
        }
        vm.store.data_mut().effective = ctx;
        let _ = vm.store.set_fuel(FUEL_PER_CALL);
        // Whose allocations these are: the context's stream, or the stream whose callout is
        // being answered.
        let stream = vm
            .store
            .data()
            .streams
            .get(&ctx)
            .map(|s| s.id)
            .or(answering);
        let before = stream.and_then(|_| vm.allocations());
        let result = match vm.instance.get_typed_func::<P, R>(&mut vm.store, name) {
            Ok(f) => f.call(&mut vm.store, params).map(Some),
            // Envoy calls only the callbacks a module exports.
            Err(_) => Ok(None),
        };
        vm.store.data_mut().effective = ROOT;
        if let (Some(stream), Some(before), true) = (stream, before, result.is_ok()) {
            let after = vm.allocations().unwrap_or(before);
            *self.allocations.entry(stream).or_default() += after.saturating_sub(before);
        }
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.fail(index, name, &e);
                Err(())
            }
        }
    }

    fn stream_mut(&mut self, index: usize, ctx: u32) -> Option<&mut StreamState> {
        self.vms
            .get_mut(index)?
            .store
            .data_mut()
            .streams
            .get_mut(&ctx)
    }

    /// Starts a stream on VM `index`.
    fn open(&mut self, index: usize, headers: Headers, eos: bool) -> u64 {
        self.next_stream += 1;
        let id = self.next_stream;
        let now = lock(&self.shared).clock_ns;
        let mut view = View {
            request: headers.clone(),
            outcome: Outcome::Paused,
            response: None,
            finished: false,
            upstream_headers: None,
            upstream_body: Vec::new(),
        };
        let failed = self.vms.get(index).map(|vm| vm.failed.is_some());
        if failed != Some(false) {
            // FAIL_CLOSED (or no such VM): 503 without calling the module. FAIL_OPEN: bypass.
            if failed == Some(true) && self.config.failure_policy == FailurePolicy::FailOpen {
                view.outcome = if eos {
                    Outcome::Continued(Upstream {
                        headers,
                        body: Vec::new(),
                    })
                } else {
                    Outcome::Incomplete
                };
            } else {
                let reply = failure_reply();
                view.response = Some(reply.clone());
                view.outcome = Outcome::LocalReply(reply);
            }
            view.finished = true;
            self.finished.insert(id, view);
            return id;
        }
        let Some(vm) = self.vm(index) else {
            return id;
        };
        let st = vm.store.data_mut();
        let ctx = st.next_context;
        st.next_context += 1;
        st.streams.insert(
            ctx,
            StreamState {
                id,
                view,
                request_headers: headers.0.clone(),
                request_headers_open: true,
                request_trailers: None,
                headers_stop: HeadersStop::All,
                held: Vec::new(),
                held_eos: None,
                body: Vec::new(),
                body_open: false,
                client_eos: eos,
                response_headers: Vec::new(),
                response_headers_open: false,
                response_body: Vec::new(),
                response_body_open: false,
                response_paused: false,
                response_pending_body: None,
                deferred: Vec::new(),
                properties: HashMap::new(),
                in_log: false,
                started_ns: now,
            },
        );
        let generation = vm.generation;
        self.live.insert(id, (index, generation, ctx));
        if self
            .call::<(i32, i32), ()>(
                index,
                ctx,
                "proxy_on_context_create",
                (ctx as i32, ROOT as i32),
            )
            .is_err()
        {
            return id;
        }
        let n = len_i32(headers.0.len());
        let action = self.call::<(i32, i32, i32), i32>(
            index,
            ctx,
            "proxy_on_request_headers",
            (ctx as i32, n, i32::from(eos)),
        );
        if let Ok(action) = action {
            self.after_headers(index, ctx, action.unwrap_or(0));
        }
        id
    }

    fn after_headers(&mut self, index: usize, ctx: u32, action: i32) {
        if self.settle(index, ctx) {
            return;
        }
        let allow = self.config.allow_on_headers_stop_iteration;
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if action == 0 {
            s.headers_stop = HeadersStop::Passed;
            pass_headers(s);
            if s.client_eos {
                complete(s);
            } else {
                s.view.outcome = Outcome::Incomplete;
            }
        } else {
            s.headers_stop = if allow {
                HeadersStop::Iteration
            } else {
                HeadersStop::All
            };
            s.view.outcome = Outcome::Paused;
        }
    }

    /// Applies what the last callback deferred; true when the stream is over (replied, reset,
    /// failed or gone).
    fn settle(&mut self, index: usize, ctx: u32) -> bool {
        loop {
            let Some(s) = self.stream_mut(index, ctx) else {
                return true;
            };
            if s.view.finished {
                return true;
            }
            let deferred = std::mem::take(&mut s.deferred);
            if deferred.is_empty() {
                return false;
            }
            if let Some(reply) = deferred.iter().find_map(|d| match d {
                Deferred::LocalReply(r) => Some(r.clone()),
                _ => None,
            }) {
                self.local_reply(index, ctx, reply);
                return true;
            }
            if deferred.iter().any(|d| matches!(d, Deferred::Reset)) {
                if let Some(s) = self.stream_mut(index, ctx) {
                    s.view.outcome = Outcome::Reset;
                }
                self.finish(index, ctx);
                return true;
            }
            for d in deferred {
                match d {
                    Deferred::ContinueRequest => self.continue_request(index, ctx),
                    Deferred::ContinueResponse => self.continue_response(index, ctx),
                    Deferred::LocalReply(_) | Deferred::Reset => {}
                }
            }
        }
    }

    /// `continue_stream(HTTP_REQUEST)`: headers, then any body the filter held, go upstream;
    /// data Envoy held while everything was stopped is then shown to the filter.
    fn continue_request(&mut self, index: usize, ctx: u32) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if s.view.response.is_some() || !matches!(s.view.outcome, Outcome::Paused) {
            return;
        }
        if s.headers_stop != HeadersStop::Passed {
            s.headers_stop = HeadersStop::Passed;
            pass_headers(s);
        }
        pass_body(s);
        match s.held_eos.take() {
            Some(eos) => {
                s.body = std::mem::take(&mut s.held);
                self.call_body(index, ctx, eos);
            }
            None if s.client_eos => complete(s),
            None => s.view.outcome = Outcome::Incomplete,
        }
    }

    fn body(&mut self, index: usize, ctx: u32, chunk: &[u8], eos: bool) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if s.view.finished || s.view.response.is_some() || s.client_eos {
            return;
        }
        s.client_eos = eos;
        if s.headers_stop == HeadersStop::All {
            s.held.extend_from_slice(chunk);
            s.held_eos = Some(eos);
            return;
        }
        s.body.extend_from_slice(chunk);
        self.call_body(index, ctx, eos);
    }

    fn call_body(&mut self, index: usize, ctx: u32, eos: bool) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        s.body_open = true;
        let size = len_i32(s.body.len());
        let action = self.call::<(i32, i32, i32), i32>(
            index,
            ctx,
            "proxy_on_request_body",
            (ctx as i32, size, i32::from(eos)),
        );
        let Ok(action) = action else { return };
        if self.settle(index, ctx) {
            return;
        }
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if action.unwrap_or(0) == 0 {
            if s.headers_stop != HeadersStop::Passed {
                s.headers_stop = HeadersStop::Passed;
                pass_headers(s);
            }
            pass_body(s);
            if eos {
                complete(s);
            } else {
                s.view.outcome = Outcome::Incomplete;
            }
        } else {
            s.view.outcome = Outcome::Paused;
        }
    }

    fn trailers(&mut self, index: usize, ctx: u32, trailers: Headers) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if s.view.finished || s.view.response.is_some() || s.client_eos {
            return;
        }
        s.client_eos = true;
        s.request_trailers = Some(trailers.0.clone());
        if s.headers_stop == HeadersStop::All {
            s.held_eos = Some(true);
            return;
        }
        let action = self.call::<(i32, i32), i32>(
            index,
            ctx,
            "proxy_on_request_trailers",
            (ctx as i32, len_i32(trailers.0.len())),
        );
        let Ok(action) = action else { return };
        if self.settle(index, ctx) {
            return;
        }
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if action.unwrap_or(0) == 0 {
            if s.headers_stop != HeadersStop::Passed {
                s.headers_stop = HeadersStop::Passed;
                pass_headers(s);
            }
            pass_body(s);
            complete(s);
        } else {
            s.view.outcome = Outcome::Paused;
        }
    }

    /// The filter's local reply goes through its own response callbacks, then the stream ends.
    fn local_reply(&mut self, index: usize, ctx: u32, reply: Reply) {
        let mut headers: Pairs = vec![(b":status".to_vec(), reply.status.to_string().into_bytes())];
        headers.extend(reply.headers.0.iter().cloned());
        if !reply.body.is_empty() && !reply.headers.contains("content-type") {
            headers.push((b"content-type".to_vec(), b"text/plain".to_vec()));
        }
        headers.push((
            b"content-length".to_vec(),
            reply.body.len().to_string().into_bytes(),
        ));
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        s.request_headers_open = false;
        s.body_open = false;
        s.view.outcome = Outcome::LocalReply(reply.clone());
        self.response(index, ctx, headers, Some(reply.body), Some(reply.details));
    }

    /// Runs the response callbacks; the stream ends unless the filter pauses the response.
    fn response(
        &mut self,
        index: usize,
        ctx: u32,
        headers: Pairs,
        body: Option<Vec<u8>>,
        details: Option<String>,
    ) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        let n = len_i32(headers.len());
        s.response_headers = headers;
        s.response_headers_open = true;
        let body = body.filter(|b| !b.is_empty());
        let eos = body.is_none();
        s.response_pending_body = body;
        if let Some(d) = details {
            // Remember the local reply's details for the client view.
            s.properties.insert(b"\0details".to_vec(), d.into_bytes());
        }
        let action = self.call::<(i32, i32, i32), i32>(
            index,
            ctx,
            "proxy_on_response_headers",
            (ctx as i32, n, i32::from(eos)),
        );
        let Ok(action) = action else { return };
        if self.settle_response(index, ctx) {
            return;
        }
        if action.unwrap_or(0) != 0 {
            if let Some(s) = self.stream_mut(index, ctx) {
                s.response_paused = true;
            }
            return;
        }
        self.continue_response(index, ctx);
    }

    /// Deferred actions during the response: a continue resumes it; a local reply replaces
    /// the response directly, without the filter chain (Envoy's `sendDirectLocalReply`, as
    /// nothing went downstream yet); a close resets the stream.
    fn settle_response(&mut self, index: usize, ctx: u32) -> bool {
        let Some(s) = self.stream_mut(index, ctx) else {
            return true;
        };
        let deferred = std::mem::take(&mut s.deferred);
        let mut resumed = false;
        for d in deferred {
            match d {
                Deferred::ContinueResponse => resumed = true,
                Deferred::Reset => {
                    s.view.outcome = Outcome::Reset;
                    self.finish(index, ctx);
                    return true;
                }
                Deferred::LocalReply(mut reply) => {
                    if !reply.body.is_empty() && !reply.headers.contains("content-type") {
                        reply
                            .headers
                            .0
                            .push((b"content-type".to_vec(), b"text/plain".to_vec()));
                    }
                    reply.headers.0.push((
                        b"content-length".to_vec(),
                        reply.body.len().to_string().into_bytes(),
                    ));
                    s.response_headers =
                        vec![(b":status".to_vec(), reply.status.to_string().into_bytes())];
                    s.response_headers.extend(reply.headers.0.iter().cloned());
                    s.response_headers_open = false;
                    s.response_paused = false;
                    s.view.response = Some(reply);
                    self.finish(index, ctx);
                    return true;
                }
                Deferred::ContinueRequest => {}
            }
        }
        if resumed {
            self.continue_response(index, ctx);
            return true;
        }
        false
    }

    fn continue_response(&mut self, index: usize, ctx: u32) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        if s.view.finished || s.response_headers.is_empty() {
            return;
        }
        s.response_paused = false;
        s.response_headers_open = false;
        if let Some(body) = s.response_pending_body.take() {
            s.response_body = body;
            s.response_body_open = true;
            let size = len_i32(s.response_body.len());
            if self
                .call::<(i32, i32, i32), i32>(
                    index,
                    ctx,
                    "proxy_on_response_body",
                    (ctx as i32, size, 1),
                )
                .is_err()
            {
                return;
            }
        }
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        s.response_body_open = false;
        let headers = Headers(s.response_headers.clone());
        let status = headers
            .get(":status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let details = s
            .properties
            .remove(&b"\0details"[..])
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_else(|| "via_upstream".to_owned());
        let reply = Reply {
            status,
            headers: Headers(
                headers
                    .0
                    .into_iter()
                    .filter(|(k, _)| k != b":status")
                    .collect(),
            ),
            body: s.response_body.clone(),
            details,
        };
        if let Outcome::LocalReply(_) = s.view.outcome {
            s.view.outcome = Outcome::LocalReply(reply.clone());
        }
        s.view.response = Some(reply);
        self.finish(index, ctx);
    }

    /// Stream destroyed: on_done, on_log, on_delete.
    fn finish(&mut self, index: usize, ctx: u32) {
        let Some(s) = self.stream_mut(index, ctx) else {
            return;
        };
        s.view.finished = true;
        s.request_headers_open = false;
        s.response_headers_open = false;
        let c = ctx as i32;
        if self
            .call::<i32, i32>(index, ctx, "proxy_on_done", c)
            .is_err()
        {
            return;
        }
        if let Some(s) = self.stream_mut(index, ctx) {
            s.in_log = true;
        }
        if self.call::<i32, ()>(index, ctx, "proxy_on_log", c).is_err() {
            return;
        }
        if self
            .call::<i32, ()>(index, ctx, "proxy_on_delete", c)
            .is_err()
        {
            return;
        }
        if let Some(vm) = self.vm(index) {
            if let Some(s) = vm.store.data_mut().streams.remove(&ctx) {
                self.live.remove(&s.id);
                self.finished.insert(s.id, s.view);
            }
        }
    }

    fn view(&self, id: u64) -> Option<View> {
        if let Some(v) = self.finished.get(&id) {
            return Some(v.clone());
        }
        let (index, generation, ctx) = self.live.get(&id)?;
        let vm = self.vms.get(*index)?;
        if vm.generation != *generation {
            return None;
        }
        vm.store.data().streams.get(ctx).map(|s| s.view.clone())
    }

    /// Delivers a callout's answer to the VM that made it.
    fn deliver(&mut self, call: &CallRecord, answer: CallAnswer) {
        {
            let mut sh = lock(&self.shared);
            let before = sh.calls.len();
            sh.calls.retain(|c| {
                !(c.vm == call.vm && c.generation == call.generation && c.token == call.token)
            });
            if sh.calls.len() == before {
                return;
            }
        }
        let Some(vm) = self.vm(call.vm) else { return };
        if vm.generation != call.generation || vm.failed.is_some() {
            return;
        }
        let (nh, nb, nt) = match &answer {
            CallAnswer::Response {
                headers,
                body,
                trailers,
            } => (headers.len(), body.len(), trailers.len()),
            CallAnswer::Reset => (0, 0, 0),
        };
        let st = vm.store.data_mut();
        match answer {
            CallAnswer::Response {
                headers,
                body,
                trailers,
            } => {
                st.call_response = Some((headers, body, trailers));
                st.last_status = (status::OK, Vec::new());
            }
            CallAnswer::Reset => {
                st.call_response = Some((Vec::new(), Vec::new(), Vec::new()));
                st.last_status = (status::BROKEN_CONNECTION, b"reset".to_vec());
            }
        }
        self.answering = call.stream;
        let result = self.call::<(i32, i32, i32, i32, i32), ()>(
            call.vm,
            call.root,
            "proxy_on_http_call_response",
            (
                call.root as i32,
                call.token as i32,
                len_i32(nh),
                len_i32(nb),
                len_i32(nt),
            ),
        );
        self.answering = None;
        if let Some(vm) = self.vm(call.vm) {
            vm.store.data_mut().call_response = None;
        }
        if result.is_err() {
            return;
        }
        // Whatever the callback deferred on any stream of that VM.
        let ctxs: Vec<u32> = self
            .vm(call.vm)
            .map(|vm| {
                vm.store
                    .data()
                    .streams
                    .iter()
                    .filter(|(_, s)| !s.deferred.is_empty())
                    .map(|(c, _)| *c)
                    .collect()
            })
            .unwrap_or_default();
        for ctx in ctxs {
            let responding = self
                .stream_mut(call.vm, ctx)
                .is_some_and(|s| !s.response_headers.is_empty());
            if responding {
                self.settle_response(call.vm, ctx);
            } else {
                self.settle(call.vm, ctx);
            }
        }
    }

    fn fire_tick(&mut self, index: usize) {
        let now = lock(&self.shared).clock_ns;
        let Some(vm) = self.vm(index) else { return };
        if vm.failed.is_some() {
            return;
        }
        let period = vm.store.data().tick_period_ms;
        if period == 0 {
            return;
        }
        if self
            .call::<i32, ()>(index, ROOT, "proxy_on_tick", ROOT as i32)
            .is_err()
        {
            return;
        }
        // Re-armed after the handler returns, as Envoy does (unless it changed the period).
        if let Some(vm) = self.vm(index) {
            let st = vm.store.data_mut();
            if st.tick_period_ms == period {
                st.next_tick_ns = Some(now.saturating_add(u64::from(period) * 1_000_000));
            }
        }
    }
}

/// An answer to a callout.
enum CallAnswer {
    Response {
        headers: Pairs,
        body: Vec<u8>,
        trailers: Pairs,
    },
    Reset,
}

fn failure_reply() -> Reply {
    Reply {
        status: 503,
        headers: Headers(vec![(b"content-length".to_vec(), b"0".to_vec())]),
        body: Vec::new(),
        details: "wasm_fail_stream".to_owned(),
    }
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn pass_headers(s: &mut StreamState) {
    s.request_headers_open = false;
    s.view.upstream_headers = Some(s.request_headers.clone());
}

fn pass_body(s: &mut StreamState) {
    let body = std::mem::take(&mut s.body);
    s.view.upstream_body.extend_from_slice(&body);
    s.body_open = false;
}

fn complete(s: &mut StreamState) {
    s.view.outcome = Outcome::Continued(Upstream {
        headers: Headers(s.view.upstream_headers.clone().unwrap_or_default()),
        body: s.view.upstream_body.clone(),
    });
}

impl Vm {
    fn call_void(&mut self, name: &str, params: (i32, i32)) -> wasmtime::Result<()> {
        match self
            .instance
            .get_typed_func::<(i32, i32), ()>(&mut self.store, name)
        {
            Ok(f) => f.call(&mut self.store, params),
            Err(_) => Ok(()),
        }
    }

    fn call_i32(&mut self, name: &str, params: (i32, i32)) -> wasmtime::Result<Option<i32>> {
        match self
            .instance
            .get_typed_func::<(i32, i32), i32>(&mut self.store, name)
        {
            Ok(f) => f.call(&mut self.store, params).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// A proxy-wasm module running in simulated Envoy threads. See the crate documentation.
pub struct Host {
    inner: RefCell<Inner>,
    shared: SharedRef,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Starts configuring a host for the module at `wasm`.
    pub fn builder(wasm: impl AsRef<Path>) -> Builder {
        Builder {
            path: wasm.as_ref().to_path_buf(),
            config: Config {
                plugin_config: Vec::new(),
                vm_config: Vec::new(),
                vm_id: "tollgate".to_owned(),
                root_id: String::new(),
                plugin_name: "tollgate".to_owned(),
                clusters: Vec::new(),
                failure_policy: FailurePolicy::FailClosed,
                allow_on_headers_stop_iteration: false,
                log_level: LogLevel::Trace,
                node_id: None,
                properties: Vec::new(),
            },
            workers: 1,
            canary: true,
            start: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            hostile: Vec::new(),
        }
    }

    /// Worker `n` (0-based). A worker that does not exist answers every request with 503.
    pub fn worker(&self, n: usize) -> VmRef<'_> {
        VmRef {
            host: self,
            index: n + 1,
        }
    }

    /// The main-thread VM (it gets ticks; Envoy sends it no requests, tests may).
    pub fn main(&self) -> VmRef<'_> {
        VmRef {
            host: self,
            index: 0,
        }
    }

    /// Number of worker VMs.
    pub fn workers(&self) -> usize {
        self.inner.borrow().vms.len().saturating_sub(1)
    }

    /// Every callout made and not yet answered, oldest first.
    pub fn pending_calls(&self) -> Vec<Call<'_>> {
        lock(&self.shared)
            .calls
            .iter()
            .map(|r| Call {
                host: self,
                record: r.clone(),
            })
            .collect()
    }

    /// A counter's value (summed across VMs) or a gauge's; 0 when never defined.
    pub fn metric(&self, name: &str) -> u64 {
        lock(&self.shared)
            .metrics
            .get(name)
            .map_or(0, |m| u64::try_from(m.value).unwrap_or(0))
    }

    /// A gauge's value (which may be negative), if defined.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        lock(&self.shared).metrics.get(name).map(|m| m.value)
    }

    /// A histogram's recorded values.
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        lock(&self.shared)
            .metrics
            .get(name)
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    }

    /// Names of every defined metric.
    pub fn metric_names(&self) -> Vec<String> {
        lock(&self.shared).metrics.keys().cloned().collect()
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.shared).logs.clone()
    }

    /// Hostile mode: from now on, each hostcall a rule names answers that rule's status and
    /// does nothing (no output written, no effect); the last rule naming a call wins. An empty
    /// list makes the host peaceful again. Applies to every VM, not while a module starts.
    ///
    /// ```no_run
    /// # use tollgate_testhost::{Host, HostCall, Hostile, Status};
    /// # fn f(host: &Host) {
    /// host.set_hostile(&[Hostile { call: HostCall::GetHeaderMapPairs, status: Status::Code(77) }]);
    /// // drive requests; host.hostile_answers() says which calls were refused
    /// # }
    /// ```
    pub fn set_hostile(&self, rules: &[Hostile]) {
        lock(&self.shared).hostile = rules.to_vec();
    }

    /// Every hostile answer given so far, in order.
    pub fn hostile_answers(&self) -> Vec<HostileAnswer> {
        lock(&self.shared).hostile_answers.clone()
    }

    /// The functions the module imports from `env` (its hostcalls), in import order.
    pub fn imports(&self) -> Vec<String> {
        self.inner
            .borrow()
            .module
            .imports()
            .filter(|i| i.module() == "env" && matches!(i.ty(), wasmtime::ExternType::Func(_)))
            .map(|i| i.name().to_owned())
            .collect()
    }

    /// Every trap so far.
    pub fn traps(&self) -> Vec<Trap> {
        self.inner.borrow().traps.clone()
    }

    /// Instances replaced under FAIL_RELOAD.
    pub fn reloads(&self) -> usize {
        self.inner.borrow().reloads
    }

    /// A shared-data value and its CAS, for the host's vm_id.
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let vm_id = self.inner.borrow().config.vm_id.clone();
        lock(&self.shared)
            .data
            .get(&vm_id)
            .and_then(|m| m.get(key.as_bytes()))
            .cloned()
    }

    /// Every shared-data key of the host's vm_id, sorted (Envoy lists none; tests bound the
    /// key space with it).
    pub fn shared_data_keys(&self) -> Vec<Vec<u8>> {
        let vm_id = self.inner.borrow().config.vm_id.clone();
        let mut keys: Vec<Vec<u8>> = lock(&self.shared)
            .data
            .get(&vm_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Sets a shared-data value unconditionally (as another plugin with the same vm_id would).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        let vm_id = self.inner.borrow().config.vm_id.clone();
        let mut sh = lock(&self.shared);
        let cas = sh.next_cas();
        sh.data
            .entry(vm_id)
            .or_default()
            .insert(key.as_bytes().to_vec(), (value.to_vec(), cas));
    }

    /// A racing writer, for compare-and-swap tests: each of the next `n` calls of
    /// `proxy_set_shared_data` with a non-zero CAS on a key that exists finds the key
    /// rewritten between the module's get and its set, as another worker's write would leave
    /// it (same value, a new CAS), and answers CAS_MISMATCH without writing. Calls with CAS 0
    /// (unconditional) and calls creating a missing key are not raced and use none of `n`.
    /// Replaces what is left of an earlier `n`.
    pub fn race_shared_data(&self, n: u32) {
        lock(&self.shared).races = n;
    }

    /// The races of [`Host::race_shared_data`] not yet lost.
    pub fn races_left(&self) -> u32 {
        lock(&self.shared).races
    }

    /// Restarts VM `index` (0 is main, worker `n` is `n + 1`, as [`Host::worker`] counts)
    /// without a trap: a fresh instance of the module (new memory, the same shared store,
    /// metrics and clock) is started and configured as Envoy does (`on_context_create`,
    /// `on_vm_start`, `on_configure`), as FAIL_RELOAD does after a trap. Streams still open
    /// on the old instance end with the failure policy's 503 and its pending calls are
    /// dropped. Not counted in [`Host::reloads`].
    pub fn restart_vm(&self, index: usize) -> Result<(), Error> {
        let mut inner = self.inner.borrow_mut();
        let Some(vm) = inner.vms.get_mut(index) else {
            return Err(Error::Module(format!("no VM {index}")));
        };
        let generation = vm.generation;
        let label = vm.label.clone();
        let streams: Vec<StreamState> = vm
            .store
            .data_mut()
            .streams
            .drain()
            .map(|(_, s)| s)
            .collect();
        lock(&self.shared)
            .calls
            .retain(|c| !(c.vm == index && c.generation == generation));
        for mut s in streams {
            if !s.view.finished {
                let reply = failure_reply();
                s.view.response = Some(reply.clone());
                s.view.outcome = Outcome::LocalReply(reply);
                s.view.finished = true;
            }
            inner.live.remove(&s.id);
            inner.finished.insert(s.id, s.view);
        }
        let fresh = inner.start_vm(index, generation.wrapping_add(1), &label)?;
        if let Some(slot) = inner.vms.get_mut(index) {
            *slot = fresh;
        }
        drop(inner);
        self.pump();
        Ok(())
    }

    /// Items waiting in a queue of the host's vm_id.
    pub fn queue_items(&self, name: &str) -> Option<Vec<Vec<u8>>> {
        let vm_id = self.inner.borrow().config.vm_id.clone();
        lock(&self.shared)
            .queues
            .iter()
            .find(|q| q.vm_id == vm_id && q.name == name.as_bytes())
            .map(|q| q.items.iter().cloned().collect())
    }

    /// The clock as the module sees it.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(lock(&self.shared).clock_ns)
    }

    /// Advances the clock, firing due ticks (each VM's timer re-armed after its handler) and
    /// answering calls whose timeout passed with Envoy's 504, in time order.
    pub fn advance_clock(&self, by: Duration) {
        let target = {
            let sh = lock(&self.shared);
            sh.clock_ns
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX))
        };
        loop {
            let tick = {
                let inner = self.inner.borrow();
                inner
                    .vms
                    .iter()
                    .enumerate()
                    .filter(|(_, vm)| vm.failed.is_none())
                    .filter_map(|(i, vm)| vm.store.data().next_tick_ns.map(|t| (t, i)))
                    .filter(|(t, _)| *t <= target)
                    .min()
            };
            let timeout = lock(&self.shared)
                .calls
                .iter()
                .filter_map(|c| c.deadline_ns.map(|d| (d, c.clone())))
                .filter(|(d, _)| *d <= target)
                .min_by_key(|(d, _)| *d);
            match (tick, timeout) {
                (None, None) => break,
                (Some((t, i)), timeout) if timeout.as_ref().is_none_or(|(d, _)| t <= *d) => {
                    lock(&self.shared).clock_ns = t;
                    self.inner.borrow_mut().fire_tick(i);
                }
                (_, Some((d, call))) => {
                    lock(&self.shared).clock_ns = d;
                    self.inner
                        .borrow_mut()
                        .deliver(&call, envoy_reply(504, "upstream request timeout"));
                }
                (Some(_), None) => break,
            }
            self.pump();
        }
        lock(&self.shared).clock_ns = target;
    }

    /// Fires `on_tick` now on every live VM that has a tick period.
    pub fn tick(&self) {
        let n = self.inner.borrow().vms.len();
        for i in 0..n {
            self.inner.borrow_mut().fire_tick(i);
            self.pump();
        }
    }

    /// Delivers queued `on_queue_ready` notifications to their registrants.
    fn pump(&self) {
        for _ in 0..10_000 {
            let next = lock(&self.shared).queue_ready.pop_front();
            let Some((vm, root, id)) = next else { return };
            let _ = self.inner.borrow_mut().call::<(i32, i32), ()>(
                vm,
                root,
                "proxy_on_queue_ready",
                (root as i32, id as i32),
            );
        }
    }
}

fn envoy_reply(status: u16, body: &str) -> CallAnswer {
    CallAnswer::Response {
        headers: vec![
            (b":status".to_vec(), status.to_string().into_bytes()),
            (
                b"content-length".to_vec(),
                body.len().to_string().into_bytes(),
            ),
            (b"content-type".to_vec(), b"text/plain".to_vec()),
        ],
        body: body.as_bytes().to_vec(),
        trailers: Vec::new(),
    }
}

/// One VM of a host (main thread or a worker).
#[derive(Clone, Copy)]
pub struct VmRef<'h> {
    host: &'h Host,
    index: usize,
}

impl<'h> VmRef<'h> {
    /// A request with headers only (end of stream).
    pub fn request(&self, headers: impl IntoHeaders) -> Stream<'h> {
        self.start(headers, true)
    }

    /// A request whose body follows ([`Stream::body`], [`Stream::trailers`]).
    pub fn request_streaming(&self, headers: impl IntoHeaders) -> Stream<'h> {
        self.start(headers, false)
    }

    /// A request with a body in one chunk.
    pub fn request_with_body(&self, headers: impl IntoHeaders, body: &[u8]) -> Stream<'h> {
        let s = self.start(headers, false);
        s.body(body, true);
        s
    }

    fn start(&self, headers: impl IntoHeaders, eos: bool) -> Stream<'h> {
        let headers = headers.into_headers();
        let id = self.host.inner.borrow_mut().open(self.index, headers, eos);
        self.host.pump();
        Stream {
            host: self.host,
            id,
        }
    }

    /// Whether this VM trapped (and is now failed).
    pub fn is_failed(&self) -> bool {
        self.host
            .inner
            .borrow()
            .vms
            .get(self.index)
            .is_none_or(|vm| vm.failed.is_some())
    }

    /// The module's allocation counter on this VM now (export `tollgate_allocations`: calls of
    /// its allocator since the VM started, those for hostcall results included); `None` when
    /// the module does not export it or the VM failed.
    pub fn allocations(&self) -> Option<u64> {
        let mut inner = self.host.inner.borrow_mut();
        let vm = inner.vms.get_mut(self.index)?;
        if vm.failed.is_some() {
            return None;
        }
        vm.allocations()
    }

    /// This VM's tick period.
    pub fn tick_period(&self) -> Option<Duration> {
        let inner = self.host.inner.borrow();
        let ms = inner.vms.get(self.index)?.store.data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }
}

/// One HTTP stream.
#[derive(Clone, Copy)]
pub struct Stream<'h> {
    host: &'h Host,
    id: u64,
}

impl fmt::Debug for Stream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("outcome", &self.outcome())
            .finish()
    }
}

impl<'h> Stream<'h> {
    fn locate(&self) -> Option<(usize, u32)> {
        let inner = self.host.inner.borrow();
        let (index, generation, ctx) = *inner.live.get(&self.id)?;
        let vm = inner.vms.get(index)?;
        (vm.generation == generation).then_some((index, ctx))
    }

    /// A body chunk from the client.
    pub fn body(&self, chunk: &[u8], end_of_stream: bool) -> &Self {
        if let Some((index, ctx)) = self.locate() {
            self.host
                .inner
                .borrow_mut()
                .body(index, ctx, chunk, end_of_stream);
            self.host.pump();
        }
        self
    }

    /// Request trailers from the client (end of stream).
    pub fn trailers(&self, trailers: impl IntoHeaders) -> &Self {
        let trailers = trailers.into_headers();
        if let Some((index, ctx)) = self.locate() {
            self.host.inner.borrow_mut().trailers(index, ctx, trailers);
            self.host.pump();
        }
        self
    }

    /// The client goes away (a downstream reset): the stream ends as Envoy ends it, with
    /// `on_done`, `on_log` and `on_delete`, whatever it was waiting for.
    pub fn client_reset(&self) {
        if let Some((index, ctx)) = self.locate() {
            let mut inner = self.host.inner.borrow_mut();
            if let Some(s) = inner.stream_mut(index, ctx) {
                s.view.outcome = Outcome::Reset;
            }
            inner.finish(index, ctx);
            drop(inner);
            self.host.pump();
        }
    }

    /// Where the request stands now.
    pub fn outcome(&self) -> Outcome {
        self.host
            .inner
            .borrow()
            .view(self.id)
            .map_or(Outcome::Paused, |v| v.outcome)
    }

    /// The request headers as the client sent them.
    pub fn request_headers(&self) -> Headers {
        self.host
            .inner
            .borrow()
            .view(self.id)
            .map(|v| v.request)
            .unwrap_or_default()
    }

    /// The upstream answers (only once the request went upstream; otherwise nothing happens):
    /// the response callbacks run and the client's response is returned, or `None` while the
    /// filter holds the response.
    pub fn response(&self, headers: impl IntoHeaders) -> Option<Reply> {
        self.respond(headers.into_headers(), None)
    }

    /// As [`Stream::response`], with a body.
    pub fn response_with_body(&self, headers: impl IntoHeaders, body: &[u8]) -> Option<Reply> {
        self.respond(headers.into_headers(), Some(body.to_vec()))
    }

    fn respond(&self, headers: Headers, body: Option<Vec<u8>>) -> Option<Reply> {
        if let Some((index, ctx)) = self.locate() {
            let upstream = self
                .host
                .inner
                .borrow()
                .view(self.id)
                .is_some_and(|v| v.upstream_headers.is_some() && v.response.is_none());
            if upstream {
                let headers: Pairs = headers.0;
                self.host
                    .inner
                    .borrow_mut()
                    .response(index, ctx, headers, body, None);
                self.host.pump();
            }
        }
        self.client_response()
    }

    /// The response the client got, once it got one.
    pub fn client_response(&self) -> Option<Reply> {
        self.host.inner.borrow().view(self.id)?.response
    }

    /// Whether the stream ended (its contexts deleted).
    pub fn is_finished(&self) -> bool {
        self.host
            .inner
            .borrow()
            .view(self.id)
            .is_none_or(|v| v.finished)
    }

    /// Allocations the module made for this stream so far: the counter's growth across every
    /// callback run for it (its own, and the answers to its callouts); `None` when the module
    /// does not export `tollgate_allocations`.
    pub fn allocations(&self) -> Option<u64> {
        let inner = self.host.inner.borrow();
        inner.vms.first()?.allocations.as_ref()?;
        Some(inner.allocations.get(&self.id).copied().unwrap_or(0))
    }

    /// The host the stream runs in.
    pub fn host(&self) -> &'h Host {
        self.host
    }

    /// The callouts this stream made that are still pending.
    pub fn pending_calls(&self) -> Vec<Call<'h>> {
        self.host
            .pending_calls()
            .into_iter()
            .filter(|c| c.record.stream == Some(self.id))
            .collect()
    }
}

/// A callout waiting for its answer. Dropping it leaves it pending (never answered).
pub struct Call<'h> {
    host: &'h Host,
    record: CallRecord,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("cluster", &self.record.cluster)
            .field("headers", &Headers(self.record.headers.clone()))
            .field("timeout_ms", &self.record.timeout_ms)
            .finish()
    }
}

impl Call<'_> {
    /// The cluster called.
    pub fn cluster(&self) -> &str {
        &self.record.cluster
    }

    /// The request headers (lower-case names, pseudo-headers included).
    pub fn headers(&self) -> Headers {
        Headers(self.record.headers.clone())
    }

    /// The first value of a request header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers().get(name)
    }

    /// The request body.
    pub fn body(&self) -> &[u8] {
        &self.record.body
    }

    /// The request trailers.
    pub fn trailers(&self) -> Headers {
        Headers(self.record.trailers.clone())
    }

    /// The timeout; `None` is 0, which Envoy takes as no timeout at all.
    pub fn timeout(&self) -> Option<Duration> {
        (self.record.timeout_ms > 0)
            .then(|| Duration::from_millis(u64::from(self.record.timeout_ms)))
    }

    /// The label of the VM that made it.
    pub fn vm(&self) -> String {
        self.host
            .inner
            .borrow()
            .vms
            .get(self.record.vm)
            .map(|vm| vm.label.clone())
            .unwrap_or_default()
    }

    /// The cluster answers (`:status` is added first).
    pub fn respond(self, status: u16, headers: impl IntoHeaders, body: &[u8]) {
        self.respond_with_trailers(status, headers, body, NO_HEADERS);
    }

    /// The cluster answers, with trailers.
    pub fn respond_with_trailers(
        self,
        status: u16,
        headers: impl IntoHeaders,
        body: &[u8],
        trailers: impl IntoHeaders,
    ) {
        let mut all: Pairs = vec![(b":status".to_vec(), status.to_string().into_bytes())];
        all.extend(headers.into_headers().0);
        self.answer(CallAnswer::Response {
            headers: all,
            body: body.to_vec(),
            trailers: trailers.into_headers().0,
        });
    }

    /// The cluster answers with exactly these headers, `:status` included or not: for a
    /// malformed or missing status.
    pub fn respond_raw(self, headers: impl IntoHeaders, body: &[u8]) {
        self.answer(CallAnswer::Response {
            headers: headers.into_headers().0,
            body: body.to_vec(),
            trailers: Vec::new(),
        });
    }

    /// Envoy cannot connect: its own 503 "upstream connect error..." response.
    pub fn fail_503(self) {
        self.answer(envoy_reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused",
        ));
    }

    /// The call's timeout passes: Envoy's own 504 "upstream request timeout" (what
    /// [`Host::advance_clock`] delivers past the deadline).
    pub fn timeout_504(self) {
        self.answer(envoy_reply(504, "upstream request timeout"));
    }

    /// The stream is reset: `num_headers == 0`, `proxy_get_status` = (BrokenConnection, "reset").
    pub fn reset(self) {
        self.answer(CallAnswer::Reset);
    }

    fn answer(self, answer: CallAnswer) {
        self.host.inner.borrow_mut().deliver(&self.record, answer);
        self.host.pump();
    }
}
