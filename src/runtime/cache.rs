//! The authorization cache: the control service's answers kept in the shared store per
//! (service, credentials, usage), for every worker of the gateway, and what a worker keeps
//! of its own: the calls its concurrent misses share, and the usage of cached requests
//! still to report.
//!
//! Entries live in `max_keys` slots per service; a key may use either of two slots. Envoy's
//! shared data has no delete: an evicted entry is overwritten with an empty value. A denial
//! takes a slot only from an empty, expired or denied entry, so a flood of bad credentials
//! never displaces an authorization (nor, in `resilient` and `allow`, an expired one: it is
//! what an outage falls back on); an authorization displaces the one of its two slots that
//! expires first.

use std::hash::BuildHasher;

use hashbrown::HashMap;

use crate::backend::answer::ControlAnswer;
use crate::config::CacheMode;
use crate::credentials::Credentials;
use crate::index::{MetricIndex, ServiceIndex};
use crate::model::cache::CachePolicy;
use crate::model::Service;

use super::seams::{CacheEvent, Effects, Level, Swap, Version, CREATE};

/// Keys longer than this are not cached: their requests wait, as without a cache. Bounds an
/// entry (and so the store) whatever the client sends.
pub const MAX_KEY_BYTES: usize = 2048;
/// Cached requests' usage waiting for a report, per worker: keys at most.
pub const MAX_PENDING_REPORTS: usize = 1024;
/// A report that failed is tried again after this long at first, doubling up to the maximum.
const RETRY_FIRST_NS: u64 = 1_000_000_000;
const RETRY_MAX_NS: u64 = 30_000_000_000;

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 8 + 2;

/// What an entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Authorized,
    Denied,
    /// Refused for limits; admitted again from `until` (the period's reset).
    LimitsExceeded,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Authorized => 1,
            Kind::Denied => 2,
            Kind::LimitsExceeded => 3,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        match c {
            1 => Some(Kind::Authorized),
            2 => Some(Kind::Denied),
            3 => Some(Kind::LimitsExceeded),
            _ => None,
        }
    }
}

/// One cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Fresh until then (ns); after, only a failure of the control service falls back to it.
    pub fresh_until: u64,
    /// For limits: when the period resets (ns), 0 when unknown.
    pub reset_at: u64,
}

impl Entry {
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.fresh_until
    }
}

/// A decoded slot: whose key, what entry. `None` entry: empty or evicted.
struct Slot<'v> {
    key: &'v [u8],
    entry: Option<Entry>,
}

fn decode(value: &[u8]) -> Option<Slot<'_>> {
    let (head, key) = value.split_at_checked(HEADER)?;
    let [format, kind, rest @ ..] = head else {
        return None;
    };
    if *format != FORMAT {
        return None;
    }
    let fresh_until = u64::from_le_bytes(rest.get(0..8)?.try_into().ok()?);
    let reset_at = u64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    let len = usize::from(u16::from_le_bytes(rest.get(16..18)?.try_into().ok()?));
    if key.len() != len {
        return None;
    }
    Some(Slot {
        key,
        entry: Kind::from_code(*kind).map(|kind| Entry {
            kind,
            fresh_until,
            reset_at,
        }),
    })
}

fn encode(key: &[u8], entry: Option<Entry>, out: &mut Vec<u8>) {
    out.clear();
    out.push(FORMAT);
    let Some(e) = entry else {
        // Evicted: an empty slot, nobody's key.
        out.push(0);
        out.extend_from_slice(&[0; 18]);
        return;
    };
    out.push(e.kind.code());
    out.extend_from_slice(&e.fresh_until.to_le_bytes());
    out.extend_from_slice(&e.reset_at.to_le_bytes());
    let len = u16::try_from(key.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key.get(..usize::from(len)).unwrap_or_default());
}

