//! tollgate's local control service: 3scale's Service Management API (`authorize`, `authrep`,
//! `report` and the `oauth_*` variants) over real HTTP, from a YAML file of services, metrics,
//! plans and applications, with counters kept in memory (and optionally in a state file).
//!
//! Answers follow apisonator as `../shared/reference/service-management-api.md` describes it;
//! the data format and the `/_tollgate/*` endpoints are documented in `control/README.md`.
//!
//! Bounded by construction: counters exist per (service, application, metric, period), so their
//! number is bounded by the data file; the request log keeps the last [`REQUEST_LOG_LEN`]
//! requests; bodies over [`MAX_BODY`] are refused with 413.

mod api;
pub mod data;
pub mod params;
pub mod periods;
mod state;
pub mod store;
pub mod transactor;
pub mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use data::{Data, DataError};

/// Requests kept for `GET /_tollgate/requests`.
pub const REQUEST_LOG_LEN: usize = 1000;
/// Largest request body accepted (report batches); larger gets 413.
pub const MAX_BODY: usize = 1 << 20;

/// The service's clock: the system time, or a fixed instant set by a test.
#[derive(Clone, Debug)]
pub struct Clock(Arc<AtomicI64>);

const SYSTEM: i64 = i64::MIN;

impl Default for Clock {
    fn default() -> Self {
        Clock(Arc::new(AtomicI64::new(SYSTEM)))
    }
}

impl Clock {
    /// Milliseconds since the UNIX epoch.
    pub fn now_ms(&self) -> i64 {
        match self.0.load(Ordering::Relaxed) {
            SYSTEM => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            fixed => fixed,
        }
    }

    /// Fixes the time (UNIX milliseconds), or goes back to the system time with `None`.
    pub fn set_ms(&self, ms: Option<i64>) {
        self.0.store(ms.unwrap_or(SYSTEM), Ordering::Relaxed);
    }
}

/// Parses and validates a data file (see `control/README.md`).
pub fn load_data(yaml: &str) -> Result<Data, DataError> {
    Data::from_yaml(yaml)
}

/// Why the control service could not start or serve. The data and state files are the
/// operator's configuration; the rest is the machine (a port in use, no threads left).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The data file is not valid.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("reading state file {}: {source}", path.display())]
    ReadState {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is not valid: {source}", path.display())]
    InvalidState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {}: {source}", path.display())]
    WriteState {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Listening, the runtime, a thread: the environment, not the input.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A control service running on its own thread; dropping it stops the server, writes the state
/// file (if any) and joins the thread.
pub struct Running {
    addr: SocketAddr,
    clock: Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for building URLs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service's clock, to set the time in tests.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the service on `127.0.0.1:0`; returns once it is listening.
pub fn spawn(data_yaml: &str, state: Option<PathBuf>) -> Result<Running, ControlError> {
    spawn_on(data_yaml, state, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Starts the service on `listen`; returns once it is listening.
pub fn spawn_on(
    data_yaml: &str,
    state: Option<PathBuf>,
    listen: SocketAddr,
) -> Result<Running, ControlError> {
    let data = load_data(data_yaml)?;
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let clock = Clock::default();
    let shared = api::Shared::new(data, state, clock.clone())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tollgate-control")
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("tollgate-control".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let result = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        api::run(shared, l, async {
                            let _ = stopped.await;
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    eprintln!("tollgate control: {e}");
                }
            });
        })?;
    Ok(Running {
        addr,
        clock,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Serves on `listener` until the process ends.
pub async fn serve(
    data: Data,
    listener: tokio::net::TcpListener,
    state: Option<PathBuf>,
) -> Result<(), ControlError> {
    serve_until(data, listener, state, std::future::pending()).await
}

/// Serves on `listener` until `shutdown` completes, then writes the state file (if any).
pub async fn serve_until(
    data: Data,
    listener: tokio::net::TcpListener,
    state: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ControlError> {
    let shared = api::Shared::new(data, state, Clock::default())?;
    api::run(shared, listener, shutdown).await?;
    Ok(())
}
