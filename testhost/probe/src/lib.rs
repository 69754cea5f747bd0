//! A probe filter for `tollgate-testhost`: what it does is chosen by the request path, so that one
//! `.wasm` can exercise every part of the host. It reports what it saw in response headers
//! (`x-…`), in log lines, in metrics and in shared data. It calls some hostcalls raw (module
//! `raw`) to see the exact statuses the SDK would turn into panics.
//!
//! Plugin configuration: `key=value` items separated by `;` or newlines:
//! `tick_ms=N` (set a tick period), `register_queue=NAME` (register a shared queue in
//! `on_configure`), `fail_configure=1` (return false), `trap_configure=1` (panic in
//! `on_configure`), `cluster=NAME` (default cluster for `/call`).
//!
//! Paths (query `?a=b&c=d`):
//! - `/deny`: local 429 with repeated `x-tg` headers, our content-type and `retry-after`.
//! - `/deny-continue`: local 403, then return Continue anyway.
//! - `/call?c=CLUSTER&t=MS[&then=resume|reply][&noauth=1]`: dispatch an HTTP call and pause;
//!   the answer is relayed as a local 200 (`x-call-status`, `x-call-body`, `x-call-failure`) or,
//!   with `then=resume`, added to the request as `x-call-status` and the request resumed.
//! - `/resp-call?c=CLUSTER`: pause the *response* on a callout, resume it on the answer.
//! - `/cas?k=KEY`: the CAS table of the reference, reported in `x-cas`.
//! - `/shared-set?k=&v=[&cas=]`, `/shared-get?k=`: shared data, `x-status`, `x-value`, `x-cas`.
//! - `/metric?d=N`: increment the counter `probe.requests` by N, `x-status`.
//! - `/gauge?v=N[&d=N]`, `/hist?v=N`, `/metric-raw?id=N&d=N`, `/metric-get`.
//! - `/queue?vm=VM&name=NAME&item=ITEM`: resolve and enqueue; `/dequeue?id=N`.
//! - `/panic`: panic in `on_request_headers`; `/panic-response`: panic in `on_response_headers`.
//! - `/reply-in-response`: a local 502 from `on_response_headers`.
//! - `/props?p=request.path,source.port`: properties, hex-encoded in `x-prop-<path>`.
//! - `/hdr-after-continue`: read request headers in the body callback, response headers in the
//!   request callback, call-response headers outside the callback, and in `on_log`.
//! - `/body`: buffer the whole request body, then replace it upper-cased.
//! - `/hdrs`: add, replace and remove request headers.
//! - `/alloc?n=N`: allocate N times, then continue (the host's allocation counting).
//! - `/pause-forever`, `/close`, `/plugin-config`, `/vm-config`, `/time`, `/foreign`, `/grpc`,
//!   `/bad-ptr`, `/effective`, `/done`, `/set-prop`, `/malformed-local`, `/log?s=SECRET`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// Counts calls of the allocator, as tollgate.wasm's `tollgate_allocations` does, so the
/// host's per-request counting is tested against a known number.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicI64, Ordering};

    static ALLOCATIONS: AtomicI64 = AtomicI64::new(0);

    struct Counting;

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    #[no_mangle]
    pub extern "C" fn tollgate_allocations() -> i64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

/// Log macros over the raw hostcall (the probe has no `log` crate dependency of its own).
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        let _ = proxy_wasm::hostcalls::log($level, &format!($($arg)*));
    };
}
macro_rules! info { ($($arg:tt)*) => { log_at!(LogLevel::Info, $($arg)*) }; }
macro_rules! warn { ($($arg:tt)*) => { log_at!(LogLevel::Warn, $($arg)*) }; }
macro_rules! error { ($($arg:tt)*) => { log_at!(LogLevel::Error, $($arg)*) }; }
macro_rules! debug { ($($arg:tt)*) => { log_at!(LogLevel::Debug, $($arg)*) }; }

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
}}

