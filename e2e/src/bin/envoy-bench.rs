//! `make bench`, Envoy part: requests per second through one Envoy worker (V8), driven by
//! `wrk` for a fixed duration, for
//!   (a) bare Envoy,
//!   (b) a pass-through Wasm filter that reads one header (benches/passthrough-filter),
//!   (c) tollgate answering locally (404, no mapping rule matched),
//!   (d) tollgate authorizing through the local control service,
//!   (h) tollgate answering 404 for a host no service serves: the binding's own cost (headers
//!       read, a reply sent, a counter) with almost no decision work, so c - h is the decision,
//!   (l) tollgate answering 429 from a local limiter (the shared bucket read and updated by
//!       compare-and-swap, an exhausted key), to compare with (c),
//! and, on the service with 1,000 more mapping rules and a local limiter that admits everything
//! (issue 11's setting), a cached key:
//!   (e) batched (APIcast's 3scale Batcher: no call per request, one report a second),
//!   (e0) = (e) on the example service as it is (no extra rules, no limiter): e - e0 is the
//!       cost of the rules and the limiter,
//!   (k) the example service with `authorization: none`: forwarded without credentials,
//!       rules, cache or call, so (e0 - k) - (c - h) is about the cache's and the batch's cost,
//!   (f) authrep with cache (answered at once, one background authrep per request),
//!   (g) (f) with coalesced background reports,
//! all in front of the same direct-response route, so the difference is the filter's cost.
//! Prints the figures, Envoy's CPU time per request for each (from /proc: steadier than
//! requests per second on a small shared machine), p50/p99 latency (wrk's distribution), the
//! ratios c/b, d/b, e/b, f/b and g/b, the control-service calls per 10,000 requests of e, f
//! and g (Envoy's count of requests to the control-service cluster during the run), and the
//! size of tollgate.wasm.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tollgate_e2e::envoy::{direct_response_bootstrap, Envoy};
use tollgate_e2e::{free_port, workspace};

const DURATION_SECONDS: u32 = 5;
/// `ENVOY_BENCH_QUICK=1`: one round of 2 s per case, to check the benchmark runs, not to
/// measure.
fn quick() -> bool {
    std::env::var_os("ENVOY_BENCH_QUICK").is_some_and(|v| v == "1")
}
fn duration_seconds() -> u32 {
    if quick() {
        2
    } else {
        DURATION_SECONDS
    }
}
fn rounds() -> usize {
    if quick() {
        1
    } else {
        ROUNDS
    }
}
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
    /// wrk's latency percentiles, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    /// Calls to the control service per 10,000 requests wrk completed: as Envoy sent them,
    /// and as the control service answered them (`/_tollgate/calls`).
    calls_per_10k: f64,
    answered_per_10k: f64,
}

/// What wrk printed.
struct Wrk {
    rps: f64,
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A latency as wrk prints it (`812.00us`, `1.23ms`, `2.00s`), in milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// The `<percent>%  <latency>` line of wrk's `Latency Distribution`.
fn percentile(text: &str, percent: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next()) {
            (Some(p), Some(v)) if p == percent => wrk_ms(v),
            _ => None,
        }
    })
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

