//! `FilterConfig`: tollgate's own configuration contract, what `tollgate generate filter` writes and
//! what the filter's `on_configure` reads.
//!
//! Strict on purpose: unknown fields are errors, every field is written out with its value (defaults
//! included), and `kind`/`version` say what the document is. 3scale's own JSON is tolerant and goes
//! through [`crate::threescale`], which produces this.
//!
//! These are the raw (unvalidated) types; [`crate::compile`] turns them into the matcher.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diagnostics::{describe_json_error, Diagnostics};

pub mod location;

pub use location::{
    CredentialName, ErrorField, ErrorKind, FilterConfigPaths, Loc, RuleField, ServiceField,
    SourcePaths,
};

mod reader;

/// The `kind` every FilterConfig carries, so a loader can tell it from a 3scale document.
pub const KIND: &str = "tollgate.FilterConfig";
/// The schema version this build reads and writes.
pub const VERSION: u32 = 1;
/// Default cap on the request body read for urlencoded arguments (APIcast ignores body args it
/// had to spool to disk; this is our equivalent of that buffer).
pub const DEFAULT_REQUEST_BODY_MAX_BYTES: u32 = 64 * 1024;
/// The Envoy cluster of the control service when the configuration names none.
pub const DEFAULT_CONTROL_SERVICE_CLUSTER: &str = "tollgate_control_service";
/// How long a control-service call may take before the request is answered without it.
pub const DEFAULT_CONTROL_SERVICE_TIMEOUT_MS: u32 = 1000;
/// The longest request line answered, line break included: APIcast runs NGINX with
/// `large_client_header_buffers 4 8k`, and NGINX answers 414 to a request line that does not fit
/// one such buffer.
pub const DEFAULT_REQUEST_LINE_MAX_BYTES: u32 = 8 * 1024;

fn default_request_line_max_bytes() -> u32 {
    DEFAULT_REQUEST_LINE_MAX_BYTES
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub kind: String,
    pub version: u32,
    /// urlencoded request bodies longer than this are not read for arguments or credentials.
    pub request_body_max_bytes: u32,
    /// A request line (`<method> <target> HTTP/1.1` and CRLF) longer than this gets NGINX's 414
    /// before anything else is looked at. Absent in documents written before it existed.
    #[serde(default = "default_request_line_max_bytes")]
    pub request_line_max_bytes: u32,
    pub control_service: ControlServiceConfig,
    pub services: Vec<ServiceConfig>,
    /// Policies of the services' chains the gateway does not run: the provider accepted
    /// skipping them (or they only change logging). A record for whoever reads this document;
    /// each is reported as a warning when the configuration is loaded. Absent in documents
    /// written before it existed.
    #[serde(default)]
    pub skipped_policies: Vec<SkippedPolicy>,
}

/// A policy of a service's chain that the gateway does not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkippedPolicy {
    /// The service's id.
    pub service: String,
    /// The policy's name, without APIcast's `apicast.policy.` prefix.
    pub policy: String,
}

/// How the filter reaches the control service (3scale's Service Management API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlServiceConfig {
    /// The Envoy cluster the calls go to.
    pub cluster: String,
    /// Call timeout; never 0 (Envoy would then wait forever).
    pub timeout_ms: u32,
    /// The `:authority` of every call: the host (and port, when not the scheme's default) of
    /// the URL the cluster really targets, when an operator points it somewhere other than
    /// the services' `backend.endpoint` (as APIcast's `BACKEND_ENDPOINT_OVERRIDE`, it wins
    /// over `backend.host`). Absent: each service's `backend.host`, else the host of its
    /// `backend.endpoint` (or of the one the services agree on), else the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