/// Raw hostcalls: they return the host's status instead of panicking on it.
#[allow(clippy::missing_safety_doc)]
mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            rp: *mut *mut u8,
            rn: *mut usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer: u32,
            start: usize,
            max: usize,
            rp: *mut *mut u8,
            rn: *mut usize,
        ) -> u32;
        pub fn proxy_increment_metric(id: u32, delta: i64) -> u32;
        pub fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub fn proxy_get_metric(id: u32, rv: *mut u64) -> u32;
        pub fn proxy_resolve_shared_queue(
            vm: *const u8,
            vm_size: usize,
            name: *const u8,
            name_size: usize,
            rid: *mut u32,
        ) -> u32;
        pub fn proxy_enqueue_shared_queue(id: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_dequeue_shared_queue(id: u32, rp: *mut *mut u8, rn: *mut usize) -> u32;
        pub fn proxy_call_foreign_function(
            name: *const u8,
            name_size: usize,
            args: *const u8,
            args_size: usize,
            rp: *mut *mut u8,
            rn: *mut usize,
        ) -> u32;
        pub fn proxy_grpc_call(
            upstream: *const u8,
            upstream_size: usize,
            service: *const u8,
            service_size: usize,
            method: *const u8,
            method_size: usize,
            metadata: *const u8,
            metadata_size: usize,
            message: *const u8,
            message_size: usize,
            timeout: u32,
            rid: *mut u32,
        ) -> u32;
        pub fn proxy_set_effective_context(id: u32) -> u32;
        pub fn proxy_done() -> u32;
        pub fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
    }

    /// Takes ownership of a buffer the host allocated in this module.
    fn take(p: *mut u8, n: usize) -> Vec<u8> {
        if p.is_null() {
            Vec::new()
        } else {
            // SAFETY: the host allocated `n` bytes at `p` through this module's allocator.
            unsafe { Vec::from_raw_parts(p, n, n) }
        }
    }

    pub fn header(map: u32, key: &str) -> (u32, Vec<u8>) {
        let mut p = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: valid pointers to locals and to `key`.
        let s = unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut p, &mut n) };
        (s, take(p, n))
    }

    pub fn buffer(buffer: u32, start: usize, max: usize) -> (u32, Vec<u8>) {
        let mut p = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: valid pointers to locals.
        let s = unsafe { proxy_get_buffer_bytes(buffer, start, max, &mut p, &mut n) };
        (s, take(p, n))
    }

    pub fn increment(id: u32, delta: i64) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_increment_metric(id, delta) }
    }

    pub fn record(id: u32, value: u64) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_record_metric(id, value) }
    }

    pub fn get_metric(id: u32) -> (u32, u64) {
        let mut v = 0;
        // SAFETY: valid pointer to a local.
        let s = unsafe { proxy_get_metric(id, &mut v) };
        (s, v)
    }

    pub fn resolve(vm: &str, name: &str) -> (u32, u32) {
        let mut id = 0;
        // SAFETY: valid pointers.
        let s = unsafe {
            proxy_resolve_shared_queue(vm.as_ptr(), vm.len(), name.as_ptr(), name.len(), &mut id)
        };
        (s, id)
    }

    pub fn enqueue(id: u32, item: &[u8]) -> u32 {
        // SAFETY: valid pointers.
        unsafe { proxy_enqueue_shared_queue(id, item.as_ptr(), item.len()) }
    }

    pub fn dequeue(id: u32) -> (u32, Vec<u8>) {
        let mut p = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: valid pointers to locals.
        let s = unsafe { proxy_dequeue_shared_queue(id, &mut p, &mut n) };
        (s, take(p, n))
    }

    pub fn foreign(name: &str) -> u32 {
        let mut p = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: valid pointers.
        let s = unsafe {
            proxy_call_foreign_function(name.as_ptr(), name.len(), [].as_ptr(), 0, &mut p, &mut n)
        };
        drop(take(p, n));
        s
    }

    pub fn grpc_call(upstream: &str) -> u32 {
        let mut id = 0;
        let meta = 0u32.to_le_bytes();
        // SAFETY: valid pointers.
        unsafe {
            proxy_grpc_call(
                upstream.as_ptr(),
                upstream.len(),
                "svc".as_ptr(),
                3,
                "m".as_ptr(),
                1,
                meta.as_ptr(),
                meta.len(),
                [].as_ptr(),
                0,
                1000,
                &mut id,
            )
        }
    }

    pub fn effective(id: u32) -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_set_effective_context(id) }
    }

    pub fn done() -> u32 {
        // SAFETY: no pointers.
        unsafe { proxy_done() }
    }

    /// Statuses for out-of-bounds pointers: proxy_log and a header read with a key past memory.
    pub fn bad_pointers() -> (u32, u32) {
        let far = 0xFFFF_FF00usize as *const u8;
        // SAFETY: the host must bounds-check; the pointers are never dereferenced here.
        let log = unsafe { proxy_log(2, far, 1000) };
        let mut p = std::ptr::null_mut();
        let mut n = 0;
        // SAFETY: as above.
        let hdr = unsafe { proxy_get_header_map_value(0, far, 1000, &mut p, &mut n) };
        (log, hdr)
    }

    pub fn local_response(status: u32, body: &[u8], headers: &[u8]) -> u32 {
        // SAFETY: valid pointers.
        unsafe {
            proxy_send_local_response(
                status,
                [].as_ptr(),
                0,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        }
    }
}

