//! 3scale proxy configuration → [`FilterConfig`] (reference §4.2).
//!
//! Accepts the three shapes 3scale serves: `{"services":[…]}` (APIcast's config file and
//! `/admin/api/nginx/spec.json`), `{"proxy_config":{…,"content":{…}}}` (one service's proxy
//! config) and `{"proxy_configs":[{"proxy_config":{…}}]}` (all of them). Unknown fields are
//! ignored, since 3scale adds fields all the time. This module only reads shapes and types;
//! [`crate::compile`] checks the values and reports them at the paths of this document through
//! [`ThreescalePaths`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::location::{
    CredentialName, ErrorField, ErrorKind, Loc, RuleField, ServiceField, SourcePaths,
};
use crate::config::{
    BackendEndpoint, BackendVersion, ControlServiceAuth, ControlServiceAuthKind, CredentialsConfig,
    CredentialsLocation, ErrorResponseConfig, ErrorsConfig, FilterConfig, MappingRuleConfig,
    Secret, ServiceConfig, UpstreamConfig,
};
use crate::diagnostics::{index, join, Diagnostics};

/// Where each FilterConfig service (and each of its rules) came from in the 3scale document.
#[derive(Debug, Clone, Default)]
pub struct ThreescalePaths {
    services: Vec<SourceService>,
    /// `services`, `proxy_configs` or `proxy_config.content`: the list as a whole.
    list: String,
}

#[derive(Debug, Clone, Default)]
struct SourceService {
    /// `services[3]`, `proxy_config.content`, …
    at: String,
    /// Index in `proxy_rules` of each translated rule (rules with errors are left out).
    rules: Vec<usize>,
    /// Index in `proxy.hosts` of each translated host; `None` when `hosts` was absent and
    /// defaulted to `localhost`.
    hosts: Option<Vec<usize>>,
}

impl SourcePaths for ThreescalePaths {
    fn path(&self, loc: Loc<'_>) -> String {
        let base = |i: usize| {
            self.services
                .get(i)
                .map(|s| s.at.clone())
                .unwrap_or_default()
        };
        match loc {
            // Not in 3scale documents: their translation always takes the default.
            Loc::Field(field) => field.into(),
            Loc::ControlService(field) => format!("control_service.{field}"),
            Loc::Services => self.list.clone(),
            Loc::Service(i, field) => {
                let b = base(i);
                let tail = match field {
                    ServiceField::Whole => return b,
                    ServiceField::Id => "id".into(),
                    ServiceField::Hosts => "proxy.hosts".into(),
                    ServiceField::Host(k) => {
                        match self.services.get(i).and_then(|s| s.hosts.as_ref()) {
                            Some(sources) => {
                                format!("proxy.hosts[{}]", sources.get(k).copied().unwrap_or(k))
                            }
                            None => "proxy.hosts".into(),
                        }
                    }
                    ServiceField::AuthValue => "backend_authentication_value".into(),
                    ServiceField::BackendEndpoint => "proxy.backend.endpoint".into(),
                    ServiceField::BackendHost => "proxy.backend.host".into(),
                    ServiceField::ApiBackend => "proxy.api_backend".into(),
                    ServiceField::HostnameRewrite => "proxy.hostname_rewrite".into(),
                    ServiceField::SecretToken => "proxy.secret_token".into(),
                    ServiceField::Credential(c) => format!(
                        "proxy.{}",
                        match c {
                            CredentialName::UserKey => "auth_user_key",
                            CredentialName::AppId => "auth_app_id",
                            CredentialName::AppKey => "auth_app_key",
                        }
                    ),
                    ServiceField::Error(kind, f) => format!(
                        "proxy.error_{}{}",
                        match f {
                            ErrorField::Status => "status_",
                            ErrorField::ContentType => "headers_",
                            ErrorField::Body => "",
                        },
                        kind.threescale_suffix()
                    ),
                    ServiceField::Rules => "proxy.proxy_rules".into(),
                };
                join(&b, &tail)
            }
            Loc::Rule(i, j, field) => {
                let f = match field {
                    RuleField::Method => "http_method".into(),
                    RuleField::Pattern => "pattern".into(),
                    RuleField::Metric => "metric_system_name".into(),
                    RuleField::Delta => "delta".into(),
                    RuleField::Query(name) => format!("querystring_parameters.{name}"),
                };
                let source_rule = self
                    .services
                    .get(i)
                    .and_then(|s| s.rules.get(j))
                    .copied()
                    .unwrap_or(j);
                format!("{}.proxy.proxy_rules[{source_rule}].{f}", base(i))
            }
        }
    }
}

