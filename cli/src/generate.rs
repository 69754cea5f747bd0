//! `tollgate generate …`: configurations rendered from the validated model.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::input::load;
use crate::{Cause, ConfigArg, Failure};

#[derive(Args)]
pub struct FilterArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Do not write: exit 1 if FILE (given with -o) differs from what would be written.
    #[arg(long, requires = "output")]
    check: bool,
}

pub fn filter(args: &FilterArgs) -> Result<ExitCode, Failure> {
    let loaded = load(&args.config)?;
    for w in loaded.diagnostics.warnings() {
        eprintln!("{w}");
    }
    let mut rendered = loaded.config.to_json_pretty();
    rendered.push('\n');
    emit(&rendered, args.output.as_ref(), args.check)
}

/// Writes `rendered` to stdout or FILE, or with `check`, compares it with FILE.
pub fn emit(rendered: &str, output: Option<&PathBuf>, check: bool) -> Result<ExitCode, Failure> {
    match (output, check) {
        (None, _) => {
            print!("{rendered}");
            Ok(ExitCode::SUCCESS)
        }
        (Some(path), false) => {
            std::fs::write(path, rendered).map_err(|e| {
                Failure::new(
                    Cause::CannotWrite,
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        (Some(path), true) => {
            let current = std::fs::read_to_string(path).unwrap_or_default();
            if current == rendered {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Failure::new(
                    Cause::OutOfDate,
                    format!(
                        "{} is out of date ({}); regenerate it: the same command without --check",
                        path.display(),
                        first_difference(&current, rendered)
                    ),
                ))
            }
        }
    }
}

/// Where `current` (the file) first differs from `rendered`, as a hint for the reader.
fn first_difference(current: &str, rendered: &str) -> String {
    let mut theirs = current.lines();
    let mut ours = rendered.lines();
    for line in 1.. {
        match (theirs.next(), ours.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => {
                return format!("line {line}: the file has `{a}`, expected `{b}`");
            }
            (Some(_), None) => return format!("line {line}: the file has more lines"),
            (None, Some(b)) => return format!("line {line}: the file ends, expected `{b}`"),
            (None, None) => break,
        }
    }
    "they differ in line endings".to_owned()
}
