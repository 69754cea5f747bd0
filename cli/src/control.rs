//! `tollgate control`: the local control service (3scale's Service Management API) from a YAML
//! data file; see control/README.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::{Cause, Failure};

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

fn failure(message: String) -> Failure {
    Failure::new(Cause::Failed, message)
}

pub fn run(args: &ControlArgs) -> Result<ExitCode, Failure> {
    let path = args.data.display();
    let yaml = std::fs::read_to_string(&args.data)
        .map_err(|e| Failure::unreadable(format!("{path}: {e}")))?;
    let data = tollgate_control::load_data(&yaml).map_err(|e| {
        let lines: Vec<String> = e.problems.iter().map(|p| format!("{path}: {p}")).collect();
        Failure::invalid_configuration(lines.join("\n"), Vec::new())
    })?;
    let listen: std::net::SocketAddr = args
        .listen
        .parse()
        .map_err(|e| Failure::usage(format!("--listen {}: {e}", args.listen)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| failure(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| failure(format!("listening on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| failure(format!("listening on {listen}: {e}")))?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "tollgate control listening on http://{addr}");
        let _ = out.flush();
        tollgate_control::serve_until(data, listener, args.state.clone(), shutdown_signal())
            .await
            .map_err(|e| failure(format!("{e}")))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