/// Writes the cache key of a request: the service, every credential and the usage, each
/// length-prefixed so no two requests share one. `false`: too long to cache.
pub fn write_key(
    service: &Service,
    credentials: &Credentials<'_>,
    usage: &[(MetricIndex, i64)],
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    out.extend_from_slice(&(service.index().as_usize() as u32).to_le_bytes());
    for (name, value) in credentials.params() {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        if out.len() > MAX_KEY_BYTES {
            return false;
        }
    }
    out.push(0);
    for (metric, delta) in usage {
        out.extend_from_slice(&(metric.as_usize() as u32).to_le_bytes());
        out.extend_from_slice(&delta.to_le_bytes());
    }
    out.len() <= MAX_KEY_BYTES
}

/// The hash of a key, seeded with the service's secret.
pub fn key_hash(policy: &CachePolicy, key: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(policy.seed()).hash_one(key)
}

/// The two slots a key may use.
fn slots(policy: &CachePolicy, hash: u64) -> [u32; 2] {
    let n = u64::from(policy.max_keys().max(1));
    let a = hash % n;
    let b = (hash.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15) % n;
    // Both fit: n is a u32.
    [a as u32, b as u32]
}

fn store_key(policy: &CachePolicy, slot: u32, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(policy.store_prefix().as_bytes());
    let _ = write!(out, "{slot}");
}

/// Reusable buffers of the cache's store calls.
#[derive(Debug, Default)]
pub struct CacheBuffers {
    store_key: Vec<u8>,
    value: Vec<u8>,
}

/// Looks `key` up; `None`: not cached (or unreadable).
pub fn lookup(
    policy: &CachePolicy,
    effects: Effects<'_>,
    key: &[u8],
    hash: u64,
    buffers: &mut CacheBuffers,
) -> Option<Entry> {
    for slot in slots(policy, hash) {
        store_key(policy, slot, &mut buffers.store_key);
        let stored = match effects.store.get(&buffers.store_key) {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(e) => {
                refused(effects, e);
                continue;
            }
        };
        if let Some(found) = decode(&stored.value) {
            if found.key == key {
                return found.entry;
            }
        }
    }
    None
}

/// How much a slot's current content is worth keeping, lowest first. `stale_stands`: the
/// mode falls back on the last answer during an outage, so an expired authorization is
/// worth a live one (a flood of bad keys must not take it away from its client).
fn rank(slot: Option<&Slot<'_>>, now: u64, stale_stands: bool) -> u8 {
    match slot.and_then(|s| s.entry) {
        None => 0,
        Some(e) if !e.is_fresh(now) && e.kind != Kind::Authorized => 1,
        Some(e) if !e.is_fresh(now) && !stale_stands => 2,
        Some(e) if e.kind != Kind::Authorized => 3,
        Some(_) => AUTHORIZATION_RANK,
    }
}

/// The rank of an authorization a denial may not displace (live, or the fallback of
/// `resilient` and `allow`).
const AUTHORIZATION_RANK: u8 = 4;

