//! `tollgate control` as a process: starts, answers an authrep, refuses bad data with exit 65.
// Tests fail by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{stderr, tollgate, workspace as root};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET with a raw client: (status, body).
fn http_get(addr: &str, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn serves_the_example_data() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["control", "--data"])
        .arg(root().join("examples/control.yaml"))
        .args(["--listen", &listen])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("tollgate control listening on http://{listen}")
    );
    let (status, body) = http_get(
        &listen,
        "/transactions/authrep.xml?service_token=sendgrid-service-token-8f2c1b7e&service_id=2555417735060&app_id=bench-app&app_key=bench-key&usage%5Bmail%5D=1",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<authorized>true</authorized>"), "{body}");
}

#[test]
fn bad_data_exits_65_naming_the_place() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "services:\n  - id: 1\n    service_token: t\n    plans: [{name: basic}]\n    applications:\n      - {app_id: a, plan: basic}\n      - {app_id: b, plan: gold}\n",
    )
    .unwrap();
    let out = tollgate([
        "control".as_ref(),
        "--data".as_ref(),
        file.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(65));
    let stderr = stderr(&out);
    assert!(
        stderr.contains("services[0].applications[1].plan: unknown plan \"gold\""),
        "{stderr}"
    );
}

/// Starts `tollgate control` on `listen` with a state file; returns once it listens.
fn start_with_state(listen: &str, state: &std::path::Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["control", "--data"])
        .arg(root().join("examples/control.yaml"))
        .args(["--listen", listen, "--state"])
        .arg(state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    child
}

/// The e2e tests stop the control service mid-run and start it again on the same port: with
/// SIGTERM, everything counted before is in the state file, and counts go on from there.
#[test]
fn sigterm_keeps_the_counts_for_a_restart_on_the_same_port() {
    let dir =
        std::env::temp_dir().join(format!("tollgate-cli-control-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let listen = format!("127.0.0.1:{}", free_port());
    let authrep = "/transactions/authrep.xml?service_token=sendgrid-service-token-8f2c1b7e&service_id=2555417735060&app_id=bench-app&app_key=bench-key&usage%5Bmail%5D=1";
    let total = |usage: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(usage).unwrap();
        v["services"]["2555417735060"]["applications"]["bench-app"]["mail"]["total"].clone()
    };
    let mut child = start_with_state(&listen, &state);
    for _ in 0..3 {
        assert_eq!(http_get(&listen, authrep).0, 200);
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stopped by SIGTERM");

    let mut child = start_with_state(&listen, &state);
    for _ in 0..2 {
        assert_eq!(http_get(&listen, authrep).0, 200);
    }
    let (_, usage) = http_get(&listen, "/_tollgate/usage");
    let (_, calls) = http_get(&listen, "/_tollgate/calls");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(total(&usage), 5, "{usage}");
    let calls: serde_json::Value = serde_json::from_str(&calls).unwrap();
    assert_eq!(calls["authrep"], 5, "{calls}");
}
