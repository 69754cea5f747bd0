//! `make demo`: the example services behind a real Envoy running tollgate.wasm, the local
//! control service (`tollgate control`) and an echo upstream standing in for the APIs. Sends a
//! scripted set of requests, prints what each client got and why, then the usage the control
//! service counted, and stops everything.
//!
//! "Why" is read from the filter itself: after each request the demo looks at which of Envoy's
//! `tollgate.<outcome>` counters moved, so the table shows what the gateway decided, not what
//! the script expected.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tollgate_e2e::client::{Answer, Client, Request};
use tollgate_e2e::echo::Echo;
use tollgate_e2e::envoy::Envoy;
use tollgate_e2e::stack::{local_services, EXAMPLES};
use tollgate_e2e::{free_port, tollgate_wasm, workspace};

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// `tollgate control` as a child process, killed when dropped.
struct ControlProcess(Child);

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tollgate_bin() -> Result<PathBuf> {
    let bin = workspace().join("target/release/tollgate");
    if !bin.is_file() {
        bail!("{} is missing: run `make build`", bin.display());
    }
    Ok(bin)
}

/// Prints a command the way a provider would type it.
fn show_command(args: &[&str]) {
    println!("{DIM}$ {}{RESET}", args.join(" "));
}

fn start_control(bin: &Path, data: &Path, listen: SocketAddr) -> Result<ControlProcess> {
    let listen = listen.to_string();
    let data = data.display().to_string();
    show_command(&["tollgate", "control", "--data", &data, "--listen", &listen]);
    let mut child = Command::new(bin)
        .args(["control", "--data", &data, "--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tollgate control")?;
    let stdout = child.stdout.take().context("control stdout")?;
    let process = ControlProcess(child);
    // It prints one line once it listens.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.contains("listening") {
        bail!("tollgate control did not start: {line}");
    }
    Ok(process)
}

fn generate_envoy(
    bin: &Path,
    services: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    control: SocketAddr,
    out: &Path,
) -> Result<()> {
    let wasm = tollgate_wasm()?.display().to_string();
    let (services, out) = (services.display().to_string(), out.display().to_string());
    let (listen, admin, backend) = (
        listen.to_string(),
        admin.to_string(),
        format!("http://{control}"),
    );
    let args = [
        "generate",
        "envoy",
        "--config",
        &services,
        "--wasm",
        &wasm,
        "--listen",
        &listen,
        "--admin",
        &admin,
        "--backend-url",
        &backend,
        "-o",
        &out,
    ];
    let mut shown = vec!["tollgate"];
    shown.extend(args);
    show_command(&shown);
    let status = Command::new(bin).args(args).status()?;
    if !status.success() {
        bail!("tollgate generate envoy failed ({status})");
    }
    Ok(())
}

/// One scripted request and what it shows.
struct Step {
    what: &'static str,
    method: &'static str,
    host: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    form: Option<&'static str>,
    /// Milliseconds to wait before it (for a background report's answer).
    wait_ms: u64,
}

const SENDGRID: &str = "api.sendgrid.example";
const TWITTER: &str = "api.twitter.example";

/// The SendGrid-like service's token: sent as `X-3scale-Debug`, it asks for APIcast's debug
/// headers (matched rules, usage) on the response.
const SENDGRID_DEBUG: &str = "sendgrid-service-token-8f2c1b7e";