/// Stores `entry` for `key` (`None`: evicts it). Best effort: a lost race leaves the other
/// worker's write, which is as recent.
pub fn store(
    policy: &CachePolicy,
    effects: Effects<'_>,
    key: &[u8],
    hash: u64,
    entry: Option<Entry>,
    now: u64,
    buffers: &mut CacheBuffers,
) {
    // (slot, version, rank, fresh_until) of the best candidate; `own`: the key's own slot.
    let mut best: Option<(u32, Version, u8, u64)> = None;
    let mut own = None;
    let stale_stands = matches!(policy.mode(), CacheMode::Resilient | CacheMode::Allow);
    for slot in slots(policy, hash) {
        store_key(policy, slot, &mut buffers.store_key);
        let stored = match effects.store.get(&buffers.store_key) {
            Ok(stored) => stored,
            Err(e) => return refused(effects, e),
        };
        let version = stored.as_ref().map_or(CREATE, |s| s.version);
        let decoded = stored.as_ref().and_then(|s| decode(&s.value));
        if decoded.as_ref().is_some_and(|d| d.key == key) {
            own = Some((slot, version));
            break;
        }
        // Unreadable bytes are nobody's entry: rank 0.
        let r = rank(decoded.as_ref(), now, stale_stands);
        let until = decoded
            .as_ref()
            .and_then(|d| d.entry)
            .map_or(0, |e| e.fresh_until);
        if best.is_none_or(|(_, _, br, bu)| r < br || (r == br && until < bu)) {
            best = Some((slot, version, r, until));
        }
    }
    let (slot, version) = match (own, best, entry) {
        (Some(own), _, _) => own,
        // Nothing of this key's to evict.
        (None, _, None) => return,
        // A denial never displaces a live authorization.
        (None, Some((_, _, AUTHORIZATION_RANK, _)), Some(e)) if e.kind != Kind::Authorized => {
            return
        }
        (None, Some((slot, version, _, _)), Some(_)) => (slot, version),
        (None, None, Some(_)) => return,
    };
    store_key(policy, slot, &mut buffers.store_key);
    encode(key, entry, &mut buffers.value);
    match effects
        .store
        .compare_and_swap(&buffers.store_key, &buffers.value, Some(version))
    {
        // Lost: another worker wrote the slot meanwhile, with an answer as recent.
        Ok(Swap::Done | Swap::Lost) => {}
        Err(e) => refused(effects, e),
    }
}

/// The store refused a call: the cache is skipped (the request waits, or its answer is not
/// kept), never the request.
fn refused(effects: Effects<'_>, e: super::seams::StoreError) {
    effects.log.log(
        Level::Warn,
        format_args!("the authorization cache is unavailable: {e}"),
    );
}

/// What the answer to a key's call means for every request waiting on it, once the cache
/// has taken it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub answer: ControlAnswer,
    /// The request goes on without the control service's word (a failure, in `resilient` or
    /// `allow`): its usage still has to be reported.
    pub unreported: bool,
    pub event: CacheEvent,
}

/// Applies an answer for `key` to the cache as the service's mode says, and returns what
/// it means for the requests that waited on it.
pub fn settle(
    service: &Service,
    effects: Effects<'_>,
    key: &[u8],
    hash: u64,
    answer: ControlAnswer,
    buffers: &mut CacheBuffers,
) -> Settled {
    let policy = service.cache();
    let now = effects.clock.now().as_nanos();
    let fresh = |ttl: u64| now.saturating_add(ttl);
    let miss = |answer| Settled {
        answer,
        unreported: false,
        event: CacheEvent::Miss,
    };
    match answer {
        ControlAnswer::Authorized => {
            let e = Entry {
                kind: Kind::Authorized,
                fresh_until: fresh(policy.ttl_ns()),
                reset_at: 0,
            };
            store(policy, effects, key, hash, Some(e), now, buffers);
            miss(answer)
        }
        ControlAnswer::Denied | ControlAnswer::LimitsExceeded { .. } => {
            let (kind, reset_at) = match answer {
                ControlAnswer::LimitsExceeded {
                    retry_after: Some(s),
                } => (
                    Kind::LimitsExceeded,
                    now.saturating_add(s.saturating_mul(1_000_000_000)),
                ),
                ControlAnswer::LimitsExceeded { retry_after: None } => (Kind::LimitsExceeded, 0),
                _ => (Kind::Denied, 0),
            };
            let ttl = policy.denied_ttl_ns();
            let resilient = matches!(policy.mode(), CacheMode::Resilient | CacheMode::Allow);
            if ttl == 0 && !resilient {
                store(policy, effects, key, hash, None, now, buffers);
            } else {
                let mut until = fresh(ttl);
                if reset_at > now {
                    until = until.min(reset_at);
                }
                let e = Entry {
                    kind,
                    fresh_until: until,
                    reset_at,
                };
                store(policy, effects, key, hash, Some(e), now, buffers);
            }
            miss(answer)
        }
        ControlAnswer::Unavailable => {
            let last = lookup(policy, effects, key, hash, buffers);
            match (policy.mode(), last) {
                (CacheMode::Resilient | CacheMode::Allow, Some(e)) => Settled {
                    answer: match e.kind {
                        Kind::Authorized => ControlAnswer::Authorized,
                        Kind::Denied => ControlAnswer::Denied,
                        Kind::LimitsExceeded => ControlAnswer::LimitsExceeded {
                            retry_after: retry_after(e, now),
                        },
                    },
                    unreported: e.kind == Kind::Authorized,
                    event: CacheEvent::Stale,
                },
                (CacheMode::Allow, None) => {
                    // APIcast's `add(key, 200)`: admitted until the control service says
                    // otherwise.
                    let e = Entry {
                        kind: Kind::Authorized,
                        fresh_until: fresh(policy.ttl_ns()),
                        reset_at: 0,
                    };
                    store(policy, effects, key, hash, Some(e), now, buffers);
                    Settled {
                        answer: ControlAnswer::Authorized,
                        unreported: true,
                        event: CacheEvent::Assumed,
                    }
                }
                (CacheMode::Strict | CacheMode::None, _) | (CacheMode::Resilient, None) => {
                    if policy.mode() == CacheMode::Strict {
                        store(policy, effects, key, hash, None, now, buffers);
                    }
                    miss(answer)
                }
            }
        }
    }
}

