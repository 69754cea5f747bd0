//! HTTP: axum routes over the transactor, the request log, `/_tollgate/*` and the state writer.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};

use crate::data::Data;
use crate::periods::format_time;
use crate::store::Store;
use crate::transactor::{self, Answer, Endpoint};
use crate::{state, xml, Clock, ControlError, MAX_BODY, REQUEST_LOG_LEN};

#[derive(Serialize, Clone)]
struct Logged {
    method: String,
    path_and_query: String,
    /// The `Host` the request named (HTTP/2's `:authority`), if any: 3scale's hosted
    /// backend routes by it.
    host: Option<String>,
    status: u16,
}

pub(crate) struct Shared {
    data: Data,
    store: Mutex<Store>,
    log: Mutex<VecDeque<Logged>>,
    clock: Clock,
    /// Wakes the state writer; `None` without `--state` or once stopping.
    changed: Mutex<Option<SyncSender<()>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave counters half-written (every update is one
    // assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        data: Data,
        state_file: Option<PathBuf>,
        clock: Clock,
    ) -> Result<Arc<Shared>, ControlError> {
        let mut store = Store::default();
        if let Some(path) = &state_file {
            state::load(path, &data, &mut store)?;
        }
        let shared = Arc::new(Shared {
            data,
            store: Mutex::new(store),
            log: Mutex::new(VecDeque::with_capacity(REQUEST_LOG_LEN)),
            clock,
            changed: Mutex::new(None),
            writer: Mutex::new(None),
        });
        if let Some(path) = state_file {
            // Write once at start so a bad path shows up now, not after the first request.
            state::write_atomic(&path, &state::snapshot(&shared.data, &lock(&shared.store)))
                .map_err(|source| ControlError::WriteState {
                    path: path.clone(),
                    source,
                })?;
            let (tx, rx) = sync_channel(1);
            let weak = Arc::downgrade(&shared);
            let handle = std::thread::Builder::new()
                .name("tollgate-control-state".to_owned())
                .spawn(move || state_writer(weak, rx, path))?;
            *lock(&shared.changed) = Some(tx);
            *lock(&shared.writer) = Some(handle);
        }
        Ok(shared)
    }

    fn note_change(&self) {
        if let Some(tx) = lock(&self.changed).as_ref() {
            // Full channel: a write is already pending and will include this change.
            let _ = tx.try_send(());
        }
    }

