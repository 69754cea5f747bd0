//! APIcast's 3scale Batcher: usage summed per application in the shared store and reported
//! with `POST /transactions.xml` by one flusher for the whole gateway.
//!
//! STUB: the interface the flow and the binding call; the implementation lands next.

use crate::credentials::Credentials;
use crate::index::MetricIndex;
use crate::model::service::Service;
use crate::model::Compiled;

use super::outbox::Outgoing;
use super::seams::Effects;

/// What adding a request's usage did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    Queued,
    /// No slot was free (`max_pending`): counted and logged.
    Dropped,
}

/// Adds one admitted request's usage to its service's pending batch.
pub fn add_usage(
    _service: &Service,
    _credentials: &Credentials<'_>,
    _usage: &[(MetricIndex, i64)],
    _effects: Effects<'_>,
) -> AddOutcome {
    AddOutcome::Dropped
}

/// The tick period a configuration needs: `None` when no service batches.
pub fn tick_period_ms(model: &Compiled) -> Option<u32> {
    model
        .services()
        .iter()
        .any(|s| s.cache().batching().is_some())
        .then_some(1000)
}

/// One VM's part in electing the flusher, and the flushes it has out.
#[derive(Debug, Default)]
pub struct Flusher {}

/// What a flush's answer needs: the usage it carried, to put back if it failed.
#[derive(Debug)]
pub struct FlushTicket {}

impl Flusher {
    /// Every tick of the root context.
    pub fn on_tick(
        &mut self,
        _model: &Compiled,
        _effects: Effects<'_>,
        _outbox: &mut Vec<Outgoing>,
    ) {
    }

    /// The answer to a flush (`status` `None`: no answer).
    pub fn on_flush_answer(
        &mut self,
        _model: &Compiled,
        _ticket: FlushTicket,
        _status: Option<u16>,
        _effects: Effects<'_>,
    ) {
    }
}
