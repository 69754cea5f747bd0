//! The arithmetic of local limits (issue 10): token buckets and clock-aligned fixed windows,
//! in integers, with time as an argument. A limiter's state is a few bytes a shared store
//! keeps; this module only says what a check does to it. No I/O, no clock, no allocation.
//!
//! Exactness: a bucket holds its level in units of 1/`period_nanos` of a token, so a refill of
//! `rate` tokens per period adds exactly `rate` units per nanosecond and no rounding ever
//! admits more than the configuration allows.

/// How many tokens a bucket refills per period, and how many it holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens added per `period_nanos` (at least 1).
    rate: u64,
    /// The period of `rate`, in nanoseconds (at least 1).
    period_nanos: u64,
    /// The most tokens the bucket holds, and what a new key starts with.
    burst: u64,
}

/// `count` requests per window of `window_nanos`, windows aligned to the clock's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    count: u64,
    window_nanos: u64,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check<S> {
    /// Admitted: store `state`; `remaining` whole requests of cost 1 are left now, and the
    /// limit is whole again in `reset_secs` (a bucket full, a window over).
    Admitted {
        state: S,
        remaining: u64,
        reset_secs: u64,
    },
    /// Over the limit: the state is unchanged; the same request would be admitted after
    /// `retry_after_secs` whole seconds (rounded up; `u64::MAX` if never, a cost over the
    /// limit's capacity).
    Limited { retry_after_secs: u64 },
}

/// A bucket's stored state: its level (in 1/period units of a token) at `at_nanos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    level: u128,
    at_nanos: u64,
}

/// A window's stored state: which window it counts, and how much it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    window: u64,
    used: u64,
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

fn ceil_div(a: u128, b: u128) -> u128 {
    // b > 0 by construction of every limiter.
    a.div_ceil(b.max(1))
}

fn secs_rounded_up(nanos: u128) -> u64 {
    u64::try_from(ceil_div(nanos, u128::from(NANOS_PER_SEC))).unwrap_or(u64::MAX)
}

impl TokenBucket {
    /// `None` when a value is zero: a rate of nothing, or an empty bucket, limits nothing
    /// sensibly and is a configuration error.
    pub fn new(rate: u64, period_nanos: u64, burst: u64) -> Option<Self> {
        (rate > 0 && period_nanos > 0 && burst > 0).then_some(Self {
            rate,
            period_nanos,
            burst,
        })
    }

    fn units(&self, tokens: u64) -> u128 {
        u128::from(tokens) * u128::from(self.period_nanos)
    }

    /// A key seen for the first time: a full bucket.
    pub fn fresh(&self, now_nanos: u64) -> BucketState {
        BucketState {
            level: self.units(self.burst),
            at_nanos: now_nanos,
        }
    }

    /// The level at `now`: refilled for the time since the state was written, never past the
    /// burst. A clock that went backwards refills nothing (and does not move `at` back, so
    /// the time is not counted twice when it comes forward again).
    fn level_at(&self, state: BucketState, now_nanos: u64) -> BucketState {
        let full = self.units(self.burst);
        if now_nanos <= state.at_nanos {
            return BucketState {
                level: state.level.min(full),
                at_nanos: state.at_nanos,
            };
        }
        let elapsed = u128::from(now_nanos - state.at_nanos);
        let refill = elapsed.saturating_mul(u128::from(self.rate));
        BucketState {
            level: state.level.saturating_add(refill).min(full),
            at_nanos: now_nanos,
        }
    }

    /// Takes `cost` tokens from `state` (or a full bucket when the key is new) at `now`.
    pub fn check(
        &self,
        state: Option<BucketState>,
        now_nanos: u64,
        cost: u64,
    ) -> Check<BucketState> {
        let current = self.level_at(state.unwrap_or_else(|| self.fresh(now_nanos)), now_nanos);
        let needed = self.units(cost);
        if current.level >= needed {
            let level = current.level - needed;
            let missing = self.units(self.burst).saturating_sub(level);
            return Check::Admitted {
                state: BucketState {
                    level,
                    at_nanos: current.at_nanos,
                },
                remaining: u64::try_from(level / u128::from(self.period_nanos)).unwrap_or(u64::MAX),
                reset_secs: secs_rounded_up(ceil_div(missing, u128::from(self.rate))),
            };
        }
        if cost > self.burst {
            return Check::Limited {
                retry_after_secs: u64::MAX,
            };
        }
        // Each nanosecond adds `rate` units.
        let wait = ceil_div(needed - current.level, u128::from(self.rate));
        Check::Limited {
            retry_after_secs: secs_rounded_up(wait).max(1),
        }
    }
}

impl FixedWindow {
    /// `None` for a zero window; a zero count is allowed (it denies everything).
    pub fn new(count: u64, window_nanos: u64) -> Option<Self> {
        (window_nanos > 0).then_some(Self {
            count,
            window_nanos,
        })
    }

    /// Counts `cost` in the window holding `now` (a new window starts empty).
    pub fn check(
        &self,
        state: Option<WindowState>,
        now_nanos: u64,
        cost: u64,
    ) -> Check<WindowState> {
        let window = now_nanos / self.window_nanos;
        let used = match state {
            Some(s) if s.window == window => s.used,
            // A state from a later window (the clock went back) keeps counting there: never
            // a fresh window out of a clock step.
            Some(s) if s.window > window => {
                return self.check_in(s.window, s.used, now_nanos, cost);
            }
            _ => 0,
        };
        self.check_in(window, used, now_nanos, cost)
    }