/// The requests, for the applications of examples/control.yaml.
fn script() -> Vec<Step> {
    let step = |what, method, host, target| Step {
        what,
        method,
        host,
        target,
        headers: &[],
        form: None,
        wait_ms: 0,
    };
    let mail = "/api/mail.send.json?api_user=demo-app&api_key=demo-key";
    let tw_app: &'static [(&str, &str)] = &[("X-App-Id", "tw-app"), ("X-App-Key", "tw-key")];
    vec![
        step(
            "send mail (api_user/api_key in the query)",
            "GET",
            SENDGRID,
            mail,
        ),
        Step {
            form: Some("api_user=demo-app&api_key=demo-key&to=ops%40acme.example"),
            ..step(
                "send mail, credentials in the POST body",
                "POST",
                SENDGRID,
                "/api/mail.send.json",
            )
        },
        Step {
            headers: &[("X-3scale-Debug", SENDGRID_DEBUG)],
            ..step(
                "stats?aggregate=1: two rules match (debug headers on)",
                "GET",
                SENDGRID,
                "/api/stats.get.json?aggregate=1&api_user=demo-app&api_key=demo-key",
            )
        },
        step("no credentials", "GET", SENDGRID, "/api/mail.send.json"),
        step(
            "wrong api_key",
            "GET",
            SENDGRID,
            "/api/mail.send.json?api_user=demo-app&api_key=guess",
        ),
        step(
            "a path no mapping rule matches",
            "GET",
            SENDGRID,
            "/api/unknown.json?api_user=demo-app&api_key=demo-key",
        ),
        step(
            "send mail: 3rd this minute (plan: 3/minute)",
            "GET",
            SENDGRID,
            mail,
        ),
        step(
            "send mail: 4th this minute: answered from the cache, its report refused afterwards",
            "GET",
            SENDGRID,
            mail,
        ),
        Step {
            wait_ms: 500,
            ..step(
                "send mail: 5th this minute: the refusal is cached now",
                "GET",
                SENDGRID,
                mail,
            )
        },
        step(
            "blocks: disabled on the basic plan",
            "GET",
            SENDGRID,
            "/api/blocks.get.json?api_user=demo-app&api_key=demo-key",
        ),
        Step {
            headers: tw_app,
            ..step(
                "home timeline (X-App-Id/X-App-Key headers)",
                "GET",
                TWITTER,
                "/1.1/statuses/home_timeline.json?count=5",
            )
        },
        Step {
            headers: tw_app,
            ..step(
                "user settings: disabled on the free plan",
                "PATCH",
                TWITTER,
                "/2/users/12/settings",
            )
        },
        step("a host no service serves", "GET", "unknown.example", "/"),
    ]
}

