//! APIcast's 3scale Batcher: usage summed per application in the shared store and reported
//! with `POST /transactions.xml` by one flusher for the whole gateway.
//!
//! Shared-store keys (Envoy's shared data: no delete, no listing), all bounded:
//! - `<BatchPolicy::store_prefix()><slot>`, `max_pending` of them per service: one
//!   application's pending usage each, in one of [`CANDIDATES`] slots its identity hashes to;
//! - `<prefix>used<chunk>`: a bitmap of the slots that went from empty to used, so the
//!   flusher reads `max_pending / 4096` keys instead of every slot;
//! - `<prefix>next`: when the service is reported next, and how many reports failed in a row;
//! - [`LEASE_KEY`]`|<hash>`: which VM flushes a configuration's batched services, until
//!   when (see [`lease_key`]); [`VM_ID_KEY`]: the VM ids handed out.
//!
//! Every value starts with a version byte; bytes that do not decode are never trusted and
//! never make anything panic (a slot holding them is cleared by the next flush, reporting
//! nothing).

use std::cell::Cell;
use std::fmt::Write as _;
use std::hash::BuildHasher;

use crate::backend::percent;
use crate::credentials::Credentials;
use crate::index::{MetricIndex, ServiceIndex};
use crate::model::cache::BatchPolicy;
use crate::model::service::Service;
use crate::model::Compiled;

use super::limiting::MAX_CAS_RETRIES;
use super::outbox::{CallMethod, Outgoing, Ticket};
use super::seams::{update, BatchEvent, Effects, Level, SharedStore, Updated};

/// Where batched usage is reported.
pub const REPORT_PATH: &str = "/transactions.xml";
/// Transactions one report carries at most (APIcast's batcher sends what it has in one
/// call; a bound keeps a call's body, and the control service's work, reasonable).
pub const MAX_TRANSACTIONS_PER_REPORT: usize = 1000;
/// A credential longer than this is not queued (its usage is dropped, counted and logged):
/// it would make one slot, and one report, as large as a request header may be.
pub const MAX_IDENTITY_BYTES: usize = 4096;
/// Who flushes, for the whole Envoy: `(holder VM id, expires_at)`; followed by `|` and a
/// hash of the batched services (see [`lease_key`]).
pub const LEASE_KEY: &[u8] = b"tollgate.batch.v1|lease";
/// The last VM id handed out.
pub const VM_ID_KEY: &[u8] = b"tollgate.vm.v1|next_id";
/// The lease lasts this many tick periods: a holder that stops ticking is replaced within it.
pub const LEASE_TICKS: u64 = 3;

/// The first byte of every value this module writes.
const VERSION: u8 = 1;
/// Slots per bitmap key (512 bytes of bits).
const BITS_PER_CHUNK: u32 = 4096;
/// Slots a flush reads besides those the bitmap names, round robin: a slot whose bit could
/// not be set (the bitmap key was contended) is reported within `max_pending / SWEEP_SLOTS`
/// flushes instead of never.
const SWEEP_SLOTS: u32 = 16;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Drops are logged at most once a second per VM, with how many there were since.
const DROP_LOG_EVERY_NS: u64 = NANOS_PER_SECOND;

/// What adding a request's usage did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Queued,
    /// No slot was free (`max_pending`): counted and logged.
    Dropped,
}

/// Which credential APIcast's batcher reports for an application (never `app_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    UserKey = 1,
    AppId = 2,
    AccessToken = 3,
}

impl Kind {
    fn of<'a>(credentials: &'a Credentials<'_>) -> (Kind, &'a [u8]) {
        match credentials {
            Credentials::UserKey(k) => (Kind::UserKey, k),
            Credentials::AppId { app_id, .. } => (Kind::AppId, app_id),
            Credentials::AccessToken(t) => (Kind::AccessToken, t),
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::UserKey),
            2 => Some(Kind::AppId),
            3 => Some(Kind::AccessToken),
            _ => None,
        }
    }

    fn param(self) -> &'static str {
        match self {
            Kind::UserKey => "user_key",
            Kind::AppId => "app_id",
            Kind::AccessToken => "access_token",
        }
    }
}