/// Whole seconds until a limits entry's period resets (`None`: unknown).
pub fn retry_after(e: Entry, now: u64) -> Option<u64> {
    (e.reset_at > now).then(|| (e.reset_at - now).div_ceil(1_000_000_000))
}

/// The key a worker's concurrent misses share one call on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlightKey {
    /// The configuration's [`super::Runtime::id`]: a VM may serve several.
    pub(crate) runtime: u64,
    pub(crate) service: ServiceIndex,
    pub(crate) hash: u64,
}

/// A call out for a key, and the key itself (two keys of one hash never share a call).
#[derive(Debug)]
struct Flight {
    key: Box<[u8]>,
}

/// The calls this worker's misses wait on.
#[derive(Debug, Default)]
pub struct Flights {
    out: HashMap<FlightKey, Flight>,
}

/// Whether a miss makes the call or waits for one already out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Leader,
    Follower,
    /// Another key of the same hash has a call out: this request calls on its own.
    Collision,
}

impl Flights {
    pub fn join(&mut self, flight: FlightKey, key: &[u8]) -> Joined {
        match self.out.get(&flight) {
            Some(f) if &*f.key == key => Joined::Follower,
            Some(_) => Joined::Collision,
            None => {
                self.out.insert(flight, Flight { key: key.into() });
                Joined::Leader
            }
        }
    }

