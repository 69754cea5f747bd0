//! The `tollgate` binary as a user runs it: exit statuses, stdout/stderr, the explain contract.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{stderr, stdout, tollgate, workspace};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn examples() -> PathBuf {
    workspace().join("examples")
}

/// A temporary file that disappears with the test.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn explain(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["explain", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = tollgate(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON object")
}

fn service_json() -> Value {
    json!({"services": [{
        "id": 42,
        "backend_version": "1",
        "backend_authentication_type": "service_token",
        "backend_authentication_value": "token-value",
        "proxy": {
            "api_backend": "http://127.0.0.1:8081",
            "hosts": ["api.example.com"],
            "credentials_location": "headers",
            "auth_user_key": "X-Api-Key",
            "proxy_rules": [
                {"http_method": "POST", "pattern": "/v1/words/{word}.json", "metric_system_name": "words", "delta": 1,
                 "querystring_parameters": {"lang": "{lang}"}},
                {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}
            ]
        }
    }]})
}

#[test]
fn check_accepts_the_examples() {
    for name in ["sendgrid.json", "twitter.json"] {
        let out = tollgate(["check", "--config", examples().join(name).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains(": valid, 1 service"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn check_lists_every_problem_with_its_path_and_exits_64() {
    let mut doc = service_json();
    doc["services"][0]["backend_version"] = json!("7");
    doc["services"][0]["proxy"]["proxy_rules"][0]["delta"] = json!("lots");
    doc["services"][0]["proxy"]["proxy_rules"][1]["http_method"] = json!(null);
    doc["services"][0]["proxy"]["policy_chain"] = json!([{"name": "cors"}, {"name": "apicast"}]);
    let f = TempFile::new("bad.json", doc.to_string().as_bytes());
    let out = tollgate(["check", "--config", f.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let text = stdout(&out);
    for line in [
        "error: services[0].backend_version: unknown backend_version '7': expected 1, 2 or oauth",
        "error: services[0].proxy.proxy_rules[0].delta: expected a number, found \"lots\" (APIcast fails counting usage with a string, and the request is never authorized: write the number without quotes)",
        "error: services[0].proxy.proxy_rules[1].http_method: missing",
        "error: services[0].proxy.policy_chain[0].name: policy 'cors' is not implemented by tollgate: without it the gateway would do less than this configuration asks. To run without it, accept skipping it: `--skip-policy cors`, or \"tollgate\": {\"accept_skipped_policies\": [\"cors\"]} at the top of the document",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("invalid, 4 errors, 0 warnings"), "{text}");

    let out = tollgate([
        "check",
        "--format",
        "json",
        "--config",
        f.0.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"], 4);
    assert_eq!(
        report["diagnostics"][0]["path"],
        "services[0].backend_version"
    );
}

#[test]
fn malformed_json_names_line_and_column() {
    let f = TempFile::new(
        "malformed.json",
        b"{\n  \"services\": [\n    {\"id\": 1 \"x\": 2}\n  ]\n}\n",
    );
    for cmd in ["check", "explain"] {
        let mut args = vec![cmd, "--config", f.0.to_str().unwrap()];
        if cmd == "explain" {
            args.push("http://h/");
        }
        let out = tollgate(&args);
        assert_eq!(out.status.code(), Some(64), "{cmd}");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains("malformed JSON at line 3, column 14"),
            "{cmd}: {all}"
        );
    }
}

#[test]
fn bad_inputs_get_a_message_and_64_never_a_crash() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.json", vec![], "the configuration is empty"),
        (
            "types.json",
            br#"{"services": [{"id": [], "backend_version": 1, "proxy": 3}]}"#.to_vec(),
            "services[0].id",
        ),
        ("array.json", b"[1, 2]".to_vec(), "top level"),
        (
            "binary.json",
            vec![0xff, 0xfe, 0x00, 0x7b],
            "malformed JSON",
        ),
        ("huge.json", vec![b' '; 17 * 1024 * 1024], "the limit is"),
    ];
    for (name, content, needle) in cases {
        let f = TempFile::new(name, &content);
        let out = tollgate(["generate", "filter", "--config", f.0.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{name}");
        assert!(stdout(&out).is_empty(), "{name}: nothing on stdout");
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
    }
    let out = tollgate(["check", "--config", "/nonexistent/config.json"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("cannot read"));
    // Arguments clap refuses exit 64 too, not clap's 2.
    assert_eq!(tollgate(["explain"]).status.code(), Some(64));
    assert_eq!(tollgate(["frobnicate"]).status.code(), Some(64));
    assert_eq!(tollgate(["--help"]).status.code(), Some(0));
}

#[test]
fn a_ten_megabyte_config_loads() {
    let rules: Vec<Value> = (0..60_000)
        .map(|i| {
            json!({"http_method": "GET", "pattern": format!("/v1/resource{i}/{{id}}/items.json"),
                        "metric_system_name": format!("m{}", i % 500), "delta": 1})
        })
        .collect();
    let mut doc = service_json();
    doc["services"][0]["proxy"]["proxy_rules"] = Value::Array(rules);
    let bytes = doc.to_string().into_bytes();
    assert!(bytes.len() > 5_000_000, "{}", bytes.len());
    let f = TempFile::new("large.json", &bytes);
    let e = explain(
        &f.0,
        &[
            "-H",
            "X-Api-Key: k",
            "http://api.example.com/v1/resource59999/7/items.json",
        ],
    );
    assert_eq!(e["outcome"], "authorize");
    assert_eq!(e["usage"], json!({"m499": 1}));
}

#[test]
fn explain_authorize_shows_the_control_service_call() {
    let f = TempFile::new("svc.json", service_json().to_string().as_bytes());
    let e = explain(
        &f.0,
        &[
            "-X",
            "POST",
            "-H",
            "x-api-key: a+b&c=d%",
            "http://API.example.com:8080/v1/words/hello.json?lang=en",
        ],
    );
    assert_eq!(e["service_id"], "42");
    assert_eq!(e["credentials"], json!({"user_key": "a+b&c=d%"}));
    assert_eq!(e["matched_rules"], json!(["/v1/words/{word}.json"]));
    assert_eq!(e["usage"], json!({"words": 1}));
    assert_eq!(e["outcome"], "authorize");
    assert_eq!(
        e["authrep"],
        "/transactions/authrep.xml?service_id=42&service_token=token-value&user_key=a%2Bb%26c%3Dd%25&usage%5Bwords%5D=1"
    );
    for key in ["status", "content_type", "body"] {
        assert!(e.get(key).is_none(), "{key} only for deny");
    }
}

#[test]
fn explain_deny_shows_exactly_what_the_client_gets() {
    let f = TempFile::new("deny.json", service_json().to_string().as_bytes());
    let e = explain(&f.0, &["http://api.example.com/v1/words/x.json"]);
    assert_eq!(e["outcome"], "deny");
    assert_eq!(e["credentials"], Value::Null);
    assert_eq!(
        (
            e["status"].as_u64(),
            e["content_type"].as_str(),
            e["body"].as_str()
        ),
        (
            Some(401),
            Some("text/plain; charset=utf-8"),
            Some("Authentication parameters missing")
        )
    );
    assert!(e.get("authrep").is_none());
    // POST rule without its query argument, with credentials: no match (GET / is another method).
    let e = explain(
        &f.0,
        &[
            "-X",
            "POST",
            "-H",
            "X-Api-Key: k",
            "http://api.example.com/v1/words/x.json",
        ],
    );
    assert_eq!(
        (e["status"].as_u64(), e["body"].as_str()),
        (Some(404), Some("No Mapping Rule matched"))
    );
    assert_eq!(e["matched_rules"], json!([]));
    assert_eq!(e["usage"], json!({}));
    // Unknown host.
    let e = explain(&f.0, &["http://elsewhere.example/"]);
    assert_eq!(e["service_id"], Value::Null);
    assert_eq!(
        (e["status"].as_u64(), e["body"].as_str()),
        (Some(404), Some(""))
    );
}

#[test]
fn explain_reads_body_arguments_like_curl_d() {
    let f = TempFile::new("body.json", service_json().to_string().as_bytes());
    // -d implies POST and the urlencoded content type; the body satisfies {lang}.
    let e = explain(
        &f.0,
        &[
            "-H",
            "X-Api-Key: k",
            "-d",
            "lang=fr",
            "http://api.example.com/v1/words/x.json",
        ],
    );
    assert_eq!(e["outcome"], "authorize", "{e}");
    assert_eq!(e["usage"], json!({"words": 1}));
    // With another content type the body is not read.
    let e = explain(
        &f.0,
        &[
            "-H",
            "X-Api-Key: k",
            "-H",
            "Content-Type: application/json",
            "-d",
            "lang=fr",
            "http://api.example.com/v1/words/x.json",
        ],
    );
    assert_eq!(e["outcome"], "deny");
}

#[test]
fn explain_takes_raw_bytes_and_long_paths() {
    use std::os::unix::ffi::OsStrExt;
    let f = TempFile::new("raw.json", service_json().to_string().as_bytes());
    let out = tollgate([
        OsStr::new("explain"),
        OsStr::new("--config"),
        f.0.as_os_str(),
        OsStr::new("-H"),
        OsStr::from_bytes(b"X-Api-Key: \xff\xfe"),
        OsStr::new("http://api.example.com/"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        e["authrep"].as_str().unwrap().contains("&user_key=%FF%FE&"),
        "{e}"
    );

    // Up to NGINX's 8 KiB request line the path is matched; beyond, NGINX's 414.
    let long = format!("http://api.example.com/{}?x=1", "a/".repeat(4_000));
    let e = explain(&f.0, &["-H", "X-Api-Key: k", &long]);
    assert_eq!(e["outcome"], "authorize");
    let long = format!("http://api.example.com/{}?x=1", "a/".repeat(50_000));
    let e = explain(&f.0, &["-H", "X-Api-Key: k", &long]);
    assert_eq!(
        (e["reason"].as_str(), e["status"].as_u64()),
        (Some("uri_too_long"), Some(414))
    );
    let e = explain(&f.0, &["-H", "X-Api-Key: k", "http://api.example.com/%zz"]);
    assert_eq!(
        (e["reason"].as_str(), e["status"].as_u64()),
        (Some("bad_request"), Some(400))
    );
}

#[test]
fn explain_text_format_is_for_people() {
    let out = tollgate([
        "explain",
        "--format",
        "text",
        "--config",
        examples().join("twitter.json").to_str().unwrap(),
        "-H",
        "X-App-Id: app",
        "-H",
        "X-App-Key: key",
        "http://api.twitter.example/1.1/statuses/home_timeline.json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("outcome      authorize"), "{text}");
    assert!(
        text.contains("usage        statuses_home_timeline=1"),
        "{text}"
    );
}

/// The FilterConfigs of the examples are checked in (testdata/<name>.filter.json, which the
/// filter's tests load): `generate filter --check` keeps them current.
#[test]
fn generate_filter_matches_the_checked_in_filter_configs_and_loads_back() {
    for name in ["sendgrid", "twitter"] {
        let src = examples().join(format!("{name}.json"));
        let checked_in = workspace().join(format!("testdata/{name}.filter.json"));
        let out = tollgate([
            OsStr::new("generate"),
            OsStr::new("filter"),
            OsStr::new("--config"),
            src.as_os_str(),
            OsStr::new("-o"),
            checked_in.as_os_str(),
            OsStr::new("--check"),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\nregenerate with: tollgate generate filter -c examples/{name}.json -o \
             testdata/{name}.filter.json",
            stderr(&out)
        );
        // Without -o it prints the same, and the FilterConfig is itself a valid input.
        let out = tollgate(["generate", "filter", "--config", src.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), std::fs::read_to_string(&checked_in).unwrap());
        let out = tollgate(["check", "--config", checked_in.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
}

#[test]
fn generate_filter_check_names_the_first_difference() {
    let src = examples().join("sendgrid.json");
    let checked_in = workspace().join("testdata/sendgrid.filter.json");
    let stale = std::fs::read_to_string(checked_in).unwrap().replacen(
        "\"timeout_ms\": 1000",
        "\"timeout_ms\": 999",
        1,
    );
    let f = TempFile::new("stale.json", stale.as_bytes());
    let out = tollgate([
        "generate",
        "filter",
        "--config",
        src.to_str().unwrap(),
        "-o",
        f.0.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is out of date"), "{err}");
    assert!(
        err.contains("the file has `    \"timeout_ms\": 999`, expected `    \"timeout_ms\": 1000`"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&f.0).unwrap(),
        stale,
        "--check writes nothing"
    );
}