/// Runs wrk against `url`.
fn wrk(url: &str, host: &str) -> Result<Wrk> {
    let out = Command::new("wrk")
        .args([
            "--latency",
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{}s", duration_seconds()),
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
    let p50 = percentile(&text, "50%");
    let p99 = percentile(&text, "99%");
    match (rps, requests, p50, p99) {
        (Some(rps), Some(requests), Some(p50_ms), Some(p99_ms)) => Ok(Wrk {
            rps,
            requests,
            p50_ms,
            p99_ms,
        }),
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
    let calls_before = control_calls(&envoy)?;
    let answered_before = answered_calls(case.control)?;
    let before = cpu_nanos(envoy.pid())?;
    let run = wrk(&url, case.host)?;
    let spent = cpu_nanos(envoy.pid())?.saturating_sub(before);
    let calls = control_calls(&envoy)?.saturating_sub(calls_before);
    let answered = answered_calls(case.control)?.saturating_sub(answered_before);
    let requests = run.requests.max(1) as f64;
    Ok(Run {
        rps: run.rps,
        cpu_us: spent as f64 / 1000.0 / requests,
        p50_ms: run.p50_ms,
        p99_ms: run.p99_ms,
        calls_per_10k: calls as f64 * 10_000.0 / requests,
        answered_per_10k: answered as f64 * 10_000.0 / requests,
    })
}

/// Service Management calls the control service at `port` answered so far (0 without one).
fn answered_calls(port: Option<u16>) -> Result<u64> {
    let Some(port) = port else { return Ok(0) };
    let body = ureq::get(&format!("http://127.0.0.1:{port}/_tollgate/calls"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let calls: serde_json::Value = serde_json::from_str(&body)?;
    Ok([
        "authrep",
        "authorize",
        "report",
        "oauth_authrep",
        "oauth_authorize",
    ]
    .iter()
    .filter_map(|k| calls.get(k).and_then(serde_json::Value::as_u64))
    .sum())
}

/// Requests Envoy sent to the control-service cluster so far (0 without the cluster). The
/// background ones included, which no request waited for.
fn control_calls(envoy: &Envoy) -> Result<u64> {
    let stats = envoy.admin("/stats?usedonly")?;
    Ok(stats
        .lines()
        .find_map(|l| l.strip_prefix("cluster.tollgate_control_service.upstream_rq_total: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
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
    let limiter = |rate: u64, per: tollgate::config::RatePeriod, burst: u64| {
        tollgate::config::LimiterConfig {
            name: "bench".into(),
            counts: "requests".into(),
            key: "application".into(),
            scope: tollgate::config::LimiterScope::Service,
            token_bucket: Some(tollgate::config::TokenBucketConfig { rate, per, burst }),
            fixed_window: None,
            mode: tollgate::config::LimiterMode::Enforce,
            status: None,
            max_keys: tollgate::config::DEFAULT_LIMITER_MAX_KEYS,
        }
    };
    let sendgrid_config = || -> Result<tollgate::FilterConfig> {
        tollgate::load(sendgrid.as_bytes())
            .config
            .context("the sendgrid example loads")
    };
    // The same service with one limiter on every authorized request: 1 at once, 1 a day.
    let limited = {
        let mut config = sendgrid_config()?;
        for service in &mut config.services {
            service.limiters = vec![limiter(1, tollgate::config::RatePeriod::Day, 1)];
        }
        config.to_json_pretty()
    };
    // Issue 11's setting: 1,000 more mapping rules (none matches the benchmark's path, all
    // are walked) and a limiter whose bucket nothing here can empty, with the cache `cache`
    // and batching `batching`.
    let cached = |cache: tollgate::config::CacheConfig,
                  batching: Option<tollgate::config::BatchingConfig>,
                  rules_and_limiter: bool|
     -> Result<String> {
        let mut config = sendgrid_config()?;
        for service in &mut config.services {
            service.cache = cache;
            service.batching = batching;
            if !rules_and_limiter {
                continue;
            }
            service
                .mapping_rules
                .extend((0..1000).map(|i| tollgate::config::MappingRuleConfig {
                    method: "GET".into(),
                    pattern: format!("/bench/r{i}/{{id}}"),
                    metric: "hits".into(),
                    delta: 1,
                    querystring_parameters: Default::default(),
                    last: false,
                }));
            service.limiters = vec![limiter(
                1_000_000,
                tollgate::config::RatePeriod::Second,
                1_000_000,
            )];
        }
        let json = config.to_json_pretty();
        let loaded = tollgate::load(json.as_bytes());
        if loaded.compiled.is_none() {
            bail!(
                "the benchmark's cached configuration does not load: {:?}",
                loaded.diagnostics.errors().collect::<Vec<_>>()
            );
        }
        Ok(json)
    };
    let strict = tollgate::config::CacheConfig::default();
    // The Batcher's default auths_ttl (10 s: no authorize during a 5 s run after the
    // warm-up); a report each second, so flushes fall inside the measurement.
    let batching = Some(tollgate::config::BatchingConfig {
        batch_report_seconds: 1,
        ..Default::default()
    });
    let batched = cached(strict, batching, true)?;
    // (e) on the example service as it is: e - e0 is what the rules and the limiter cost.
    let batched_bare = cached(strict, batching, false)?;
    let authrep_cached = cached(strict, None, true)?;
    let coalesced = cached(
        tollgate::config::CacheConfig {
            coalesce_reports: true,
            ..strict
        },
        None,
        true,
    )?;
    // The example service forwarding without authorizing: the decision and the forward of
    // (e) without the cache and the batch, so e0 - k is what they cost.
    let open = {
        let mut config = sendgrid_config()?;
        for service in &mut config.services {
            service.authorization = tollgate::config::Authorization::None;
        }
        config.to_json_pretty()
    };
    let authorized_path = "/v3/templates?api_user=bench-app&api_key=bench-key";
    let tollgate_case = |name, config: &String, path, host, status, warmup| Case {
        name,
        filter: Some((tollgate_wasm.clone(), config.clone())),
        control: Some(control_port),
        path,
        host,
        status,
        warmup,
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
        tollgate_case(
            "(c) tollgate, local 404",
            &sendgrid,
            "/v3/unknown?api_user=bench-app&api_key=bench-key",
            host,
            404,
            0,
        ),
        tollgate_case(
            "(h) tollgate, unknown host",
            &sendgrid,
            "/v3/unknown?api_user=bench-app&api_key=bench-key",
            "nobody.example",
            404,
            0,
        ),
        tollgate_case(
            "(d) tollgate, authorized",
            &sendgrid,
            authorized_path,
            host,
            200,
            0,
        ),
        tollgate_case(
            "(l) tollgate, local limiter 429",
            &limited,
            authorized_path,
            host,
            429,
            1,
        ),
        // One request waits for the control service and fills the cache; the rest hit it.
        tollgate_case(
            "(e) tollgate batched, cached",
            &batched,
            authorized_path,
            host,
            200,
            1,
        ),
        tollgate_case(
            "(e0) = (e) without rules, limiter",
            &batched_bare,
            authorized_path,
            host,
            200,
            1,
        ),
        tollgate_case(
            "(k) tollgate, forwarded unauthorized",
            &open,
            authorized_path,
            host,
            200,
            0,
        ),
        tollgate_case(
            "(f) tollgate authrep+cache, cached",
            &authrep_cached,
            authorized_path,
            host,
            200,
            1,
        ),
        tollgate_case(
            "(g) = (f), coalesced reports",
            &coalesced,
            authorized_path,
            host,
            200,
            1,
        ),
    ];
    println!(
        "Envoy 1.40 (V8), 1 worker; wrk --latency -t1 -c{CONNECTIONS} -d{}s on 127.0.0.1, \
         median of {} interleaved runs; (e) (f) (g) with 1,000 more mapping \
         rules and a local limiter that admits everything",
        duration_seconds(),
        rounds()
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for round in 1..=rounds() {
        eprintln!(
            "  round {round} of {} ({} s per case) ...",
            rounds(),
            duration_seconds()
        );
        for (case, samples) in cases.iter().zip(runs.iter_mut()) {
            samples.push(measure(case)?);
        }
    }
    let mut medians = Vec::new();
    for (case, samples) in cases.iter().zip(runs) {
        let all: Vec<String> = samples.iter().map(|r| format!("{:.0}", r.rps)).collect();
        let of = |f: fn(&Run) -> f64| median(samples.iter().map(f).collect());
        let m = Run {
            rps: of(|r| r.rps),
            cpu_us: of(|r| r.cpu_us),
            p50_ms: of(|r| r.p50_ms),
            p99_ms: of(|r| r.p99_ms),
            calls_per_10k: of(|r| r.calls_per_10k),
            answered_per_10k: of(|r| r.answered_per_10k),
        };
        println!(
            "{:<36} {:>8.0} requests/s  {:>6.1} µs Envoy CPU/request  p50 {:>6.3} ms  p99 {:>6.3} \
             ms  (runs: {})",
            case.name,
            m.rps,
            m.cpu_us,
            m.p50_ms,
            m.p99_ms,
            all.join(", ")
        );
        medians.push(m);
    }
    let [a, b, c, h, d, l, e, e0, k, f, g] = medians.as_slice() else {
        bail!("missing results");
    };
    let pass = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    println!(
        "c/b = {:.2} by requests/s, {:.2} by CPU per request  (target >= 0.97: {})",
        c.rps / b.rps,
        b.cpu_us / c.cpu_us,
        pass(b.cpu_us / c.cpu_us >= 0.97)
    );
    println!(
        "d/b = {:.2} by requests/s, {:.2} by CPU per request  (every request calls the control service)",
        d.rps / b.rps,
        b.cpu_us / d.cpu_us
    );
    println!(
        "c - h = {:.1} µs of Envoy CPU per request for the decision; h - b = {:.1} µs for the \
         binding (all headers read, a reply sent) against one header read",
        c.cpu_us - h.cpu_us,
        h.cpu_us - b.cpu_us
    );
    println!(
        "l/c = {:.2} by requests/s, {:.2} by CPU per request  (a limiter's 429 against the local \
         404; target >= 0.95: {})",
        l.rps / c.rps,
        c.cpu_us / l.cpu_us,
        pass(c.cpu_us / l.cpu_us >= 0.95)
    );
    println!(
        "e/b = {:.2} by requests/s, {:.2} by CPU per request  (batched, cached; target >= 0.9: {})",
        e.rps / b.rps,
        b.cpu_us / e.cpu_us,
        pass(e.rps / b.rps >= 0.9)
    );
    println!(
        "e0/b = {:.2} by requests/s, {:.2} by CPU per request; e - e0 = {:.1} µs of Envoy CPU per \
         request for 1,000 more rules and a limiter; (e0 - k) - (c - h) = {:.1} µs for the cache and \
         the batch (what e0 does beyond k, less the decision); k - b = {:.1} µs for forwarding \
         through tollgate",
        e0.rps / b.rps,
        b.cpu_us / e0.cpu_us,
        e.cpu_us - e0.cpu_us,
        (e0.cpu_us - k.cpu_us) - (c.cpu_us - h.cpu_us),
        k.cpu_us - b.cpu_us
    );
    println!(
        "p99(e) - p99(b) = {:+.3} ms  (target <= 1 ms: {})",
        e.p99_ms - b.p99_ms,
        pass(e.p99_ms - b.p99_ms <= 1.0)
    );
    println!(
        "f/b = {:.2} by requests/s, {:.2} by CPU per request  (authrep with cache: a background \
         authrep per request)",
        f.rps / b.rps,
        b.cpu_us / f.cpu_us
    );
    println!(
        "g/b = {:.2} by requests/s, {:.2} by CPU per request  (coalesced background reports)",
        g.rps / b.rps,
        b.cpu_us / g.cpu_us
    );
    println!(
        "control-service calls per 10,000 requests, sent by Envoy / answered by the control \
         service: e {:.1} / {:.1}, f {:.1} / {:.1}, g {:.1} / {:.1}  (d {:.1} / {:.1})",
        e.calls_per_10k,
        e.answered_per_10k,
        f.calls_per_10k,
        f.answered_per_10k,
        g.calls_per_10k,
        g.answered_per_10k,
        d.calls_per_10k,
        d.answered_per_10k
    );
    println!(
        "b/a = {:.2}  (the cost of any Wasm filter in Envoy)",
        b.rps / a.rps
    );
    let size = std::fs::metadata(&tollgate_wasm)?.len();
    println!(
        "tollgate.wasm = {} bytes = {:.0} KiB (target <= 512 KiB: {})",
        size,
        size as f64 / 1024.0,
        pass(size <= 512 * 1024)
    );
    Ok(())
}