/// One application's usage, taken from its slot (or about to be put back).
///
/// Metrics are kept by name, not by [`MetricIndex`]: a slot outlives a configuration (and
/// two workers may briefly run different ones), and an index of one configuration may name
/// another metric in the next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transaction {
    kind: Kind,
    value: Vec<u8>,
    /// `(metric system name, sum)`, sorted by name, sums above 0.
    usage: Vec<(Vec<u8>, u64)>,
}

/// What a flush's answer needs: the usage it carried, to put back if it failed.
#[derive(Debug)]
pub struct FlushTicket {
    service: ServiceIndex,
    /// The service's id when sent: after a reconfiguration the index may name another one.
    service_id: Box<str>,
    transactions: Vec<Transaction>,
}

impl FlushTicket {
    pub fn service(&self) -> ServiceIndex {
        self.service
    }

    /// How many transactions (applications) the report carried.
    pub fn transactions(&self) -> usize {
        self.transactions.len()
    }
}

// ---------------------------------------------------------------------------------------
// Slot values: `[VERSION]` empty; or `[VERSION][kind][len u32][value]` then `[count u16]`
// and per metric `[name len u16][name][sum u64]`, little-endian.

enum Slot<'a> {
    Empty,
    Held {
        kind: Kind,
        value: &'a [u8],
        /// The encoded metrics, checked.
        usage: &'a [u8],
    },
    /// Bytes that do not decode: occupied, holding nothing we can report.
    Garbage,
}

fn split(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

fn read_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (head, rest) = split(bytes, 2)?;
    Some((u16::from_le_bytes(head.try_into().ok()?), rest))
}

fn read_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = split(bytes, 4)?;
    Some((u32::from_le_bytes(head.try_into().ok()?), rest))
}

fn read_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = split(bytes, 8)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), rest))
}

/// The metrics of a slot, in order; stops at the first malformed one.
fn metrics(mut usage: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    let mut left = read_u16(usage).map_or(0, |(n, rest)| {
        usage = rest;
        n
    });
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let (len, rest) = read_u16(usage)?;
        let (name, rest) = split(rest, usize::from(len))?;
        let (sum, rest) = read_u64(rest)?;
        usage = rest;
        Some((name, sum))
    })
}

fn metrics_valid(usage: &[u8]) -> bool {
    let Some((n, mut rest)) = read_u16(usage) else {
        return false;
    };
    for _ in 0..n {
        let Some((len, r)) = read_u16(rest) else {
            return false;
        };
        let Some((_, r)) = split(r, usize::from(len)) else {
            return false;
        };
        let Some((_, r)) = read_u64(r) else {
            return false;
        };
        rest = r;
    }
    rest.is_empty()
}

fn decode_slot(bytes: Option<&[u8]>) -> Slot<'_> {
    let Some(bytes) = bytes else {
        return Slot::Empty;
    };
    let decoded = (|| {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let Some((&kind, rest)) = rest.split_first() else {
            return Some(Slot::Empty);
        };
        let kind = Kind::from_byte(kind)?;
        let (len, rest) = read_u32(rest)?;
        let (value, usage) = split(rest, usize::try_from(len).ok()?)?;
        metrics_valid(usage).then_some(Slot::Held { kind, value, usage })
    })();
    decoded.unwrap_or(Slot::Garbage)
}

/// Writes a held slot: `existing` (encoded metrics, checked) plus `add` (sorted by name,
/// merged); `false` when it would not fit the format.
fn encode_slot(
    kind: Kind,
    value: &[u8],
    existing: &[u8],
    add: &[(&[u8], u64)],
    out: &mut Vec<u8>,
) -> bool {
    let Ok(len) = u32::try_from(value.len()) else {
        return false;
    };
    out.clear();
    out.push(VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value);
    let count_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut count: u32 = 0;
    let mut push = |out: &mut Vec<u8>, name: &[u8], sum: u64| -> bool {
        let Ok(len) = u16::try_from(name.len()) else {
            return false;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&sum.to_le_bytes());
        count += 1;
        true
    };
    // Both lists are sorted by name: merge them.
    let mut old = metrics(existing).peekable();
    let mut new = add.iter().copied().peekable();
    loop {
        let ok = match (old.peek(), new.peek()) {
            (Some(&(a, x)), Some(&(b, y))) if a == b => {
                old.next();
                new.next();
                push(out, a, x.saturating_add(y))
            }
            (Some(&(a, x)), Some(&(b, _))) if a < b => {
                old.next();
                push(out, a, x)
            }
            (_, Some(&(b, y))) => {
                new.next();
                push(out, b, y)
            }
            (Some(&(a, x)), None) => {
                old.next();
                push(out, a, x)
            }
            (None, None) => break,
        };
        if !ok {
            return false;
        }
    }
    let Ok(count) = u16::try_from(count) else {
        return false;
    };
    if let Some(at) = out.get_mut(count_at..count_at + 2) {
        at.copy_from_slice(&count.to_le_bytes());
    }
    true
}

