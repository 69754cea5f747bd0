//! APIcast's `rate_limit` policy, as the service's [`LimiterConfig`]s.
//!
//! What carries over:
//!
//! - a leaky bucket (`rate` per second, `burst`) admits `burst + 1` requests at once and
//!   delays the `burst` after the first; tollgate does not delay, it admits at once what
//!   APIcast would delay: a token bucket of `rate` per second holding `burst + 1`;
//! - a fixed window is `count` per `window` seconds (`window` missing or not positive: 1);
//! - the key: a plain name is one bucket for the service (or, with `scope: global`, for every
//!   service); a liquid name with one `{{ remote_addr }}` or `{{ headers… }}` variable is a
//!   bucket per client address or per value of that header;
//! - `limits_exceeded_error`: its status, and `error_handling: log` as `report_only`.
//!
//! What does not, each with a warning at its path: connection limiters, limiters with a
//! condition, other liquid keys, leaky buckets of rate 0 (those limiters are left out); a
//! Redis URL (the limiters are kept, their state is each gateway's own); `configuration_error`.

use serde_json::{Map, Value};

use crate::config::{
    FixedWindowConfig, LimiterConfig, LimiterMode, LimiterScope, RatePeriod, TokenBucketConfig,
    DEFAULT_LIMITER_MAX_KEYS,
};
use crate::diagnostics::{index, Diagnostics};

use super::reader::{kind_of, Reader};
use super::suggest::Fields;

const CONFIG_FIELDS: Fields = Fields {
    read: &[
        "connection_limiters",
        "leaky_bucket_limiters",
        "fixed_window_limiters",
        "redis_url",
        "limits_exceeded_error",
        "configuration_error",
    ],
    ignored: &[],
};

const ERROR_FIELDS: Fields = Fields {
    read: &["status_code", "error_handling"],
    ignored: &[],
};

const LEAKY_BUCKET_FIELDS: Fields = Fields {
    read: &["key", "rate", "burst", "condition"],
    ignored: &[],
};

const FIXED_WINDOW_FIELDS: Fields = Fields {
    read: &["key", "count", "window", "condition"],
    ignored: &[],
};

const KEY_FIELDS: Fields = Fields {
    read: &["name", "name_type", "scope"],
    ignored: &[],
};

const CONDITION_FIELDS: Fields = Fields {
    read: &["operations"],
    ignored: &["combine_op"],
};

/// The longest limiter name.
const NAME_LIMIT: usize = 64;

/// What every limiter of one policy shares.
struct Shared {
    status: Option<u16>,
    mode: LimiterMode,
}

/// Translates one `rate_limit` policy's `configuration` (at `at`), adding its limiters to
/// `limiters` (the service's so far, whose names the new ones avoid). Returns whether a value
/// was refused.
pub(super) fn rate_limit(
    configuration: Option<&Value>,
    at: &str,
    limiters: &mut Vec<LimiterConfig>,
    diags: &mut Diagnostics,
) -> bool {
    let empty = Map::new();
    let obj = match configuration {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(other) => {
            diags.error(at, format!("expected an object, found {}", kind_of(other)));
            return true;
        }
    };
    let mut r = Reader::new(obj, at.to_owned(), &CONFIG_FIELDS, diags);

    let mut shared = Shared {
        status: None,
        mode: LimiterMode::Enforce,
    };
    if let Some(e) = r.object("limits_exceeded_error") {
        let mut er = Reader::new(e, r.at("limits_exceeded_error"), &ERROR_FIELDS, r.diags);
        if let Some(status) = er.integer("status_code") {
            match u16::try_from(status) {
                Ok(s) if (200..=599).contains(&s) => shared.status = Some(s),
                _ => er.error(
                    "status_code",
                    format!("status {status} is not between 200 and 599"),
                ),
            }
        }
        match er.compared("error_handling").as_deref() {
            None | Some("exit") => {}
            Some("log") => shared.mode = LimiterMode::ReportOnly,
            Some(other) => {
                er.warning(
                    "error_handling",
                    format!(
                        "unknown error_handling '{other}': APIcast only rejects with 'exit' and \
                         logs with anything else, so tollgate reports without rejecting \
                         (expected exit or log)"
                    ),
                );
                shared.mode = LimiterMode::ReportOnly;
            }
        }
        if er.failed {
            r.failed = true;
        }
    }

    if r.value("configuration_error").is_some() {
        r.warning(
            "configuration_error",
            "tollgate has no use for configuration_error: its limiters cannot be misconfigured \
             at run time, and when its shared store fails it denies the request",
        );
    }
    if let Some(url) = r.text("redis_url") {
        if !url.is_empty() {
            r.warning(
                "redis_url",
                "tollgate keeps limiter state in each Envoy, not in Redis: gateways do not \
                 share counts, so with several gateways each admits up to the limit",
            );
        }
    }

    if let Some(items) = r.array("connection_limiters") {
        let list_at = r.at("connection_limiters");
        for k in 0..items.len() {
            r.diags.warning(
                index(&list_at, k),
                "tollgate has no connection limiters (concurrent requests): this limiter is \
                 left out",
            );
        }
    }

    for kind in [Kind::LeakyBucket, Kind::FixedWindow] {
        let Some(items) = r.array(kind.field()) else {
            continue;
        };
        let list_at = r.at(kind.field());
        for (k, item) in items.iter().enumerate() {
            let item_at = index(&list_at, k);
            let Value::Object(o) = item else {
                r.diags.error(
                    item_at,
                    format!("expected a limiter object, found {}", kind_of(item)),
                );
                r.failed = true;
                continue;
            };
            let (limiter, failed) = limiter(kind, o, item_at, &shared, limiters, r.diags);
            if failed {
                r.failed = true;
            }
            limiters.extend(limiter);
        }
    }
    r.failed
}