/// The FilterConfig made from a 3scale document, and where its parts came from.
#[derive(Debug, Clone)]
pub struct Translation {
    /// Everything that could be read. When `complete` is false, parts with errors were left
    /// out (a service missing its id, a rule of the wrong type) or given their defaults (a
    /// field of the wrong type), so the rest can still be checked.
    pub config: FilterConfig,
    pub paths: ThreescalePaths,
    /// No structural error was found.
    pub complete: bool,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads typed fields out of a JSON object, reporting wrong types at their path.
struct Reader<'a, 'd> {
    obj: &'a Map<String, Value>,
    path: String,
    diags: &'d mut Diagnostics,
    failed: bool,
}

impl<'a, 'd> Reader<'a, 'd> {
    fn new(obj: &'a Map<String, Value>, path: String, diags: &'d mut Diagnostics) -> Self {
        Self {
            obj,
            path,
            diags,
            failed: false,
        }
    }

    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, `None` when missing or null.
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn wrong(&mut self, key: &str, expected: &str, found: &Value) {
        let at = self.at(key);
        self.diags
            .error(at, format!("expected {expected}, found {}", kind_of(found)));
        self.failed = true;
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong(key, "a string", other);
                None
            }
        }
    }

    /// A string, or an integer written as a number (ids, statuses).
    fn string_or_integer(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            other => {
                self.wrong(key, "a string or an integer", other);
                None
            }
        }
    }

    fn bool(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong(key, "true or false", other);
                None
            }
        }
    }

    /// An integer, as a JSON number (`2`, `2.0`) or a numeric string (`"2"`): Lua coerces both.
    fn integer(&mut self, key: &str) -> Option<i64> {
        let v = self.value(key)?;
        let parsed = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            let at = self.at(key);
            match v {
                Value::String(s) => self.diags.error_quoting(
                    at,
                    format!("expected an integer, found \"{s}\""),
                    "expected an integer, found \"…\"".into(),
                ),
                Value::Number(n) => self.diags.error_quoting(
                    at,
                    format!("expected an integer, found {n}"),
                    "expected an integer, found a number".into(),
                ),
                other => self
                    .diags
                    .error(at, format!("expected an integer, found {}", kind_of(other))),
            }
            self.failed = true;
        }
        parsed
    }

    fn object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        match self.value(key)? {
            Value::Object(o) => Some(o),
            other => {
                self.wrong(key, "an object", other);
                None
            }
        }
    }

    fn array(&mut self, key: &str) -> Option<&'a Vec<Value>> {
        match self.value(key)? {
            Value::Array(a) => Some(a),
            other => {
                self.wrong(key, "an array", other);
                None
            }
        }
    }
}

/// Translates a parsed 3scale document, reporting every structural problem. `None` only when
/// the document is not a 3scale configuration at all.
pub fn translate(root: &Value, diags: &mut Diagnostics) -> Option<Translation> {
    let errors_before = diags.errors().count();
    let Value::Object(obj) = root else {
        diags.error(
            "",
            format!(
                "expected a JSON object at the top level, found {}",
                kind_of(root)
            ),
        );
        return None;
    };
    let mut entries: Vec<(String, &Map<String, Value>)> = Vec::new();
    let list;
    let provider_key = obj.get("provider_key").and_then(Value::as_str);
    if let Some(services) = obj.get("services") {
        list = "services".to_owned();
        match services {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = index("services", i);
                    match item {
                        Value::Object(o) => entries.push((at, o)),
                        other => diags.error(
                            at,
                            format!("expected a service object, found {}", kind_of(other)),
                        ),
                    }
                }
            }
            other => diags.error(
                "services",
                format!("expected an array, found {}", kind_of(other)),
            ),
        }
    } else if let Some(single) = obj.get("proxy_config") {
        list = "proxy_config".to_owned();
        if let Some(entry) = proxy_config_content(single, "proxy_config".into(), diags) {
            entries.push(entry);
        }
    } else if let Some(configs) = obj.get("proxy_configs") {
        list = "proxy_configs".to_owned();
        match configs {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = index("proxy_configs", i);
                    let inner = match item {
                        Value::Object(o) => o.get("proxy_config"),
                        _ => None,
                    };
                    match inner {
                        Some(pc) => {
                            if let Some(entry) =
                                proxy_config_content(pc, join(&at, "proxy_config"), diags)
                            {
                                entries.push(entry);
                            }
                        }
                        None => diags.error(at, "expected an object with a \"proxy_config\""),
                    }
                }
            }
            other => diags.error(
                "proxy_configs",
                format!("expected an array, found {}", kind_of(other)),
            ),
        }
    } else {
        diags.error(
            "",
            "not a 3scale proxy configuration: expected \"services\", \"proxy_config\" or \"proxy_configs\" at the top level",
        );
        return None;
    }

    let mut services = Vec::with_capacity(entries.len());
    let mut paths = ThreescalePaths {
        services: Vec::with_capacity(entries.len()),
        list,
    };
    for (at, service) in entries {
        if let Some((s, sources)) = service_config(service, &at, provider_key, diags) {
            services.push(s);
            paths.services.push(SourceService {
                at,
                rules: sources.rules,
                hosts: sources.hosts,
            });
        }
    }
    Some(Translation {
        config: FilterConfig::new(services),
        paths,
        complete: diags.errors().count() == errors_before,
    })
}