    /// Stops the state writer after a final write.
    fn finish(&self) {
        drop(lock(&self.changed).take());
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// The single writer of the state file: waits for a change, lets more arrive for 100 ms, then
/// writes a snapshot; writes a last one when the service stops.
fn state_writer(shared: std::sync::Weak<Shared>, rx: Receiver<()>, path: PathBuf) {
    let write = || {
        if let Some(s) = shared.upgrade() {
            let bytes = state::snapshot(&s.data, &lock(&s.store));
            if let Err(e) = state::write_atomic(&path, &bytes) {
                eprintln!(
                    "tollgate control: writing state file {}: {e}",
                    path.display()
                );
            }
        }
    };
    while rx.recv().is_ok() {
        std::thread::sleep(Duration::from_millis(100));
        while rx.try_recv().is_ok() {}
        write();
    }
    write();
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(shared.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    shared.finish();
    result
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/transactions/authrep.xml", get(authrep).fallback(fallback))
        .route(
            "/transactions/authorize.xml",
            get(authorize).fallback(fallback),
        )
        .route(
            "/transactions/oauth_authrep.xml",
            get(oauth_authrep).fallback(fallback),
        )
        .route(
            "/transactions/oauth_authorize.xml",
            get(oauth_authorize).fallback(fallback),
        )
        .route("/transactions.xml", post(report).fallback(fallback))
        .route("/available", head(available).fallback(fallback))
        .route("/check.txt", get(check).fallback(fallback))
        .route("/status", get(status).fallback(fallback))
        .route("/_tollgate/usage", get(usage))
        .route("/_tollgate/requests", get(requests))
        .route("/_tollgate/calls", get(calls))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

/// Keeps the last requests (not the `/_tollgate/*` ones) with the status answered.
async fn record(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let uri = req.uri();
    if uri.path().starts_with("/_tollgate/") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
    let res = next.run(req).await;
    let mut log = lock(&s.log);
    if log.len() >= REQUEST_LOG_LEN {
        log.pop_front();
    }
    log.push_back(Logged {
        method,
        path_and_query,
        host,
        status: res.status().as_u16(),
    });
    res
}

fn xml_response(status: u16, body: String) -> Response {
    let mut res = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(xml::CONTENT_TYPE),
    );
    res
}

fn answer(s: &Shared, a: Answer) -> Response {
    if a.changed {
        s.note_change();
    }
    let mut res = xml_response(a.status, a.body);
    for (name, value) in a.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

fn options(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get("3scale-options").map(HeaderValue::as_bytes)
}

fn auth(s: &Shared, endpoint: Endpoint, headers: &HeaderMap, uri: &Uri) -> Response {
    let query = uri.query().unwrap_or("").as_bytes();
    let now = s.clock.now_ms();
    let a = {
        let mut store = lock(&s.store);
        transactor::auth(&s.data, &mut store, endpoint, query, options(headers), now)
    };
    answer(s, a)
}

async fn authrep(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    auth(&s, Endpoint::Authrep, &headers, &uri)
}
async fn authorize(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    auth(&s, Endpoint::Authorize, &headers, &uri)
}
async fn oauth_authrep(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    auth(&s, Endpoint::OauthAuthrep, &headers, &uri)
}
async fn oauth_authorize(State(s): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    auth(&s, Endpoint::OauthAuthorize, &headers, &uri)
}

async fn report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or("").as_bytes();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let now = s.clock.now_ms();
    let a = {
        let mut store = lock(&s.store);
        transactor::report(
            &s.data,
            &mut store,
            content_type,
            query,
            &body,
            options(&headers),
            now,
        )
    };
    answer(&s, a)
}

async fn available() -> Response {
    xml_response(200, String::new())
}

async fn check() -> Response {
    let mut res = (StatusCode::OK, "ok").into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

async fn status() -> Response {
    axum::Json(json!({"status": "ok", "version": {"backend": concat!("tollgate-control ", env!("CARGO_PKG_VERSION"))}}))
        .into_response()
}

/// apisonator: OPTIONS anything is a CORS pre-flight (204); any other unknown route or method is
/// 404 with an empty body.
async fn fallback(method: Method) -> Response {
    if method == Method::OPTIONS {
        let mut res = xml_response(204, String::new());
        let h = res.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("*"),
        );
        return res;
    }
    xml_response(404, String::new())
}

/// `GET /_tollgate/usage`: per application, every metric of its service with its `total` (the
/// eternity counter, whatever the plan limits) and the current windows counted (shape in
/// control/README.md).
async fn usage(State(s): State<Arc<Shared>>) -> Response {
    let now_ms = s.clock.now_ms();
    let now = now_ms.div_euclid(1000);
    let current = lock(&s.store).current(now);
    let mut services = Map::new();
    for (si, svc) in s.data.services.iter().enumerate() {
        let mut apps = Map::new();
        for (ai, app) in svc.apps.iter().enumerate() {
            let mut metrics = Map::new();
            for m in &svc.metrics {
                metrics.insert(m.name.clone(), json!({ "total": 0 }));
            }
            for (k, v) in current
                .iter()
                .filter(|(k, _)| k.service == si && k.app == ai)
            {
                let entry = metrics
                    .entry(svc.metric_name(k.metric).to_owned())
                    .or_insert_with(|| json!({ "total": 0 }));
                if let Json::Object(periods) = entry {
                    periods.insert(k.period.name().to_owned(), json!(v));
                    if k.period == crate::periods::Period::Eternity {
                        periods.insert("total".to_owned(), json!(v));
                    }
                }
            }
            apps.insert(app.id.clone(), Json::Object(metrics));
        }
        services.insert(svc.id.clone(), json!({ "applications": apps }));
    }
    axum::Json(json!({ "now": format_time(now), "services": services })).into_response()
}

/// `GET /_tollgate/calls`: Service Management calls answered since the first start.
async fn calls(State(s): State<Arc<Shared>>) -> Response {
    let calls = lock(&s.store).calls;
    axum::Json(calls).into_response()
}

/// `GET /_tollgate/requests`: the last Service Management requests, oldest first.
async fn requests(State(s): State<Arc<Shared>>) -> Response {
    let log: Vec<Logged> = lock(&s.log).iter().cloned().collect();
    axum::Json(log).into_response()
}