    /// The call for `flight` answered: its key, to settle.
    pub fn land(&mut self, flight: FlightKey) -> Option<Box<[u8]>> {
        self.out.remove(&flight).map(|f| f.key)
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

/// What the answer to a background authrep updates and, if it fails, reports again.
#[derive(Debug)]
pub struct ReportTicket {
    pub(crate) runtime: u64,
    pub(crate) service: ServiceIndex,
    pub(crate) hash: u64,
    pub(crate) key: Box<[u8]>,
    pub(crate) credentials: Credentials<'static>,
    pub(crate) usage: Vec<(MetricIndex, i64)>,
}

/// Usage of cached requests this worker still has to report, per key: summed while a
/// report for the key is out (coalescing), or after a report failed (retries).
#[derive(Debug, Default)]
pub struct Reports {
    /// By configuration ([`super::Runtime::id`]), service and key hash.
    pending: HashMap<(u64, ServiceIndex, u64), Pending>,
}

#[derive(Debug)]
struct Pending {
    key: Box<[u8]>,
    credentials: Credentials<'static>,
    usage: Vec<(MetricIndex, i64)>,
    in_flight: bool,
    /// When a failed report may go again (ns); 0: at once.
    retry_at: u64,
    failures: u32,
}

fn add_usage(into: &mut Vec<(MetricIndex, i64)>, usage: &[(MetricIndex, i64)]) {
    for &(m, d) in usage {
        match into.iter_mut().find(|(n, _)| *n == m) {
            Some((_, sum)) => *sum = sum.saturating_add(d),
            None => into.push((m, d)),
        }
    }
    into.sort_by_key(|(m, _)| *m);
}

/// What to do with a cached request's usage.
#[derive(Debug)]
pub enum ReportPlan {
    /// Send this authrep now.
    Send(ReportTicket),
    /// Summed into a report already queued or out.
    Coalesced,
    /// No room to keep it: counted and logged.
    Dropped,
}

impl Reports {
    /// A cached request's usage: sent at once, or (coalescing, with a report for the key out)
    /// summed into the next.
    pub fn offer(
        &mut self,
        runtime: u64,
        service: &Service,
        hash: u64,
        key: &[u8],
        credentials: &Credentials<'_>,
        usage: &[(MetricIndex, i64)],
    ) -> ReportPlan {
        let at = (runtime, service.index(), hash);
        if let Some(p) = self.pending.get_mut(&at).filter(|p| &*p.key == key) {
            if p.in_flight || p.retry_at > 0 || service.cache().coalesces() {
                add_usage(&mut p.usage, usage);
                return ReportPlan::Coalesced;
            }
        }
        if service.cache().coalesces() {
            if self.pending.len() >= MAX_PENDING_REPORTS && !self.pending.contains_key(&at) {
                // Full: report this one on its own, uncoalesced.
                return ReportPlan::Send(ticket(runtime, service, hash, key, credentials, usage));
            }
            if self.pending.get(&at).is_some_and(|p| &*p.key != key) {
                return ReportPlan::Send(ticket(runtime, service, hash, key, credentials, usage));
            }
            self.pending.insert(
                at,
                Pending {
                    key: key.into(),
                    credentials: credentials.clone().into_owned(),
                    usage: Vec::new(),
                    in_flight: true,
                    retry_at: 0,
                    failures: 0,
                },
            );
        }
        ReportPlan::Send(ticket(runtime, service, hash, key, credentials, usage))
    }

    /// A report for `ticket`'s key answered (`ok`: the control service took it). Returns the
    /// next report to send for the key at once, if usage waits and the answer allows it.
    pub fn answered(
        &mut self,
        service: &Service,
        ticket: ReportTicket,
        ok: bool,
        now: u64,
    ) -> Result<Option<ReportTicket>, ReportTicket> {
        let at = (ticket.runtime, ticket.service, ticket.hash);
        if !ok {
            // Keep its usage for a retry, summed with what waits.
            let full = self.pending.len() >= MAX_PENDING_REPORTS;
            match self.pending.get_mut(&at) {
                Some(p) if p.key == ticket.key => {
                    add_usage(&mut p.usage, &ticket.usage);
                    p.in_flight = false;
                    p.failures = p.failures.saturating_add(1);
                    p.retry_at = now.saturating_add(backoff(p.failures));
                }
                Some(_) => return Err(ticket),
                None if full => return Err(ticket),
                None => {
                    self.pending.insert(
                        at,
                        Pending {
                            key: ticket.key,
                            credentials: ticket.credentials,
                            usage: ticket.usage,
                            in_flight: false,
                            failures: 1,
                            retry_at: now.saturating_add(backoff(1)),
                        },
                    );
                }
            }
            return Ok(None);
        }
        let Some(p) = self.pending.get_mut(&at).filter(|p| p.key == ticket.key) else {
            return Ok(None);
        };
        p.failures = 0;
        p.retry_at = 0;
        if p.usage.is_empty() {
            self.pending.remove(&at);
            return Ok(None);
        }
        p.in_flight = true;
        let usage = std::mem::take(&mut p.usage);
        Ok(Some(ReportTicket {
            runtime: ticket.runtime,
            service: service.index(),
            hash: ticket.hash,
            key: ticket.key,
            credentials: p.credentials.clone(),
            usage,
        }))
    }

    /// The configuration `runtime`'s reports whose retry is due.
    pub fn due(&mut self, now: u64, runtime: u64, out: &mut Vec<ReportTicket>) {
        for (&(of, service, hash), p) in self.pending.iter_mut() {
            if of != runtime
                || p.in_flight
                || p.retry_at == 0
                || p.retry_at > now
                || p.usage.is_empty()
            {
                continue;
            }
            p.in_flight = true;
            out.push(ReportTicket {
                runtime,
                service,
                hash,
                key: p.key.clone(),
                credentials: p.credentials.clone(),
                usage: std::mem::take(&mut p.usage),
            });
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn backoff(failures: u32) -> u64 {
    RETRY_FIRST_NS
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX_NS)
}

fn ticket(
    runtime: u64,
    service: &Service,
    hash: u64,
    key: &[u8],
    credentials: &Credentials<'_>,
    usage: &[(MetricIndex, i64)],
) -> ReportTicket {
    ReportTicket {
        runtime,
        service: service.index(),
        hash,
        key: key.into(),
        credentials: credentials.clone().into_owned(),
        usage: usage.to_vec(),
    }
}

/// Logs a dropped report without its credentials.
pub fn log_dropped(service: &Service, effects: Effects<'_>) {
    effects.log.log(
        Level::Warn,
        format_args!(
            "service {}: a cached request's usage could not be kept for a report (at most {MAX_PENDING_REPORTS} keys wait per worker); it is not reported",
            service.id()
        ),
    );
}

/// Slots of a worker's [`Memo`].
const MEMO_SLOTS: u64 = 1024;

/// Answers a worker read from the store for batched services, kept until they expire. With
/// batching an entry changes only once it has expired (no background answer refreshes or
/// evicts it), so reusing what was read saves a store read per request and changes no answer.
/// Direct-mapped: a key pushed out is read from the store again.
#[derive(Debug, Default)]
pub struct Memo {
    slots: Vec<Option<Memoized>>,
}

#[derive(Debug)]
struct Memoized {
    runtime: u64,
    service: ServiceIndex,
    hash: u64,
    key: Box<[u8]>,
    entry: Entry,
}

impl Memo {
    fn slot(hash: u64) -> usize {
        // Below MEMO_SLOTS, which fits.
        (hash % MEMO_SLOTS) as usize
    }

    /// The fresh answer remembered for `key`, if any.
    pub fn get(
        &self,
        (runtime, service): (u64, ServiceIndex),
        hash: u64,
        key: &[u8],
        now: u64,
    ) -> Option<Entry> {
        let m = self.slots.get(Self::slot(hash))?.as_ref()?;
        let same = m.runtime == runtime && m.service == service && m.hash == hash;
        (same && &*m.key == key && m.entry.is_fresh(now)).then_some(m.entry)
    }

    /// Remembers a fresh answer read for `key`.
    pub fn put(
        &mut self,
        (runtime, service): (u64, ServiceIndex),
        hash: u64,
        key: &[u8],
        entry: Entry,
    ) {
        if self.slots.is_empty() {
            self.slots.resize_with(MEMO_SLOTS as usize, || None);
        }
        let Some(slot) = self.slots.get_mut(Self::slot(hash)) else {
            return;
        };
        match slot {
            Some(m)
                if m.runtime == runtime
                    && m.service == service
                    && m.hash == hash
                    && &*m.key == key =>
            {
                m.entry = entry
            }
            _ => {
                *slot = Some(Memoized {
                    runtime,
                    service,
                    hash,
                    key: key.into(),
                    entry,
                })
            }
        }
    }
}
