//! The core's seams over proxy-wasm: the host's clock, its log and its counters.

use std::fmt::{self, Write};

use tollgate::runtime::seams::{Clock, Counters, Level, Log, Timestamp};
use tollgate::Outcome;

use crate::host::{self, LogLevel};

/// Logging is best effort: a host refusing a log line must not take the request down, and
/// there is nowhere else to report it.
pub fn log(level: LogLevel, message: &str) {
    let _ = host::log(level, message);
}

pub struct HostLog;

impl Log for HostLog {
    fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let mut line = String::new();
        if line.write_fmt(message).is_ok() {
            log(level, &line);
        }
    }
}

pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> Timestamp {
        match host::now_nanos() {
            Ok(nanos) => Timestamp::from_nanos(nanos),
            Err(e) => {
                // Nothing decides by the clock yet; the limits and cache will fail closed.
                log(LogLevel::Warn, &format!("no time from the host: {e}"));
                Timestamp::default()
            }
        }
    }
}

/// `tollgate.<outcome>` counters, by [`Outcome::ALL`] index, where the host accepted them.
pub struct OutcomeCounters {
    ids: Vec<Option<u32>>,
}

impl OutcomeCounters {
    /// Defines the counters (idempotent: Envoy gives the same id for the same name).
    pub fn define() -> Self {
        let ids = Outcome::ALL
            .iter()
            .map(|o| {
                let name = format!("tollgate.{}", o.name());
                match host::define_counter(&name) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        log(LogLevel::Warn, &format!("no counter {name}: {e}"));
                        None
                    }
                }
            })
            .collect();
        OutcomeCounters { ids }
    }
}

impl Counters for OutcomeCounters {
    fn increment(&self, outcome: Outcome) {
        if let Some(Some(id)) = self.ids.get(outcome.index()) {
            if let Err(e) = host::increment_counter(*id) {
                log(
                    LogLevel::Warn,
                    &format!("cannot count {}: {e}", outcome.name()),
                );
            }
        }
    }
}