fn item<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .split([';', '\n'])
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn query(path: &str) -> Vec<(String, String)> {
    path.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn code(r: Result<(), Status>) -> u32 {
    match r {
        Ok(()) => 0,
        Err(s) => s as u32,
    }
}

/// Increments a shared-data counter with a CAS loop; returns the new value.
fn shared_incr(key: &str) -> u64 {
    for _ in 0..100 {
        let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let cas = cas.or(Some(0));
        if hostcalls::set_shared_data(key, Some(n.to_string().as_bytes()), cas).is_ok() {
            return n;
        }
    }
    0
}

#[derive(Clone, Copy, Default)]
struct Metrics {
    requests: u32,
    gauge: u32,
    latency: u32,
    ticks: u32,
    queue_items: u32,
    configures: u32,
}

#[derive(Default)]
struct ProbeRoot {
    config: String,
    metrics: Metrics,
    ticks: Rc<Cell<u64>>,
    queue: Option<u32>,
}

impl Context for ProbeRoot {
    fn on_http_call_response(&mut self, token: u32, _nh: usize, _bs: usize, _nt: usize) {
        proxy_wasm::hostcalls::log(LogLevel::Info, &format!("root got call response {token}")).ok();
    }
}

impl RootContext for ProbeRoot {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let n = shared_incr("probe.vm_starts");
        let vm_config = self
            .get_vm_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        info!("vm_start #{n} size={size} vm_config={vm_config}");
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .unwrap_or_default();
        let n = shared_incr("probe.configures");
        info!("configure #{n} size={size} config={config}");
        self.metrics = Metrics {
            requests: hostcalls::define_metric(MetricType::Counter, "probe.requests").unwrap_or(0),
            gauge: hostcalls::define_metric(MetricType::Gauge, "probe.gauge").unwrap_or(0),
            latency: hostcalls::define_metric(MetricType::Histogram, "probe.latency").unwrap_or(0),
            ticks: hostcalls::define_metric(MetricType::Counter, "probe.ticks").unwrap_or(0),
            queue_items: hostcalls::define_metric(MetricType::Counter, "probe.queue_items")
                .unwrap_or(0),
            configures: hostcalls::define_metric(MetricType::Counter, "probe.configure_runs")
                .unwrap_or(0),
        };
        hostcalls::increment_metric(self.metrics.configures, 1).ok();
        if let Some(ms) = item(&config, "tick_ms").and_then(|v| v.parse::<u64>().ok()) {
            hostcalls::set_tick_period(Duration::from_millis(ms)).ok();
        }
        if let Some(name) = item(&config, "register_queue") {
            self.queue = hostcalls::register_shared_queue(name).ok();
            info!("registered queue {name} as {:?}", self.queue);
        }
        if item(&config, "trap_configure") == Some("1") {
            trap("configure asked to trap");
        }
        if item(&config, "fail_configure") == Some("1") {
            error!("probe: rejecting configuration");
            return false;
        }
        self.config = config;
        true
    }

    fn on_tick(&mut self) {
        self.ticks.set(self.ticks.get() + 1);
        hostcalls::increment_metric(self.metrics.ticks, 1).ok();
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis())
            .unwrap_or(0);
        info!("tick n={} at_ms={now}", self.ticks.get());
        if item(&self.config, "trap_tick") == Some("1") {
            trap("tick asked to trap");
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut drained = Vec::new();
        loop {
            let (status, data) = raw::dequeue(queue_id);
            if status != 0 {
                info!(
                    "queue {queue_id} drained={} items={} last_status={status}",
                    drained.len(),
                    drained.join(",")
                );
                break;
            }
            drained.push(String::from_utf8_lossy(&data).into_owned());
        }
        if !drained.is_empty() {
            hostcalls::increment_metric(self.metrics.queue_items, drained.len() as i64).ok();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProbeHttp {
            id: context_id,
            metrics: self.metrics,
            cluster: item(&self.config, "cluster").unwrap_or("ctl").to_string(),
            path: String::new(),
            notes: Vec::new(),
            then_resume: false,
            resp_call: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[allow(clippy::panic)] // the probe's whole point here: a Rust panic is a trap for the host
fn trap(why: &str) -> ! {
    panic!("probe panic: {why}");
}

struct ProbeHttp {
    id: u32,
    metrics: Metrics,
    cluster: String,
    path: String,
    notes: Vec<(String, String)>,
    then_resume: bool,
    resp_call: bool,
}

impl ProbeHttp {
    fn note(&mut self, k: &str, v: impl ToString) {
        self.notes.push((k.to_string(), v.to_string()));
    }

    fn q(&self, key: &str) -> Option<String> {
        query(&self.path)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    fn reply(&self, status: u32, headers: &[(String, String)], body: &str) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        hostcalls::send_http_response(status, headers, Some(body.as_bytes())).ok();
    }

    fn dispatch(&mut self, cluster: &str, timeout_ms: u64, noauth: bool) -> Result<u32, Status> {
        let mut headers = vec![(":method", "GET"), (":path", "/check")];
        if !noauth {
            headers.push((":authority", "control"));
        }
        headers.push(("x-from", "probe"));
        self.dispatch_http_call(
            cluster,
            headers,
            Some(b"ping"),
            vec![],
            Duration::from_millis(timeout_ms),
        )
    }

    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        hostcalls::increment_metric(self.metrics.requests, 1).ok();
        let route = self.route().to_string();
        match route.as_str() {
            "/deny" => {
                hostcalls::send_http_response(
                    429,
                    vec![
                        ("x-tg", "a"),
                        ("x-tg", "b"),
                        ("content-type", "application/json"),
                        ("retry-after", "7"),
                    ],
                    Some(b"{\"error\":\"deny\"}"),
                )
                .ok();
                Action::Pause
            }
            "/deny-continue" => {
                hostcalls::send_http_response(403, vec![], Some(b"forbidden")).ok();
                Action::Continue
            }
            "/call" => {
                let cluster = self.q("c").unwrap_or_else(|| self.cluster.clone());
                let t = self.q("t").and_then(|t| t.parse().ok()).unwrap_or(1000);
                self.then_resume = self.q("then").as_deref() == Some("resume");
                let noauth = self.q("noauth").is_some();
                match self.dispatch(&cluster, t, noauth) {
                    Ok(token) => {
                        info!("dispatched call {token} to {cluster}");
                        Action::Pause
                    }
                    Err(status) => {
                        self.reply(
                            500,
                            &[("x-dispatch-status".into(), (status as u32).to_string())],
                            "",
                        );
                        Action::Pause
                    }
                }
            }
            "/resp-call" => {
                self.resp_call = true;
                Action::Continue
            }
            "/cas" => {
                let k = self.q("k").unwrap_or_else(|| "probe.cas".to_string());
                let missing = format!("{k}.missing");
                let r1 = code(hostcalls::set_shared_data(&k, Some(b"a"), None));
                let (_, cas) = hostcalls::get_shared_data(&k).unwrap_or((None, None));
                let cas = cas.unwrap_or(0);
                let r2 = code(hostcalls::set_shared_data(
                    &k,
                    Some(b"b"),
                    Some(cas.wrapping_add(1000)),
                ));
                let r3 = code(hostcalls::set_shared_data(&k, Some(b"c"), Some(cas)));
                let r4 = code(hostcalls::set_shared_data(&k, Some(b"d"), Some(cas)));
                let r5 = code(hostcalls::set_shared_data(&missing, Some(b"x"), Some(777)));
                let r6 = code(hostcalls::set_shared_data(&k, None, None));
                let (value, cas2) = hostcalls::get_shared_data(&k).unwrap_or((None, None));
                self.reply(
                    200,
                    &[
                        ("x-cas".into(), format!("{r1},{r2},{r3},{r4},{r5},{r6}")),
                        ("x-cas-first".into(), cas.to_string()),
                        (
                            "x-after-remove".into(),
                            format!("{:?},{:?}", value.map(|v| v.len()), cas2),
                        ),
                    ],
                    "",
                );
                Action::Pause
            }
            "/shared-set" => {
                let k = self.q("k").unwrap_or_default();
                let v = self.q("v").unwrap_or_default();
                let cas = self.q("cas").and_then(|c| c.parse().ok());
                let s = code(hostcalls::set_shared_data(&k, Some(v.as_bytes()), cas));
                self.reply(200, &[("x-status".into(), s.to_string())], "");
                Action::Pause
            }
            "/shared-get" => {
                let k = self.q("k").unwrap_or_default();
                let headers = match hostcalls::get_shared_data(&k) {
                    Ok((value, cas)) => vec![
                        ("x-status".into(), "0".into()),
                        (
                            "x-value".into(),
                            value
                                .map(|v| String::from_utf8_lossy(&v).into_owned())
                                .unwrap_or_else(|| "none".into()),
                        ),
                        (
                            "x-cas".into(),
                            cas.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
                        ),
                    ],
                    Err(s) => vec![("x-status".into(), (s as u32).to_string())],
                };
                self.reply(200, &headers, "");
                Action::Pause
            }
            "/metric" => {
                let d = self.q("d").and_then(|d| d.parse().ok()).unwrap_or(1);
                let s = raw::increment(self.metrics.requests, d);
                let (_, v) = raw::get_metric(self.metrics.requests);
                self.reply(
                    200,
                    &[
                        ("x-status".into(), s.to_string()),
                        ("x-value".into(), v.to_string()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/gauge" => {
                let mut statuses = Vec::new();
                if let Some(v) = self.q("v").and_then(|v| v.parse().ok()) {
                    statuses.push(raw::record(self.metrics.gauge, v));
                }
                if let Some(d) = self.q("d").and_then(|d| d.parse().ok()) {
                    statuses.push(raw::increment(self.metrics.gauge, d));
                }
                let (gs, v) = raw::get_metric(self.metrics.gauge);
                statuses.push(gs);
                let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
                self.reply(
                    200,
                    &[
                        ("x-status".into(), statuses.join(",")),
                        ("x-value".into(), v.to_string()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/hist" => {
                let v = self.q("v").and_then(|v| v.parse().ok()).unwrap_or(1);
                let r = raw::record(self.metrics.latency, v);
                let (g, _) = raw::get_metric(self.metrics.latency);
                let i = raw::increment(self.metrics.latency, 1);
                self.reply(200, &[("x-status".into(), format!("{r},{g},{i}"))], "");
                Action::Pause
            }
            "/metric-raw" => {
                let id = self.q("id").and_then(|v| v.parse().ok()).unwrap_or(9999);
                let d = self.q("d").and_then(|v| v.parse().ok()).unwrap_or(1);
                let i = raw::increment(id, d);
                let r = raw::record(id, 1);
                let (g, _) = raw::get_metric(id);
                self.reply(200, &[("x-status".into(), format!("{i},{r},{g}"))], "");
                Action::Pause
            }
            "/queue" => {
                let vm = self.q("vm").unwrap_or_default();
                let name = self.q("name").unwrap_or_default();
                let item = self.q("item").unwrap_or_default();
                let (rs, id) = raw::resolve(&vm, &name);
                let es = raw::enqueue(if rs == 0 { id } else { 9999 }, item.as_bytes());
                self.reply(
                    200,
                    &[
                        ("x-resolve".into(), rs.to_string()),
                        ("x-queue-id".into(), id.to_string()),
                        ("x-enqueue".into(), es.to_string()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/dequeue" => {
                let id = self.q("id").and_then(|v| v.parse().ok()).unwrap_or(9999);
                let (s, data) = raw::dequeue(id);
                self.reply(
                    200,
                    &[
                        ("x-status".into(), s.to_string()),
                        ("x-item".into(), String::from_utf8_lossy(&data).into_owned()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/panic" => trap("on_request_headers asked to trap"),
            "/props" => {
                let paths = self.q("p").unwrap_or_default();
                let mut headers = Vec::new();
                for p in paths.split(',').filter(|p| !p.is_empty()) {
                    let v = match hostcalls::get_property(p.split('.').collect()) {
                        Ok(Some(v)) => hex(&v),
                        Ok(None) => "none".to_string(),
                        Err(s) => format!("err{}", s as u32),
                    };
                    headers.push((format!("x-prop-{p}"), v));
                }
                self.reply(200, &headers, "");
                Action::Pause
            }
            "/set-prop" => {
                let s = code(hostcalls::set_property(vec!["probe", "k"], Some(b"v1")));
                let v = hostcalls::get_property(vec!["probe", "k"])
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "none".into());
                self.reply(
                    200,
                    &[("x-status".into(), s.to_string()), ("x-value".into(), v)],
                    "",
                );
                Action::Pause
            }
            "/hdr-after-continue" => {
                let (s, _) = raw::header(MapType::HttpResponseHeaders as u32, ":status");
                self.note("x-resp-hdr-in-req", s);
                let (s, _) = raw::header(MapType::HttpCallResponseHeaders as u32, ":status");
                self.note("x-call-hdr-outside", s);
                let (s, _) = raw::header(MapType::HttpRequestHeaders as u32, "x-absent");
                self.note("x-absent", s);
                let (s, v) = raw::header(MapType::HttpRequestHeaders as u32, "x-dup");
                self.note("x-dup-status", s);
                self.note("x-dup", String::from_utf8_lossy(&v));
                let (s, _) = raw::buffer(7, 0, 100);
                self.note("x-plugin-config-status", s);
                Action::Continue
            }
            "/body" => {
                if end_of_stream {
                    self.note("x-body", "none");
                }
                Action::Continue
            }
            "/hdrs" => {
                self.add_http_request_header("x-added", "1");
                self.add_http_request_header("X-Added", "2");
                self.set_http_request_header("x-replace", Some("new"));
                self.set_http_request_header("x-remove", None);
                self.set_http_request_header("x-absent-remove", None);
                Action::Continue
            }
            "/pause-forever" => Action::Pause,
            "/close" => {
                hostcalls::reset_http_request().ok();
                Action::Pause
            }
            "/plugin-config" => {
                let (s, _) = raw::buffer(7, 0, 1000);
                let (vs, v) = raw::buffer(6, 0, 1000);
                self.reply(
                    200,
                    &[
                        ("x-status".into(), s.to_string()),
                        ("x-vm-status".into(), vs.to_string()),
                        (
                            "x-vm-config".into(),
                            String::from_utf8_lossy(&v).into_owned(),
                        ),
                    ],
                    "",
                );
                Action::Pause
            }
            "/time" => {
                let ns = hostcalls::get_current_time()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let level = hostcalls::get_log_level().map(|l| l as u32).unwrap_or(99);
                self.reply(
                    200,
                    &[
                        ("x-now-ns".into(), ns.to_string()),
                        ("x-log-level".into(), level.to_string()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/foreign" => {
                let s = raw::foreign("clear_route_cache");
                let g = raw::grpc_call("ctl");
                self.reply(
                    200,
                    &[
                        ("x-status".into(), s.to_string()),
                        ("x-grpc".into(), g.to_string()),
                    ],
                    "",
                );
                Action::Pause
            }
            "/bad-ptr" => {
                let (l, h) = raw::bad_pointers();
                self.reply(200, &[("x-status".into(), format!("{l},{h}"))], "");
                Action::Pause
            }
            "/effective" => {
                let bad = raw::effective(9999);
                let own = raw::effective(self.id);
                let root = raw::effective(1);
                // Back to this stream, or the reply below would go to the root context.
                raw::effective(self.id);
                self.reply(
                    200,
                    &[("x-status".into(), format!("{bad},{own},{root}"))],
                    "",
                );
                Action::Pause
            }
            "/done" => {
                let s = raw::done();
                self.reply(200, &[("x-status".into(), s.to_string())], "");
                Action::Pause
            }
            "/malformed-local" => {
                // count 1 but no pair data
                let s = raw::local_response(418, b"teapot", &[1, 0, 0, 0, 9, 9]);
                info!("malformed local response status {s}");
                Action::Pause
            }
            "/alloc" => {
                let n: u32 = self.q("n").and_then(|n| n.parse().ok()).unwrap_or(0);
                for i in 0..n {
                    std::hint::black_box(Box::new(i));
                }
                Action::Continue
            }
            "/log" => {
                let s = self.q("s").unwrap_or_default();
                warn!("probe log {s}");
                debug!("probe debug {s}");
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
}

impl Context for ProbeHttp {
    fn on_http_call_response(&mut self, token: u32, nh: usize, bs: usize, nt: usize) {
        info!("call response token={token} headers={nh} body={bs} trailers={nt}");
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "none".into());
        let body = self
            .get_http_call_response_body(0, bs)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut failure = String::new();
        if nh == 0 {
            if let Ok((code, msg)) = hostcalls::get_grpc_status() {
                failure = format!("{code}:{}", msg.unwrap_or_default());
            }
        }
        if self.resp_call {
            self.note("x-call-status", &status);
            self.resume_http_response();
            return;
        }
        if self.then_resume {
            self.set_http_request_header("x-call-status", Some(&status));
            self.resume_http_request();
            // Request headers are gone once the stream was resumed.
            let (s, _) = raw::header(MapType::HttpRequestHeaders as u32, ":path");
            self.note("x-hdr-after-resume", s);
            return;
        }
        let mut headers = vec![
            ("x-call-status".to_string(), status),
            ("x-call-headers".to_string(), nh.to_string()),
            ("x-call-body".to_string(), body),
        ];
        if !failure.is_empty() {
            headers.push(("x-call-failure".to_string(), failure));
        }
        self.reply(200, &headers, "relayed");
    }
}

impl HttpContext for ProbeHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.request_headers(end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.route() {
            "/hdr-after-continue" => {
                let (s, _) = raw::header(MapType::HttpRequestHeaders as u32, ":path");
                self.note("x-req-hdr-in-body", s);
                Action::Continue
            }
            "/body" => {
                self.note("x-body-size", body_size);
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                let upper = body.to_ascii_uppercase();
                self.set_http_request_body(0, body_size, &upper);
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        let route = self.route().to_string();
        if route == "/panic-response" {
            trap("on_response_headers asked to trap");
        }
        if route == "/reply-in-response" {
            hostcalls::send_http_response(502, vec![("x-replaced", "1")], Some(b"replaced")).ok();
            return Action::Pause;
        }
        if route == "/hdr-after-continue" {
            let (s, _) = raw::header(MapType::HttpRequestHeaders as u32, ":path");
            self.note("x-req-hdr-in-resp", s);
        }
        self.set_http_response_header("x-probe-resp", Some("1"));
        for (k, v) in std::mem::take(&mut self.notes) {
            self.add_http_response_header(&k, &v);
        }
        if self.resp_call {
            let cluster = self.q("c").unwrap_or_else(|| self.cluster.clone());
            if self.dispatch(&cluster, 1000, false).is_ok() {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _eos: bool) -> Action {
        Action::Continue
    }

    fn on_log(&mut self) {
        let (s, v) = raw::header(MapType::HttpRequestHeaders as u32, ":path");
        let (rs, rv) = raw::header(MapType::HttpResponseHeaders as u32, ":status");
        let code = hostcalls::get_property(vec!["response", "code"])
            .ok()
            .flatten()
            .map(|v| {
                let mut b = [0u8; 8];
                for (d, s) in b.iter_mut().zip(v.iter()) {
                    *d = *s;
                }
                u64::from_le_bytes(b).to_string()
            })
            .unwrap_or_else(|| "none".into());
        info!(
            "on_log ctx={} path_status={s} path={} resp_status={rs} status={} response.code={code}",
            self.id,
            String::from_utf8_lossy(&v),
            String::from_utf8_lossy(&rv)
        );
    }
}
