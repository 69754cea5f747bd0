//! `tollgate generate envoy`: a complete Envoy bootstrap. Under construction.

use std::process::ExitCode;

use clap::Args;

use crate::{ConfigArg, Failure};

#[derive(Args)]
pub struct EnvoyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(_args: &EnvoyArgs) -> Result<ExitCode, Failure> {
    Err(Failure::usage(
        "tollgate generate envoy is not implemented yet",
    ))
}
