//! Why a command failed, and how a failure is shown: an exit status by cause, and either lines
//! on stderr or, with `--format json`, one JSON object on stdout.

use serde::Serialize;
use tollgate::{Diagnostic, Severity};
use tollgate_cli::envoy::EnvoyError;

use crate::Format;

/// What went wrong, which decides the exit status (sysexits.h's codes where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `generate --check`: the file is not what would be written.
    OutOfDate,
    /// The command could not do its work (`control` cannot listen, say).
    Failed,
    /// Bad flags or arguments (EX_USAGE).
    Usage,
    /// The configuration (or the control service's data) has errors (EX_DATAERR).
    InvalidConfiguration,
    /// An input file cannot be read: missing, a directory, no permission (EX_NOINPUT).
    UnreadableInput,
    /// The output file cannot be written (EX_CANTCREAT).
    CannotWrite,
}

impl Cause {
    pub fn exit_code(self) -> u8 {
        match self {
            Cause::OutOfDate | Cause::Failed => 1,
            Cause::Usage => 64,
            Cause::InvalidConfiguration => 65,
            Cause::UnreadableInput => 66,
            Cause::CannotWrite => 73,
        }
    }

    /// The name in a JSON failure's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Cause::OutOfDate => "out_of_date",
            Cause::Failed => "failed",
            Cause::Usage => "usage",
            Cause::InvalidConfiguration => "invalid_configuration",
            Cause::UnreadableInput => "unreadable_input",
            Cause::CannotWrite => "cannot_write",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Cause::OutOfDate => "out of date: the file given with -o differs (--check)",
            Cause::Failed => "the control service could not run (it cannot listen, say)",
            Cause::Usage => "usage: a bad flag or argument",
            Cause::InvalidConfiguration => "invalid configuration: every error is listed",
            Cause::UnreadableInput => {
                "unreadable input: a missing file, a directory, no permission"
            }
            Cause::CannotWrite => "the output file cannot be written",
        }
    }
}

/// The JSON failures' shape, for `--help`.
const JSON_FAILURE: &str = "With --format json (check, explain) the output is one JSON object on stdout, \
     failures too:\n  \
     {\"error\": {\"kind\": \"usage\" | \"invalid_configuration\" | \"unreadable_input\",\n   \
     \"exit_code\": 64 | 65 | 66, \"message\": \"…\",\n   \
     \"diagnostics\": [{\"severity\": \"error\", \"path\": \"services[0].id\", \"message\": \"…\"}]}}\n\
     check reports an invalid configuration in its own report instead, with \"valid\": false.";

/// The `Exit status` section of a command's `--help`: `success` first, then each cause.
pub fn exit_help(success: &str, causes: &[Cause], json: bool) -> String {
    let mut out = format!("Exit status:\n  0   {success}\n");
    for c in causes {
        out.push_str(&format!("  {:<3} {}\n", c.exit_code(), c.meaning()));
    }
    if json {
        out.push('\n');
        out.push_str(JSON_FAILURE);
    }
    out
}

/// An error that ends the command.
#[derive(Debug)]
pub struct Failure {
    pub cause: Cause,
    pub message: String,
    /// The configuration's diagnostics, for an invalid configuration.
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    pub fn new(cause: Cause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Cause::Usage, message)
    }

    pub fn unreadable(message: impl Into<String>) -> Self {
        Self::new(Cause::UnreadableInput, message)
    }

    pub fn invalid_configuration(message: impl Into<String>, diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            diagnostics,
            ..Self::new(Cause::InvalidConfiguration, message)
        }
    }

    /// Shows the failure: the errors and the message on stderr, or one JSON object on stdout.
    pub fn print(&self, format: Format) {
        match format {
            Format::Text => {
                for d in self
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                {
                    eprintln!("{d}");
                }
                if !self.message.is_empty() {
                    eprintln!("tollgate: {}", self.message);
                }
            }
            Format::Json => println!("{}", self.to_json()),
        }
    }

    fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            kind: &'static str,
            exit_code: u8,
            message: &'a str,
            diagnostics: &'a [Diagnostic],
        }
        #[derive(Serialize)]
        struct Json<'a> {
            error: Body<'a>,
        }
        let json = Json {
            error: Body {
                kind: self.cause.kind(),
                exit_code: self.cause.exit_code(),
                message: &self.message,
                diagnostics: &self.diagnostics,
            },
        };
        serde_json::to_string_pretty(&json).unwrap_or_default()
    }
}

/// `generate envoy`'s refusals: the configuration's errors are an invalid configuration, the
/// YAML writer's a failure, the rest (addresses, a missing --backend-url) the operator's
/// options.
impl From<EnvoyError> for Failure {
    fn from(e: EnvoyError) -> Self {
        let message = e.to_string();
        match e {
            EnvoyError::Config(diagnostics) => Failure::invalid_configuration(
                "the configuration is not valid for Envoy",
                diagnostics,
            ),
            EnvoyError::Yaml(_) => Failure::new(Cause::Failed, message),
            _ => Failure::usage(message),
        }
    }
}
