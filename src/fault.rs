//! Who is at fault when something fails, so each face can answer in kind: a client gets a 4xx,
//! a failing control service is logged and answered per policy, a configuration is refused
//! with its diagnostics, and an internal error is a bug to report.

/// The party whose input or behaviour caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request: a bad target, missing credentials.
    Client,
    /// The control service: no answer, or one that cannot be read.
    ControlService,
    /// The configuration the provider gave.
    Configuration,
    /// tollgate itself (or what it runs in): not the caller's doing.
    Internal,
}
