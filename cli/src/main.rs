//! `tollgate`: check a 3scale proxy configuration, render it for the filter, and explain what
//! the gateway would decide for a request.
//!
//! Exit status: 0 on success, 64 (EX_USAGE) for invalid configuration or arguments, 1 when
//! `generate --check` finds the output out of date.

mod check;
mod control;
mod envoy_cmd;
mod explain;
mod generate;
mod input;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// EX_USAGE from sysexits.h: the input (configuration or arguments) is at fault.
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "3scale-grade API management for Envoy: check, render and explain gateway configurations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report every problem in a configuration, each with its JSON path (exit 64 on errors).
    Check(check::CheckArgs),
    /// Render a configuration for one of tollgate's targets.
    #[command(subcommand)]
    Generate(GenerateTarget),
    /// Print what the gateway would decide for one request, without contacting anything.
    Explain(explain::ExplainArgs),
    /// Run a local control service (3scale's Service Management API) from a YAML data file.
    Control(control::ControlArgs),
}

#[derive(Subcommand)]
enum GenerateTarget {
    /// The filter's own validated configuration (FilterConfig JSON).
    Filter(generate::FilterArgs),
    /// A complete, runnable Envoy bootstrap with the tollgate filter.
    Envoy(envoy_cmd::EnvoyArgs),
}

/// The configuration to read: 3scale JSON (any of its three shapes) or a FilterConfig.
#[derive(Args, Clone)]
pub struct ConfigArg {
    /// Configuration file, or '-' for standard input.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Accept that the gateway does not run this policy of the services' policy chains (one
    /// tollgate does not implement); repeat it or give a comma-separated list. The generated
    /// FilterConfig lists what is skipped.
    #[arg(long = "skip-policy", value_name = "NAME", value_delimiter = ',')]
    pub skip_policy: Vec<String>,
}

impl ConfigArg {
    pub fn load_options(&self) -> tollgate::LoadOptions {
        tollgate::LoadOptions {
            accept_skipped_policies: self.skip_policy.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Json,
    Text,
}

/// An error that ends the command with a message on stderr and an exit status.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_USAGE,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let status = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // Printing help or an argument error; nothing else to do if stdout is closed.
            let _ = e.print();
            return ExitCode::from(status);
        }
    };
    let result = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Generate(GenerateTarget::Filter(args)) => generate::filter(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Control(args) => control::run(&args),
        Command::Generate(GenerateTarget::Envoy(args)) => envoy_cmd::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("tollgate: {}", failure.message);
            }
            ExitCode::from(failure.status)
        }
    }
}
