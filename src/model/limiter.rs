//! A service's local limiters, compiled: which requests each counts, the key it keeps them
//! apart by, its limit, and where its state lives in the shared store.
//!
//! Keys hash into `max_keys` slots (Envoy's shared data has no delete, so the key space must
//! be fixed): two keys that share a slot share a bucket, which can make limiting stricter,
//! never looser. The hash is seeded with the service's control-service token, so a client
//! cannot compute which values collide with another client's.

use std::hash::BuildHasher;

use crate::config::location::{Loc, ServiceField, SourcePaths};
use crate::config::{LimiterConfig, LimiterMode, LimiterScope, MAX_LIMITER_MAX_KEYS};
use crate::credentials::Credentials;
use crate::diagnostics::Diagnostics;
use crate::index::MetricIndex;
use crate::limits::{FixedWindow, Limit, TokenBucket};

use super::service::Metric;

/// Which requests a limiter counts, and how much each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Every request costs 1.
    Requests,
    /// A request costs the delta its mapping rules give this metric; `None`: no rule
    /// assigns it, so nothing is counted.
    Metric(Option<MetricIndex>),
}

/// What a limiter keeps requests apart by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// One bucket for the whole service (or, global, for every service sharing it).
    Service,
    /// The application: the user key, app id or access token.
    Application,
    /// A request header's value (lower-case name); absent shares the empty value's bucket.
    Header(Box<str>),
    /// The client's IP address (without port).
    ClientAddress,
}

impl LimitKey {
    /// As written in a FilterConfig.
    pub fn describe(&self) -> String {
        match self {
            LimitKey::Service => "service".into(),
            LimitKey::Application => "application".into(),
            LimitKey::Header(h) => format!("header:{h}"),
            LimitKey::ClientAddress => "client_address".into(),
        }
    }
}

/// One limiter of a service.
#[derive(Debug, Clone)]
pub struct Limiter {
    name: Box<str>,
    counts: Counts,
    key: LimitKey,
    limit: Limit,
    mode: LimiterMode,
    status: Option<u16>,
    max_keys: u32,
    seed: u64,
    /// `tollgate.limit.v1|<scope>|<name>|<definition>|`: a slot's key is this and its number.
    store_prefix: Box<[u8]>,
    /// The limit in words (`5 at once, 2 more per minute`), for `explain`.
    summary: Box<str>,
}

/// The longest limiter name.
pub const MAX_NAME_LEN: usize = 64;

impl Limiter {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn key(&self) -> &LimitKey {
        &self.key
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    pub fn mode(&self) -> LimiterMode {
        self.mode
    }

    /// The status of a limited request, when it is not the service's limits-exceeded one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    pub fn max_keys(&self) -> u32 {
        self.max_keys
    }

    /// The limit in words, for people.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// What this request costs: `None` when the limiter does not count it.
    pub fn cost(&self, usage: &[(MetricIndex, i64)]) -> Option<u64> {
        match self.counts {
            Counts::Requests => Some(1),
            Counts::Metric(None) => None,
            Counts::Metric(Some(m)) => usage
                .iter()
                .find(|(id, _)| *id == m)
                .and_then(|&(_, delta)| u64::try_from(delta).ok())
                .filter(|&d| d > 0),
        }
    }

    /// The slot a key's value falls in.
    pub fn slot(&self, value: &[u8]) -> u32 {
        if self.max_keys <= 1 {
            return 0;
        }
        let hash = foldhash::fast::FixedState::with_seed(self.seed).hash_one(value);
        (hash % u64::from(self.max_keys)) as u32
    }

    /// Writes the shared-store key of `slot` into `out`.
    pub fn store_key(&self, slot: u32, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.store_prefix);
        let mut digits = [0u8; 20];
        out.extend_from_slice(super::decision::decimal(u64::from(slot), &mut digits));
    }
}

/// The value a request has for a key, borrowed from the request; `Owned` only for the
/// client address a host hands over.
pub fn application_value<'a>(credentials: Option<&'a Credentials<'_>>) -> &'a [u8] {
    match credentials {
        Some(Credentials::UserKey(k)) => k,
        Some(Credentials::AppId { app_id, .. }) => app_id,
        Some(Credentials::AccessToken(t)) => t,
        None => b"",
    }
}