    fn check_in(&self, window: u64, used: u64, now_nanos: u64, cost: u64) -> Check<WindowState> {
        let end = u128::from(window.saturating_add(1)) * u128::from(self.window_nanos);
        let until_end = secs_rounded_up(end.saturating_sub(u128::from(now_nanos))).max(1);
        match used.checked_add(cost).filter(|&total| total <= self.count) {
            Some(total) => Check::Admitted {
                state: WindowState {
                    window,
                    used: total,
                },
                remaining: self.count - total,
                reset_secs: until_end,
            },
            None if cost > self.count => Check::Limited {
                retry_after_secs: u64::MAX,
            },
            None => Check::Limited {
                retry_after_secs: until_end,
            },
        }
    }
}

impl BucketState {
    /// The bytes a shared store keeps: the level, then the time, little-endian.
    pub const ENCODED_LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let (level, at) = out.split_at_mut(16);
        level.copy_from_slice(&self.level.to_le_bytes());
        at.copy_from_slice(&self.at_nanos.to_le_bytes());
        out
    }

    /// `None` for bytes of another length (another version, or garbage): the caller starts
    /// the key afresh only where that cannot admit more (see issue 10's store).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (level, at) = bytes.split_at_checked(16)?;
        Some(Self {
            level: u128::from_le_bytes(level.try_into().ok()?),
            at_nanos: u64::from_le_bytes(at.try_into().ok()?),
        })
    }
}

impl WindowState {
    pub const ENCODED_LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let (window, used) = out.split_at_mut(8);
        window.copy_from_slice(&self.window.to_le_bytes());
        used.copy_from_slice(&self.used.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (window, used) = bytes.split_at_checked(8)?;
        Some(Self {
            window: u64::from_le_bytes(window.try_into().ok()?),
            used: u64::from_le_bytes(used.try_into().ok()?),
        })
    }
}

/// Either limit, over the bytes a shared store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Bucket(TokenBucket),
    Window(FixedWindow),
}

/// The most bytes a limit's state takes.
pub const STATE_MAX_LEN: usize = BucketState::ENCODED_LEN;

/// A state to store: `len` bytes of `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    bytes: [u8; STATE_MAX_LEN],
    len: usize,
}

impl Encoded {
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    fn of(src: &[u8]) -> Self {
        let mut bytes = [0u8; STATE_MAX_LEN];
        let len = src.len().min(STATE_MAX_LEN);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..len), src.get(..len)) {
            dst.copy_from_slice(src);
        }
        Encoded { bytes, len }
    }
}

impl Limit {
    /// What one key admits at once: the burst, or the window's count.
    pub fn capacity(&self) -> u64 {
        match self {
            Limit::Bucket(b) => b.burst,
            Limit::Window(w) => w.count,
        }
    }

    /// Checks `cost` against the stored bytes (`None`: a key never written). Bytes that do
    /// not decode (another writer's) count as a spent limit, never as a fresh one: an
    /// unreadable state can make limiting stricter, not looser.
    pub fn check(&self, stored: Option<&[u8]>, now_nanos: u64, cost: u64) -> Check<Encoded> {
        match self {
            Limit::Bucket(b) => {
                let state = stored.map(|bytes| {
                    BucketState::decode(bytes).unwrap_or(BucketState {
                        level: 0,
                        at_nanos: now_nanos,
                    })
                });
                map_state(b.check(state, now_nanos, cost), |s| {
                    Encoded::of(&s.encode())
                })
            }
            Limit::Window(w) => {
                let state = stored.map(|bytes| {
                    WindowState::decode(bytes).unwrap_or(WindowState {
                        window: now_nanos / w.window_nanos,
                        used: w.count,
                    })
                });
                map_state(w.check(state, now_nanos, cost), |s| {
                    Encoded::of(&s.encode())
                })
            }
        }
    }

    /// Gives `cost` back to a state this limit admitted it from (a later limiter of the same
    /// request refused it). `None` when there is nothing to give back to.
    pub fn refund(&self, stored: &[u8], now_nanos: u64, cost: u64) -> Option<Encoded> {
        match self {
            Limit::Bucket(b) => {
                let s = b.level_at(BucketState::decode(stored)?, now_nanos);
                let level = s.level.saturating_add(b.units(cost)).min(b.units(b.burst));
                Some(Encoded::of(
                    &BucketState {
                        level,
                        at_nanos: s.at_nanos,
                    }
                    .encode(),
                ))
            }
            Limit::Window(w) => {
                let s = WindowState::decode(stored)?;
                // A window that ended has nothing of this request in it any more.
                (s.window == now_nanos / w.window_nanos).then(|| {
                    Encoded::of(
                        &WindowState {
                            window: s.window,
                            used: s.used.saturating_sub(cost),
                        }
                        .encode(),
                    )
                })
            }
        }
    }
}

fn map_state<S, T>(c: Check<S>, f: impl FnOnce(S) -> T) -> Check<T> {
    match c {
        Check::Admitted {
            state,
            remaining,
            reset_secs,
        } => Check::Admitted {
            state: f(state),
            remaining,
            reset_secs,
        },
        Check::Limited { retry_after_secs } => Check::Limited { retry_after_secs },
    }
}

#[cfg(test)]
mod tests;
