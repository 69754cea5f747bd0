//! Calls to the control service that no request waits for: the authrep after a cached
//! request, the call a worker's concurrent misses of one key share, and batched reports. The
//! core queues them in the worker's [`super::Workspace`]; the binding sends each from its root
//! context (so it outlives any request) and hands the answer back with its [`Ticket`].

use crate::backend::{OPTIONS_HEADER, OPTIONS_VALUE};
use crate::index::ServiceIndex;
use crate::model::Compiled;

use super::batch::FlushTicket;
use super::cache::{FlightKey, ReportTicket};

/// How a queued call is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMethod {
    Get,
    /// `application/x-www-form-urlencoded` body.
    Post,
}

/// A call to send for the worker, not for one request.
#[derive(Debug)]
pub struct Outgoing {
    pub service: ServiceIndex,
    pub method: CallMethod,
    /// Path and query, every value percent-encoded.
    pub path: String,
    /// The form body of a POST (empty for a GET).
    pub body: Vec<u8>,
    pub ticket: Ticket,
}

/// What an answer to an [`Outgoing`] call is for.
#[derive(Debug)]
pub enum Ticket {
    /// The authrep of cached requests' usage.
    Report(ReportTicket),
    /// The call every request of one key waits on.
    Flight(FlightKey),
    /// A batched report.
    Flush(FlushTicket),
}

pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

impl Outgoing {
    /// The call's headers, pseudo-headers first; `authority` is the service's
    /// control-service authority.
    pub fn headers<'a>(&'a self, model: &'a Compiled) -> [(&'a str, &'a str); 4] {
        let authority = model
            .service(self.service)
            .map_or(model.control_cluster(), |s| s.control_authority());
        let method = match self.method {
            CallMethod::Get => "GET",
            CallMethod::Post => "POST",
        };
        let last = match self.method {
            CallMethod::Get => (OPTIONS_HEADER, OPTIONS_VALUE),
            CallMethod::Post => ("content-type", FORM_CONTENT_TYPE),
        };
        [
            (":method", method),
            (":path", self.path.as_str()),
            (":authority", authority),
            last,
        ]
    }
}
