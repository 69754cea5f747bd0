//! A service's `policy_chain`: whether it authorizes with 3scale (the `apicast` policy), and
//! what tollgate cannot run.
//!
//! APIcast builds each service's chain from `proxy.policy_chain` (`configuration.lua`,
//! `build_policy_chain`); a service without one runs the default chain, the `apicast` policy
//! alone (`policy/local_chain/local_chain.lua`). A chain without the `apicast` policy (or the
//! `3scale_batcher`, which authorizes in its stead) does not authorize with 3scale at all: the
//! other policies still run.
//!
//! tollgate runs the `apicast` policy, `rate_limit` (as the service's limiters, see
//! [`super::rate_limit`]), `rate_limit_headers`, `caching` (the service's `cache.mode`) and
//! `3scale_batcher` (its `batching`), and nothing else yet. A policy it cannot run is an error
//! when skipping it would make the gateway do less than the provider configured, unless the
//! provider accepts skipping it by name (`LoadOptions::accept_skipped_policies`, the CLI's
//! `--skip-policy`, or `"tollgate": {"accept_skipped_policies": […]}` in the document). A policy
//! that only changes logging is skipped with a warning. Every skipped policy is recorded in the
//! FilterConfig's `skipped_policies`.
//!
//! A policy object with `enabled: false` is left out quietly: that is Porta's meaning (its
//! `policies_config` carries `enabled`, and the chain it sends APIcast leaves disabled policies
//! out). APIcast itself never reads `enabled`.

use serde_json::Value;

use crate::config::{
    BatchingConfig, CacheConfig, CacheMode, LimiterConfig, DEFAULT_AUTHS_TTL_SECONDS,
    DEFAULT_BATCH_REPORT_SECONDS,
};
use crate::diagnostics::{index, join, Diagnostics};

use super::rate_limit::rate_limit;
use super::reader::{kind_of, Reader};
use super::suggest::Fields;

pub(super) const POLICY_FIELDS: Fields = Fields {
    read: &["name", "version", "configuration", "enabled"],
    // What Porta's `policies_config` and its UI add to a policy.
    ignored: &["removable", "id", "humanName", "description", "summary"],
};

/// APIcast's name prefix for its built-in policies (`apicast.policy.cors` is `cors`).
const BUILTIN_PREFIX: &str = "apicast.policy.";

/// APIcast's built-in policies (`gateway/src/apicast/policy/`).
const BUILTIN: &[&str] = &[
    "3scale_batcher",
    "3scale_referrer",
    "apicast",
    "caching",
    "camel",
    "clear_context",
    "conditional",
    "content_caching",
    "cors",
    "custom_metrics",
    "default_credentials",
    "echo",
    "fapi",
    "find_service",
    "grpc",
    "headers",
    "http_proxy",
    "ip_check",
    "jwt_claim_check",
    "jwt_parser",
    "keycloak_role_check",
    "liquid_context_debug",
    "load_configuration",
    "local_chain",
    "logging",
    "maintenance_mode",
    "management",
    "nginx_filters",
    "nginx_metrics",
    "oauth_mtls",
    "on_failed",
    "payload_limits",
    "rate_limit",
    "rate_limit_headers",
    "request_unbuffered",
    "retry",
    "rewrite_url_captures",
    "routing",
    "soap",
    "standalone",
    "statuscode_overwrite",
    "tls",
    "tls_validation",
    "token_introspection",
    "upstream",
    "upstream_connection",
    "upstream_mtls",
    "url_rewriting",
    "websocket",
];

/// Policies whose only effect is on logs and metrics scraped from the gateway (`logging`: the
/// access log; `nginx_metrics`: the Prometheus endpoint): skipping them changes nothing a
/// client, the upstream or 3scale sees.
const LOGGING_ONLY: &[&str] = &["logging", "nginx_metrics"];

/// Policies a later tollgate issue implements.
const PLANNED: &[(&str, &str)] = &[];

