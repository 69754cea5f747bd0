//! Why the harness could not run a part or an exchange, by whose fault: the machine's (a file,
//! a socket, a missing artifact), Envoy's or its configuration's (with Envoy's log, which says
//! which), the fixtures' (a document tollgate does not load), or the network's (an HTTP
//! exchange without an answer; any status is an answer, never an error).

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

use tollgate::Diagnostic;
use tollgate_cli::envoy::EnvoyError;
use tollgate_testsupport::Missing;
use ureq::http::header::InvalidHeaderValue;

/// What the harness's functions return.
pub type Result<T> = std::result::Result<T, HarnessError>;

#[derive(thiserror::Error)]
pub enum HarnessError {
    /// A local step failed: a file, a socket, a process to start. The machine's fault.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Something polled did not become ready in time.
    #[error("{what} was not ready after {timeout:?}")]
    NotReady { what: String, timeout: Duration },
    /// Envoy exited before it was ready: its configuration's fault or Envoy's, the log says.
    #[error("envoy exited ({status}):\n{log}")]
    EnvoyExited { status: ExitStatus, log: String },
    /// Envoy kept running without becoming ready.
    #[error("envoy was not ready after {timeout:?}:\n{log}")]
    EnvoyNotReady { timeout: Duration, log: String },
    /// Envoy kept running with a configuration it was expected to refuse.
    #[error("envoy accepted the config:\n{log}")]
    EnvoyAccepted { log: String },
    /// An HTTP exchange got no answer (refused, timed out, or the request could not be built).
    #[error("{what}: {source}")]
    Http { what: String, source: ureq::Error },
    /// A test asked to send a header value HTTP cannot carry: the test's fault.
    #[error("header {name} is not sendable: {source}")]
    Header {
        name: String,
        source: InvalidHeaderValue,
    },
    /// A configuration document tollgate does not load: the fixture's fault.
    #[error("invalid configuration:\n{}", lines(.errors))]
    InvalidConfig { errors: Vec<Diagnostic> },
    /// A fixture that is not JSON.
    #[error("{what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    /// A fixture with none of the three 3scale shapes.
    #[error("{example}: no services found")]
    NoServices { example: String },
    /// tollgate's CLI renders no bootstrap for the harness's options or configuration.
    #[error(transparent)]
    Bootstrap(#[from] EnvoyError),
    /// An artifact or Envoy is not built: the message names the command that provides it.
    #[error(transparent)]
    Missing(#[from] Missing),
}

impl HarnessError {
    /// A [`HarnessError::Io`] for `map_err`, saying which step failed.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// A [`HarnessError::Http`] for `map_err`, saying which exchange failed.
    pub(crate) fn http<E: Into<ureq::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |source| Self::Http {
            what,
            source: source.into(),
        }
    }
}

// Tests `unwrap()` these, which prints Debug: the sentence, so Envoy's log reads as lines
// rather than one escaped string (as `tollgate_testsupport::Missing` does).
impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}
