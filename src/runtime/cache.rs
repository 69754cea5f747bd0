//! The authorization cache: answers of the control service kept in the shared store, per
//! (service, credentials, usage), for every worker.

use crate::index::ServiceIndex;

/// The key a worker's concurrent misses share one call on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlightKey {
    pub(crate) service: ServiceIndex,
    pub(crate) hash: u64,
}

/// What the answer to a background authrep updates.
#[derive(Debug)]
pub struct ReportTicket {
    pub(crate) service: ServiceIndex,
    pub(crate) key: Box<[u8]>,
}