fn slot_key(policy: &BatchPolicy, slot: u32, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(policy.store_prefix().as_bytes());
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::model::decision::decimal(
        u64::from(slot),
        &mut digits,
    ));
}

fn named_key(policy: &BatchPolicy, name: &str, chunk: Option<u32>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(policy.store_prefix().as_bytes());
    out.extend_from_slice(name.as_bytes());
    if let Some(chunk) = chunk {
        let mut digits = [0u8; 20];
        out.extend_from_slice(crate::model::decision::decimal(
            u64::from(chunk),
            &mut digits,
        ));
    }
}

/// Slots an application may use. Two choices drop a tenth of the applications once
/// `max_pending` is 60 % used (both taken); four drop about 3 %, and the usual add still
/// reads one slot (its first, which it already holds).
const CANDIDATES: usize = 4;

/// The slots an application may use, in the order tried: hashes of its identity, seeded
/// with the service's secret so that no client can aim at another application's slots. The
/// first two differ (when `max_pending` > 1); the others may repeat one.
fn candidates(policy: &BatchPolicy, seed: u64, kind: Kind, value: &[u8]) -> [u32; CANDIDATES] {
    let n = u64::from(policy.max_pending().max(1));
    let hash = |salt: u64, modulo: u64| {
        let h = foldhash::fast::FixedState::with_seed(seed ^ salt).hash_one((kind as u8, value));
        // Below `max_pending`, a u32.
        u32::try_from(h % modulo.max(1)).unwrap_or(0)
    };
    let first = hash(0, n);
    if n == 1 {
        return [first; CANDIDATES];
    }
    let mut second = hash(0x6261_7463_6832, n - 1);
    if second >= first {
        second += 1;
    }
    [
        first,
        second,
        hash(0x6261_7463_6833, n),
        hash(0x6261_7463_6834, n),
    ]
}

// ---------------------------------------------------------------------------------------
// Adding usage.

/// Why usage found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// Every slot the application may use holds another one (`max_pending`).
    Full,
    /// Every compare-and-swap lost its race.
    Contended,
    /// The store refused the call.
    Refused,
    /// The credential is longer than [`MAX_IDENTITY_BYTES`], or the usage would not fit.
    TooLarge,
    /// The service does not batch (a report's answer after a reconfiguration).
    NotBatched,
}

impl DropReason {
    fn describe(self) -> &'static str {
        match self {
            DropReason::Full => "max_pending is full",
            DropReason::NotBatched => "the service does not batch (any more)",
            DropReason::Contended => "the shared store was contended",
            DropReason::Refused => "the shared store refused the call",
            DropReason::TooLarge => "the credential or usage is too large",
        }
    }
}

enum Fill {
    /// The slot was empty: its bit must be set.
    New,
    Added,
    Foreign,
    Garbage,
    TooLarge,
}