/// A policy's name without APIcast's built-in prefix: how chains and acceptances are compared.
pub(super) fn short_name(name: &str) -> &str {
    name.strip_prefix(BUILTIN_PREFIX).unwrap_or(name)
}

/// Policy names the provider accepts as skipped, and whether a chain had each.
#[derive(Debug, Default)]
pub(super) struct Acceptance {
    /// (short name, where it was given, used).
    names: Vec<(String, String, bool)>,
}

impl Acceptance {
    /// `at`: where the name was given (a path of the document, or empty for the caller's
    /// options).
    pub(super) fn add(&mut self, name: &str, at: String) {
        let short = short_name(name).to_owned();
        if !self.names.iter().any(|(n, _, _)| *n == short) {
            self.names.push((short, at, false));
        }
    }

    fn accepts(&mut self, short: &str) -> bool {
        match self.names.iter_mut().find(|(n, _, _)| n == short) {
            Some(entry) => {
                entry.2 = true;
                true
            }
            None => false,
        }
    }

    /// Warns about every accepted name no chain had (a typo, most likely).
    pub(super) fn report_unused(&self, diags: &mut Diagnostics) {
        for (name, at, _) in self.names.iter().filter(|(_, _, used)| !used) {
            let message = if RUN.contains(&name.as_str()) {
                format!("policy '{name}' is accepted as skipped, but tollgate runs it: nothing is skipped")
            } else {
                format!(
                    "policy '{name}' is accepted as skipped, but no service's policy_chain has it"
                )
            };
            diags.warning(at.clone(), message);
        }
    }
}

/// The policies tollgate runs: accepting one as skipped skips nothing.
const RUN: [&str; 5] = [
    "apicast",
    "rate_limit",
    "rate_limit_headers",
    "caching",
    "3scale_batcher",
];

/// What a service's chain means for the gateway.
#[derive(Debug)]
pub(super) struct Chain {
    /// The `apicast` policy runs: requests are authorized with the control service.
    pub(super) authorizes: bool,
    /// Policies the gateway does not run, by short name.
    pub(super) skipped: Vec<SkippedAt>,
    /// The `rate_limit` policies' limiters, in chain order.
    pub(super) limiters: Vec<LimiterConfig>,
    /// A `rate_limit_headers` policy runs.
    pub(super) rate_limit_headers: bool,
    /// The `caching` policy's mode (the default cache without one).
    pub(super) cache: CacheConfig,
    /// A `3scale_batcher` policy runs.
    pub(super) batching: Option<BatchingConfig>,
}

#[derive(Debug)]
pub(super) struct SkippedAt {
    pub(super) policy: String,
    /// The path of the policy object.
    pub(super) at: String,
}

/// Whether a `policy_chain` (as found in the proxy object) authorizes with 3scale (it runs the
/// apicast policy or the 3scale Batcher), without reporting anything: [`policy_chain`] reads it
/// in full, with this answer.
pub(super) fn authorizes_with_3scale(chain: Option<&Value>) -> bool {
    let Some(Value::Array(items)) = chain else {
        // None or null: the default chain; another type is refused where it is read.
        return true;
    };
    items.iter().any(|item| {
        let name = item.get("name").and_then(Value::as_str).map(short_name);
        let disabled = item.get("enabled") == Some(&Value::Bool(false));
        matches!(name, Some("apicast" | "3scale_batcher")) && !disabled
    })
}

const CACHING_FIELDS: Fields = Fields {
    read: &["caching_type"],
    ignored: &[],
};

const BATCHER_FIELDS: Fields = Fields {
    read: &["auths_ttl", "batch_report_seconds"],
    ignored: &[],
};

/// A policy's `configuration` as an object; `None` (after a warning) when it is something else,
/// which APIcast indexes as an empty table.
fn configuration<'a>(
    configuration: Option<&'a Value>,
    at: &str,
    diags: &mut Diagnostics,
) -> Option<&'a serde_json::Map<String, Value>> {
    match configuration {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            diags.warning(
                at,
                format!(
                    "expected an object, found {}: APIcast reads no field from it, and neither \
                     does tollgate",
                    kind_of(other)
                ),
            );
            None
        }
    }
}