fn proxy_config_content<'a>(
    pc: &'a Value,
    at: String,
    diags: &mut Diagnostics,
) -> Option<(String, &'a Map<String, Value>)> {
    let content_at = join(&at, "content");
    match pc {
        Value::Object(o) => match o.get("content") {
            Some(Value::Object(content)) => Some((content_at, content)),
            Some(other) => {
                diags.error(
                    content_at,
                    format!("expected the service object, found {}", kind_of(other)),
                );
                None
            }
            None => {
                diags.error(at, "has no \"content\"");
                None
            }
        },
        other => {
            diags.error(at, format!("expected an object, found {}", kind_of(other)));
            None
        }
    }
}

/// Policies tollgate knows. Everything else is reported, never dropped silently.
const IMPLEMENTED_POLICIES: &[&str] = &["apicast"];

/// A service and the source index of each of its rules; `None` when the service lacks what
/// identifies it (id, backend_version, control-service credentials, proxy).
fn service_config(
    obj: &Map<String, Value>,
    at: &str,
    provider_key: Option<&str>,
    diags: &mut Diagnostics,
) -> Option<(ServiceConfig, Sources)> {
    let mut r = Reader::new(obj, at.to_owned(), diags);

    let id = r.string_or_integer("id");
    if id.is_none() && r.value("id").is_none() {
        let p = r.at("id");
        r.diags.error(p, "missing: every service needs an id");
        r.failed = true;
    }
    let name = r
        .string("system_name")
        .or_else(|| r.string("name"))
        .unwrap_or_default();

    let backend_version = match r.value("backend_version") {
        None => {
            let p = r.at("backend_version");
            r.diags.error(p, "missing: expected 1, 2 or oauth");
            r.failed = true;
            None
        }
        Some(v) => {
            let text = match v {
                Value::String(s) => Some(s.as_str().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            match text.as_deref() {
                Some("1") => Some(BackendVersion::UserKey),
                Some("2") => Some(BackendVersion::AppIdKey),
                Some("oauth") => Some(BackendVersion::OAuth),
                _ => {
                    let p = r.at("backend_version");
                    let shown = text.unwrap_or_else(|| kind_of(v).to_owned());
                    r.diags.error(
                        p,
                        format!("unknown backend_version '{shown}': expected 1, 2 or oauth"),
                    );
                    r.failed = true;
                    None
                }
            }
        }
    };

    let auth_type = r.string("backend_authentication_type");
    let auth_value = r.string("backend_authentication_value");
    let control_service_auth = match (auth_type.as_deref(), auth_value) {
        (Some(t), Some(value)) => {
            let kind = match t {
                "service_token" => Some(ControlServiceAuthKind::ServiceToken),
                "provider_key" => Some(ControlServiceAuthKind::ProviderKey),
                other => {
                    let p = r.at("backend_authentication_type");
                    r.diags.error(
                        p,
                        format!("unknown type '{other}': expected service_token or provider_key"),
                    );
                    r.failed = true;
                    None
                }
            };
            kind.map(|kind| ControlServiceAuth {
                kind,
                value: Secret(value),
            })
        }
        (None, None) if provider_key.is_some() => provider_key.map(|k| ControlServiceAuth {
            kind: ControlServiceAuthKind::ProviderKey,
            value: Secret(k.to_owned()),
        }),
        (None, None) => {
            let p = r.at("backend_authentication_value");
            r.diags.error(
                p,
                "missing: the service needs backend_authentication_type and backend_authentication_value \
                 (or a provider_key at the top level) to call the control service",
            );
            r.failed = true;
            None
        }
        (Some(_), None) | (None, Some(_)) => {
            let p = r.at("backend_authentication_type");
            r.diags.error(
                p,
                "backend_authentication_type and backend_authentication_value go together",
            );
            r.failed = true;
            None
        }
    };

    let proxy = match r.object("proxy") {
        Some(p) => Some(p),
        None => {
            if r.value("proxy").is_none() {
                let p = r.at("proxy");
                r.diags
                    .error(p, "missing: the service has no proxy configuration");
                r.failed = true;
            }
            None
        }
    };
    let proxy = proxy.map(|p| proxy_config(p, &join(at, "proxy"), diags));

    match (id, backend_version, control_service_auth, proxy) {
        (Some(id), Some(backend_version), Some(control_service_auth), Some(proxy)) => Some((
            ServiceConfig {
                id,
                name,
                hosts: proxy.hosts,
                backend_version,
                control_service_auth,
                backend: proxy.backend,
                credentials: proxy.credentials,
                upstream: proxy.upstream,
                errors: proxy.errors,
                mapping_rules: proxy.rules,
            },
            Sources {
                rules: proxy.rule_sources,
                hosts: proxy.host_sources,
            },
        )),
        _ => None,
    }
}

/// Source indices of what a service kept (see [`SourceService`]).
struct Sources {
    rules: Vec<usize>,
    hosts: Option<Vec<usize>>,
}

struct Proxy {
    hosts: Vec<String>,
    host_sources: Option<Vec<usize>>,
    backend: BackendEndpoint,
    credentials: CredentialsConfig,
    upstream: UpstreamConfig,
    errors: ErrorsConfig,
    rules: Vec<MappingRuleConfig>,
    rule_sources: Vec<usize>,
}

/// Reads the proxy object. A field of the wrong type is reported and replaced by its default,
/// and a bad rule is reported and left out, so the rest can still be checked.
fn proxy_config(obj: &Map<String, Value>, at: &str, diags: &mut Diagnostics) -> Proxy {
    let mut r = Reader::new(obj, at.to_owned(), diags);

    let (hosts, host_sources) = match r.array("hosts") {
        None => (vec!["localhost".to_owned()], None),
        Some(items) => {
            let mut hosts = Vec::with_capacity(items.len());
            let mut sources = Vec::with_capacity(items.len());
            for (k, h) in items.iter().enumerate() {
                match h {
                    Value::String(s) => {
                        hosts.push(s.clone());
                        sources.push(k);
                    }
                    other => {
                        let p = index(&r.at("hosts"), k);
                        r.diags
                            .error(p, format!("expected a host name, found {}", kind_of(other)));
                        r.failed = true;
                    }
                }
            }
            (hosts, Some(sources))
        }
    };

    let backend = match r.object("backend") {
        None => BackendEndpoint::default(),
        Some(b) => {
            let mut br = Reader::new(b, r.at("backend"), r.diags);
            let endpoint = br.string("endpoint");
            let host = br.string("host");
            if br.failed {
                r.failed = true;
            }
            BackendEndpoint { endpoint, host }
        }
    };

    let location = match r.string("credentials_location").as_deref() {
        None | Some("query") => CredentialsLocation::Query,
        Some("headers") => CredentialsLocation::Headers,
        Some("authorization") => CredentialsLocation::Authorization,
        Some(other) => {
            let p = r.at("credentials_location");
            r.diags.error(
                p,
                format!("unknown location '{other}': expected query, headers or authorization"),
            );
            r.failed = true;
            CredentialsLocation::Query
        }
    };
    let defaults = CredentialsConfig::default();
    let credentials = CredentialsConfig {
        location,
        user_key: r
            .string("auth_user_key")
            .unwrap_or(defaults.user_key)
            .to_ascii_lowercase(),
        app_id: r
            .string("auth_app_id")
            .unwrap_or(defaults.app_id)
            .to_ascii_lowercase(),
        app_key: r
            .string("auth_app_key")
            .unwrap_or(defaults.app_key)
            .to_ascii_lowercase(),
    };

    if r.string("authentication_method").as_deref() == Some("oidc") {
        let p = r.at("authentication_method");
        r.diags.error(
            p,
            "OpenID Connect (JWT verification) is not supported yet: tollgate cannot decide these requests as APIcast would",
        );
        r.failed = true;
    }

    let upstream = UpstreamConfig {
        api_backend: r.string("api_backend"),
        hostname_rewrite: r.string("hostname_rewrite"),
        secret_token: r.string("secret_token").map(Secret),
    };

    let mut errors = ErrorsConfig::default();
    for kind in ErrorKind::ALL {
        let suffix = kind.threescale_suffix();
        let e: &mut ErrorResponseConfig = match kind {
            ErrorKind::AuthMissing => &mut errors.auth_missing,
            ErrorKind::AuthFailed => &mut errors.auth_failed,
            ErrorKind::NoMatch => &mut errors.no_match,
            ErrorKind::LimitsExceeded => &mut errors.limits_exceeded,
        };
        if let Some(body) = r.string(&format!("error_{suffix}")) {
            e.body = body;
        }
        if let Some(ct) = r.string(&format!("error_headers_{suffix}")) {
            e.content_type = ct;
        }
        let status_key = format!("error_status_{suffix}");
        if let Some(status) = r.integer(&status_key) {
            match u16::try_from(status) {
                Ok(s) => e.status = s,
                Err(_) => {
                    let p = r.at(&status_key);
                    r.diags
                        .error(p, format!("status {status} is not between 200 and 599"));
                    r.failed = true;
                }
            }
        }
    }

    policy_chain(&mut r);

    let mut rules = Vec::new();
    let mut rule_sources = Vec::new();
    if let Some(items) = r.array("proxy_rules") {
        let rules_at = r.at("proxy_rules");
        for (j, item) in items.iter().enumerate() {
            let rat = index(&rules_at, j);
            match item {
                Value::Object(o) => {
                    if let Some(rule) = mapping_rule(o, rat, r.diags) {
                        rules.push(rule);
                        rule_sources.push(j);
                    }
                }
                other => r.diags.error(
                    rat,
                    format!("expected a mapping rule object, found {}", kind_of(other)),
                ),
            }
        }
    }

    Proxy {
        hosts,
        host_sources,
        backend,
        credentials,
        upstream,
        errors,
        rules,
        rule_sources,
    }
}

fn policy_chain(r: &mut Reader<'_, '_>) {
    let Some(chain) = r.array("policy_chain") else {
        return;
    };
    let chain_at = r.at("policy_chain");
    let mut has_apicast = false;
    for (k, policy) in chain.iter().enumerate() {
        let pat = index(&chain_at, k);
        let name = match policy {
            Value::Object(o) => o.get("name").and_then(Value::as_str),
            _ => None,
        };
        let Some(name) = name else {
            r.diags.warning(
                pat,
                "a policy without a name is ignored (APIcast skips it too)",
            );
            continue;
        };
        let short = name.strip_prefix("apicast.policy.").unwrap_or(name);
        if short == "apicast" {
            has_apicast = true;
        } else if !IMPLEMENTED_POLICIES.contains(&short) {
            r.diags.warning(
                join(&pat, "name"),
                format!("policy '{name}' is not implemented by tollgate yet; it is ignored"),
            );
        }
    }
    if !has_apicast && !chain.is_empty() {
        r.diags.warning(
            chain_at,
            "the chain has no 'apicast' policy, so APIcast would not authorize these requests with 3scale; \
             tollgate authorizes them anyway",
        );
    }
}

fn mapping_rule(
    obj: &Map<String, Value>,
    at: String,
    diags: &mut Diagnostics,
) -> Option<MappingRuleConfig> {
    let mut r = Reader::new(obj, at, diags);
    let required = |r: &mut Reader<'_, '_>, key: &str| {
        let v = r.string(key);
        if v.is_none() && r.value(key).is_none() {
            let p = r.at(key);
            r.diags.error(p, "missing");
            r.failed = true;
        }
        v
    };
    let method = required(&mut r, "http_method");
    let pattern = required(&mut r, "pattern");
    let metric = required(&mut r, "metric_system_name");
    // A missing delta counts as 0 in APIcast.
    let delta = r.integer("delta").unwrap_or(0);
    let last = r.bool("last").unwrap_or(false);
    let mut querystring_parameters = BTreeMap::new();
    match r.value("querystring_parameters") {
        None => {}
        // An empty Lua table is often serialised as an empty array.
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Object(params)) => {
            let qat = r.at("querystring_parameters");
            for (name, value) in params {
                match value {
                    Value::String(s) => {
                        querystring_parameters.insert(name.clone(), s.clone());
                    }
                    other => {
                        r.diags.error(
                            join(&qat, name),
                            format!("expected a string, found {} (APIcast never matches a non-string value)", kind_of(other)),
                        );
                        r.failed = true;
                    }
                }
            }
        }
        Some(other) => r.wrong("querystring_parameters", "an object", other),
    }
    if r.failed {
        return None;
    }
    Some(MappingRuleConfig {
        method: method?,
        pattern: pattern?,
        metric: metric?,
        delta,
        querystring_parameters,
        last,
    })
}

#[cfg(test)]
mod tests;
