//! The `tollgate` binary as a user runs it: exit statuses, stdout/stderr, the explain contract.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{stderr, stdout, tollgate, tollgate_with_stdin, workspace};
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
fn check_lists_every_problem_with_its_path_and_exits_65() {
    let mut doc = service_json();
    doc["services"][0]["backend_version"] = json!("7");
    doc["services"][0]["proxy"]["proxy_rules"][0]["delta"] = json!("lots");
    doc["services"][0]["proxy"]["proxy_rules"][1]["http_method"] = json!(null);
    doc["services"][0]["proxy"]["policy_chain"] = json!([{"name": "cors"}, {"name": "apicast"}]);
    let f = TempFile::new("bad.json", doc.to_string().as_bytes());
    let out = tollgate(["check", "--config", f.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
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
    assert_eq!(out.status.code(), Some(65));
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
        assert_eq!(out.status.code(), Some(65), "{cmd}");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains("malformed JSON at line 3, column 14"),
            "{cmd}: {all}"
        );
    }
}

#[test]
fn bad_inputs_get_a_message_and_65_never_a_crash() {
    let size = 17 * 1024 * 1024;
    let too_large = format!("the configuration is {size} bytes; the limit is 16777216 bytes");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.json", vec![], "the configuration is empty"),
        (
            "types.json",
            br#"{"services": [{"id": [], "backend_version": 1, "proxy": 3}]}"#.to_vec(),
            "services[0].id",
        ),
        ("array.json", b"[1, 2]".to_vec(), "top level"),
        ("binary.json", vec![0x00, 0x7b, 0xff], "malformed JSON"),
        (
            "utf16.json",
            vec![0xff, 0xfe, 0x7b, 0x00],
            "the configuration is UTF-16 text",
        ),
        ("huge.json", vec![b' '; size], &too_large),
    ];
    for (name, content, needle) in cases {
        let f = TempFile::new(name, &content);
        let out = tollgate(["generate", "filter", "--config", f.0.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(65), "{name}");
        assert!(stdout(&out).is_empty(), "{name}: nothing on stdout");
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
    }
    // Arguments clap refuses exit 64, not clap's 2.
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
    // Envoy drops the content type of a local reply without a body: the client gets none.
    assert!(e.get("content_type").is_none(), "{e}");
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

#[test]
fn exit_codes_name_the_cause() {
    let svc = TempFile::new("codes.json", service_json().to_string().as_bytes());
    let svc = svc.0.to_str().unwrap();
    let dir = std::env::temp_dir();
    let dir = dir.to_str().unwrap();
    let not_a_dir = format!("{svc}/x");
    // Unreadable input: 66, with the reason, nothing on stdout.
    for (args, reason) in [
        (
            vec!["check", "-c", "/nonexistent/config.json"],
            "cannot read /nonexistent/config.json: No such file or directory",
        ),
        (vec!["generate", "filter", "-c", dir], "it is a directory"),
        (vec!["check", "-c", &not_a_dir], "Not a directory"),
        (
            vec![
                "explain",
                "--format",
                "text",
                "-c",
                svc,
                "-d",
                "@/nonexistent/body",
                "http://h/",
            ],
            "cannot read /nonexistent/body",
        ),
    ] {
        let out = tollgate(&args);
        assert_eq!(out.status.code(), Some(66), "{args:?}");
        assert!(stdout(&out).is_empty(), "{args:?}");
        assert!(stderr(&out).contains(reason), "{args:?}: {}", stderr(&out));
    }
    // Usage: 64, from clap or from explain's own checks.
    for args in [
        vec!["check", "-c", svc, "--format", "yaml"],
        vec!["explain", "-c", svc],
        vec![
            "explain",
            "-c",
            svc,
            "-u",
            "user-without-password",
            "http://h/",
        ],
        vec!["explain", "-c", svc, "ftp://h/"],
        vec!["generate", "filter"],
    ] {
        assert_eq!(tollgate(&args).status.code(), Some(64), "{args:?}");
    }
    // An output that cannot be written: 73.
    let out = tollgate([
        "generate",
        "filter",
        "-c",
        svc,
        "-o",
        "/nonexistent/out.json",
    ]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot write /nonexistent/out.json"));
    // The control service's data: unreadable 66.
    let out = tollgate([
        "control",
        "--data",
        "/nonexistent.yaml",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    // Explain exits 0 for a denial as for an authorization.
    let out = tollgate(["explain", "-c", svc, "http://elsewhere.example/"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn help_documents_the_exit_codes_of_every_command() {
    let commands: [&[&str]; 6] = [
        &[],
        &["check"],
        &["explain"],
        &["generate", "filter"],
        &["generate", "envoy"],
        &["control"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = tollgate(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = stdout(&out);
        for line in [
            "Exit status:",
            "  64  usage: a bad flag or argument",
            "  65  invalid configuration: every error is listed",
            "  66  unreadable input: a missing file, a directory, no permission",
        ] {
            assert!(help.contains(line), "{args:?} lacks {line:?}:\n{help}");
        }
        let generates = command.first() == Some(&"generate") || command.is_empty();
        assert_eq!(
            help.contains("  1   out of date: the file given with -o differs (--check)"),
            generates,
            "{args:?}"
        );
        let json = matches!(command, [] | ["check"] | ["explain"]);
        assert_eq!(help.contains("With --format json"), json, "{args:?}");
    }
}

#[test]
fn with_format_json_failures_are_json_on_stdout() {
    let bad = TempFile::new(
        "json-failures.json",
        br#"{"services": [{"id": 1, "backend_version": "7", "proxy": {}}]}"#,
    );
    let bad = bad.0.to_str().unwrap();
    let json_failure = |args: &[&str], code: i32| -> Value {
        let out = tollgate(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
        assert_eq!(v["error"]["exit_code"], code, "{v}");
        v["error"].clone()
    };
    // explain prints JSON by default: its failures are JSON too.
    let e = json_failure(&["explain", "-c", bad, "http://h/"], 65);
    assert_eq!(e["kind"], "invalid_configuration");
    assert_eq!(e["diagnostics"][0]["severity"], "error");
    assert_eq!(e["diagnostics"][0]["path"], "services[0].backend_version");
    let e = json_failure(
        &["check", "--format", "json", "-c", "/nonexistent.json"],
        66,
    );
    assert_eq!(e["kind"], "unreadable_input");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("cannot read /nonexistent.json"));
    // Usage errors of a command given --format json, clap's and explain's own.
    let e = json_failure(&["check", "--format", "json", "--frobnicate"], 64);
    assert_eq!(e["kind"], "usage");
    assert_eq!(e["message"], "unexpected argument '--frobnicate' found");
    let e = json_failure(&["explain", "--format=json", "-c", bad, "/no-host"], 64);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("the URL has no host"),
        "{e}"
    );
    // In text, the same failures go to stderr and stdout stays empty.
    let out = tollgate(["explain", "--format", "text", "-c", bad, "http://h/"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(stdout(&out).is_empty());
    assert_eq!(
        stderr(&out).lines().next(),
        Some("error: services[0].backend_version: unknown backend_version '7': expected 1, 2 or oauth")
    );
}

fn basic_auth_service() -> Value {
    let mut doc = service_json();
    doc["services"][0]["backend_version"] = json!("2");
    doc["services"][0]["proxy"]["credentials_location"] = json!("authorization");
    doc
}

#[test]
fn explain_takes_curls_get_urlencode_and_user_flags() {
    let f = TempFile::new("curl.json", service_json().to_string().as_bytes());
    let file = TempFile::new("curl-data.txt", b"en gb\nx&y\n");
    let data_file = file.0.to_str().unwrap();
    // -G puts the data in the query; the method stays GET unless -X says otherwise.
    let e = explain(
        &f.0,
        &[
            "-G",
            "-d",
            "a=1",
            "-d",
            "b=2",
            "http://api.example.com/v1/words/x.json",
        ],
    );
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["request"]["target"], "/v1/words/x.json?a=1&b=2");
    assert!(e["request"].get("body").is_none(), "{e}");
    assert_eq!(e["request"]["headers"], json!([]));
    let e = explain(
        &f.0,
        &[
            "-X",
            "POST",
            "--get",
            "-H",
            "X-Api-Key: k",
            "--data-urlencode",
            "lang=fr",
            "http://api.example.com/v1/words/x.json?v=1#frag",
        ],
    );
    assert_eq!(e["request"]["target"], "/v1/words/x.json?v=1&lang=fr#frag");
    assert_eq!(e["usage"], json!({"words": 1}), "{e}");
    // --data-urlencode in each of curl's forms, joined with the other data flags in order.
    let name_at_file = format!("lang@{data_file}");
    let at_file = format!("@{data_file}");
    let e = explain(
        &f.0,
        &[
            "-H",
            "X-Api-Key: k",
            "--data-urlencode",
            &name_at_file,
            "-d",
            "raw=a b",
            "--data-urlencode",
            "=x y",
            "--data-urlencode",
            "plain+text",
            "--data-urlencode",
            "q=1=2&3",
            "--data-urlencode",
            &at_file,
            "--data-raw",
            "@not-a-file",
            "http://api.example.com/v1/words/x.json",
        ],
    );
    assert_eq!(
        e["request"]["body"],
        "lang=en+gb%0Ax%26y%0A&raw=a b&x+y&plain%2Btext&q=1%3D2%263&en+gb%0Ax%26y%0A&@not-a-file"
    );
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(
        e["request"]["headers"],
        json!([
            ["X-Api-Key", "k"],
            ["Content-Type", "application/x-www-form-urlencoded"]
        ])
    );
    // The form argument decoded from the body satisfies the rule's {lang}.
    assert_eq!(e["usage"], json!({"words": 1}), "{e}");
    // -d @FILE drops line breaks, --data-binary @FILE keeps them.
    let e = explain(
        &f.0,
        &["-d", &at_file, "--data-binary", &at_file, "http://h/"],
    );
    assert_eq!(e["request"]["body"], "en gbx&y&en gb\nx&y\n");

    // -u and the URL's user:password become curl's Basic header; -H Authorization wins.
    let f = TempFile::new("basic.json", basic_auth_service().to_string().as_bytes());
    let e = explain(&f.0, &["-u", "app:s3cret", "http://api.example.com/"]);
    assert_eq!(
        e["request"]["headers"],
        json!([["Authorization", "Basic YXBwOnMzY3JldA=="]])
    );
    assert_eq!(
        e["credentials"],
        json!({"app_id": "app", "app_key": "s3cret"})
    );
    let e = explain(&f.0, &["http://app%3A1:pw@api.example.com/"]);
    assert_eq!(e["request"]["authority"], "api.example.com");
    assert_eq!(
        e["credentials"],
        json!({"app_id": "app:1", "app_key": "pw"})
    );
    let e = explain(
        &f.0,
        &[
            "-u",
            "app:s3cret",
            "-H",
            "Authorization: Basic b3RoZXI6a2V5",
            "http://api.example.com/",
        ],
    );
    assert_eq!(
        e["credentials"],
        json!({"app_id": "other", "app_key": "key"})
    );
}

#[test]
fn explain_takes_data_that_begins_with_a_dash() {
    let f = TempFile::new("dash.json", service_json().to_string().as_bytes());
    let body =
        "--boundary\r\nContent-Disposition: form-data; name=\"lang\"\r\n\r\nfr\r\n--boundary--\r\n";
    for flag in ["-d", "--data", "--data-raw", "--data-binary"] {
        let e = explain(
            &f.0,
            &[
                "-H",
                "X-Api-Key: k",
                "-H",
                "Content-Type: multipart/form-data; boundary=boundary",
                flag,
                body,
                "http://api.example.com/v1/words/x.json",
            ],
        );
        assert_eq!(e["request"]["body"], body, "{flag}");
        // A multipart body is not form arguments: the rule's {lang} is not satisfied.
        assert_eq!(e["outcome"], "deny", "{flag}");
    }
    let e = explain(&f.0, &["--data-urlencode", "-x", "http://h/"]);
    assert_eq!(e["request"]["body"], "-x");
}

#[test]
fn explain_text_starts_with_the_request_as_sent() {
    let f = TempFile::new("text.json", service_json().to_string().as_bytes());
    let run = |args: &[&str]| {
        let mut all = vec!["explain", "--format", "text", "-c", f.0.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = tollgate(&all);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out)
    };
    let denied = run(&[
        "-u",
        "user:pass",
        "-d",
        "a=1",
        "http://api.example.com/v1/words/x.json?lang=en",
    ]);
    insta::assert_snapshot!("explain_text_deny", denied);
    let unknown = run(&[
        "-G",
        "--data-urlencode",
        "q=a b",
        "http://elsewhere.example/p",
    ]);
    insta::assert_snapshot!("explain_text_unknown_host", unknown);
}

#[test]
fn input_that_is_not_a_proxy_configuration_is_named() {
    // A UTF-8 byte order mark (Windows editors write one) is skipped.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(std::fs::read(examples().join("twitter.json")).unwrap());
    let f = TempFile::new("bom.json", &bom);
    let out = tollgate(["check", "-c", f.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let fetch = "fetch a proxy configuration instead: \
                 /admin/api/services/{id}/proxy/configs/{env}/latest.json (one service), \
                 /admin/api/account/proxy_configs/{env}.json (every service) or \
                 /admin/api/nginx/spec.json, where {env} is sandbox or production";
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "admin.xml",
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<services><service><id>2</id></service></services>\n",
            "error: this is XML, not a proxy configuration: the Admin API answers in XML unless \
             the path ends in .json; ",
        ),
        (
            "services.json",
            br#"{"services":[{"service":{"id":2,"name":"API","state":"incomplete","backend_version":"1"}}]}"#,
            "error: services[0].service: this is the Admin API's services list \
             (/admin/api/services.json): it names the services but holds no proxy configuration; ",
        ),
        (
            "signin.html",
            b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>",
            "error: this is an HTML page, not a proxy configuration (a sign-in or error page: \
             check the URL and the access token); ",
        ),
    ];
    for (name, content, start) in cases {
        let f = TempFile::new(name, content);
        let out = tollgate(["check", "-c", f.0.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(65), "{name}");
        let first = stdout(&out).lines().next().unwrap_or_default().to_owned();
        assert_eq!(first, format!("{start}{fetch}"), "{name}");
    }

    // From standard input the size is not known beforehand: "more than" the limit.
    let out = tollgate_with_stdin(&["check", "-c", "-"], vec![b' '; 17 * 1024 * 1024]);
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        stdout(&out).lines().next(),
        Some("error: the configuration is more than 16777216 bytes; the limit is 16777216 bytes")
    );
}

#[test]
fn explain_lists_the_limiters_that_count_a_request_and_their_keys() {
    let f = TempFile::new("svc.json", service_json().to_string().as_bytes());
    let out = tollgate(["generate", "filter", "--config", f.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut config: Value = serde_json::from_str(&stdout(&out)).unwrap();
    config["services"][0]["limiters"] = json!([
        {"name": "per-app", "counts": "requests", "key": "application",
         "token_bucket": {"rate": 2, "per": "minute", "burst": 5}},
        {"name": "words", "counts": "metric:words", "key": "header:X-User",
         "fixed_window": {"count": 100, "window_seconds": 3600}},
        {"name": "per-ip", "counts": "requests", "key": "client_address",
         "fixed_window": {"count": 10, "window_seconds": 1}, "mode": "report_only"}
    ]);
    let g = TempFile::new("filter.json", config.to_string().as_bytes());
    let e = explain(
        &g.0,
        &[
            "-H",
            "x-api-key: k1",
            "-H",
            "x-user: alice",
            "http://api.example.com/",
        ],
    );
    // `GET /` assigns hits only: the words limiter does not count it.
    assert_eq!(
        e["limiters"],
        json!([
            {"name": "per-app", "limit": "token bucket: 5 at once, 2 more per minute",
             "cost": 1, "key": "application", "key_value": "k1"},
            {"name": "per-ip", "limit": "fixed window: 10 per 1 s, aligned to the clock (report only)",
             "cost": 1, "key": "client_address"}
        ])
    );
    let e = explain(
        &g.0,
        &[
            "-X",
            "POST",
            "-H",
            "x-api-key: k1",
            "-H",
            "x-user: alice",
            "http://api.example.com/v1/words/a.json?lang=en",
        ],
    );
    assert_eq!(e["limiters"][1]["name"], "words");
    assert_eq!(e["limiters"][1]["key"], "header:x-user");
    assert_eq!(e["limiters"][1]["key_value"], "alice");
    // Denied requests are never counted.
    let e = explain(&g.0, &["http://api.example.com/"]);
    assert!(e.get("limiters").is_none(), "{e}");
}

#[test]
fn explain_says_how_the_answer_is_cached_and_which_call_a_miss_waits_for() {
    let f = TempFile::new("svc.json", service_json().to_string().as_bytes());
    let out = tollgate(["generate", "filter", "--config", f.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut config: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let g = TempFile::new("filter.json", config.to_string().as_bytes());
    let e = explain(&g.0, &["-H", "x-api-key: k1", "http://api.example.com/"]);
    assert_eq!(
        e["cache"],
        json!({"mode": "strict", "reporting": "authrep", "ttl_seconds": 60})
    );
    assert!(
        e["authrep"]
            .as_str()
            .unwrap()
            .starts_with("/transactions/authrep.xml?"),
        "{e}"
    );
    config["services"][0]["cache"]["mode"] = json!("resilient");
    config["services"][0]["batching"] =
        json!({"auths_ttl_seconds": 20, "batch_report_seconds": 5, "max_pending": 100});
    let g = TempFile::new("filter.json", config.to_string().as_bytes());
    let e = explain(&g.0, &["-H", "x-api-key: k1", "http://api.example.com/"]);
    assert_eq!(
        e["cache"],
        json!({"mode": "resilient", "reporting": "batched", "ttl_seconds": 20,
               "batch_report_seconds": 5})
    );
    // The batcher authorizes; usage goes in the batch.
    assert!(
        e["authrep"]
            .as_str()
            .unwrap()
            .starts_with("/transactions/authorize.xml?"),
        "{e}"
    );
    // Denied requests ask nothing.
    let e = explain(&g.0, &["http://api.example.com/"]);
    assert!(e.get("cache").is_none(), "{e}");
}
