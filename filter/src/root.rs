//! The root context: reads and compiles the plugin configuration, learns the node's name,
//! defines the counters. Runs for the canary VM, the main thread and every worker, and again
//! after a reload: everything here is idempotent.

use std::rc::Rc;

use tollgate::runtime::Runtime;
use tollgate::Severity;

use crate::effects::{log, OutcomeCounters};
use crate::host::{self, Buffer, LogLevel};

/// What every request of a configuration shares.
pub struct Configured {
    pub runtime: Runtime,
    pub counters: OutcomeCounters,
}

#[derive(Default)]
pub struct Root {
    pub configured: Option<Rc<Configured>>,
}

/// Envoy's node id, the gateway's name in `X-3scale-hostname`: Envoy 1.40 serves the node
/// as `xds.node` (it answers `node.id` with "not found").
const NODE_ID: &[u8] = b"xds\0node\0id";

impl Root {
    pub fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match host::buffer(Buffer::PluginConfiguration, size) {
            Ok(bytes) if !bytes.is_empty() => bytes,
            Ok(_) => {
                log(LogLevel::Error, "the plugin configuration is empty");
                return false;
            }
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the plugin configuration: {e}"),
                );
                return false;
            }
        };
        let loaded = tollgate::load(&bytes);
        for d in loaded.diagnostics.iter() {
            let level = match d.severity {
                Severity::Error => LogLevel::Error,
                Severity::Warning => LogLevel::Warn,
            };
            log(level, &format!("configuration {}", d.redacted()));
        }
        let Some(model) = loaded.compiled else {
            log(
                LogLevel::Error,
                &format!(
                    "configuration rejected ({} errors)",
                    loaded.diagnostics.errors().count()
                ),
            );
            return false;
        };
        let node = match host::property(NODE_ID) {
            Ok(node) => node,
            Err(e) => {
                log(LogLevel::Warn, &format!("no node id: {e}"));
                None
            }
        };
        let services = model.services().len();
        let tick = tollgate::runtime::tick_period_ms(&model).unwrap_or(0);
        if let Err(e) = host::set_tick_period(tick) {
            // Without a timer, batched usage is never reported: refuse the configuration.
            if tick > 0 {
                log(
                    LogLevel::Error,
                    &format!("cannot set the timer batched reports and retries need: {e}"),
                );
                return false;
            }
        }
        let counters = OutcomeCounters::define(&model);
        let runtime = Runtime::new(model, node.as_deref());
        self.configured = Some(Rc::new(Configured { runtime, counters }));
        log(LogLevel::Info, &format!("configured {services} services"));
        true
    }
}
