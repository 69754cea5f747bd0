//! `tollgate`: check a 3scale proxy configuration, render it for the filter, and explain what
//! the gateway would decide for a request.
//!
//! Exit status by cause (see [`failure::Cause`]): 0 on success, 1 when `generate --check`
//! finds the output out of date (or `control` cannot run), 64 for bad arguments, 65 for an
//! invalid configuration, 66 for unreadable input, 73 when the output cannot be written.

mod check;
mod control;
mod envoy_cmd;
mod explain;
mod failure;
mod generate;
mod input;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use failure::{exit_help, Cause::*};
pub use failure::{Cause, Failure};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "3scale-grade API management for Envoy: check, render and explain gateway configurations",
    after_help = exit_help(
        "success (explain: for both outcomes, authorize and deny)",
        &[OutOfDate, Failed, Usage, InvalidConfiguration, UnreadableInput, CannotWrite],
        true,
    )
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report every problem in a configuration, each with its JSON path (exit 65 on errors).
    #[command(after_help = exit_help(
        "valid (warnings allowed)",
        &[Usage, InvalidConfiguration, UnreadableInput],
        true,
    ))]
    Check(check::CheckArgs),
    /// Render a configuration for one of tollgate's targets.
    #[command(subcommand)]
    Generate(GenerateTarget),
    /// Print what the gateway would decide for one request, without contacting anything.
    #[command(after_help = exit_help(
        "the decision is printed, whether authorize or deny",
        &[Usage, InvalidConfiguration, UnreadableInput],
        true,
    ))]
    Explain(explain::ExplainArgs),
    /// Run a local control service (3scale's Service Management API) from a YAML data file.
    #[command(after_help = exit_help(
        "stopped by SIGINT or SIGTERM",
        &[Failed, Usage, InvalidConfiguration, UnreadableInput],
        false,
    ))]
    Control(control::ControlArgs),
}

#[derive(Subcommand)]
enum GenerateTarget {
    /// The filter's own validated configuration (FilterConfig JSON).
    #[command(after_help = exit_help(
        "written (or, with --check, up to date)",
        &[OutOfDate, Usage, InvalidConfiguration, UnreadableInput, CannotWrite],
        false,
    ))]
    Filter(generate::FilterArgs),
    /// A complete, runnable Envoy bootstrap with the tollgate filter.
    #[command(after_help = exit_help(
        "written (or, with --check, up to date)",
        &[OutOfDate, Usage, InvalidConfiguration, UnreadableInput, CannotWrite],
        false,
    ))]
    Envoy(envoy_cmd::EnvoyArgs),
}

impl Command {
    /// How the command's failures are shown.
    fn format(&self) -> Format {
        match self {
            Command::Check(args) => args.format(),
            Command::Explain(args) => args.format(),
            Command::Generate(_) | Command::Control(_) => Format::Text,
        }
    }
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

/// Whether the command line asks for JSON (`--format json`), for errors found before it is
/// parsed.
fn asks_for_json(args: &[OsString]) -> bool {
    args.iter()
        .zip(args.iter().skip(1))
        .any(|(a, b)| a == "--format" && b == "json")
        || args.iter().any(|a| a == "--format=json")
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let parsed = Cli::command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            // --help or --version; nothing else to do if stdout is closed.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            if asks_for_json(&args) {
                // clap's first line says what is wrong; the rest is a usage hint for people.
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                Failure::usage(first.trim_start_matches("error: ")).print(Format::Json);
            } else {
                let _ = e.print();
            }
            return ExitCode::from(Cause::Usage.exit_code());
        }
    };
    let format = cli.command.format();
    let result = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Generate(GenerateTarget::Filter(args)) => generate::filter(args),
        Command::Explain(args) => {
            let sub = matches.subcommand_matches("explain");
            explain::run(args, sub)
        }
        Command::Control(args) => control::run(args),
        Command::Generate(GenerateTarget::Envoy(args)) => envoy_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            failure.print(format);
            ExitCode::from(failure.cause.exit_code())
        }
    }
}
