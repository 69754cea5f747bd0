//! The local-limits step of a request: after credentials and rules, before any call. Each
//! limiter that counts the request takes its cost from the bucket of the request's key in
//! the shared store, by compare-and-swap; a request one limiter refuses gives back what the
//! earlier ones took, so a refused request costs no limiter anything.

use crate::config::LimiterMode;
use crate::credentials::Credentials;
use crate::index::MetricIndex;
use crate::limits::Check;
use crate::model::limiter::{address_without_port, application_value, LimitKey, Limiter};
use crate::model::Service;
use crate::pairs::HeaderMap;

use super::seams::{Effects, Level, LimitOutcome, SharedStore, Swap, Version, CREATE};

/// How many times a lost compare-and-swap is retried before the request is denied.
pub const MAX_CAS_RETRIES: u32 = 8;

/// What `RateLimit-*` headers say: the tightest limit that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

impl RateInfo {
    /// The tighter of two: fewer requests left.
    pub fn tighter(a: Option<RateInfo>, b: RateInfo) -> RateInfo {
        match a {
            Some(a) if a.remaining <= b.remaining => a,
            _ => b,
        }
    }

    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// The request as the limiters see it.
pub(super) struct LimitInput<'a> {
    pub service: &'a Service,
    pub credentials: Option<&'a Credentials<'a>>,
    pub headers: &'a HeaderMap,
    pub usage: &'a [(MetricIndex, i64)],
}

/// What the limiters decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitVerdict {
    Admitted(Option<RateInfo>),
    Limited {
        /// Whole seconds until the request would be admitted; `None`: never (it costs more
        /// than the limit holds).
        retry_after: Option<u64>,
        status: Option<u16>,
        info: RateInfo,
    },
}

/// Buffers the step reuses across requests, and what this worker learnt about keys that
/// are spent.
#[derive(Debug, Default)]
pub(super) struct LimitBuffers {
    key: Vec<u8>,
    address: Vec<u8>,
    /// `(limiter, slot, cost)` taken so far by this request, to give back on a refusal.
    taken: Vec<(usize, u32, u64)>,
    spent: SpentKeys,
}

/// Keys this worker found spent, and until when at least: a request for one is refused
/// without reading the shared store, as reading it would refuse it too. Only time refills a
/// key; a refund (a refusal by a later limiter) can refill one early, and then this worker
/// refuses a little longer than the store would: stricter, never looser.
///
/// Direct-mapped by the hash of the store key, [`SPENT_ENTRIES`] entries: a fixed size
/// whatever the key space, and a key pushed out is read from the store again.
#[derive(Debug, Default)]
struct SpentKeys {
    /// `(store-key hash, until_nanos)`; empty until the first refusal.
    entries: Vec<(u64, u64)>,
}

/// Entries of a worker's [`SpentKeys`] (16 bytes each).
pub const SPENT_ENTRIES: usize = 1024;

impl SpentKeys {
    fn tag(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        // Never 0, so an empty entry never matches.
        foldhash::fast::FixedState::with_seed(0x0073_7065_6e74).hash_one(key) | 1
    }

    /// Seconds to wait, if `key` is known spent at `now`.
    fn lookup(&self, key: &[u8], now: u64) -> Option<u64> {
        let tag = Self::tag(key);
        let &(found, until) = self.entries.get((tag as usize) % SPENT_ENTRIES)?;
        // `until` is a lower bound of when the store would admit: a second more at most.
        (found == tag && now < until).then(|| (until - now).div_ceil(1_000_000_000) + 1)
    }

    /// `key` was refused at `now`, admitted again in `retry_after_secs` (rounded up).
    fn remember(&mut self, key: &[u8], now: u64, retry_after_secs: u64) {
        if retry_after_secs <= 1 {
            return;
        }
        if self.entries.is_empty() {
            self.entries.resize(SPENT_ENTRIES, (0, 0));
        }
        let tag = Self::tag(key);
        let until = now.saturating_add((retry_after_secs - 1).saturating_mul(1_000_000_000));
        if let Some(entry) = self.entries.get_mut((tag as usize) % SPENT_ENTRIES) {
            *entry = (tag, until);
        }
    }
}

enum Taken {
    Admitted {
        remaining: u64,
        reset_secs: u64,
    },
    Limited {
        retry_after_secs: u64,
    },
    /// Every attempt lost its race, or the store refused.
    Unsettled,
}