/// The outcome counters the filter keeps, read from Envoy's admin endpoint.
fn outcome_counters(envoy: &Envoy) -> Result<Vec<(String, u64)>> {
    let stats = envoy.admin("/stats?filter=wasmcustom.tollgate")?;
    Ok(stats
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            let name = name.strip_prefix("wasmcustom.tollgate.")?;
            // Outcomes only: not the cache's, the batcher's or a limiter's counters.
            if name.contains('.') {
                return None;
            }
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The outcome whose counter moved between two readings.
fn moved(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    after
        .iter()
        .find(|(name, value)| {
            let old = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| *v);
            *value > old
        })
        .map_or_else(|| "?".to_owned(), |(name, _)| name.clone())
}

fn explain(outcome: &str, answer: &Answer) -> String {
    let detail = match outcome {
        "authorized" => {
            let upstream = answer
                .echoed()
                .and_then(|e| e.get("path").and_then(Value::as_str).map(str::to_owned))
                .map(|p| format!("upstream got {p}"))
                .unwrap_or_default();
            match (
                answer.header("x-3scale-matched-rules"),
                answer.header("x-3scale-usage"),
            ) {
                (Some(rules), Some(usage)) => {
                    format!(
                        "{upstream}\n{:25}matched rules: {rules}; usage: {usage}",
                        ""
                    )
                }
                _ => upstream,
            }
        }
        "limits_exceeded" => answer
            .header("retry-after")
            .map(|s| format!("Retry-After: {s}"))
            .unwrap_or_default(),
        _ => {
            let body = answer.body.trim();
            if body.is_empty() {
                "empty body".to_owned()
            } else {
                format!("body: {}", body.chars().take(64).collect::<String>())
            }
        }
    };
    format!("{outcome:<16} {DIM}{detail}{RESET}")
}

fn usage_table(control: SocketAddr) -> Result<()> {
    let usage: Value = serde_json::from_str(
        &ureq::get(&format!("http://{control}/_tollgate/usage"))
            .call()?
            .body_mut()
            .read_to_string()?,
    )?;
    println!("\n{BOLD}Usage the control service counted{RESET} (GET /_tollgate/usage)");
    let services = usage
        .get("services")
        .and_then(Value::as_object)
        .context("usage: no services")?;
    for (service, data) in services {
        let Some(apps) = data.get("applications").and_then(Value::as_object) else {
            continue;
        };
        for (app, metrics) in apps {
            let Some(metrics) = metrics.as_object() else {
                continue;
            };
            let counted: Vec<String> = metrics
                .iter()
                .filter_map(|(metric, periods)| {
                    let periods = periods.as_object()?;
                    // The control service starts without state, so all time is this run.
                    let value = periods.get("eternity")?.as_u64()?;
                    (value > 0).then(|| format!("{metric} {value}"))
                })
                .collect();
            if !counted.is_empty() {
                println!(
                    "  service {service:<14} app {app:<14} {}",
                    counted.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let root = workspace();
    let bin = tollgate_bin()?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir)?;

    println!(
        "{BOLD}tollgate demo{RESET}: two 3scale services behind Envoy 1.40 with tollgate.wasm\n"
    );
    let control_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let _control = start_control(&bin, &root.join("examples/control.yaml"), control_addr)?;

    let echo = Echo::start()?;
    println!(
        "{DIM}# the APIs: an echo upstream on {} (it answers with what it received){RESET}",
        echo.addr
    );
    let services = dir.join("services.json");
    let doc = local_services(&EXAMPLES, echo.addr)?;
    std::fs::write(&services, serde_json::to_string_pretty(&doc)?)?;
    println!(
        "{DIM}# {}: examples/sendgrid.json + examples/twitter.json, api_backend -> the echo upstream{RESET}",
        services.strip_prefix(&root).unwrap_or(&services).display()
    );

    let (port, admin) = (free_port()?, free_port()?);
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let envoy_yaml = dir.join("envoy.yaml");
    generate_envoy(
        &bin,
        &services,
        listen,
        admin_addr,
        control_addr,
        &envoy_yaml,
    )?;
    let bootstrap = std::fs::read_to_string(&envoy_yaml)?;
    show_command(&[
        "envoy",
        "-c",
        &envoy_yaml.display().to_string(),
        "--concurrency",
        "1",
    ]);
    let envoy = Envoy::start(&bootstrap, admin, 1)?;
    println!("{DIM}# Envoy listens on {listen}, admin on {admin_addr}{RESET}\n");

    let client = Client::new(port, Duration::from_secs(5));
    println!("{BOLD}#   request\n    status why: the filter's outcome (its Envoy counter) and details{RESET}");
    for (n, step) in script().iter().enumerate() {
        let mut request = Request::new(step.method, step.host, step.target);
        for (name, value) in step.headers {
            request = request.header(name, value.as_bytes());
        }
        if let Some(form) = step.form {
            request = request.form(form);
        }
        std::thread::sleep(Duration::from_millis(step.wait_ms));
        let before = outcome_counters(&envoy)?;
        let answer = client.send(&request)?;
        let after = outcome_counters(&envoy)?;
        let outcome = moved(&before, &after);
        let colour = if answer.status < 400 { GREEN } else { RED };
        println!("{:<3} {BOLD}{}{RESET}", n + 1, step.what);
        let target: String = step.target.chars().take(60).collect();
        println!(
            "    {DIM}{} {}{}{RESET}\n    {colour}{:<6}{RESET} {}",
            step.method,
            step.host,
            target,
            answer.status,
            explain(&outcome, &answer)
        );
    }
    usage_table(control_addr)?;
    println!("\n{DIM}stopping Envoy, the control service and the upstream{RESET}");
    Ok(())
}