/// Sums `usage` (sorted by name, every sum above 0) into the application's slot.
fn add(
    store: &dyn SharedStore,
    policy: &BatchPolicy,
    seed: u64,
    kind: Kind,
    value: &[u8],
    usage: &[(&[u8], u64)],
) -> Result<(), DropReason> {
    if value.len() > MAX_IDENTITY_BYTES {
        return Err(DropReason::TooLarge);
    }
    if usage.is_empty() {
        return Ok(());
    }
    // The first slot that is empty or the application's own takes the usage: an application
    // whose first slot was taken when it came may, once that slot is emptied, hold two and
    // be two transactions of one report (3scale sums them), rather than every add reading
    // all its slots.
    let slots = candidates(policy, seed, kind, value);
    let mut key = Vec::new();
    for (i, &slot) in slots.iter().enumerate() {
        if slots.get(..i).is_some_and(|tried| tried.contains(&slot)) {
            continue;
        }
        slot_key(policy, slot, &mut key);
        let filled = update(
            store,
            &key,
            MAX_CAS_RETRIES,
            |current, next| match decode_slot(current) {
                Slot::Empty => match encode_slot(kind, value, &[], usage, next) {
                    true => (true, Fill::New),
                    false => (false, Fill::TooLarge),
                },
                Slot::Held {
                    kind: k,
                    value: v,
                    usage: existing,
                } if k == kind && v == value => {
                    match encode_slot(kind, value, existing, usage, next) {
                        true => (true, Fill::Added),
                        false => (false, Fill::TooLarge),
                    }
                }
                Slot::Held { .. } => (false, Fill::Foreign),
                Slot::Garbage => (false, Fill::Garbage),
            },
        );
        match filled {
            Ok(Updated::Written(Fill::New)) => {
                mark_used(store, policy, slot);
                return Ok(());
            }
            Ok(Updated::Written(_)) => return Ok(()),
            Ok(Updated::Unchanged(Fill::TooLarge)) => return Err(DropReason::TooLarge),
            // Let the next flush clear it.
            Ok(Updated::Unchanged(Fill::Garbage)) => mark_used(store, policy, slot),
            Ok(Updated::Unchanged(_)) => {}
            Ok(Updated::Contended) => return Err(DropReason::Contended),
            Err(_) => return Err(DropReason::Refused),
        }
    }
    Err(DropReason::Full)
}

/// The bytes of bitmap chunk `chunk`: `[VERSION]` then one bit per slot.
fn chunk_len(policy: &BatchPolicy, chunk: u32) -> usize {
    let slots = policy
        .max_pending()
        .saturating_sub(chunk.saturating_mul(BITS_PER_CHUNK))
        .min(BITS_PER_CHUNK);
    usize::try_from(slots.div_ceil(8)).unwrap_or(0)
}

/// The bits of a chunk; bytes that do not decode read as no bits (the sweep finds their
/// slots).
fn chunk_bits(bytes: Option<&[u8]>, len: usize) -> Option<&[u8]> {
    let (&version, bits) = bytes?.split_first()?;
    (version == VERSION && bits.len() == len).then_some(bits)
}

/// Sets `slot`'s bit, after it went from empty to used. Best effort: a bit that cannot be
/// set leaves the slot to the flusher's sweep.
fn mark_used(store: &dyn SharedStore, policy: &BatchPolicy, slot: u32) {
    let chunk = slot / BITS_PER_CHUNK;
    let bit = slot % BITS_PER_CHUNK;
    let byte = usize::try_from(bit / 8).unwrap_or(usize::MAX);
    let mask = 1u8 << (bit % 8);
    let len = chunk_len(policy, chunk);
    let mut key = Vec::new();
    named_key(policy, "used", Some(chunk), &mut key);
    let _ = update(store, &key, MAX_CAS_RETRIES, |current, next| {
        let bits = chunk_bits(current, len);
        if bits
            .and_then(|b| b.get(byte))
            .is_some_and(|b| b & mask != 0)
        {
            return (false, ());
        }
        next.push(VERSION);
        match bits {
            Some(b) => next.extend_from_slice(b),
            None => next.resize(len + 1, 0),
        }
        if let Some(b) = next.get_mut(byte + 1) {
            *b |= mask;
        }
        (true, ())
    });
}