/// The client's IP from a host's `ip:port` (or `[v6]:port`) address.
pub fn address_without_port(address: &[u8]) -> &[u8] {
    if let Some(rest) = address.strip_prefix(b"[") {
        return rest
            .iter()
            .position(|&b| b == b']')
            .and_then(|end| rest.get(..end))
            .unwrap_or(rest);
    }
    match address.iter().filter(|&&b| b == b':').count() {
        // A bare IPv6 address has several colons and no port.
        1 => address
            .iter()
            .position(|&b| b == b':')
            .and_then(|at| address.get(..at))
            .unwrap_or(address),
        _ => address,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What one service's limiters are compiled with.
pub(super) struct LimiterContext<'a> {
    pub service: usize,
    pub service_id: &'a str,
    pub authorizes: bool,
    pub metrics: &'a [Metric],
    /// The service's control-service token (empty without one): the slot hash's secret.
    pub secret: &'a str,
}

/// Compiles a service's limiters; `None` when one is invalid (each problem reported).
pub(super) fn compile_limiters(
    configs: &[LimiterConfig],
    cx: &LimiterContext<'_>,
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Option<Box<[Limiter]>> {
    let mut ok = true;
    let mut out = Vec::with_capacity(configs.len());
    for (k, config) in configs.iter().enumerate() {
        let at = |f: Option<&'static str>| {
            paths.path(Loc::Service(cx.service, ServiceField::Limiter(k, f)))
        };
        if !valid_name(&config.name) {
            diags.error(
                at(Some("name")),
                format!("a limiter name is 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'"),
            );
            ok = false;
        } else if configs
            .get(..k)
            .is_some_and(|earlier| earlier.iter().any(|e| e.name == config.name))
        {
            diags.error(
                at(Some("name")),
                format!("another limiter of this service is named '{}'", config.name),
            );
            ok = false;
        }
        let counts = match config.counts.as_str() {
            "requests" => Some(Counts::Requests),
            other => match other.strip_prefix("metric:") {
                Some("") | None => {
                    diags.error(
                        at(Some("counts")),
                        "expected \"requests\" or \"metric:<name>\"",
                    );
                    None
                }
                Some(_) if !cx.authorizes => {
                    diags.error(
                        at(Some("counts")),
                        "the service does not authorize with 3scale (authorization: none), so no \
                         mapping rule assigns metrics: count \"requests\"",
                    );
                    None
                }
                Some(name) => {
                    let id = cx
                        .metrics
                        .iter()
                        .position(|m| m.name() == name)
                        .map(MetricIndex::from_usize);
                    if id.is_none() {
                        diags.warning(
                            at(Some("counts")),
                            format!(
                                "no mapping rule of this service assigns '{name}': the limiter \
                                 counts nothing"
                            ),
                        );
                    }
                    Some(Counts::Metric(id))
                }
            },
        };
        let key = match config.key.as_str() {
            "service" => Some(LimitKey::Service),
            "application" if !cx.authorizes => {
                diags.error(
                    at(Some("key")),
                    "the service does not authorize with 3scale (authorization: none), so \
                     requests carry no application",
                );
                None
            }
            "application" => Some(LimitKey::Application),
            "client_address" => Some(LimitKey::ClientAddress),
            other => match other.strip_prefix("header:") {
                Some(h) if valid_header_name(h) => {
                    Some(LimitKey::Header(h.to_ascii_lowercase().into()))
                }
                _ => {
                    diags.error(
                        at(Some("key")),
                        "expected \"service\", \"application\", \"header:<name>\" or \
                         \"client_address\"",
                    );
                    None
                }
            },
        };
        let limit = match (&config.token_bucket, &config.fixed_window) {
            (Some(b), None) => {
                let period = b.per.seconds().saturating_mul(1_000_000_000);
                let bucket = TokenBucket::new(b.rate, period, b.burst);
                if bucket.is_none() {
                    diags.error(
                        at(Some("token_bucket")),
                        "a token bucket needs a rate and a burst of at least 1",
                    );
                }
                bucket.map(Limit::Bucket)
            }
            (None, Some(w)) => {
                let window = if (1..=u64::MAX / 1_000_000_000).contains(&w.window_seconds) {
                    FixedWindow::new(w.count, w.window_seconds * 1_000_000_000)
                } else {
                    None
                };
                if window.is_none() {
                    diags.error(
                        at(Some("fixed_window.window_seconds")),
                        "a window is at least 1 second",
                    );
                }
                window.map(Limit::Window)
            }
            (Some(_), Some(_)) | (None, None) => {
                diags.error(
                    at(None),
                    "give exactly one of token_bucket and fixed_window",
                );
                None
            }
        };
        if let Some(status) = config.status {
            if !(200..=599).contains(&status) {
                diags.error(
                    at(Some("status")),
                    format!("status {status} is not between 200 and 599"),
                );
                ok = false;
            }
        }
        if !(1..=MAX_LIMITER_MAX_KEYS).contains(&config.max_keys) {
            diags.error(
                at(Some("max_keys")),
                format!("max_keys is between 1 and {MAX_LIMITER_MAX_KEYS}"),
            );
            ok = false;
        }
        let (Some(counts), Some(key), Some(limit)) = (counts, key, limit) else {
            ok = false;
            continue;
        };
        if let (Counts::Requests, Some(cap)) = (counts, Some(limit.capacity())) {
            if cap == 0 {
                diags.warning(at(None), "a limit of 0: every request it counts is limited");
            }
        }
        let scope = match config.scope {
            LimiterScope::Service => format!("s{}:{}", cx.service_id.len(), cx.service_id),
            LimiterScope::Global => "global".into(),
        };
        let definition = match limit {
            Limit::Bucket(_) => {
                let b = config.token_bucket.as_ref();
                format!(
                    "tb:{}/{}/{}",
                    b.map_or(0, |b| b.rate),
                    b.map_or(0, |b| b.per.seconds()),
                    b.map_or(0, |b| b.burst)
                )
            }
            Limit::Window(_) => {
                let w = config.fixed_window.as_ref();
                format!(
                    "fw:{}/{}",
                    w.map_or(0, |w| w.count),
                    w.map_or(0, |w| w.window_seconds)
                )
            }
        };
        let store_prefix = format!(
            "tollgate.limit.v1|{scope}|{}|{definition}|{}|",
            config.name, config.max_keys
        );
        let mut summary = match (&config.token_bucket, &config.fixed_window) {
            (Some(b), _) => format!(
                "token bucket: {} at once, {} more per {}",
                b.burst,
                b.rate,
                match b.per {
                    crate::config::RatePeriod::Second => "second",
                    crate::config::RatePeriod::Minute => "minute",
                    crate::config::RatePeriod::Hour => "hour",
                    crate::config::RatePeriod::Day => "day",
                }
            ),
            (None, Some(w)) => format!(
                "fixed window: {} per {} s, aligned to the clock",
                w.count, w.window_seconds
            ),
            (None, None) => String::new(),
        };
        if config.mode == LimiterMode::ReportOnly {
            summary.push_str(" (report only)");
        }
        let secret = match config.scope {
            LimiterScope::Service => cx.secret,
            LimiterScope::Global => "",
        };
        let seed = foldhash::fast::FixedState::with_seed(0x746f_6c6c_6761_7465)
            .hash_one((secret, store_prefix.as_str()));
        out.push(Limiter {
            name: config.name.as_str().into(),
            counts,
            key,
            limit,
            mode: config.mode,
            status: config.status,
            max_keys: config.max_keys,
            seed,
            store_prefix: store_prefix.into_bytes().into_boxed_slice(),
            summary: summary.into(),
        });
    }
    ok.then(|| out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::address_without_port;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn client_addresses_lose_their_port() {
        assert_eq!(address_without_port(b"10.0.0.1:5000"), b"10.0.0.1");
        assert_eq!(address_without_port(b"[::1]:5000"), b"::1");
        assert_eq!(address_without_port(b"::1"), b"::1");
        assert_eq!(address_without_port(b"10.0.0.1"), b"10.0.0.1");
        assert_eq!(address_without_port(b""), b"");
    }
}
