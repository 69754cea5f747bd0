//! Usage counters: one per (service, application, metric, period), holding the value of the
//! period's current window only. A counter whose window has passed reads as 0 and is replaced
//! on the next write. The key space is bounded by the data file: services × applications ×
//! metrics × 7 periods. Beside them, the number of Service Management calls answered, per kind.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::periods::Period;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub service: usize,
    pub app: usize,
    pub metric: usize,
    pub period: Period,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter {
    /// Start of the window (UNIX seconds) the value belongs to.
    pub start: i64,
    pub value: u64,
}

/// A usage value: `N` adds, `#N` sets (apisonator's deprecated set semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add(u64),
    Set(u64),
}

impl Op {
    /// The value after applying this to `stored`.
    pub fn apply(self, stored: u64) -> u64 {
        match self {
            Op::Add(n) => stored.saturating_add(n),
            Op::Set(n) => n,
        }
    }
    /// This call's own amount (for limit headers).
    pub fn amount(self) -> u64 {
        match self {
            Op::Add(n) | Op::Set(n) => n,
        }
    }
    /// Combines two usages of the same metric in one call: adds add up, a set wins and later
    /// adds go on top of it.
    pub fn combine(self, other: Op) -> Op {
        match (self, other) {
            (Op::Add(a), Op::Add(b)) => Op::Add(a.saturating_add(b)),
            (Op::Set(a), Op::Add(b)) => Op::Set(a.saturating_add(b)),
            (_, Op::Set(b)) => Op::Set(b),
        }
    }
}

/// Service Management calls answered since the first start (kept in the state file): the e2e
/// tests compare them with what the gateway admitted, so they are counted under the store's lock,
/// in the same step as the usage they carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Calls {
    pub authrep: u64,
    pub authorize: u64,
    pub oauth_authrep: u64,
    pub oauth_authorize: u64,
    /// `POST /transactions.xml`, whatever the answer.
    pub report: u64,
    /// Transactions in reports answered 202 (applied or dropped).
    pub report_transactions: u64,
    /// Reports answered 202 whose batch was then dropped whole (one invalid transaction).
    pub report_dropped: u64,
}

#[derive(Debug, Default)]
pub struct Store {
    counters: HashMap<Key, Counter>,
    pub calls: Calls,
}

impl Store {
    /// The value of `key`'s window containing `now`.
    pub fn get(&self, key: Key, now: i64) -> u64 {
        match self.counters.get(&key) {
            Some(c) if c.start == key.period.window(now).0 => c.value,
            _ => 0,
        }
    }

    /// Applies `op` to the metric's counters of every period, in the windows containing `at`.
    /// A time in a window older than the stored one changes nothing (past windows are gone).
    pub fn apply(&mut self, service: usize, app: usize, metric: usize, op: Op, at: i64) {
        for period in Period::ALL {
            let key = Key {
                service,
                app,
                metric,
                period,
            };
            let start = period.window(at).0;
            let c = self
                .counters
                .entry(key)
                .or_insert(Counter { start, value: 0 });
            if c.start == start {
                c.value = op.apply(c.value);
            } else if c.start < start {
                *c = Counter {
                    start,
                    value: op.apply(0),
                };
            }
        }
    }

    /// Counters whose window contains `now`, sorted.
    pub fn current(&self, now: i64) -> Vec<(Key, u64)> {
        let mut out: Vec<(Key, u64)> = self
            .counters
            .iter()
            .filter(|(k, c)| c.start == k.period.window(now).0)
            .map(|(k, c)| (*k, c.value))
            .collect();
        out.sort();
        out
    }

    /// Every stored counter (for persistence).
    pub fn all(&self) -> impl Iterator<Item = (&Key, &Counter)> {
        self.counters.iter()
    }

    pub fn restore(&mut self, key: Key, counter: Counter) {
        self.counters.insert(key, counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_roll_over() {
        let mut s = Store::default();
        let t = 1_700_000_000 - 1_700_000_000 % 60; // a minute boundary
        s.apply(0, 0, 0, Op::Add(2), t + 10);
        let k = |period| Key {
            service: 0,
            app: 0,
            metric: 0,
            period,
        };
        assert_eq!(s.get(k(Period::Minute), t + 59), 2);
        assert_eq!(s.get(k(Period::Minute), t + 60), 0);
        assert_eq!(s.get(k(Period::Eternity), t + 1_000_000), 2);
        s.apply(0, 0, 0, Op::Add(1), t + 61);
        assert_eq!(s.get(k(Period::Minute), t + 61), 1);
        assert_eq!(s.get(k(Period::Eternity), t + 61), 3);
        // An older timestamp does not resurrect the previous minute.
        s.apply(0, 0, 0, Op::Add(5), t + 1);
        assert_eq!(s.get(k(Period::Minute), t + 61), 1);
        assert_eq!(s.get(k(Period::Eternity), t + 61), 8);
        s.apply(0, 0, 0, Op::Set(0), t + 61);
        assert_eq!(s.get(k(Period::Eternity), t + 61), 0);
    }

    #[test]
    fn ops() {
        assert_eq!(Op::Add(1).combine(Op::Add(2)), Op::Add(3));
        assert_eq!(Op::Add(1).combine(Op::Set(2)), Op::Set(2));
        assert_eq!(Op::Set(1).combine(Op::Add(2)), Op::Set(3));
        assert_eq!(Op::Add(u64::MAX).apply(1), u64::MAX);
    }
}