impl Default for ControlServiceConfig {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CONTROL_SERVICE_CLUSTER.into(),
            timeout_ms: DEFAULT_CONTROL_SERVICE_TIMEOUT_MS,
            authority: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub id: String,
    /// 3scale's `system_name` (or `name`); shown in debug headers. May be empty.
    pub name: String,
    /// Public host names, matched case-insensitively without port.
    pub hosts: Vec<String>,
    /// Whether requests are authorized with the control service at all. Absent in documents
    /// written before it existed (which all authorize).
    #[serde(default)]
    pub authorization: Authorization,
    /// Which credentials identify an application; `null`: none can be found (APIcast's
    /// behaviour without `backend_version`), so every request gets the auth-missing error.
    pub backend_version: Option<BackendVersion>,
    /// How the gateway authenticates itself to the control service; `null` (or absent): it
    /// sends no token, only `service_id` and the application's credentials.
    #[serde(default)]
    pub control_service_auth: Option<ControlServiceAuth>,
    pub backend: BackendEndpoint,
    pub credentials: CredentialsConfig,
    pub upstream: UpstreamConfig,
    pub errors: ErrorsConfig,
    pub mapping_rules: Vec<MappingRuleConfig>,
    /// Local limits, checked after credentials and mapping rules and before the control
    /// service is asked (see [`LimiterConfig`]). Absent in documents written before them.
    #[serde(default)]
    pub limiters: Vec<LimiterConfig>,
    /// Send `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` on admitted and
    /// limited responses, from the tightest limit that applies (APIcast's
    /// `rate_limit_headers` policy). Absent in documents written before it existed.
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// How authorizations are cached and what happens when the control service fails
    /// (APIcast's Caching policy). Absent in documents written before it existed: the
    /// defaults, a strict cache with reports sent after each cached request.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `null`: every request's usage goes out in an authrep (cached requests' afterwards).
    /// Set: APIcast's 3scale Batcher: authorize answers are cached and usage is reported in
    /// batches. Absent in documents written before it existed.
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
}

/// How long an authorized answer stands before a request waits for a fresh one.
pub const DEFAULT_CACHE_TTL_SECONDS: u32 = 60;
/// How long a denial is remembered, so a flood of one bad key costs one call.
pub const DEFAULT_DENIED_TTL_SECONDS: u32 = 5;
/// Bound on the keys (service, credentials, usage) one service's cache keeps.
pub const DEFAULT_CACHE_MAX_KEYS: u32 = 10_000;
/// The largest `max_keys` and `max_pending` accepted.
pub const MAX_CACHE_MAX_KEYS: u32 = 1 << 20;
/// APIcast's 3scale Batcher defaults.
pub const DEFAULT_AUTHS_TTL_SECONDS: u32 = 10;
pub const DEFAULT_BATCH_REPORT_SECONDS: u32 = 10;
/// Bound on the applications whose usage waits for the next batch, per service.
pub const DEFAULT_MAX_PENDING: u32 = 4096;

/// A service's authorization cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// An authorized answer is used this long without a fresh one (authrep reporting: after
    /// that a request waits again; `resilient` and `allow` still fall back to it).
    pub ttl_seconds: u32,
    /// A denial (credentials refused, limits exceeded) is remembered this long; 0: not at
    /// all, as APIcast. A limits denial also ends when its period resets.
    pub denied_ttl_seconds: u32,
    /// Keys hash into this many slots; a denial never displaces an authorization.
    pub max_keys: u32,
    /// At most one background authrep per key in flight per worker; usage that arrives
    /// meanwhile is summed into the next (authrep reporting only).
    pub coalesce_reports: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::Strict,
            ttl_seconds: DEFAULT_CACHE_TTL_SECONDS,
            denied_ttl_seconds: DEFAULT_DENIED_TTL_SECONDS,
            max_keys: DEFAULT_CACHE_MAX_KEYS,
            coalesce_reports: false,
        }
    }
}

/// APIcast's `caching_type`: what an answer does to the cache, and what a failure of the
/// control service (no answer, a timeout, 5xx, garbage) means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Only authorizations are kept; a failure evicts the key and denies.
    #[default]
    Strict,
    /// The last answer stands through failures.
    Resilient,
    /// As resilient, and a key never seen is admitted during a failure (not one last denied).
    Allow,
    /// No cache: every request waits for the control service.
    None,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Strict => "strict",
            CacheMode::Resilient => "resilient",
            CacheMode::Allow => "allow",
            CacheMode::None => "none",
        }
    }
}

/// APIcast's 3scale Batcher: `authorize` answers cached for `auths_ttl_seconds`, usage summed
/// per application and reported with `POST /transactions.xml` every `batch_report_seconds` by
/// one worker of the whole Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    pub auths_ttl_seconds: u32,
    pub batch_report_seconds: u32,
    /// Applications whose usage waits for the next report, at most (slots); usage that finds
    /// no slot is dropped, counted (`tollgate.batch.dropped`) and logged.
    pub max_pending: u32,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            auths_ttl_seconds: DEFAULT_AUTHS_TTL_SECONDS,
            batch_report_seconds: DEFAULT_BATCH_REPORT_SECONDS,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

