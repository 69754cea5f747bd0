//! `make bench`, Envoy part: requests per second through one Envoy worker (V8), driven by
//! `wrk` for a fixed duration, for
//!   (a) bare Envoy,
//!   (b) a pass-through Wasm filter that reads one header (benches/passthrough-filter),
//!   (c) tollgate answering locally (404, no mapping rule matched),
//!   (d) tollgate authorizing through the local control service,
//!   (e) tollgate answering 404 for a host no service serves: the binding's own cost (headers
//!       read, a reply sent, a counter) with almost no decision work, so c - e is the decision,
//!   (l) tollgate answering 429 from a local limiter (the shared bucket read and updated by
//!       compare-and-swap, an exhausted key), to compare with (c),
//! all in front of the same direct-response route, so the difference is the filter's cost.
//! Prints the figures, Envoy's CPU time per request for each (from /proc: steadier than
//! requests per second on a small shared machine), the ratios c/b and d/b, and the size of
//! tollgate.wasm.

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

/// What one run measured.
#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    /// Envoy's CPU time (all threads) per request, in microseconds.
    cpu_us: f64,
}

/// CPU time of every thread of `pid` so far, in nanoseconds (`/proc/<pid>/task/*/schedstat`,
/// whose first field is the time spent on a CPU).
fn cpu_nanos(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// Runs wrk against `url` and returns requests per second and the requests completed.
fn wrk(url: &str, host: &str) -> Result<(f64, u64)> {
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
    // "  123456 requests in 5.00s, 12.34MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    match (rps, requests) {
        (Some(rps), Some(requests)) => Ok((rps, requests)),
        _ => bail!(
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
    /// Requests sent (and not checked) before the status is: what exhausts a limiter.
    warmup: u32,
}

fn measure(case: &Case<'_>) -> Result<Run> {
    let (port, admin) = (free_port()?, free_port()?);
    let filter = case.filter.as_ref().map(|(p, c)| (p.as_path(), c.as_str()));
    // One worker: the figures are per worker.
    let envoy = Envoy::start(
        &direct_response_bootstrap(port, admin, filter, case.control),
        admin,
        1,
    )?;
    let url = format!("http://127.0.0.1:{port}{}", case.path);
    for _ in 0..case.warmup {
        let _ = ureq::get(&url).header("Host", case.host).call();
    }
    expect_status(&url, case.host, case.status)?;
    let before = cpu_nanos(envoy.pid())?;
    let (rps, requests) = wrk(&url, case.host)?;
    let spent = cpu_nanos(envoy.pid())?.saturating_sub(before);
    Ok(Run {
        rps,
        cpu_us: spent as f64 / 1000.0 / requests.max(1) as f64,
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
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
    // The same service with one limiter on every authorized request: 1 at once, 1 a day.
    let limited = {
        let loaded = tollgate::load(sendgrid.as_bytes());
        let mut config = loaded.config.context("the sendgrid example loads")?;
        for service in &mut config.services {
            service.limiters = vec![tollgate::config::LimiterConfig {
                name: "bench".into(),
                counts: "requests".into(),
                key: "application".into(),
                scope: tollgate::config::LimiterScope::Service,
                token_bucket: Some(tollgate::config::TokenBucketConfig {
                    rate: 1,
                    per: tollgate::config::RatePeriod::Day,
                    burst: 1,
                }),
                fixed_window: None,
                mode: tollgate::config::LimiterMode::Enforce,
                status: None,
                max_keys: tollgate::config::DEFAULT_LIMITER_MAX_KEYS,
            }];
        }
        config.to_json_pretty()
    };
    let cases = [
        Case {
            name: "(a) bare Envoy",
            filter: None,
            control: None,
            path: "/v3/templates",
            host,
            status: 200,
            warmup: 0,
        },
        Case {
            name: "(b) pass-through Wasm filter",
            filter: Some((passthrough, String::new())),
            control: None,
            path: "/v3/templates",
            host,
            status: 200,
            warmup: 0,
        },
        Case {
            name: "(c) tollgate, local 404",
            filter: Some((tollgate_wasm.clone(), sendgrid.clone())),
            control: Some(control_port),
            path: "/v3/unknown?api_user=bench-app&api_key=bench-key",
            host,
            status: 404,
            warmup: 0,
        },
        Case {
            name: "(e) tollgate, unknown host",
            filter: Some((tollgate_wasm.clone(), sendgrid.clone())),
            control: Some(control_port),
            path: "/v3/unknown?api_user=bench-app&api_key=bench-key",
            host: "nobody.example",
            status: 404,
            warmup: 0,
        },
        Case {
            name: "(d) tollgate, authorized",
            filter: Some((tollgate_wasm.clone(), sendgrid)),
            control: Some(control_port),
            path: "/v3/templates?api_user=bench-app&api_key=bench-key",
            host,
            status: 200,
            warmup: 0,
        },
        Case {
            name: "(l) tollgate, local limiter 429",
            filter: Some((tollgate_wasm.clone(), limited)),
            control: Some(control_port),
            path: "/v3/templates?api_user=bench-app&api_key=bench-key",
            host,
            status: 429,
            warmup: 1,
        },
    ];
    println!(
        "Envoy 1.40 (V8), 1 worker; wrk -t1 -c{CONNECTIONS} -d{DURATION_SECONDS}s on 127.0.0.1, \
         median of {ROUNDS} interleaved runs"
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 1..=ROUNDS {
        eprintln!(
            "  round {round} of {ROUNDS} ({} s per case) ...",
            DURATION_SECONDS
        );
        for (case, samples) in cases.iter().zip(runs.iter_mut()) {
            samples.push(measure(case)?);
        }
    }
    let mut rps = Vec::new();
    let mut cpu = Vec::new();
    for (case, samples) in cases.iter().zip(runs) {
        let all: Vec<String> = samples.iter().map(|r| format!("{:.0}", r.rps)).collect();
        let r = median(samples.iter().map(|r| r.rps).collect());
        let c = median(samples.iter().map(|r| r.cpu_us).collect());
        println!(
            "{:<32} {:>10.0} requests/s  {:>6.1} µs Envoy CPU/request  (runs: {})",
            case.name,
            r,
            c,
            all.join(", ")
        );
        rps.push(r);
        cpu.push(c);
    }
    let ([a, b, c, _, d, l], [_, cpu_b, cpu_c, cpu_e, cpu_d, cpu_l]) =
        (rps.as_slice(), cpu.as_slice())
    else {
        bail!("missing results");
    };
    println!();
    println!(
        "c/b = {:.2} by requests/s, {:.2} by CPU per request  (target >= 0.97: {})",
        c / b,
        cpu_b / cpu_c,
        if cpu_b / cpu_c >= 0.97 {
            "PASS"
        } else {
            "MISS"
        }
    );
    println!(
        "d/b = {:.2} by requests/s, {:.2} by CPU per request  (every request calls the control service)",
        d / b,
        cpu_b / cpu_d
    );
    println!(
        "c - e = {:.1} µs of Envoy CPU per request for the decision; e - b = {:.1} µs for the \
         binding (all headers read, a reply sent) against one header read",
        cpu_c - cpu_e,
        cpu_e - cpu_b
    );
    println!(
        "l/c = {:.2} by requests/s, {:.2} by CPU per request  (a limiter's 429 against the local \
         404; target >= 0.95: {})",
        l / c,
        cpu_c / cpu_l,
        if cpu_c / cpu_l >= 0.95 {
            "PASS"
        } else {
            "MISS"
        }
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
