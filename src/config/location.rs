//! Places in the configuration model, and how each source document spells them.
//!
//! The compiler reports a problem against a [`Loc`]; a [`SourcePaths`] renders it as a JSON path
//! of whatever document the configuration came from (a FilterConfig here, 3scale JSON in
//! [`crate::threescale`]).

/// The four configurable errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    AuthMissing,
    AuthFailed,
    NoMatch,
    LimitsExceeded,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::AuthMissing,
        ErrorKind::AuthFailed,
        ErrorKind::NoMatch,
        ErrorKind::LimitsExceeded,
    ];

    /// The suffix 3scale uses in `error_<x>`, `error_status_<x>`, `error_headers_<x>`.
    pub fn threescale_suffix(self) -> &'static str {
        match self {
            ErrorKind::AuthMissing => "auth_missing",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::NoMatch => "no_match",
            ErrorKind::LimitsExceeded => "limits_exceeded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorField {
    Status,
    ContentType,
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialName {
    UserKey,
    AppId,
    AppKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceField {
    Whole,
    Id,
    /// Whether the service authorizes (a 3scale policy chain).
    Authorization,
    BackendVersion,
    Hosts,
    Host(usize),
    /// The control-service token as a whole (type and value).
    ControlServiceAuth,
    AuthValue,
    BackendEndpoint,
    BackendHost,
    ApiBackend,
    HostnameRewrite,
    SecretToken,
    Credential(CredentialName),
    Error(ErrorKind, ErrorField),
    Rules,
    /// A field of `limiters[k]` (`None`: the limiter as a whole).
    Limiter(usize, Option<&'static str>),
    /// A field of `cache`.
    Cache(&'static str),
    /// A field of `batching`.
    Batching(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleField<'a> {
    Method,
    Pattern,
    Metric,
    Delta,
    Query(&'a str),
}

/// A place in the configuration model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc<'a> {
    /// A top-level field of the FilterConfig (`request_line_max_bytes`).
    Field(&'static str),
    /// A field of the `control_service` section (`cluster`, `timeout_ms`, `authority`).
    ControlService(&'static str),
    Services,
    Service(usize, ServiceField),
    Rule(usize, usize, RuleField<'a>),
    /// An entry of `skipped_policies`.
    SkippedPolicy(usize),
}

/// Renders a [`Loc`] as a JSON path of the source document.
pub trait SourcePaths {
    fn path(&self, loc: Loc<'_>) -> String;
}

/// Paths in a FilterConfig document.
pub struct FilterConfigPaths;

impl SourcePaths for FilterConfigPaths {
    fn path(&self, loc: Loc<'_>) -> String {
        match loc {
            Loc::Field(field) => field.into(),
            Loc::ControlService(field) => format!("control_service.{field}"),
            Loc::Services => "services".into(),
            Loc::Service(i, field) => {
                let base = format!("services[{i}]");
                let tail = match field {
                    ServiceField::Whole => return base,
                    ServiceField::Id => "id".into(),
                    ServiceField::Authorization => "authorization".into(),
                    ServiceField::BackendVersion => "backend_version".into(),
                    ServiceField::Hosts => "hosts".into(),
                    ServiceField::Host(k) => format!("hosts[{k}]"),
                    ServiceField::ControlServiceAuth => "control_service_auth".into(),
                    ServiceField::AuthValue => "control_service_auth.value".into(),
                    ServiceField::BackendEndpoint => "backend.endpoint".into(),
                    ServiceField::BackendHost => "backend.host".into(),
                    ServiceField::ApiBackend => "upstream.api_backend".into(),
                    ServiceField::HostnameRewrite => "upstream.hostname_rewrite".into(),
                    ServiceField::SecretToken => "upstream.secret_token".into(),
                    ServiceField::Credential(c) => format!(
                        "credentials.{}",
                        match c {
                            CredentialName::UserKey => "user_key",
                            CredentialName::AppId => "app_id",
                            CredentialName::AppKey => "app_key",
                        }
                    ),
                    ServiceField::Error(kind, f) => format!(
                        "errors.{}.{}",
                        kind.threescale_suffix(),
                        match f {
                            ErrorField::Status => "status",
                            ErrorField::ContentType => "content_type",
                            ErrorField::Body => "body",
                        }
                    ),
                    ServiceField::Rules => "mapping_rules".into(),
                    ServiceField::Limiter(k, None) => format!("limiters[{k}]"),
                    ServiceField::Limiter(k, Some(f)) => format!("limiters[{k}].{f}"),
                    ServiceField::Cache(f) => format!("cache.{f}"),
                    ServiceField::Batching(f) => format!("batching.{f}"),
                };
                format!("{base}.{tail}")
            }
            Loc::Rule(i, j, field) => {
                let f = match field {
                    RuleField::Method => "method".into(),
                    RuleField::Pattern => "pattern".into(),
                    RuleField::Metric => "metric".into(),
                    RuleField::Delta => "delta".into(),
                    RuleField::Query(name) => format!("querystring_parameters.{name}"),
                };
                format!("services[{i}].mapping_rules[{j}].{f}")
            }
            Loc::SkippedPolicy(k) => format!("skipped_policies[{k}]"),
        }
    }
}
