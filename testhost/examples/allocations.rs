//! `make bench`, allocations: how many times tollgate.wasm allocates per request, per outcome,
//! counted by the test host through the module's `tollgate_allocations` export. Prints the
//! first requests (which grow the VM's reusable buffers) and the steady count.
//!
//! `cargo run -p tollgate-testhost --example allocations`

use anyhow::{anyhow, bail, Result};
use tollgate_testhost::{Host, Outcome, Stream, NO_HEADERS};

const SG: &str = "api.sendgrid.example";
const REQUESTS: usize = 6;

fn request<'h>(host: &'h Host, path: &str) -> Stream<'h> {
    host.worker(0).request(&[
        (":method", "GET"),
        (":path", path),
        (":authority", SG),
        (":scheme", "https"),
    ])
}

/// 404, no mapping rule: decided without a callout.
fn local_deny(host: &Host) -> Result<Option<u64>> {
    let s = request(host, "/nothing/here?api_user=a&api_key=b");
    match s.outcome() {
        Outcome::LocalReply(r) if r.status == 404 => Ok(s.allocations()),
        other => bail!("expected a local 404, got {other:?}"),
    }
}

/// Authorized through the control service, then the upstream's response.
fn authorized(host: &Host) -> Result<Option<u64>> {
    let s = request(host, "/api/mail.send.json?api_user=a&api_key=b");
    let call = s
        .pending_calls()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no callout"))?;
    call.respond(200, NO_HEADERS, b"");
    if s.outcome().upstream().is_none() {
        bail!("not authorized: {:?}", s.outcome());
    }
    s.response(&[(":status", "200")]);
    Ok(s.allocations())
}

fn main() -> Result<()> {
    let wasm = tollgate_testsupport::tollgate_wasm()?;
    let config = tollgate_testsupport::read(&tollgate_testsupport::example("sendgrid.json"))?;
    println!("allocations per request in tollgate.wasm (test host, examples/sendgrid.json)");
    type Outcome = fn(&Host) -> Result<Option<u64>>;
    let outcomes: [(&str, Outcome, u64); 2] = [
        ("local deny (404, no mapping rule)", local_deny, 4),
        ("authorized (control service)", authorized, 10),
    ];
    for (name, run, target) in outcomes {
        // A host per outcome, so one's first requests do not warm the other's buffers.
        let host = Host::builder(&wasm)
            .plugin_config(config.clone())
            .cluster("tollgate_control_service")
            .build()?;
        let mut counts = Vec::new();
        for _ in 0..REQUESTS {
            counts.push(run(&host)?);
        }
        let counts: Option<Vec<u64>> = counts.into_iter().collect();
        match counts {
            None => println!(
                "{name:<36} not counted: tollgate.wasm does not export tollgate_allocations"
            ),
            Some(counts) => {
                let steady = counts.last().copied().unwrap_or(0);
                let verdict = if steady <= target { "PASS" } else { "MISS" };
                println!(
                    "{name:<36} {steady:>3} per request (target <= {target}: {verdict}; \
                     requests 1..{REQUESTS}: {counts:?})"
                );
            }
        }
    }
    Ok(())
}