/// Bound on the keys one limiter keeps: keys hash into this many slots.
pub const DEFAULT_LIMITER_MAX_KEYS: u32 = 65_536;
/// The largest `max_keys` accepted.
pub const MAX_LIMITER_MAX_KEYS: u32 = 1 << 24;

fn default_max_keys() -> u32 {
    DEFAULT_LIMITER_MAX_KEYS
}

/// One local limit of a service: which requests it counts, per what key, how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// Unique in the service (and, for `scope: global`, the name services share):
    /// letters, digits, `_` and `-`, at most 64 of them. Names the limiter's counters.
    pub name: String,
    /// `requests` (each request costs 1) or `metric:<name>` (a request costs the delta the
    /// mapping rules give that metric or method; a request without it is not counted).
    pub counts: String,
    /// `service` (one bucket), `application` (per credentials: the user key, app id or
    /// access token), `header:<name>` (per value of a request header; a request without it
    /// shares the bucket of the empty value) or `client_address` (per client IP).
    pub key: String,
    /// `service`: the limiter's state is the service's; `global`: shared with every
    /// service's limiter of the same name and definition.
    #[serde(default)]
    pub scope: LimiterScope,
    /// A token bucket: refills `rate` per `per`, holds `burst`. Exactly one of
    /// `token_bucket` and `fixed_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_bucket: Option<TokenBucketConfig>,
    /// `count` per window of `window_seconds`, windows aligned to the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_window: Option<FixedWindowConfig>,
    #[serde(default)]
    pub mode: LimiterMode,
    /// The status of a limited request; `null`: the service's `limits_exceeded` error's.
    /// Body and content type are always the `limits_exceeded` error's.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many keys the limiter keeps apart: keys hash into this many slots, and keys
    /// that share a slot share a bucket (stricter, never looser).
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimiterScope {
    #[default]
    Service,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimiterMode {
    /// Limited requests get the limits-exceeded error.
    #[default]
    Enforce,
    /// Limited requests are counted and let through: how a limit is rolled out.
    ReportOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    pub rate: u64,
    pub per: RatePeriod,
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
    Day,
}

impl RatePeriod {
    pub fn seconds(self) -> u64 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3600,
            RatePeriod::Day => 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedWindowConfig {
    pub count: u64,
    pub window_seconds: u64,
}

/// Whether a service's requests are authorized with the control service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Authorization {
    /// Credentials, mapping rules and an authrep call: APIcast's `apicast` policy.
    #[default]
    Threescale,
    /// Forwarded to the upstream without any of those: a policy chain without the `apicast`
    /// policy.
    None,
}

/// 3scale's `backend_version`: which credentials identify an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendVersion {
    /// `user_key`
    #[serde(rename = "1")]
    UserKey,
    /// `app_id` + `app_key`
    #[serde(rename = "2")]
    AppIdKey,
    /// `access_token`
    #[serde(rename = "oauth")]
    OAuth,
}

impl BackendVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendVersion::UserKey => "1",
            BackendVersion::AppIdKey => "2",
            BackendVersion::OAuth => "oauth",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlServiceAuth {
    #[serde(rename = "type")]
    pub kind: ControlServiceAuthKind,
    pub value: Secret,
}

impl fmt::Debug for ControlServiceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlServiceAuth")
            .field("type", &self.kind)
            .field("value", &self.value)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlServiceAuthKind {
    ServiceToken,
    ProviderKey,
}

impl ControlServiceAuthKind {
    /// The query parameter name the Service Management API expects.
    pub fn param(self) -> &'static str {
        match self {
            ControlServiceAuthKind::ServiceToken => "service_token",
            ControlServiceAuthKind::ProviderKey => "provider_key",
        }
    }
}

/// A value that must never be printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// Where the 3scale Service Management API lives (`proxy.backend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackendEndpoint {
    /// Base URL, e.g. `https://su1.3scale.net`. `None` means "not stated in the config".
    pub endpoint: Option<String>,
    /// Overrides the `Host` header of control-service calls.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsLocation {
    Query,
    Headers,
    Authorization,
}

