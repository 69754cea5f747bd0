//! Typed positions in the model: a service, a metric of a service, a rule of a service. They
//! are all small integers, and mixing them up (a metric id where a rule id belongs) would
//! compile silently as `u32`; as distinct types it does not. Each is a `u32`, as cheap to copy
//! and compare as one.

use std::fmt;

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u32);

        impl $name {
            pub const fn new(index: u32) -> Self {
                Self(index)
            }

            /// From a position in a list; the model never holds more than `u32::MAX` of
            /// anything (configurations are at most 16 MiB), so saturating loses nothing.
            pub fn from_usize(index: usize) -> Self {
                Self(u32::try_from(index).unwrap_or(u32::MAX))
            }

            pub const fn get(self) -> u32 {
                self.0
            }

            /// The position, for indexing a list.
            pub const fn as_usize(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

index_type!(
    /// A service's position in [`crate::Compiled::services`].
    ServiceIndex
);
index_type!(
    /// A metric of one service, in [`crate::Service::metrics`]; metrics are numbered in name
    /// order, so usage sorted by index is sorted by name.
    MetricIndex
);
index_type!(
    /// A mapping rule of one service, in configuration order.
    RuleIndex
);
