//! `tollgate control`: the local control service. Under construction.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::Failure;

#[derive(Args)]
pub struct ControlArgs {
    /// The YAML data file: services, tokens, metrics, plans, applications.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:3001.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Keep counters in this file across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

pub fn run(_args: &ControlArgs) -> Result<ExitCode, Failure> {
    Err(Failure::usage("tollgate control is not implemented yet"))
}
