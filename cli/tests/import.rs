//! How the CLI reads 3scale documents: what APIcast tolerates, what tollgate cannot run (and
//! `--skip-policy`), host names, typos. Every command that reads a configuration agrees.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Output;

use common::{stderr, stdout, tollgate, tollgate_with_stdin, workspace};
use serde_json::{json, Value};
use tollgate_testsupport::threescale::{rule, Service};

/// Runs the built `tollgate` with the configuration `doc` on standard input (`-c -`).
fn run(doc: &Value, args: &[&str]) -> Output {
    tollgate_with_stdin(args, doc.to_string().into_bytes())
}

fn check(doc: &Value, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["check", "-c", "-"];
    args.extend_from_slice(extra);
    let out = run(doc, &args);
    (out.status.code(), stdout(&out))
}

/// Service 42 (user_key, token `st-42`, one rule), its control service named, with `chain`.
fn service(chain: Value) -> Value {
    Service::new(42)
        .hosts(&["api.example.com"])
        .proxy("backend", json!({"endpoint": "http://127.0.0.1:3001"}))
        .proxy("policy_chain", chain)
        .rules(vec![rule("GET", "/", "hits")])
        .build()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn a_url_in_hosts_gets_the_same_verdict_from_check_and_generate_envoy() {
    let mut s = service(json!(null));
    s["proxy"]["hosts"] = json!(["https://api.example.com/", "*.example.com"]);
    let doc = json!({"services": [s]});
    let url = "error: services[0].proxy.hosts[0]: 'https://api.example.com/' is a URL, not a host \
               name: write its host name ('api.example.com')";
    let wildcard = "error: services[0].proxy.hosts[1]: host '*.example.com' cannot be a virtual \
                    host domain";
    let (code, text) = check(&doc, &[]);
    assert_eq!(code, Some(65), "{text}");
    assert!(lines(&text).contains(&url), "{text}");
    assert!(text.lines().any(|l| l.starts_with(wildcard)), "{text}");
    assert!(text.contains("invalid, 2 errors"), "{text}");
    for cmd in [
        &["generate", "envoy", "-c", "-"][..],
        &["generate", "filter", "-c", "-"],
    ] {
        let out = run(&doc, cmd);
        assert_ne!(out.status.code(), Some(0), "{cmd:?}");
        let err = stderr(&out);
        assert!(lines(&err).contains(&url), "{cmd:?}: {err}");
        assert!(
            err.lines().any(|l| l.starts_with(wildcard)),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn skip_policy_accepts_what_tollgate_cannot_run_on_every_command() {
    let doc = json!({"services": [service(json!([
        {"name": "apicast.policy.cors"},
        {"name": "ip_check", "configuration": {"ips": ["10.0.0.1"]}},
        {"name": "apicast"}
    ]))]});
    let (code, text) = check(&doc, &[]);
    assert_eq!(code, Some(65), "{text}");
    assert!(
        text.contains(
            "error: services[0].proxy.policy_chain[1].name: policy 'ip_check' is not implemented \
             by tollgate: without it the gateway would do less than this configuration asks. To \
             run without it, accept skipping it: `--skip-policy ip_check`"
        ),
        "{text}"
    );
    // One is not enough; both, repeated or as a list, are.
    let (code, text) = check(&doc, &["--skip-policy", "cors"]);
    assert_eq!(code, Some(65), "{text}");
    for flags in [
        &["--skip-policy", "cors", "--skip-policy", "ip_check"][..],
        &["--skip-policy", "cors,apicast.policy.ip_check"],
    ] {
        let (code, text) = check(&doc, flags);
        assert_eq!(code, Some(0), "{flags:?}: {text}");
        for (k, name) in [(0, "cors"), (1, "ip_check")] {
            let line = format!(
                "warning: services[0].proxy.policy_chain[{k}]: the gateway does not run policy \
                 '{name}' of service '42': tollgate does not implement it"
            );
            assert!(lines(&text).contains(&line.as_str()), "{flags:?}: {text}");
        }
    }
    let skip = ["--skip-policy", "cors,ip_check"];
    // The FilterConfig records what the gateway does not do.
    let out = run(
        &doc,
        &[&["generate", "filter", "-c", "-"][..], &skip].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let filter: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        filter["skipped_policies"],
        json!([{"service": "42", "policy": "cors"}, {"service": "42", "policy": "ip_check"}])
    );
    let out = run(
        &doc,
        &[&["generate", "envoy", "-c", "-"][..], &skip].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let args = [
        &["explain", "-c", "-"][..],
        &skip,
        &["http://api.example.com/?user_key=k"],
    ];
    let out = run(&doc, &args.concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The document can say so itself, for the filter that reads it directly.
    let mut doc = doc;
    doc["tollgate"] = json!({"accept_skipped_policies": ["cors", "ip_check"]});
    assert_eq!(check(&doc, &[]).0, Some(0));
}

#[test]
fn shapes_apicast_serves_are_valid_with_warnings() {
    // t/apicast.t TEST 13: services with only an id and hosts.
    let doc = json!({"services": [
        {"id": 1, "proxy": {"hosts": ["foo", "bar"]}},
        {"id": 1, "proxy": {"hosts": ["fee"]}},
        {"proxy": {"backend": {"endpoint": "http://127.0.0.1:3001"}}}
    ]});
    let (code, text) = check(&doc, &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "warning: services[1].id: service id '1' is also the id of services[0]: APIcast keeps the \
         first and skips this service, and so does tollgate",
        "warning: services[2].id: no id: APIcast calls this service 'default' (service_id=default \
         in its calls to the control service), and so does tollgate",
        "warning: services[2].proxy.hosts: no hosts: APIcast serves this service for the host \
         localhost, and so does tollgate",
    ] {
        assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("valid, 2 services"), "{text}");
    let (code, text) = check(&json!({"services": []}), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("warning: services: the configuration has no services"),
        "{text}"
    );
}

#[test]
fn a_chain_without_apicast_is_explained_as_forwarded() {
    let doc = json!({"services": [service(json!([]))]});
    let out = run(
        &doc,
        &["explain", "-c", "-", "http://api.example.com/anything"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["outcome"], "forward", "{e}");
    assert_eq!(e["credentials"], Value::Null, "{e}");
    assert_eq!(e.get("authrep"), None, "{e}");
    let args = [
        "explain",
        "-c",
        "-",
        "--format",
        "text",
        "http://api.example.com/",
    ];
    let out = run(&doc, &args);
    assert!(
        stdout(&out).contains("forward: the service does not authorize with 3scale"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn typos_of_known_fields_are_named() {
    let mut s = service(json!(null));
    s["proxy"]["credentails_location"] = json!("headers");
    s["proxy"]["proxy_rules"][0]["http_methd"] = json!("POST");
    let (code, text) = check(&json!({"services": [s]}), &[]);
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "warning: services[0].proxy.credentails_location: unknown field 'credentails_location': \
         did you mean 'credentials_location'? (tollgate ignores fields it does not know, so this \
         one has no effect)",
        "warning: services[0].proxy.proxy_rules[0].http_methd: unknown field 'http_methd': did \
         you mean 'http_method'? (tollgate ignores fields it does not know, so this one has no \
         effect)",
    ] {
        assert!(lines(&text).contains(&line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_skipped_policy_no_chain_has_is_named() {
    let example = workspace().join("examples/sendgrid.json");
    let out = tollgate([
        "check",
        "-c",
        example.to_str().unwrap(),
        "--skip-policy",
        "cros",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        lines(&stdout(&out)).contains(
            &"warning: policy 'cros' is accepted as skipped, but no service's policy_chain has it"
        ),
        "{}",
        stdout(&out)
    );
}