/// A short string shown in a message, or its kind (values may be secrets).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() <= 16 => format!("'{s}'"),
        other => kind_of(other).to_owned(),
    }
}

/// The `caching` policy's `caching_type` (`caching.lua`): a missing or unknown one disables
/// the cache, with an error in APIcast's log; here with a warning at its path.
fn caching(configuration_value: Option<&Value>, at: &str, diags: &mut Diagnostics) -> CacheMode {
    let empty = serde_json::Map::new();
    let obj = configuration(configuration_value, at, diags).unwrap_or(&empty);
    let r = Reader::new(obj, at.to_owned(), &CACHING_FIELDS, diags);
    let mode = match r.value("caching_type") {
        Some(Value::String(s)) => match s.as_str() {
            "strict" => Some(CacheMode::Strict),
            "resilient" => Some(CacheMode::Resilient),
            "allow" => Some(CacheMode::Allow),
            "none" => Some(CacheMode::None),
            _ => None,
        },
        _ => None,
    };
    if let Some(mode) = mode {
        return mode;
    }
    let what = match r.value("caching_type") {
        None => "no caching_type".to_owned(),
        Some(v) => format!("unknown caching_type {}", shown(v)),
    };
    diags.warning(
        join(at, "caching_type"),
        format!(
            "{what}: APIcast logs an error and disables the cache, and so does tollgate \
             (cache mode none: every request waits for the control service). Expected strict, \
             resilient, allow or none"
        ),
    );
    CacheMode::None
}

/// The `3scale_batcher` policy's configuration (`3scale_batcher.lua`, defaults 10 and 10).
fn batcher(
    configuration_value: Option<&Value>,
    at: &str,
    diags: &mut Diagnostics,
) -> BatchingConfig {
    let empty = serde_json::Map::new();
    let obj = configuration(configuration_value, at, diags).unwrap_or(&empty);
    let mut r = Reader::new(obj, at.to_owned(), &BATCHER_FIELDS, diags);
    let mut seconds = |key: &str, default: u32| -> u32 {
        let Some(v) = r.value(key) else {
            return default;
        };
        let n = v.as_u64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f > 0.0)
                .map(|f| f as u64)
        });
        match n.filter(|&n| n > 0).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                r.warning(
                    key,
                    format!(
                        "expected a positive whole number of seconds, found {}: APIcast's \
                         shared cache and timer misbehave with it (0 keeps answers forever, \
                         others fail), so tollgate uses the default, {default}",
                        shown(v)
                    ),
                );
                default
            }
        }
    };
    let auths_ttl_seconds = seconds("auths_ttl", DEFAULT_AUTHS_TTL_SECONDS);
    let batch_report_seconds = seconds("batch_report_seconds", DEFAULT_BATCH_REPORT_SECONDS);
    BatchingConfig {
        auths_ttl_seconds,
        batch_report_seconds,
        ..BatchingConfig::default()
    }
}

