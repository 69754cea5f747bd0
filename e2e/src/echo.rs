//! The echo upstream: answers every request with a JSON description of what it received
//! (method, path with query, headers as bytes-safe strings, body), and remembers it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::{HarnessError, Result};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `(lower-case name, value)`; non-UTF-8 values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn to_json(&self) -> Value {
        json!({
            "method": self.method,
            "path": self.path,
            "headers": self.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// A running echo upstream, stopped when dropped.
pub struct Echo {
    pub addr: SocketAddr,
    seen: Log,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn echo(
    State(seen): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let request = Seen {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let answer = request.to_json();
    if let Ok(mut log) = seen.lock() {
        log.push(request);
    }
    (
        [("content-type", "application/json"), ("x-echo", "1")],
        answer.to_string(),
    )
}

impl Echo {
    pub fn start() -> Result<Self> {
        let seen: Log = Arc::new(Mutex::new(Vec::new()));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(HarnessError::io("binding the echo upstream"))?;
        // tokio takes over the listener and requires it non-blocking.
        std_listener
            .set_nonblocking(true)
            .map_err(HarnessError::io("making the echo upstream non-blocking"))?;
        let addr = std_listener
            .local_addr()
            .map_err(HarnessError::io("reading the echo upstream's address"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let app = axum::Router::new().fallback(echo).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Echo {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.seen().pop()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
