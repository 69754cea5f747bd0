//! What the runtime needs from a host, as traits: the clock, counters, logs and a store that
//! every worker shares. Bindings implement them over their host (proxy-wasm hostcalls for the
//! filter); [`super::fakes`] implements them for tests.

use std::fmt;

use crate::decision::Outcome;
use crate::index::ServiceIndex;

pub use crate::time::Timestamp;

/// The host's clock. Time is an argument everywhere in the core: wasm32-unknown-unknown has
/// no clock of its own, and tests need to move time by hand.
pub trait Clock {
    fn now(&self) -> Timestamp;
}

/// Counts outcomes (Envoy: `tollgate.<outcome>` counters). Best effort: a host that cannot
/// count must not fail a request.
pub trait Counters {
    fn increment(&self, outcome: Outcome);
    /// One limiter's outcome for one request (Envoy:
    /// `tollgate.limiter.<service>.<limiter>.<outcome>`); `limiter` is its position in
    /// [`crate::Service::limiters`].
    fn limiter(&self, service: ServiceIndex, limiter: usize, outcome: LimitOutcome);
    /// What the authorization cache did (Envoy: `tollgate.cache.<event>`).
    fn cache(&self, event: CacheEvent);
    /// What batched reporting did, `n` times (Envoy: `tollgate.batch.<event>`).
    fn batch(&self, event: BatchEvent, n: u64);
}

/// What the authorization cache did for one request or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// Answered from a fresh cached authorization, without waiting.
    Hit,
    /// Answered from a cached denial, without waiting.
    DeniedHit,
    /// Waited for the control service (the first request of its key in this worker).
    Miss,
    /// Waited for a call another request of the same key had already made.
    Joined,
    /// The control service failed and a stale answer stood (`resilient`, `allow`).
    Stale,
    /// The control service failed and a key never seen was admitted (`allow`).
    Assumed,
    /// A background authrep went out after a cached request.
    Report,
    /// A cached request's usage was summed into a background authrep already queued.
    Coalesced,
    /// A key too long to cache: the request waited, as without a cache.
    Uncacheable,
    /// A cached request's usage could not be kept for a report (the per-worker bound).
    ReportDropped,
    /// A background report failed and its usage waits for a retry.
    ReportFailed,
}

impl CacheEvent {
    pub const ALL: [CacheEvent; 11] = [
        CacheEvent::Hit,
        CacheEvent::DeniedHit,
        CacheEvent::Miss,
        CacheEvent::Joined,
        CacheEvent::Stale,
        CacheEvent::Assumed,
        CacheEvent::Report,
        CacheEvent::Coalesced,
        CacheEvent::Uncacheable,
        CacheEvent::ReportDropped,
        CacheEvent::ReportFailed,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheEvent::Hit => "hit",
            CacheEvent::DeniedHit => "denied_hit",
            CacheEvent::Miss => "miss",
            CacheEvent::Joined => "joined",
            CacheEvent::Stale => "stale",
            CacheEvent::Assumed => "assumed",
            CacheEvent::Report => "report",
            CacheEvent::Coalesced => "coalesced",
            CacheEvent::Uncacheable => "uncacheable",
            CacheEvent::ReportDropped => "report_dropped",
            CacheEvent::ReportFailed => "report_failed",
        }
    }
}

/// What batched reporting did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEvent {
    /// Requests whose usage was added to a pending batch.
    Queued,
    /// Requests whose usage found no slot (the `max_pending` bound) and was dropped.
    Dropped,
    /// Report POSTs the control service accepted.
    Flushed,
    /// Transactions (application × interval) those POSTs carried.
    Transactions,
    /// Report POSTs that failed (their usage went back to the batch).
    FlushFailed,
    /// This VM took the flusher lease.
    LeaseTaken,
}

impl BatchEvent {
    pub const ALL: [BatchEvent; 6] = [
        BatchEvent::Queued,
        BatchEvent::Dropped,
        BatchEvent::Flushed,
        BatchEvent::Transactions,
        BatchEvent::FlushFailed,
        BatchEvent::LeaseTaken,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            BatchEvent::Queued => "queued",
            BatchEvent::Dropped => "dropped",
            BatchEvent::Flushed => "flushed",
            BatchEvent::Transactions => "transactions",
            BatchEvent::FlushFailed => "flush_failed",
            BatchEvent::LeaseTaken => "lease_taken",
        }
    }
}

