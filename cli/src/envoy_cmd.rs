//! `tollgate generate envoy`: the command around [`tollgate_cli::envoy::render`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tollgate_cli::envoy::{render, EnvoyOptions};

use crate::generate::emit;
use crate::input::load;
use crate::{ConfigArg, Failure};

#[derive(Args)]
pub struct EnvoyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The filter module, written into the bootstrap as given (a relative path is resolved
    /// from Envoy's working directory).
    #[arg(long, value_name = "PATH", default_value = "target/tollgate.wasm")]
    pub wasm: PathBuf,
    /// Where Envoy accepts client traffic.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Envoy's admin interface; loopback addresses only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// The control service, e.g. http://127.0.0.1:3001 (default: the services'
    /// backend.endpoint).
    #[arg(long, value_name = "URL")]
    pub backend_url: Option<String>,
    /// CA bundle that https upstreams (APIs, control service) must chain to, or `none` to
    /// skip certificate verification.
    #[arg(long, value_name = "FILE|none", default_value = tollgate_cli::envoy::SYSTEM_CA_BUNDLE)]
    pub upstream_ca: String,
    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Do not write: exit 1 if FILE (given with -o) differs from what would be written.
    #[arg(long, requires = "output")]
    pub check: bool,
}

pub fn run(args: &EnvoyArgs) -> Result<ExitCode, Failure> {
    let loaded = load(&args.config)?;
    for w in loaded.diagnostics.warnings() {
        eprintln!("{w}");
    }
    let options = EnvoyOptions {
        wasm: args.wasm.clone(),
        listen: args.listen,
        admin: args.admin,
        backend_url: args.backend_url.clone(),
        upstream_ca: (args.upstream_ca != "none").then(|| PathBuf::from(&args.upstream_ca)),
    };
    let rendered = render(&loaded.config, &options).map_err(Failure::from)?;
    emit(&rendered, args.output.as_ref(), args.check)
}
