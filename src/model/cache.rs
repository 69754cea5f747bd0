//! A service's authorization cache and batched reporting, compiled: the checked settings in
//! nanoseconds, and the shared-store key prefixes and hash seed its entries use.

use crate::config::location::{Loc, ServiceField, SourcePaths};
use crate::config::{BatchingConfig, CacheConfig, CacheMode, MAX_CACHE_MAX_KEYS};
use crate::diagnostics::Diagnostics;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// How one service's authorizations are cached (see [`CacheConfig`]).
#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub(super) mode: CacheMode,
    pub(super) ttl_ns: u64,
    pub(super) denied_ttl_ns: u64,
    pub(super) max_keys: u32,
    pub(super) coalesce: bool,
    pub(super) batching: Option<BatchPolicy>,
    /// `tollgate.auth.v1|s<len>:<service id>|<max_keys>|`, followed by the slot number.
    pub(super) store_prefix: Box<str>,
    /// Seeds the slot hash with the service's secret, so slots cannot be aimed at.
    pub(super) seed: u64,
}

/// APIcast's 3scale Batcher for one service (see [`BatchingConfig`]).
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub(super) auths_ttl_ns: u64,
    pub(super) interval_ns: u64,
    pub(super) max_pending: u32,
    /// `tollgate.batch.v1|s<len>:<service id>|<max_pending>|`, followed by the slot number
    /// (or `next` for the flush schedule).
    pub(super) store_prefix: Box<str>,
}

impl CachePolicy {
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// Whether answers are kept at all (`none`: every request waits).
    pub fn caches(&self) -> bool {
        self.mode != CacheMode::None || self.batching.is_some()
    }

    /// How long an authorization is used without a fresh answer: `auths_ttl` when batching.
    pub fn ttl_ns(&self) -> u64 {
        self.batching
            .as_ref()
            .map_or(self.ttl_ns, |b| b.auths_ttl_ns)
    }

    /// How long a denial is remembered: `auths_ttl` when batching (APIcast's batcher caches
    /// denials as long as authorizations).
    pub fn denied_ttl_ns(&self) -> u64 {
        self.batching
            .as_ref()
            .map_or(self.denied_ttl_ns, |b| b.auths_ttl_ns)
    }

    pub fn max_keys(&self) -> u32 {
        self.max_keys
    }

    pub fn coalesces(&self) -> bool {
        self.coalesce && self.batching.is_none()
    }

    pub fn batching(&self) -> Option<&BatchPolicy> {
        self.batching.as_ref()
    }

    pub fn store_prefix(&self) -> &str {
        &self.store_prefix
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl BatchPolicy {
    pub fn auths_ttl_ns(&self) -> u64 {
        self.auths_ttl_ns
    }

    /// Time between two reports of the service's usage.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    pub fn max_pending(&self) -> u32 {
        self.max_pending
    }

    pub fn store_prefix(&self) -> &str {
        &self.store_prefix
    }
}

/// What compiling a service's cache needs to know about it.
pub(super) struct CacheContext<'a> {
    pub(super) service: usize,
    pub(super) service_id: &'a str,
    /// The control-service token (empty when none): the hash seed.
    pub(super) secret: &'a str,
}

/// Checks and compiles `cache` and `batching`; `None` after reporting an error.
pub(super) fn compile_cache(
    cache: &CacheConfig,
    batching: Option<&BatchingConfig>,
    cx: &CacheContext<'_>,
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Option<CachePolicy> {
    let mut ok = true;
    let mut error = |field: ServiceField, message: String| {
        diags.error(paths.path(Loc::Service(cx.service, field)), message);
        ok = false;
    };
    if !(1..=MAX_CACHE_MAX_KEYS).contains(&cache.max_keys) {
        error(
            ServiceField::Cache("max_keys"),
            format!("must be between 1 and {MAX_CACHE_MAX_KEYS}"),
        );
    }
    if cache.ttl_seconds == 0 && cache.mode != CacheMode::None {
        error(
            ServiceField::Cache("ttl_seconds"),
            "must be at least 1 (mode \"none\" turns the cache off)".into(),
        );
    }
    if let Some(b) = batching {
        if b.auths_ttl_seconds == 0 {
            error(
                ServiceField::Batching("auths_ttl_seconds"),
                "must be at least 1".into(),
            );
        }
        if b.batch_report_seconds == 0 {
            error(
                ServiceField::Batching("batch_report_seconds"),
                "must be at least 1".into(),
            );
        }
        if !(1..=MAX_CACHE_MAX_KEYS).contains(&b.max_pending) {
            error(
                ServiceField::Batching("max_pending"),
                format!("must be between 1 and {MAX_CACHE_MAX_KEYS}"),
            );
        }
    }
    if !ok {
        return None;
    }
    let id = format!("s{}:{}", cx.service_id.len(), cx.service_id);
    let seconds = |s: u32| u64::from(s).saturating_mul(NANOS_PER_SECOND);
    Some(CachePolicy {
        mode: cache.mode,
        ttl_ns: seconds(cache.ttl_seconds),
        denied_ttl_ns: seconds(cache.denied_ttl_seconds),
        max_keys: cache.max_keys,
        coalesce: cache.coalesce_reports,
        batching: batching.map(|b| BatchPolicy {
            auths_ttl_ns: seconds(b.auths_ttl_seconds),
            interval_ns: seconds(b.batch_report_seconds),
            max_pending: b.max_pending,
            store_prefix: format!("tollgate.batch.v1|{id}|{}|", b.max_pending).into(),
        }),
        store_prefix: format!("tollgate.auth.v1|{id}|{}|", cache.max_keys).into(),
        seed: seed(cx.secret, &id),
    })
}

fn seed(secret: &str, id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x746f_6c6c_6761_7465).hash_one((secret, id, "auth"))
}
