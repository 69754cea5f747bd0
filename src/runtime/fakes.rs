//! In-memory stand-ins for the host's seams, for tests of the runtime and of what builds on
//! it. The store follows Envoy's shared-data semantics and can be told to lose races.

use std::cell::{Cell, RefCell};
use std::fmt;

use hashbrown::HashMap;

use super::seams::{
    BatchEvent, CacheEvent, Clock, Counters, Effects, Level, LimitOutcome, Log, Peer, SharedStore,
    StoreError, Stored, Swap, Timestamp, Version,
};
use crate::decision::Outcome;
use crate::index::ServiceIndex;

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: Cell<u64>,
}

impl FakeClock {
    pub fn at(now: Timestamp) -> Self {
        FakeClock {
            nanos: Cell::new(now.as_nanos()),
        }
    }

    pub fn advance_millis(&self, ms: u64) {
        self.nanos.set(
            self.nanos
                .get()
                .saturating_add(ms.saturating_mul(1_000_000)),
        );
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.nanos.get())
    }
}

/// Remembers every outcome counted, in order.
#[derive(Debug, Default)]
pub struct FakeCounters {
    counted: RefCell<Vec<Outcome>>,
    limiters: RefCell<Vec<(ServiceIndex, usize, LimitOutcome)>>,
    cache: RefCell<Vec<CacheEvent>>,
    batch: RefCell<Vec<(BatchEvent, u64)>>,
}

impl FakeCounters {
    pub fn counted(&self) -> Vec<Outcome> {
        self.counted.borrow().clone()
    }

    /// Every limiter outcome counted, in order.
    pub fn limiter_outcomes(&self) -> Vec<(ServiceIndex, usize, LimitOutcome)> {
        self.limiters.borrow().clone()
    }

    /// Every cache event counted, in order.
    pub fn cache_events(&self) -> Vec<CacheEvent> {
        self.cache.borrow().clone()
    }

    /// How many times `event` was counted.
    pub fn cache_count(&self, event: CacheEvent) -> usize {
        self.cache.borrow().iter().filter(|e| **e == event).count()
    }

    /// The sum of every `event` counted by batched reporting.
    pub fn batch_total(&self, event: BatchEvent) -> u64 {
        self.batch
            .borrow()
            .iter()
            .filter(|(e, _)| *e == event)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Counters for FakeCounters {
    fn increment(&self, outcome: Outcome) {
        self.counted.borrow_mut().push(outcome);
    }

    fn limiter(&self, service: ServiceIndex, limiter: usize, outcome: LimitOutcome) {
        self.limiters.borrow_mut().push((service, limiter, outcome));
    }

    fn cache(&self, event: CacheEvent) {
        self.cache.borrow_mut().push(event);
    }

    fn batch(&self, event: BatchEvent, n: u64) {
        self.batch.borrow_mut().push((event, n));
    }
}

/// A connection from one address (`None`: the host knows none).
#[derive(Debug, Default)]
pub struct FakePeer {
    pub address: RefCell<Option<Vec<u8>>>,
}

impl FakePeer {
    pub fn set(&self, address: Option<&str>) {
        *self.address.borrow_mut() = address.map(|a| a.as_bytes().to_vec());
    }
}

impl Peer for FakePeer {
    fn client_address(&self, out: &mut Vec<u8>) -> bool {
        match &*self.address.borrow() {
            Some(a) => {
                out.clear();
                out.extend_from_slice(a);
                true
            }
            None => false,
        }
    }
}

/// Remembers every log line.
#[derive(Debug, Default)]
pub struct FakeLog {
    lines: RefCell<Vec<(Level, String)>>,
}

impl FakeLog {
    pub fn lines(&self) -> Vec<(Level, String)> {
        self.lines.borrow().clone()
    }
}

impl Log for FakeLog {
    fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        self.lines.borrow_mut().push((level, message.to_string()));
    }
}

/// A stored value and its version.
type Entry = (Vec<u8>, u32);

/// Envoy's shared data in memory: versions from one counter starting at 1, no delete, and a
/// compare-and-swap on a missing key that succeeds whatever the version.
#[derive(Debug)]
pub struct FakeStore {
    entries: RefCell<HashMap<Vec<u8>, Entry>>,
    next_version: Cell<u32>,
    /// How many of the next compare-and-swaps on existing keys lose a race with a
    /// (simulated) other worker, which then writes the key itself.
    lose: Cell<u32>,
    /// A status every call answers with, as a host refusing the store would.
    refuse: Cell<Option<u32>>,
}

impl Default for FakeStore {
    fn default() -> Self {
        FakeStore {
            entries: RefCell::default(),
            next_version: Cell::new(1),
            lose: Cell::new(0),
            refuse: Cell::new(None),
        }
    }
}

impl FakeStore {
    /// The next `n` conditional writes to existing keys lose their race.
    pub fn lose_races(&self, n: u32) {
        self.lose.set(n);
    }

    /// Every call fails with `status` (`None` to stop).
    pub fn refuse(&self, status: Option<u32>) {
        self.refuse.set(status);
    }

    pub fn keys(&self) -> usize {
        self.entries.borrow().len()
    }

    fn bump(&self) -> u32 {
        let v = self.next_version.get();
        // Envoy skips 0 when its counter wraps.
        self.next_version.set(v.checked_add(1).unwrap_or(1));
        v
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.refuse.get() {
            Some(status) => Err(StoreError { status }),
            None => Ok(()),
        }
    }
}

impl SharedStore for FakeStore {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        self.check()?;
        Ok(self.entries.borrow().get(key).map(|(value, v)| Stored {
            value: value.clone(),
            version: Version(*v),
        }))
    }

    fn compare_and_swap(
        &self,
        key: &[u8],
        value: &[u8],
        expected: Option<Version>,
    ) -> Result<Swap, StoreError> {
        self.check()?;
        let mut entries = self.entries.borrow_mut();
        match (entries.get_mut(key), expected) {
            (Some(entry), Some(Version(want))) => {
                if self.lose.get() > 0 {
                    self.lose.set(self.lose.get() - 1);
                    // The other worker's write: same bytes, new version.
                    entry.1 = self.bump();
                    return Ok(Swap::Lost);
                }
                if entry.1 != want {
                    return Ok(Swap::Lost);
                }
                *entry = (value.to_vec(), self.bump());
            }
            (Some(entry), None) => *entry = (value.to_vec(), self.bump()),
            (None, _) => {
                let version = self.bump();
                entries.insert(key.to_vec(), (value.to_vec(), version));
            }
        }
        Ok(Swap::Done)
    }
}

/// All the fakes together, as a test hands them to the runtime.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub clock: FakeClock,
    pub counters: FakeCounters,
    pub log: FakeLog,
    pub store: FakeStore,
    pub peer: FakePeer,
}

impl FakeHost {
    pub fn effects(&self) -> Effects<'_> {
        Effects {
            clock: &self.clock,
            counters: &self.counters,
            log: &self.log,
            store: &self.store,
            peer: &self.peer,
        }
    }
}
