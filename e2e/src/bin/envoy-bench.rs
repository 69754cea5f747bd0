//! `make bench`, Envoy part: requests per second through one Envoy worker (V8), driven by
//! `wrk` for a fixed duration, for
//!   (a) bare Envoy,
//!   (b) a pass-through Wasm filter that reads one header (benches/passthrough-filter),
//!   (c) tollgate answering locally (404, no mapping rule matched),
//!   (d) tollgate authorizing through the local control service,
//! all in front of the same direct-response route, so the difference is the filter's cost.
//! Prints the figures, the ratios c/b and d/b, and the size of tollgate.wasm.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tollgate_e2e::envoy::{direct_response_bootstrap, Envoy};
use tollgate_e2e::{free_port, workspace};

const DURATION_SECONDS: u32 = 5;
/// Each case runs this many times, interleaved with the others, and reports its median: on a
/// small machine wrk and Envoy share the cores and single runs vary by several percent.
const ROUNDS: usize = 3;
const CONNECTIONS: u32 = 16;

/// Runs wrk against `url` and returns requests per second.
fn wrk(url: &str, host: &str) -> Result<f64> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{DURATION_SECONDS}s"),
            "-H",
            &format!("Host: {host}"),
            url,
        ])
        .output()
        .context("running wrk (Debian package wrk; `make bench` installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok());
    match rps {
        Some(rps) => Ok(rps),
        None => bail!(
            "could not read wrk's output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Checks the request gets the expected status before measuring (a benchmark of errors
/// would be worthless).
fn expect_status(url: &str, host: &str, status: u16) -> Result<()> {
    let got = match ureq::get(url).header("Host", host).call() {
        Ok(r) => r.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(e) => return Err(e.into()),
    };
    if got != status {
        bail!("{url} answered {got}, expected {status}");
    }
    Ok(())
}

struct Case<'a> {
    name: &'a str,
    filter: Option<(PathBuf, String)>,
    control: Option<u16>,
    path: &'a str,
    host: &'a str,
    status: u16,
}

fn measure(case: &Case<'_>) -> Result<f64> {
    let (port, admin) = (free_port()?, free_port()?);
    let filter = case.filter.as_ref().map(|(p, c)| (p.as_path(), c.as_str()));
    // One worker: the figures are per worker.
    let _envoy = Envoy::start(
        &direct_response_bootstrap(port, admin, filter, case.control),
        admin,
        1,
    )?;
    let url = format!("http://127.0.0.1:{port}{}", case.path);
    expect_status(&url, case.host, case.status)?;
    wrk(&url, case.host)
}

fn main() -> Result<()> {
    let root = workspace();
    let tollgate_wasm = tollgate_e2e::tollgate_wasm()?;
    let passthrough = tollgate_testsupport::passthrough_wasm()?;
    let sendgrid = std::fs::read_to_string(root.join("examples/sendgrid.json"))?;
    let control_data = std::fs::read_to_string(root.join("examples/control.yaml"))?;
    let control = tollgate_control::spawn(&control_data, None)?;
    let control_port = control.addr().port();

    let host = "api.sendgrid.example";
    let cases = [
        Case {
            name: "(a) bare Envoy",
            filter: None,
            control: None,
            path: "/v3/templates",
            host,
            status: 200,
        },
        Case {
            name: "(b) pass-through Wasm filter",
            filter: Some((passthrough, String::new())),
            control: None,
            path: "/v3/templates",
            host,
            status: 200,
        },
        Case {
            name: "(c) tollgate, local 404",
            filter: Some((tollgate_wasm.clone(), sendgrid.clone())),
            control: Some(control_port),
            path: "/v3/unknown?api_user=bench-app&api_key=bench-key",
            host,
            status: 404,
        },
        Case {
            name: "(d) tollgate, authorized",
            filter: Some((tollgate_wasm.clone(), sendgrid)),
            control: Some(control_port),
            path: "/v3/templates?api_user=bench-app&api_key=bench-key",
            host,
            status: 200,
        },
    ];
    println!(
        "Envoy 1.40 (V8), 1 worker; wrk -t1 -c{CONNECTIONS} -d{DURATION_SECONDS}s on 127.0.0.1, \
         median of {ROUNDS} interleaved runs"
    );
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 1..=ROUNDS {
        eprintln!(
            "  round {round} of {ROUNDS} ({} s per case) ...",
            DURATION_SECONDS
        );
        for (case, samples) in cases.iter().zip(runs.iter_mut()) {
            samples.push(measure(case)?);
        }
    }
    let mut results = Vec::new();
    for (case, mut samples) in cases.iter().zip(runs) {
        samples.sort_by(f64::total_cmp);
        let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
        let all: Vec<String> = samples.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{:<32} {:>10.0} requests/s  (runs: {})",
            case.name,
            median,
            all.join(", ")
        );
        results.push(median);
    }
    let [a, b, c, d] = results.as_slice() else {
        bail!("missing results");
    };
    println!();
    println!(
        "c/b = {:.2}  (target >= 0.90: {})",
        c / b,
        if c / b >= 0.9 { "PASS" } else { "MISS" }
    );
    println!(
        "d/b = {:.2}  (every request calls the control service)",
        d / b
    );
    println!("b/a = {:.2}  (the cost of any Wasm filter in Envoy)", b / a);
    let size = std::fs::metadata(&tollgate_wasm)?.len();
    println!(
        "tollgate.wasm = {} bytes = {:.0} KiB (target <= 512 KiB: {})",
        size,
        size as f64 / 1024.0,
        if size <= 512 * 1024 { "PASS" } else { "MISS" }
    );
    Ok(())
}
