//! The core's seams over proxy-wasm: the host's clock, its log and its counters.

use std::fmt::{self, Write};

use tollgate::index::ServiceIndex;
use tollgate::runtime::seams::{
    BatchEvent, CacheEvent, Clock, Counters, Level, LimitOutcome, Log, Peer, SharedStore,
    StoreError, Stored, Swap, Timestamp, Version,
};
use tollgate::{Compiled, Outcome};

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

/// `tollgate.<outcome>` counters, by [`Outcome::ALL`] index, and
/// `tollgate.limiter.<service>.<limiter>.<outcome>` per service and limiter, where the host
/// accepted them.
pub struct OutcomeCounters {
    ids: Vec<Option<u32>>,
    /// By service, limiter, then [`LimitOutcome::ALL`] index.
    limiters: Vec<Vec<[Option<u32>; 4]>>,
    /// `tollgate.cache.<event>` by [`CacheEvent::ALL`] index.
    cache: Vec<Option<u32>>,
    /// `tollgate.batch.<event>` by [`BatchEvent::ALL`] index.
    batch: Vec<Option<u32>>,
}

fn counter(name: &str) -> Option<u32> {
    match host::define_counter(name) {
        Ok(id) => Some(id),
        Err(e) => {
            log(LogLevel::Warn, &format!("no counter {name}: {e}"));
            None
        }
    }
}

/// A name part Envoy's stats keep as one segment: no dots, only plain characters.
fn stat_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl OutcomeCounters {
    /// Defines the counters (idempotent: Envoy gives the same id for the same name).
    pub fn define(model: &Compiled) -> Self {
        let ids = Outcome::ALL
            .iter()
            .map(|o| counter(&format!("tollgate.{}", o.name())))
            .collect();
        let limiters = model
            .services()
            .iter()
            .map(|service| {
                service
                    .limiters()
                    .iter()
                    .map(|limiter| {
                        LimitOutcome::ALL.map(|o| {
                            counter(&format!(
                                "tollgate.limiter.{}.{}.{}",
                                stat_segment(service.id()),
                                limiter.name(),
                                o.name()
                            ))
                        })
                    })
                    .collect()
            })
            .collect();
        let cache = CacheEvent::ALL
            .iter()
            .map(|e| counter(&format!("tollgate.cache.{}", e.name())))
            .collect();
        let batch = BatchEvent::ALL
            .iter()
            .map(|e| counter(&format!("tollgate.batch.{}", e.name())))
            .collect();
        OutcomeCounters {
            ids,
            limiters,
            cache,
            batch,
        }
    }
}

fn bump(id: u32, what: &str) {
    if let Err(e) = host::increment_counter(id) {
        log(LogLevel::Warn, &format!("cannot count {what}: {e}"));
    }
}

impl Counters for OutcomeCounters {
    fn increment(&self, outcome: Outcome) {
        if let Some(Some(id)) = self.ids.get(outcome.index()) {
            bump(*id, outcome.name());
        }
    }

    fn limiter(&self, service: ServiceIndex, limiter: usize, outcome: LimitOutcome) {
        let id = self
            .limiters
            .get(service.as_usize())
            .and_then(|s| s.get(limiter))
            .and_then(|ids| ids.get(outcome.index()).copied().flatten());
        if let Some(id) = id {
            bump(id, outcome.name());
        }
    }

    fn cache(&self, event: CacheEvent) {
        if let Some(Some(id)) = self.cache.get(event.index()) {
            bump(*id, event.name());
        }
    }

    fn batch(&self, event: BatchEvent, n: u64) {
        if let Some(Some(id)) = self.batch.get(event.index()) {
            let delta = i64::try_from(n).unwrap_or(i64::MAX);
            if let Err(e) = host::increment_counter_by(*id, delta) {
                log(
                    LogLevel::Warn,
                    &format!("cannot count {}: {e}", event.name()),
                );
            }
        }
    }
}

/// Envoy's shared data, for every worker of this vm_id.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        match host::shared_data(key) {
            Ok(found) => Ok(found.map(|(value, cas)| Stored {
                value,
                version: Version(cas),
            })),
            Err(e) => Err(StoreError { status: e.status }),
        }
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        value: &[u8],
        expected: Option<Version>,
    ) -> Result<Swap, StoreError> {
        let cas = expected.map_or(0, |v| v.0);
        match host::set_shared_data(key, value, cas) {
            Ok(true) => Ok(Swap::Done),
            Ok(false) => Ok(Swap::Lost),
            Err(e) => Err(StoreError { status: e.status }),
        }
    }
}

/// The downstream connection's address (`source.address`).
pub struct HostPeer;

const SOURCE_ADDRESS: &[u8] = b"source\0address";

impl Peer for HostPeer {
    fn client_address(&self, out: &mut Vec<u8>) -> bool {
        match host::property(SOURCE_ADDRESS) {
            Ok(Some(address)) => {
                *out = address;
                true
            }
            Ok(None) => false,
            Err(e) => {
                log(LogLevel::Warn, &format!("no client address: {e}"));
                false
            }
        }
    }
}