#[derive(Clone, Copy)]
enum Kind {
    LeakyBucket,
    FixedWindow,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::LeakyBucket => "leaky_bucket_limiters",
            Kind::FixedWindow => "fixed_window_limiters",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::LeakyBucket => "leaky_bucket",
            Kind::FixedWindow => "fixed_window",
        }
    }
}

/// One limiter object; `None` when it cannot be expressed or was refused (the bool).
fn limiter(
    kind: Kind,
    obj: &Map<String, Value>,
    at: String,
    shared: &Shared,
    existing: &[LimiterConfig],
    diags: &mut Diagnostics,
) -> (Option<LimiterConfig>, bool) {
    let fields = match kind {
        Kind::LeakyBucket => &LEAKY_BUCKET_FIELDS,
        Kind::FixedWindow => &FIXED_WINDOW_FIELDS,
    };
    let mut r = Reader::new(obj, at, fields, diags);
    let mut expressible = true;

    let key = match r.object("key") {
        Some(k) => {
            let mut kr = Reader::new(k, r.at("key"), &KEY_FIELDS, r.diags);
            let key = limiter_key(&mut kr);
            if kr.failed {
                r.failed = true;
            }
            key
        }
        None => {
            if r.value("key").is_none() {
                r.error(
                    "key",
                    "a limiter needs a key (APIcast's schema requires one, and it fails \
                     without one)",
                );
            }
            None
        }
    };
    if key.as_ref().is_some_and(|k| k.bucket.is_none()) {
        expressible = false;
    }

    let (token_bucket, fixed_window) = match kind {
        Kind::LeakyBucket => {
            let rate = non_negative(&mut r, "rate");
            let burst = non_negative(&mut r, "burst").unwrap_or(0);
            if r.value("rate").is_none() {
                r.error(
                    "rate",
                    "a leaky bucket limiter needs a rate (requests per second)",
                );
            }
            if rate == Some(0) {
                r.warning(
                    "rate",
                    "a rate of 0 cannot be expressed (tollgate's token bucket refills at least \
                     1 per second): this limiter is left out",
                );
                expressible = false;
            }
            let bucket = rate.map(|rate| TokenBucketConfig {
                rate,
                per: RatePeriod::Second,
                // APIcast admits the first request and delays up to `burst` more.
                burst: burst.saturating_add(1),
            });
            (bucket, None)
        }
        Kind::FixedWindow => {
            let count = non_negative(&mut r, "count");
            if r.value("count").is_none() {
                r.error("count", "a fixed window limiter needs a count");
            }
            let window = match r.count("window") {
                Some(w) if w > 0 => w as u64,
                _ => 1,
            };
            let fw = count.map(|count| FixedWindowConfig {
                count,
                window_seconds: window,
            });
            (None, fw)
        }
    };

    if let Some(c) = r.object("condition") {
        let mut cr = Reader::new(c, r.at("condition"), &CONDITION_FIELDS, r.diags);
        let operations = cr.array("operations").map_or(0, Vec::len);
        if cr.failed {
            r.failed = true;
        }
        if operations > 0 {
            r.warning(
                "condition",
                "tollgate cannot apply a limiter only to the requests a condition selects, and \
                 applying it to all would limit more than configured: this limiter is left out",
            );
            expressible = false;
        }
    }

    let failed = r.failed;
    let (Some(key), true, false) = (key, expressible, failed) else {
        return (None, failed);
    };
    let Some(bucket) = key.bucket else {
        return (None, failed);
    };
    if token_bucket.is_none() && fixed_window.is_none() {
        return (None, failed);
    }
    let name = unique_name(&format!("{}_{}", kind.prefix(), key.name), existing);
    (
        Some(LimiterConfig {
            name,
            counts: "requests".into(),
            key: bucket,
            scope: key.scope,
            token_bucket,
            fixed_window,
            mode: shared.mode,
            status: shared.status,
            max_keys: DEFAULT_LIMITER_MAX_KEYS,
        }),
        false,
    )
}

/// A count field that may not be negative.
fn non_negative(r: &mut Reader<'_, '_>, field: &str) -> Option<u64> {
    let n = r.count(field)?;
    match u64::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            r.error(field, format!("{n} is negative"));
            None
        }
    }
}

