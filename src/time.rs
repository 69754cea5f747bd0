//! Time as the core sees it: a value the host's clock gives, never read by the core itself
//! (wasm32-unknown-unknown has no clock, and tests move time by hand).

/// A point in time from the host's clock, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch (the control service's periods are in seconds).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}