/// Adds one admitted request's usage to its service's pending batch.
pub fn add_usage(
    service: &Service,
    credentials: &Credentials<'_>,
    usage: &[(MetricIndex, i64)],
    effects: Effects<'_>,
) -> AddOutcome {
    let result = match service.cache().batching() {
        // The flow only batches for services that do; nothing to add to otherwise.
        None => Err(DropReason::NotBatched),
        Some(policy) => {
            let mut named: Vec<(&[u8], u64)> = Vec::with_capacity(usage.len());
            for &(metric, delta) in usage {
                let name = service.metric_name(metric).as_bytes();
                let Ok(delta) = u64::try_from(delta) else {
                    continue;
                };
                if delta == 0 || name.is_empty() {
                    continue;
                }
                match named.binary_search_by(|(n, _)| (*n).cmp(name)) {
                    Ok(at) => {
                        if let Some((_, sum)) = named.get_mut(at) {
                            *sum = sum.saturating_add(delta);
                        }
                    }
                    Err(at) => named.insert(at, (name, delta)),
                }
            }
            let (kind, value) = Kind::of(credentials);
            add(
                effects.store,
                policy,
                service.cache().seed(),
                kind,
                value,
                &named,
            )
        }
    };
    match result {
        Ok(()) => {
            effects.counters.batch(BatchEvent::Queued, 1);
            AddOutcome::Queued
        }
        Err(reason) => {
            dropped(service.id(), reason, 1, effects);
            AddOutcome::Dropped
        }
    }
}

// ---------------------------------------------------------------------------------------
// Logging drops: one line a second at most, saying how many there were.

thread_local! {
    /// This VM's drops not logged yet, and when the last line was written (`None`: never).
    static DROPS: Cell<(u64, Option<u64>)> = const { Cell::new((0, None)) };
}

/// Counts `n` requests' (or transactions') usage dropped and logs it, rate-limited.
fn dropped(service_id: &str, reason: DropReason, n: u64, effects: Effects<'_>) {
    effects.counters.batch(BatchEvent::Dropped, n);
    let now = effects.clock.now().as_nanos();
    let (pending, last) = DROPS.get();
    let pending = pending.saturating_add(n);
    if last.is_some_and(|at| now < at.saturating_add(DROP_LOG_EVERY_NS)) {
        DROPS.set((pending, last));
        return;
    }
    DROPS.set((0, Some(now)));
    effects.log.log(
        Level::Warn,
        format_args!(
            "batching: {pending} request(s)' usage dropped (service {service_id}: {})",
            reason.describe()
        ),
    );
}

/// The drops not logged yet, once their second is over.
fn log_pending_drops(effects: Effects<'_>) {
    let now = effects.clock.now().as_nanos();
    let (pending, last) = DROPS.get();
    if pending == 0 || last.is_some_and(|at| now < at.saturating_add(DROP_LOG_EVERY_NS)) {
        return;
    }
    DROPS.set((0, Some(now)));
    effects.log.log(
        Level::Warn,
        format_args!("batching: {pending} request(s)' usage dropped since the last line"),
    );
}

#[cfg(test)]
pub(super) fn reset_drop_log() {
    DROPS.set((0, None));
}

/// The tick period a configuration needs: `None` when no service batches. Intervals are
/// whole seconds, so a tick a second flushes each on time (within a tick).
pub fn tick_period_ms(model: &Compiled) -> Option<u32> {
    model
        .services()
        .iter()
        .any(|s| s.cache().batching().is_some())
        .then_some(1000)
}

// ---------------------------------------------------------------------------------------
// The flusher.

/// One VM's part in electing the flusher, and the flushes it has out.
#[derive(Debug, Default)]
pub struct Flusher {
    /// This VM's id, once the shared counter gave it one.
    id: Option<u32>,
    /// Per service index: where the next sweep starts.
    sweep: Vec<u32>,
}

/// The lease of `model`'s batched services: [`LEASE_KEY`], `|` and a hash of their store
/// prefixes. One lease for every configuration would leave the services of all but the
/// holder's unreported when an Envoy runs two (two listeners, or the old and new one during
/// a reload); a service two configurations share is still reported once an interval, as
/// its schedule decides. A configuration change makes a new key (as it makes new slots when
/// a prefix changes): keys grow with reloads, not with traffic.
pub fn lease_key(model: &Compiled, out: &mut Vec<u8>) {
    let prefixes = model
        .services()
        .iter()
        .filter_map(|s| s.cache().batching().map(|b| b.store_prefix()));
    let mut hasher = foldhash::fast::FixedState::with_seed(0x006c_6561_7365).build_hasher();
    for prefix in prefixes {
        std::hash::Hash::hash(prefix, &mut hasher);
    }
    let hash = std::hash::Hasher::finish(&hasher);
    out.clear();
    out.extend_from_slice(LEASE_KEY);
    let _ = write!(ByteWriter(out), "|{hash:016x}");
}