/// What a limiter did with one request it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOutcome {
    Admitted,
    Limited,
    /// Over the limit, let through: the limiter is `report_only`.
    ReportOnly,
    /// The shared bucket could not be updated (every compare-and-swap lost, or the store
    /// refused): denied rather than admitted past the limit.
    Contended,
}

impl LimitOutcome {
    pub const ALL: [LimitOutcome; 4] = [
        LimitOutcome::Admitted,
        LimitOutcome::Limited,
        LimitOutcome::ReportOnly,
        LimitOutcome::Contended,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            LimitOutcome::Admitted => "admitted",
            LimitOutcome::Limited => "limited",
            LimitOutcome::ReportOnly => "report_only",
            LimitOutcome::Contended => "contended",
        }
    }
}

/// What the host knows about the request's connection.
pub trait Peer {
    /// Writes the client's address (`ip:port`, as the host gives it) into `out`; `false`
    /// when the host has none.
    fn client_address(&self, out: &mut Vec<u8>) -> bool;
}

/// How bad a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Where the runtime's log lines go. Messages never contain credentials or tokens.
pub trait Log {
    fn log(&self, level: Level, message: fmt::Arguments<'_>);
}

/// The effects one request event may have, borrowed from the binding for the call.
#[derive(Clone, Copy)]
pub struct Effects<'a> {
    pub clock: &'a dyn Clock,
    pub counters: &'a dyn Counters,
    pub log: &'a dyn Log,
    /// Where local limits keep their state, shared by every worker.
    pub store: &'a dyn SharedStore,
    pub peer: &'a dyn Peer,
}

/// A version of a stored value, for compare-and-swap. Envoy gives every successful write a
/// new one from a process-wide counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version(pub u32);

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    pub version: Version,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    Done,
    /// Someone else wrote the key since the version was read.
    Lost,
}

/// A store failure (the host refused the call): the caller's fallback applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the shared store refused the call (status {status})")]
pub struct StoreError {
    pub status: u32,
}

impl StoreError {
    pub fn fault(&self) -> crate::Fault {
        crate::Fault::Internal
    }
}

/// A key-value store shared by every worker of a gateway (Envoy's shared data), with Envoy's
/// semantics:
/// - there is no delete, so key spaces must be bounded by whoever uses the store;
/// - a write with `expected: None` is unconditional;
/// - a write with `expected: Some(v)` fails with [`Swap::Lost`] when the key exists with a
///   version other than `v`, and succeeds when the key does not exist at all (two workers can
///   both "create" a key: initialise keys before racing on them).
pub trait SharedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>, StoreError>;
    fn compare_and_swap(
        &self,
        key: &[u8],
        value: &[u8],
        expected: Option<Version>,
    ) -> Result<Swap, StoreError>;
}

/// The version a write expects when the key was missing. Envoy writes unconditionally with
/// version 0, so two workers creating one key would both succeed and one write would be lost;
/// with a version that is not the key's, a write creates a missing key and loses against one
/// created meanwhile. Versions come from one process-wide counter, so the key's own version
/// would have to be exactly this one: once in four billion writes to the whole store.
pub const CREATE: Version = Version(u32::MAX);

/// How [`update`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated<T> {
    /// The new value was written; `T` is what `change` said about it.
    Written(T),
    /// `change` decided nothing should be written.
    Unchanged(T),
    /// Every attempt lost a race: the caller decides what that means (never looser limits).
    Contended,
}

/// Reads `key`, lets `change` compute a new value from the current one, and writes it with
/// compare-and-swap, retrying at most `retries` times after a lost race.
///
/// `change` gets the current value (`None` when the key is missing) and a buffer to fill with
/// the new value; it returns `(write, result)`.
pub fn update<S, T>(
    store: &S,
    key: &[u8],
    retries: u32,
    mut change: impl FnMut(Option<&[u8]>, &mut Vec<u8>) -> (bool, T),
) -> Result<Updated<T>, StoreError>
where
    S: SharedStore + ?Sized,
{
    let mut next = Vec::new();
    for _ in 0..=retries {
        let current = store.get(key)?;
        next.clear();
        let (write, result) = change(current.as_ref().map(|s| s.value.as_slice()), &mut next);
        if !write {
            return Ok(Updated::Unchanged(result));
        }
        let expected = current.map_or(CREATE, |s| s.version);
        match store.compare_and_swap(key, &next, Some(expected))? {
            Swap::Done => return Ok(Updated::Written(result)),
            Swap::Lost => continue,
        }
    }
    Ok(Updated::Contended)
}
