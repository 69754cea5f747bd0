//! A real Envoy process: found, started with a config, awaited until ready, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{wait_until, HarnessError, Result};

/// The Envoy binary (`ENVOY_BIN`, else the one `make envoy` installs into `.venv`). Missing is
/// an error that names the command to run; tests fail, they never skip.
pub fn binary() -> Result<PathBuf> {
    Ok(tollgate_testsupport::envoy()?)
}

/// Worker threads of the Envoy the tests run: more than one, as state shared across workers
/// is coming. The benchmark measures one worker.
pub const TEST_WORKERS: u32 = 2;

/// How long Envoy may take to say ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Envoy, stopped when dropped.
pub struct Envoy {
    child: Child,
    pub admin_port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy with `config` (YAML or JSON) and `workers` worker threads, and waits until
    /// its admin endpoint says ready.
    pub fn start(config: &str, admin_port: u16, workers: u32) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tollgate-e2e-{}-{admin_port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
        let config_path = dir.join("envoy.yaml");
        let log_path = dir.join("envoy.log");
        std::fs::write(&config_path, config).map_err(HarnessError::io(format!(
            "writing {}",
            config_path.display()
        )))?;
        let log = std::fs::File::create(&log_path)
            .map_err(HarnessError::io(format!("creating {}", log_path.display())))?;
        let child = Command::new(binary()?)
            .arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(workers.to_string())
            .args(["--disable-hot-restart", "-l", "info"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(HarnessError::io("starting envoy"))?;
        let mut envoy = Envoy {
            child,
            admin_port,
            config_path,
            log_path,
        };
        let admin = format!("http://127.0.0.1:{admin_port}/ready");
        let ready = wait_until(READY_TIMEOUT, "envoy", || {
            if let Ok(Some(_)) = envoy.child.try_wait() {
                return true;
            }
            ureq::get(&admin).call().is_ok()
        });
        if let Ok(Some(status)) = envoy.child.try_wait() {
            return Err(HarnessError::EnvoyExited {
                status,
                log: envoy.log(),
            });
        }
        ready.map_err(|_| HarnessError::EnvoyNotReady {
            timeout: READY_TIMEOUT,
            log: envoy.log(),
        })?;
        Ok(envoy)
    }

    /// Starts Envoy with a config it is expected to refuse: returns its log once it has
    /// exited with a failure, or an error if it became ready (or kept running) instead, or
    /// could not be started at all.
    pub fn refuses(config: &str, admin_port: u16) -> Result<String> {
        let mut envoy = match Self::start(config, admin_port, TEST_WORKERS) {
            Err(HarnessError::EnvoyExited { status, log }) if !status.success() => return Ok(log),
            Err(e) => return Err(e),
            Ok(envoy) => envoy,
        };
        // Ready is not the end: a listener can still be rejected right after.
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(status)) = envoy.child.try_wait() {
            if !status.success() {
                return Ok(envoy.log());
            }
        }
        let _ = envoy.child.kill();
        Err(HarnessError::EnvoyAccepted { log: envoy.log() })
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A GET on the admin endpoint (`/stats`, `/stats/prometheus`, …).
    pub fn admin(&self, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let what = format!("GET {url}");
        ureq::get(&url)
            .call()
            .map_err(HarnessError::http(&what))?
            .body_mut()
            .read_to_string()
            .map_err(HarnessError::http(&what))
    }

    /// The Envoy process (the wheel's launcher execs it), for CPU-time figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &PathBuf {
        &self.config_path
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `envoy --mode validate` said of a configuration, with its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Accepted(String),
    Refused(String),
}

/// Runs `envoy --mode validate` on a config.
pub fn validate(config: &str) -> Result<Validation> {
    let path = std::env::temp_dir().join(format!(
        "tollgate-validate-{}-{}.yaml",
        std::process::id(),
        crate::free_port()?
    ));
    std::fs::write(&path, config)
        .map_err(HarnessError::io(format!("writing {}", path.display())))?;
    let out = Command::new(binary()?)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .map_err(HarnessError::io("running envoy --mode validate"))?;
    let _ = std::fs::remove_file(&path);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() {
        Validation::Accepted(log)
    } else {
        Validation::Refused(log)
    })
}

/// A minimal Envoy bootstrap: one listener whose every route answers 200 "ok" directly,
/// optionally a Wasm filter (module, plugin configuration) and the control-service cluster
/// at a loopback port. The benchmark and the invalid-configuration tests use it.
pub fn direct_response_bootstrap(
    port: u16,
    admin: u16,
    filter: Option<(&Path, &str)>,
    control: Option<u16>,
) -> String {
    let filter = match filter {
        None => String::new(),
        Some((wasm, configuration)) => format!(
            r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench
                root_id: bench
                failure_policy: FAIL_RELOAD
                allow_on_headers_stop_iteration: true
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {configuration}
                vm_config:
                  vm_id: bench
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}"#,
            configuration = serde_json::Value::String(configuration.to_owned()),
            wasm = wasm.display()
        ),
    };
    let control = match control {
        None => String::new(),
        Some(port) => format!(
            r#"
  clusters:
  - name: tollgate_control_service
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: tollgate_control_service
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]"#
        ),
    };
    format!(
        r#"static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
          http_filters:{filter}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}{control}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#
    )
}