/// Formats into a byte buffer.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `[VERSION][a u32][b u64]`, the shape of the lease, the schedule and the VM counter.
fn decode_pair(bytes: Option<&[u8]>) -> Option<(u32, u64)> {
    let (&version, rest) = bytes?.split_first()?;
    if version != VERSION || rest.len() != 12 {
        return None;
    }
    let (a, rest) = read_u32(rest)?;
    let (b, _) = read_u64(rest)?;
    Some((a, b))
}

fn encode_pair(a: u32, b: u64, out: &mut Vec<u8>) {
    out.clear();
    out.push(VERSION);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
}

impl Flusher {
    /// This VM's id: the shared counter, incremented once.
    fn id(&mut self, store: &dyn SharedStore) -> Option<u32> {
        if self.id.is_none() {
            let taken = update(store, VM_ID_KEY, MAX_CAS_RETRIES, |current, next| {
                // An undecodable counter restarts, and an id may then be handed out twice:
                // two VMs would both hold the lease, and the schedule still lets only one
                // of them flush an interval.
                let last = decode_pair(current).map_or(0, |(last, _)| last);
                let id = last.checked_add(1).unwrap_or(1);
                encode_pair(id, 0, next);
                (true, id)
            });
            if let Ok(Updated::Written(id)) = taken {
                self.id = Some(id);
            }
        }
        self.id
    }

    /// Takes or renews the lease; whether this VM holds it now.
    fn lease(
        &mut self,
        model: &Compiled,
        me: u32,
        now: u64,
        lease_ns: u64,
        effects: Effects<'_>,
    ) -> bool {
        let mut key = Vec::new();
        lease_key(model, &mut key);
        let taken = update(effects.store, &key, MAX_CAS_RETRIES, |current, next| {
            let held = decode_pair(current);
            if let Some((holder, expires)) = held {
                if holder != me && now < expires {
                    return (false, false);
                }
            }
            encode_pair(me, now.saturating_add(lease_ns), next);
            (true, held.is_none_or(|(holder, _)| holder != me))
        });
        match taken {
            Ok(Updated::Written(changed)) => {
                if changed {
                    effects.counters.batch(BatchEvent::LeaseTaken, 1);
                    effects.log.log(
                        Level::Info,
                        format_args!("batching: this VM (flusher {me}) reports batched usage"),
                    );
                }
                true
            }
            _ => false,
        }
    }

    /// Every tick of the root context.
    pub fn on_tick(&mut self, model: &Compiled, effects: Effects<'_>, outbox: &mut Vec<Outgoing>) {
        log_pending_drops(effects);
        let Some(period_ms) = tick_period_ms(model) else {
            return;
        };
        let Some(me) = self.id(effects.store) else {
            return;
        };
        let now = effects.clock.now().as_nanos();
        let lease_ns = u64::from(period_ms)
            .saturating_mul(NANOS_PER_MILLI)
            .saturating_mul(LEASE_TICKS);
        if !self.lease(model, me, now, lease_ns, effects) {
            return;
        }
        let mut key = Vec::new();
        for service in model.services() {
            let Some(policy) = service.cache().batching() else {
                continue;
            };
            if due(effects.store, policy, now, &mut key) {
                self.flush(service, policy, effects, outbox);
            }
        }
    }