struct Key {
    /// The key's name, as written.
    name: String,
    /// tollgate's key; `None` when it cannot be expressed (already warned about).
    bucket: Option<String>,
    scope: LimiterScope,
}

/// A limiter's `key` object; `None` when a value was refused.
fn limiter_key(r: &mut Reader<'_, '_>) -> Option<Key> {
    let name = r.text("name");
    if name.is_none() && r.value("name").is_none() {
        r.error(
            "name",
            "a limiter key needs a name (APIcast's schema requires one)",
        );
    }
    let liquid = match r.compared("name_type").as_deref() {
        None | Some("plain") => false,
        Some("liquid") => true,
        Some(other) => {
            r.warning(
                "name_type",
                format!(
                    "unknown name_type '{other}': APIcast reads the name as plain text, and so \
                     does tollgate (expected plain or liquid)"
                ),
            );
            false
        }
    };
    let scope = match r.compared("scope").as_deref() {
        None | Some("service") => LimiterScope::Service,
        Some("global") => LimiterScope::Global,
        Some(other) => {
            r.warning(
                "scope",
                format!(
                    "unknown scope '{other}': APIcast keeps the limiter per service, and so does \
                     tollgate (expected service or global)"
                ),
            );
            LimiterScope::Service
        }
    };
    let name = name?;
    let bucket = if liquid {
        let b = liquid_key(&name);
        if b.is_none() {
            r.warning(
                "name",
                "tollgate can key a limiter by one {{ remote_addr }} or {{ headers['Name'] }} \
                 variable only (no other variables, filters, tags or several variables): \
                 this limiter is left out",
            );
        }
        b
    } else {
        Some("service".to_owned())
    };
    Some(Key {
        name,
        bucket,
        scope,
    })
}

/// tollgate's key for a liquid template, if it can express it: text with at most one
/// `{{ remote_addr }}` or `{{ headers… }}` variable (the text around it does not change which
/// requests share a bucket).
fn liquid_key(template: &str) -> Option<String> {
    if template.contains("{%") {
        return None;
    }
    let Some(open) = template.find("{{") else {
        // Text only: the same for every request.
        return Some("service".to_owned());
    };
    let rest = &template[open + 2..];
    let close = rest.find("}}")?;
    let (inner, after) = (&rest[..close], &rest[close + 2..]);
    if after.contains("{{") || after.contains("}}") || inner.contains("{{") {
        return None;
    }
    let inner = inner.trim();
    if inner == "remote_addr" {
        return Some("client_address".to_owned());
    }
    let header = inner.strip_prefix("headers")?.trim_start();
    let name = if let Some(dotted) = header.strip_prefix('.') {
        dotted
    } else {
        let quoted = header.strip_prefix('[')?.strip_suffix(']')?.trim();
        let q = quoted.chars().next()?;
        if q != '\'' && q != '"' {
            return None;
        }
        quoted.strip_prefix(q)?.strip_suffix(q)?
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return None;
    }
    Some(format!("header:{}", name.to_ascii_lowercase()))
}

/// `wanted` sanitized (every character but letters, digits, `_` and `-` becomes `_`) and
/// trimmed to 64 characters, with `_2`, `_3`… when a limiter of `existing` has the name.
fn unique_name(wanted: &str, existing: &[LimiterConfig]) -> String {
    let base: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(NAME_LIMIT)
        .collect();
    let taken = |n: &str| existing.iter().any(|l| l.name == n);
    if !taken(&base) {
        return base;
    }
    // Fewer limiters than suffixes: one of the first `existing.len() + 1` is free.
    let mut k = 2usize;
    loop {
        let suffix = format!("_{k}");
        let name = format!(
            "{}{suffix}",
            &base[..base.len().min(NAME_LIMIT - suffix.len())]
        );
        if !taken(&name) {
            return name;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::liquid_key;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn liquid_keys_tollgate_can_express() {
        for (t, k) in [
            ("{{ remote_addr }}", Some("client_address")),
            ("{{remote_addr}}", Some("client_address")),
            ("ip-{{ remote_addr }}-x", Some("client_address")),
            ("{{ headers['X-User'] }}", Some("header:x-user")),
            ("{{ headers[\"X-User\"] }}", Some("header:x-user")),
            ("{{headers.X-User}}", Some("header:x-user")),
            ("user_{{ headers[ 'X-User' ] }}", Some("header:x-user")),
            ("constant", Some("service")),
            ("{{ jwt.sub }}", None),
            ("{{ uri }}", None),
            ("{{ host }}", None),
            ("{{ remote_addr | downcase }}", None),
            ("{{ remote_addr }}{{ headers.X }}", None),
            ("{% if x %}a{% endif %}", None),
            ("{{ headers['X-User\"] }}", None),
            ("{{ headers[X] }}", None),
            ("{{ headers }}", None),
            ("{{ remote_addr ", None),
        ] {
            assert_eq!(liquid_key(t).as_deref(), k, "{t:?}");
        }
    }
}
