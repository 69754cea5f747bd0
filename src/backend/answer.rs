//! What the control service's answer to an authrep means for the request, as APIcast's
//! `handle_backend_response` decides it (reference §3.3). Only the status and three headers
//! count: the body is not read (it is empty with `no_body=1`, and may not even be well-formed).

/// The headers of an authrep answer that matter.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerHeaders<'a> {
    /// `3scale-rejection-reason`
    pub rejection_reason: Option<&'a [u8]>,
    /// `3scale-limit-reset`: seconds until the limiting period ends.
    pub limit_reset: Option<&'a [u8]>,
    /// `3scale-limit-max-value`: `0` marks a disabled metric.
    pub limit_max_value: Option<&'a [u8]>,
}

/// The answer, interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAnswer {
    /// 200: the request goes on.
    Authorized,
    /// Rejected with `limits_exceeded`: the limits error, with `Retry-After` when the
    /// control service said when the period resets.
    LimitsExceeded { retry_after: Option<u64> },
    /// Any other rejection or client error (a disabled metric included): the auth-failed error.
    Denied,
    /// No answer, or 499 and above (Envoy's own 503/504 when the service is down or slow):
    /// the control service is unavailable.
    Unavailable,
}

pub const REJECTION_REASON: &str = "3scale-rejection-reason";
pub const LIMIT_RESET: &str = "3scale-limit-reset";
pub const LIMIT_MAX_VALUE: &str = "3scale-limit-max-value";

/// Interprets an answer; `status` is `None` when the call got no response at all.
pub fn interpret(status: Option<u16>, headers: AnswerHeaders<'_>) -> ControlAnswer {
    match status {
        Some(200) => ControlAnswer::Authorized,
        None | Some(0) => ControlAnswer::Unavailable,
        Some(s) if s >= 499 => ControlAnswer::Unavailable,
        Some(_) => {
            let limits = headers.rejection_reason.map(trim) == Some(b"limits_exceeded".as_slice());
            let disabled = headers.limit_max_value.map(trim) == Some(b"0".as_slice());
            if limits && !disabled {
                ControlAnswer::LimitsExceeded {
                    retry_after: headers.limit_reset.and_then(seconds),
                }
            } else {
                ControlAnswer::Denied
            }
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// A non-negative number of seconds (`-1` means "no reset", e.g. eternity limits).
fn seconds(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(trim(v)).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn h<'a>(reason: &'a str, reset: &'a str, max: &'a str) -> AnswerHeaders<'a> {
        let some = |s: &'a str| (!s.is_empty()).then_some(s.as_bytes());
        AnswerHeaders {
            rejection_reason: some(reason),
            limit_reset: some(reset),
            limit_max_value: some(max),
        }
    }

    #[test]
    fn apicast_answer_mapping() {
        assert_eq!(
            interpret(Some(200), h("", "", "")),
            ControlAnswer::Authorized
        );
        assert_eq!(
            interpret(Some(409), h("limits_exceeded", "37", "5")),
            ControlAnswer::LimitsExceeded {
                retry_after: Some(37)
            }
        );
        // Without a usable reset there is no Retry-After.
        assert_eq!(
            interpret(Some(409), h("limits_exceeded", "-1", "5")),
            ControlAnswer::LimitsExceeded { retry_after: None }
        );
        // A disabled metric (max value 0) is an auth failure (t/apicast.t TEST 23).
        assert_eq!(
            interpret(Some(409), h("limits_exceeded", "10", "0")),
            ControlAnswer::Denied
        );
        assert_eq!(
            interpret(Some(409), h("application_key_invalid", "", "")),
            ControlAnswer::Denied
        );
        assert_eq!(interpret(Some(403), h("", "", "")), ControlAnswer::Denied);
        assert_eq!(interpret(Some(404), h("", "", "")), ControlAnswer::Denied);
        assert_eq!(interpret(Some(498), h("", "", "")), ControlAnswer::Denied);
        for s in [499, 500, 502, 503, 504] {
            assert_eq!(
                interpret(Some(s), h("", "", "")),
                ControlAnswer::Unavailable,
                "{s}"
            );
        }
        assert_eq!(interpret(None, h("", "", "")), ControlAnswer::Unavailable);
        assert_eq!(
            interpret(Some(0), h("", "", "")),
            ControlAnswer::Unavailable
        );
    }
}