    /// Takes every used slot of `service` and queues its report(s).
    fn flush(
        &mut self,
        service: &Service,
        policy: &BatchPolicy,
        effects: Effects<'_>,
        outbox: &mut Vec<Outgoing>,
    ) {
        let store = effects.store;
        let max = policy.max_pending();
        let mut taken = Vec::new();
        let mut key = Vec::new();
        // The bitmap: clear a chunk's bits first, then take their slots, so a slot that is
        // used again meanwhile sets its bit again and waits for the next flush. A flush costs
        // a read per 4096 slots (a write when bits were set), a read and a write per slot
        // used since the last one, and SWEEP_SLOTS reads: not a read of every slot, which
        // would be `max_pending` (up to 2^20) host calls an interval.
        for chunk in 0..max.div_ceil(BITS_PER_CHUNK) {
            let len = chunk_len(policy, chunk);
            named_key(policy, "used", Some(chunk), &mut key);
            let cleared = update(
                store,
                &key,
                MAX_CAS_RETRIES,
                |current, next| match chunk_bits(current, len) {
                    Some(bits) if bits.iter().any(|&b| b != 0) => {
                        next.push(VERSION);
                        next.resize(len + 1, 0);
                        (true, bits.to_vec())
                    }
                    _ => (false, Vec::new()),
                },
            );
            let Ok(Updated::Written(bits)) = cleared else {
                continue;
            };
            for (i, &byte) in bits.iter().enumerate() {
                for b in 0..8u32 {
                    if byte & (1 << b) == 0 {
                        continue;
                    }
                    let Ok(i) = u32::try_from(i) else { continue };
                    let slot = chunk * BITS_PER_CHUNK + i * 8 + b;
                    if slot < max {
                        take(store, policy, slot, &mut taken);
                    }
                }
            }
        }
        // The sweep: SWEEP_SLOTS more slot reads per flush.
        let at = service.index().as_usize();
        if self.sweep.len() <= at {
            self.sweep.resize(at + 1, 0);
        }
        if let Some(cursor) = self.sweep.get_mut(at) {
            let max = max.max(1);
            for _ in 0..SWEEP_SLOTS.min(max) {
                // A reconfiguration may have shrunk max_pending.
                let slot = *cursor % max;
                take(store, policy, slot, &mut taken);
                *cursor = (slot + 1) % max;
            }
        }
        while !taken.is_empty() {
            let rest = taken.split_off(taken.len().min(MAX_TRANSACTIONS_PER_REPORT));
            let transactions = std::mem::replace(&mut taken, rest);
            let mut body = String::new();
            write_report(service, &transactions, &mut body);
            outbox.push(Outgoing {
                service: service.index(),
                method: CallMethod::Post,
                path: REPORT_PATH.into(),
                body: body.into_bytes(),
                ticket: Ticket::Flush(FlushTicket {
                    service: service.index(),
                    service_id: service.id().into(),
                    transactions,
                }),
            });
        }
    }

    /// The answer to a flush (`status` `None`: no answer).
    pub fn on_flush_answer(
        &mut self,
        model: &Compiled,
        ticket: FlushTicket,
        status: Option<u16>,
        effects: Effects<'_>,
    ) {
        let service = model
            .service(ticket.service)
            .filter(|s| s.id() == &*ticket.service_id);
        let policy = service.and_then(|s| s.cache().batching());
        let mut key = Vec::new();
        if status.is_some_and(|s| (200..300).contains(&s)) {
            effects.counters.batch(BatchEvent::Flushed, 1);
            let n = u64::try_from(ticket.transactions.len()).unwrap_or(u64::MAX);
            effects.counters.batch(BatchEvent::Transactions, n);
            if let Some(policy) = policy {
                reschedule(effects.store, policy, None, &mut key);
            }
            return;
        }
        effects.counters.batch(BatchEvent::FlushFailed, 1);
        effects.log.log(
            Level::Warn,
            format_args!(
                "batching: the report of service {} failed ({}); its usage is queued again",
                ticket.service_id,
                Status(status)
            ),
        );
        let (Some(service), Some(policy)) = (service, policy) else {
            // The service is gone or no longer batches: nowhere to put the usage.
            let n = u64::try_from(ticket.transactions.len()).unwrap_or(u64::MAX);
            if n > 0 {
                dropped(&ticket.service_id, DropReason::NotBatched, n, effects);
            }
            return;
        };
        let seed = service.cache().seed();
        for t in &ticket.transactions {
            let usage: Vec<(&[u8], u64)> = t.usage.iter().map(|(n, s)| (&n[..], *s)).collect();
            if let Err(reason) = add(effects.store, policy, seed, t.kind, &t.value, &usage) {
                dropped(service.id(), reason, 1, effects);
            }
        }
        let now = effects.clock.now().as_nanos();
        reschedule(effects.store, policy, Some(now), &mut key);
    }
}

