//! The README's "By hand in five commands", run as written: the `tollgate` binary starts the
//! control service with `examples/control.yaml` and generates Envoy's bootstrap from
//! `examples/quickstart.json`, Python's `http.server` is the upstream, a real Envoy (2 workers)
//! runs `target/tollgate.wasm`, and every `curl` line of that README section runs through the
//! real curl and must print the status its comment promises. Only the ports differ: free ones
//! replace the README's 8080, 9901, 3001 and 8000.
//!
//! Envoy, curl and Python 3 are required: a missing one fails the test, it never skips.

// Test code: a broken expectation should fail loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::workspace;
use serde_json::Value;

/// The README's addresses and what the test uses instead.
const LISTEN: &str = "127.0.0.1:8080";
const ADMIN: &str = "127.0.0.1:9901";
const CONTROL: &str = "127.0.0.1:3001";
const UPSTREAM: &str = "127.0.0.1:8000";

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET; the status and the body, or `None` when nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The README section's `curl` lines that promise a status (`# 200: …`), in order.
fn readme_requests() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme
        .split("## By hand in five commands")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut requests = Vec::new();
    // `sleep 1; curl …` waits for a background report's answer first.
    for line in section
        .lines()
        .filter(|l| l.starts_with("curl ") || l.starts_with("sleep 1; curl "))
    {
        let Some((command, comment)) = line.split_once("   # ") else {
            continue;
        };
        let status: String = comment.chars().take_while(char::is_ascii_digit).collect();
        if status.len() == 3 {
            requests.push((command.trim().to_owned(), status));
        }
    }
    requests
}

fn tool(name: &str) -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = String::from_utf8(found.stdout).unwrap();
    assert!(
        found.status.success() && !path.trim().is_empty(),
        "{name} is required for this test (Debian: apt-get install {name})"
    );
    PathBuf::from(path.trim())
}

fn start_control(dir: &Path, control: &str) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("control")
        .arg("--data")
        .arg(workspace().join("examples/control.yaml"))
        .args(["--listen", control])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "tollgate control said: {line}");
    running
}

#[test]
fn the_readme_by_hand_section_works_as_written() {
    tool("curl");
    let python = tool("python3");
    let requests = readme_requests();
    assert!(
        requests.len() >= 8,
        "the README's curl lines were not found: {requests:?}"
    );
    let dir = std::env::temp_dir().join(format!("tollgate-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (listen, admin, control, upstream) = (free_addr(), free_addr(), free_addr(), free_addr());
    let ports = |text: &str| {
        text.replace(LISTEN, &listen)
            .replace(ADMIN, &admin)
            .replace(CONTROL, &control)
            .replace(UPSTREAM, &upstream)
    };

    // 2. The control service.
    let _control = start_control(&dir, &control);
    // 3. The upstream: the repository's directory, over HTTP.
    let upstream_port = upstream.rsplit(':').next().unwrap().to_owned();
    let _upstream = Running(
        Command::new(python)
            .args(["-m", "http.server", &upstream_port, "--bind", "127.0.0.1"])
            .current_dir(workspace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the upstream", || get(&upstream, "/README.md").is_some());

    // 4. Envoy from `generate envoy`, with the example's addresses moved to the free ports.
    let quickstart = std::fs::read_to_string(workspace().join("examples/quickstart.json")).unwrap();
    let config = dir.join("quickstart.json");
    std::fs::write(&config, ports(&quickstart)).unwrap();
    let bootstrap = dir.join("envoy.yaml");
    let generated = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["generate", "envoy", "--config"])
        .arg(&config)
        .arg("--wasm")
        .arg(tollgate_testsupport::tollgate_wasm().unwrap())
        .args(["--listen", &listen, "--admin", &admin, "-o"])
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
    let _envoy = Running(
        Command::new(tollgate_testsupport::envoy().unwrap())
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", "2", "--disable-hot-restart"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until("Envoy", || {
        get(&admin, "/ready").is_some_and(|(status, _)| status == 200)
    });

    // 5. The README's requests, in its order, through the real curl.
    for (command, expected) in &requests {
        let command = ports(command);
        let out = Command::new("sh").args(["-c", &command]).output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            &printed,
            expected,
            "{command}\nEnvoy's log:\n{}",
            std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
        );
    }

    // What the README says the control service counted: the two `examples` it allowed.
    let (status, body) = get(&control, "/_tollgate/usage").unwrap();
    assert_eq!(status, 200);
    let usage: Value = serde_json::from_str(&body).unwrap();
    let app = &usage["services"]["3001"]["applications"]["quick-key"];
    assert_eq!(app["examples"]["minute"], 2, "{usage}");
    let _ = std::fs::remove_dir_all(&dir);
}
