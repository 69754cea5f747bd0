//! tollgate.wasm configures like Envoy runs it: canary, main thread and workers, and rejects
//! bad configurations with a log line naming the JSON path and no secret.
// Test code: unwrap/expect/panic/indexing are how tests fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use tollgate_testhost::{Error, LogLevel};

const OUTCOMES: [&str; 10] = [
    "authorized",
    "auth_missing",
    "auth_failed",
    "no_match",
    "unknown_service",
    "limits_exceeded",
    "control_service_error",
    "bad_request",
    "uri_too_long",
    "match_limit",
];

fn configured_everywhere(config: Vec<u8>) {
    let host = host(config);
    let configured: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|l| l.message.starts_with("configured "))
        .map(|l| l.vm)
        .collect();
    // Envoy configures a canary, then the main thread, then each worker: idempotently.
    assert_eq!(configured, ["canary", "main", "worker0", "worker1"]);
    for o in OUTCOMES {
        let name = format!("tollgate.{o}");
        assert!(host.metric_names().contains(&name), "{name} is not defined");
        assert_eq!(host.metric(&name), 0);
    }
    check(&host, &[]);
}

#[test]
fn sendgrid_configures_on_canary_main_and_two_workers() {
    configured_everywhere(sendgrid());
}

#[test]
fn twitter_configures_on_canary_main_and_two_workers() {
    configured_everywhere(twitter());
}

#[test]
fn filter_config_configures_on_canary_main_and_two_workers() {
    configured_everywhere(sendgrid_filter_config());
}

#[test]
fn every_vm_answers_alike() {
    let host = host(sendgrid());
    let replies: Vec<Reply> = (0..2)
        .map(|w| {
            local_reply(&get(
                &host,
                w,
                "api.sendgrid.example",
                "/api/mail.send.json",
            ))
        })
        .chain([local_reply(&host.main().request(&[
            (":method", "GET"),
            (":path", "/api/mail.send.json"),
            (":authority", "api.sendgrid.example"),
        ]))])
        .collect();
    assert!(replies.iter().all(|r| *r == replies[0]), "{replies:#?}");
    assert_eq!(replies[0].status, 401);
    assert_eq!(host.metric("tollgate.auth_missing"), 3);
    check(&host, &[]);
}

fn rejected(config: Vec<u8>) -> Vec<tollgate_testhost::LogLine> {
    let err = Host::builder(wasm())
        .plugin_config(config)
        .cluster(CLUSTER)
        .workers(2)
        .build()
        .expect_err("a bad configuration must be rejected");
    let Error::Configure { vm, logs } = &err else {
        panic!("expected on_configure to return false, got {err}");
    };
    // The canary is the first to see it: Envoy rejects the configuration there.
    assert_eq!(vm, "canary");
    for line in logs {
        if let Some(secret) = tollgate_testsupport::leaked(&line.message, &[]) {
            panic!("log line leaks {secret:?}: {line}");
        }
    }
    assert!(
        logs.iter().any(|l| l.level >= LogLevel::Error),
        "no error logged: {logs:#?}"
    );
    logs.clone()
}

#[test]
fn a_wrong_type_is_rejected_naming_the_path_without_the_value() {
    // A secret typed into a numeric field: the log names the field, never the value.
    let config = String::from_utf8(sendgrid()).unwrap().replacen(
        "\"error_status_auth_missing\": 401",
        "\"error_status_auth_missing\": \"sendgrid-service-token-8f2c1b7e\"",
        1,
    );
    assert!(config.contains("\"error_status_auth_missing\": \"sendgrid-service"));
    let logs = rejected(config.into_bytes());
    assert!(
        logs.iter()
            .any(|l| l.message.contains("error_status_auth_missing")),
        "no log line names the JSON path: {logs:#?}"
    );
}

#[test]
fn a_wrong_type_in_a_filter_config_is_rejected_naming_the_path() {
    let config = String::from_utf8(sendgrid_filter_config())
        .unwrap()
        .replacen(
            "\"timeout_ms\": 1000",
            "\"timeout_ms\": \"Shared_secret_sent_from_proxy_to_API_backend_3f9a1c2e\"",
            1,
        );
    let logs = rejected(config.into_bytes());
    assert!(
        logs.iter().any(|l| l.message.contains("timeout_ms")),
        "no log line names the JSON path: {logs:#?}"
    );
}

#[test]
fn not_json_is_rejected() {
    rejected(b"{\"services\": [".to_vec());
}

#[test]
fn an_empty_configuration_is_rejected() {
    let logs = rejected(Vec::new());
    assert!(
        logs.iter().any(|l| l.message.contains("empty")),
        "{logs:#?}"
    );
}

/// A pattern nested deeper than PCRE's 250 groups is refused with its path (the analysis
/// would otherwise recurse until the VM's stack ran out); one at the limit configures on
/// every VM, in the trie and in the regex engine.
#[test]
fn patterns_nested_too_deep_are_rejected_and_those_at_the_limit_configure() {
    let deep = |n: usize| format!("/{}a{}", "(".repeat(n), ")".repeat(n));
    let logs = rejected(sendgrid_with_rules(&get_rule(&deep(5_000), "deep")));
    assert!(
        logs.iter()
            .any(|l| l.message.contains("proxy_rules[0].pattern") && l.message.contains("deep")),
        "{logs:#?}"
    );
    let regex = format!("/{}(ab)+{}", "(".repeat(249), ")".repeat(249));
    let rules = format!("{},{}", get_rule(&deep(250), "a"), get_rule(&regex, "b"));
    let host = host(sendgrid_with_rules(&rules));
    check(&host, &[]);
}