pub(super) fn check(
    input: &LimitInput<'_>,
    effects: Effects<'_>,
    buffers: &mut LimitBuffers,
) -> LimitVerdict {
    let service = input.service;
    let now = effects.clock.now().as_nanos();
    let mut tightest: Option<RateInfo> = None;
    buffers.taken.clear();
    for (k, limiter) in service.limiters().iter().enumerate() {
        let Some(cost) = limiter.cost(input.usage) else {
            continue;
        };
        let slot = {
            let value = key_value(limiter, input, effects, &mut buffers.address);
            limiter.slot(value)
        };
        limiter.store_key(slot, &mut buffers.key);
        let taken = match buffers.spent.lookup(&buffers.key, now) {
            Some(retry_after_secs) => Taken::Limited { retry_after_secs },
            None => {
                let taken = take(effects.store, &buffers.key, limiter, now, cost);
                // A request of cost 1 refused: every request for this key is, until then.
                if let Taken::Limited { retry_after_secs } = taken {
                    if cost == 1 && retry_after_secs != u64::MAX {
                        buffers.spent.remember(&buffers.key, now, retry_after_secs);
                    }
                }
                taken
            }
        };
        let capacity = limiter.limit().capacity();
        let report_only = limiter.mode() == LimiterMode::ReportOnly;
        let refused = match taken {
            Taken::Admitted {
                remaining,
                reset_secs,
            } => {
                effects
                    .counters
                    .limiter(service.index(), k, LimitOutcome::Admitted);
                buffers.taken.push((k, slot, cost));
                tightest = Some(RateInfo::tighter(
                    tightest,
                    RateInfo {
                        limit: capacity,
                        remaining,
                        reset_secs,
                    },
                ));
                continue;
            }
            Taken::Limited { .. } if report_only => {
                effects
                    .counters
                    .limiter(service.index(), k, LimitOutcome::ReportOnly);
                continue;
            }
            Taken::Limited { retry_after_secs } => {
                effects
                    .counters
                    .limiter(service.index(), k, LimitOutcome::Limited);
                (retry_after_secs != u64::MAX).then_some(retry_after_secs)
            }
            Taken::Unsettled => {
                effects
                    .counters
                    .limiter(service.index(), k, LimitOutcome::Contended);
                effects.log.log(
                    Level::Warn,
                    format_args!(
                        "limiter {} of service {}: the shared bucket could not be updated",
                        limiter.name(),
                        service.id()
                    ),
                );
                if report_only {
                    continue;
                }
                Some(1)
            }
        };
        give_back(input, effects, buffers, now);
        return LimitVerdict::Limited {
            retry_after: refused,
            status: limiter.status(),
            info: RateInfo {
                limit: capacity,
                remaining: 0,
                reset_secs: refused.unwrap_or(0),
            },
        };
    }
    LimitVerdict::Admitted(tightest)
}

/// The request's value for a limiter's key.
fn key_value<'a>(
    limiter: &Limiter,
    input: &LimitInput<'a>,
    effects: Effects<'_>,
    address: &'a mut Vec<u8>,
) -> &'a [u8] {
    match limiter.key() {
        LimitKey::Service => b"",
        LimitKey::Application => application_value(input.credentials),
        LimitKey::Header(name) => input
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map_or(&b""[..], |(_, v)| v),
        LimitKey::ClientAddress => {
            address.clear();
            if !effects.peer.client_address(address) {
                address.clear();
            }
            address_without_port(address)
        }
    }
}

/// Takes `cost` from the bucket at `key`, retrying lost races a bounded number of times.
fn take(store: &dyn SharedStore, key: &[u8], limiter: &Limiter, now: u64, cost: u64) -> Taken {
    for _ in 0..=MAX_CAS_RETRIES {
        let Ok(current) = store.get(key) else {
            return Taken::Unsettled;
        };
        let (stored, expected) = match &current {
            Some(s) => (Some(s.value.as_slice()), s.version),
            None => (None, CREATE),
        };
        match limiter.limit().check(stored, now, cost) {
            Check::Limited { retry_after_secs } => return Taken::Limited { retry_after_secs },
            Check::Admitted {
                state,
                remaining,
                reset_secs,
            } => match store.compare_and_swap(key, state.as_bytes(), Some(expected)) {
                Ok(Swap::Done) => {
                    return Taken::Admitted {
                        remaining,
                        reset_secs,
                    }
                }
                Ok(Swap::Lost) => continue,
                Err(_) => return Taken::Unsettled,
            },
        }
    }
    Taken::Unsettled
}

/// Gives back what this request took from earlier limiters. Best effort: a refund that loses
/// every race leaves the bucket stricter, never looser.
fn give_back(input: &LimitInput<'_>, effects: Effects<'_>, buffers: &mut LimitBuffers, now: u64) {
    let limiters = input.service.limiters();
    for &(k, slot, cost) in &buffers.taken {
        let Some(limiter) = limiters.get(k) else {
            continue;
        };
        limiter.store_key(slot, &mut buffers.key);
        for _ in 0..=MAX_CAS_RETRIES {
            let Ok(Some(current)) = effects.store.get(&buffers.key) else {
                break;
            };
            let Some(state) = limiter.limit().refund(&current.value, now, cost) else {
                break;
            };
            let version: Version = current.version;
            match effects
                .store
                .compare_and_swap(&buffers.key, state.as_bytes(), Some(version))
            {
                Ok(Swap::Lost) => continue,
                Ok(Swap::Done) | Err(_) => break,
            }
        }
    }
    buffers.taken.clear();
}
