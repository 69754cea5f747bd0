//! `tollgate generate envoy`: the command around [`tollgate_cli::envoy::render`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tollgate_cli::envoy::{machine_hostname, parse_address, render, EnvoyOptions, UpstreamCa};

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
    /// Where Envoy accepts client traffic: IP:PORT, localhost:PORT or NAME:PORT (a name is
    /// resolved now, to its first IPv4 address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = parse_address)]
    pub listen: SocketAddr,
    /// Envoy's admin interface, as --listen; loopback addresses only.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901", value_parser = parse_address)]
    pub admin: SocketAddr,
    /// The control service, e.g. http://127.0.0.1:3001 or http://localhost:3001 (default:
    /// the services' backend.endpoint).
    #[arg(long, value_name = "URL")]
    pub backend_url: Option<String>,
    /// CA bundle that https upstreams (APIs, control service) must chain to, or `none` to
    /// skip certificate verification (default: the system's, the first found of
    /// /etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt,
    /// /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem, /etc/ssl/ca-bundle.pem,
    /// /etc/ssl/cert.pem).
    #[arg(long, value_name = "FILE|none")]
    pub upstream_ca: Option<String>,
    /// Envoy's node id, which debug answers report as X-3scale-hostname (default: this
    /// machine's host name, as APIcast reports its own).
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
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
        upstream_ca: match args.upstream_ca.as_deref() {
            None => UpstreamCa::System,
            Some("none") => UpstreamCa::Unverified,
            Some(file) => UpstreamCa::File(PathBuf::from(file)),
        },
        node_id: args.node_id.clone().or_else(|| {
            let found = machine_hostname();
            if found.is_none() {
                eprintln!(
                    "warning: cannot tell this machine's host name: the bootstrap names no node \
                     and X-3scale-hostname says `tollgate` (give --node-id)"
                );
            }
            found
        }),
    };
    let rendered = render(&loaded.config, &options).map_err(Failure::from)?;
    emit(&rendered, args.output.as_ref(), args.check)
}