/// Reads `policy_chain` from the proxy object `r`.
pub(super) fn policy_chain(r: &mut Reader<'_, '_>, acceptance: &mut Acceptance) -> Chain {
    let mut chain = Chain {
        authorizes: true,
        skipped: Vec::new(),
        limiters: Vec::new(),
        rate_limit_headers: false,
        cache: CacheConfig::default(),
        batching: None,
    };
    // No chain (or null): APIcast's default chain, the apicast policy alone.
    let Some(items) = r.array("policy_chain") else {
        return chain;
    };
    chain.authorizes = false;
    let mut apicast = false;
    let mut seen_caching = false;
    let mut batcher_at = None;
    let chain_at = r.at("policy_chain");
    for (k, item) in items.iter().enumerate() {
        let at = index(&chain_at, k);
        let Value::Object(obj) = item else {
            r.diags.warning(
                at,
                "a policy that is not an object has no name and is ignored (APIcast skips it too)",
            );
            continue;
        };
        let mut p = Reader::new(obj, at.clone(), &POLICY_FIELDS, r.diags);
        let name = p.compared("name");
        let enabled = p.flag("enabled").unwrap_or(true);
        if p.failed {
            r.failed = true;
        }
        let Some(name) = name else {
            if obj.get("name").is_none_or(Value::is_null) {
                r.diags.warning(
                    at,
                    "a policy without a name is ignored (APIcast skips it too)",
                );
            }
            continue;
        };
        let short = short_name(&name);
        if !enabled {
            if short == "apicast" {
                r.diags.warning(
                    join(&at, "enabled"),
                    "the apicast policy is disabled, so it is left out of the chain as Porta \
                     leaves it out: requests are not authorized with 3scale (APIcast itself \
                     ignores `enabled` and would run it)",
                );
            }
            continue;
        }
        if short == "apicast" {
            chain.authorizes = true;
            apicast = true;
            continue;
        }
        if short == "rate_limit" {
            let configuration = obj.get("configuration");
            let at = join(&at, "configuration");
            if rate_limit(configuration, &at, &mut chain.limiters, r.diags) {
                r.failed = true;
            }
            continue;
        }
        if short == "rate_limit_headers" {
            // Its configuration has no fields.
            chain.rate_limit_headers = true;
            continue;
        }
        if short == "caching" {
            let mode = caching(
                obj.get("configuration"),
                &join(&at, "configuration"),
                r.diags,
            );
            if seen_caching {
                r.diags.warning(
                    at,
                    "a second caching policy has no effect: APIcast reads the cache handler \
                     of the first one in the chain, and so does tollgate",
                );
            } else {
                chain.cache.mode = mode;
                seen_caching = true;
            }
            continue;
        }
        if short == "3scale_batcher" {
            let batching = batcher(
                obj.get("configuration"),
                &join(&at, "configuration"),
                r.diags,
            );
            if chain.batching.is_some() {
                r.diags.warning(
                    at.clone(),
                    "a second 3scale_batcher: APIcast would authorize and report each request \
                     once per batcher; tollgate runs the first one only",
                );
            } else {
                chain.batching = Some(batching);
            }
            // Its rewrite phase tells the apicast policy not to authorize, wherever each
            // stands in the chain: the batcher authorizes.
            chain.authorizes = true;
            batcher_at.get_or_insert(at);
            continue;
        }
        let skipped = SkippedAt {
            policy: short.to_owned(),
            at: at.clone(),
        };
        if LOGGING_ONLY.contains(&short) || acceptance.accepts(short) {
            chain.skipped.push(skipped);
            continue;
        }
        let what = if let Some((_, issue)) = PLANNED.iter().find(|(n, _)| *n == short) {
            format!("policy '{name}' is not implemented by tollgate yet (planned: {issue})")
        } else if BUILTIN.contains(&short) {
            format!("policy '{name}' is not implemented by tollgate")
        } else {
            format!(
                "policy '{name}' is not one of APIcast's built-in policies (a custom policy?) \
                 and tollgate cannot run it"
            )
        };
        r.diags.error(
            join(&at, "name"),
            format!(
                "{what}: without it the gateway would do less than this configuration asks. \
                 To run without it, accept skipping it: `--skip-policy {short}`, or \
                 \"tollgate\": {{\"accept_skipped_policies\": [\"{short}\"]}} at the top of \
                 the document"
            ),
        );
        r.failed = true;
    }
    if let (Some(at), false) = (batcher_at, apicast) {
        r.diags.warning(
            at,
            "a 3scale_batcher without the apicast policy: in APIcast the apicast policy \
             extracts the credentials and the usage the batcher authorizes, so without it \
             every request fails; tollgate authorizes with the batcher as if the apicast \
             policy were in the chain",
        );
    }
    chain
}