impl CredentialsLocation {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialsLocation::Query => "query",
            CredentialsLocation::Headers => "headers",
            CredentialsLocation::Authorization => "authorization",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    pub location: CredentialsLocation,
    /// Parameter (or header) names, lower-cased as APIcast does.
    pub user_key: String,
    pub app_id: String,
    pub app_key: String,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            location: CredentialsLocation::Query,
            user_key: "user_key".into(),
            app_id: "app_id".into(),
            app_key: "app_key".into(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The API's base URL (`proxy.api_backend`); `None`: APIcast answers 404 after authorizing.
    pub api_backend: Option<String>,
    /// `Host` sent upstream instead of the `api_backend` host.
    pub hostname_rewrite: Option<String>,
    /// Sent upstream as `X-3scale-proxy-secret-token`.
    pub secret_token: Option<Secret>,
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("api_backend", &self.api_backend)
            .field("hostname_rewrite", &self.hostname_rewrite)
            .field("secret_token", &self.secret_token)
            .finish()
    }
}

/// The four configurable error answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    pub auth_missing: ErrorResponseConfig,
    pub auth_failed: ErrorResponseConfig,
    pub no_match: ErrorResponseConfig,
    pub limits_exceeded: ErrorResponseConfig,
}

/// APIcast's content type for all four errors.
pub const DEFAULT_ERROR_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

impl Default for ErrorsConfig {
    fn default() -> Self {
        let answer = |status, body: &str| ErrorResponseConfig {
            status,
            content_type: DEFAULT_ERROR_CONTENT_TYPE.into(),
            body: body.into(),
        };
        Self {
            auth_missing: answer(401, "Authentication parameters missing"),
            auth_failed: answer(403, "Authentication failed"),
            no_match: answer(404, "No Mapping Rule matched"),
            limits_exceeded: answer(429, "Limits exceeded"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponseConfig {
    pub status: u16,
    pub content_type: String,
    /// Sent verbatim, no trailing newline added.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRuleConfig {
    /// Exact, case-sensitive HTTP method, or `ANY`.
    pub method: String,
    /// The 3scale pattern, as written (`/v1/words/{word}.json$`).
    pub pattern: String,
    pub metric: String,
    pub delta: i64,
    /// Argument name -> expected value; a value containing `{name}` only requires presence.
    pub querystring_parameters: BTreeMap<String, String>,
    /// Stop evaluating after this rule when it matches.
    pub last: bool,
}

impl FilterConfig {
    pub fn new(services: Vec<ServiceConfig>) -> Self {
        Self {
            kind: KIND.into(),
            version: VERSION,
            request_body_max_bytes: DEFAULT_REQUEST_BODY_MAX_BYTES,
            request_line_max_bytes: DEFAULT_REQUEST_LINE_MAX_BYTES,
            control_service: ControlServiceConfig::default(),
            services,
            skipped_policies: Vec::new(),
        }
    }

    /// Reads a FilterConfig document. Structural problems (a wrong type, an unknown field) stop
    /// the read at the first one, reported with its JSON path; [`crate::compile`] then reports
    /// every semantic problem.
    pub fn from_json(bytes: &[u8], diags: &mut Diagnostics) -> Option<Self> {
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                diags.error("", describe_json_error(&e));
                return None;
            }
        };
        Self::from_value(&value, diags)
    }

    /// As [`FilterConfig::from_json`], from parsed JSON.
    pub fn from_value(value: &serde_json::Value, diags: &mut Diagnostics) -> Option<Self> {
        match serde_path_to_error::deserialize::<_, FilterConfig>(reader::ValueReader(value)) {
            Ok(config) => {
                if config.kind != KIND {
                    diags.error("kind", format!("expected \"{KIND}\""));
                    return None;
                }
                if config.version != VERSION {
                    diags.error(
                        "version",
                        format!(
                            "this build reads FilterConfig version {VERSION}, not {}",
                            config.version
                        ),
                    );
                    return None;
                }
                Some(config)
            }
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let inner = e.into_inner();
                match inner.redacted {
                    Some(redacted) => diags.error_quoting(path, inner.message, redacted),
                    None => diags.error(path, inner.message),
                }
                None
            }
        }
    }

    pub fn to_json_pretty(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