struct Status(Option<u16>);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(s) => write!(f, "status {s}"),
            None => f.write_str("no answer"),
        }
    }
}

/// Whether `policy`'s service is due now; if so, its schedule has moved one interval on and
/// this caller (the only one whose compare-and-swap won) must flush it. The schedule is
/// `(consecutive failures, next_flush_at)`; the first caller that finds none creates it.
fn due(store: &dyn SharedStore, policy: &BatchPolicy, now: u64, key: &mut Vec<u8>) -> bool {
    named_key(policy, "next", None, key);
    let next_at = now.saturating_add(policy.interval_ns());
    let moved = update(store, key, MAX_CAS_RETRIES, |current, next| {
        match decode_pair(current) {
            Some((failures, at)) if now >= at => {
                encode_pair(failures, next_at, next);
                (true, true)
            }
            Some(_) => (false, false),
            // Missing (or undecodable): the first interval starts now.
            None => {
                encode_pair(0, next_at, next);
                (true, false)
            }
        }
    });
    matches!(moved, Ok(Updated::Written(true)))
}

/// After a report's answer: `failed_at` `None` resets the failure count; otherwise the next
/// flush comes `min(interval, 1 s × 2^failures)` after it, and one more failure is counted.
fn reschedule(
    store: &dyn SharedStore,
    policy: &BatchPolicy,
    failed_at: Option<u64>,
    key: &mut Vec<u8>,
) {
    named_key(policy, "next", None, key);
    let _ = update(store, key, MAX_CAS_RETRIES, |current, next| {
        let (failures, at) = decode_pair(current).unwrap_or((0, 0));
        match failed_at {
            None if failures == 0 => (false, ()),
            None => {
                encode_pair(0, at, next);
                (true, ())
            }
            Some(now) => {
                let backoff = 1u64
                    .checked_shl(failures)
                    .map_or(u64::MAX, |b| b.saturating_mul(NANOS_PER_SECOND))
                    .min(policy.interval_ns());
                encode_pair(
                    failures.saturating_add(1),
                    now.saturating_add(backoff),
                    next,
                );
                (true, ())
            }
        }
    });
}

/// Empties `slot`, keeping what it held in `taken`.
fn take(store: &dyn SharedStore, policy: &BatchPolicy, slot: u32, taken: &mut Vec<Transaction>) {
    let mut key = Vec::new();
    slot_key(policy, slot, &mut key);
    let took = update(
        store,
        &key,
        MAX_CAS_RETRIES,
        |current, next| match decode_slot(current) {
            Slot::Empty => (false, None),
            Slot::Held { kind, value, usage } => {
                next.push(VERSION);
                let usage = metrics(usage)
                    .filter(|&(_, sum)| sum > 0)
                    .map(|(name, sum)| (name.to_vec(), sum))
                    .collect();
                (
                    true,
                    Some(Transaction {
                        kind,
                        value: value.to_vec(),
                        usage,
                    }),
                )
            }
            Slot::Garbage => {
                next.push(VERSION);
                (true, None)
            }
        },
    );
    match took {
        Ok(Updated::Written(Some(t))) if !t.usage.is_empty() => taken.push(t),
        // Still used: set its bit again, so the next flush tries it.
        Err(_) | Ok(Updated::Contended) => mark_used(store, policy, slot),
        Ok(_) => {}
    }
}

/// `service_id=…&service_token=…` then, per transaction `i`,
/// `&transactions%5Bi%5D%5Buser_key%5D=…&transactions%5Bi%5D%5Busage%5D%5B<metric>%5D=<sum>`,
/// every key and value percent-encoded as APIcast's `ngx.encode_args` does.
fn write_report(service: &Service, transactions: &[Transaction], out: &mut String) {
    out.push_str(service.service_params());
    for (i, t) in transactions.iter().enumerate() {
        // Writing into a String cannot fail.
        let _ = write!(out, "&transactions%5B{i}%5D%5B{}%5D=", t.kind.param());
        percent::encode_into(&t.value, out);
        for (name, sum) in &t.usage {
            let _ = write!(out, "&transactions%5B{i}%5D%5Busage%5D%5B");
            percent::encode_into(name, out);
            let _ = write!(out, "%5D={sum}");
        }
    }
}
