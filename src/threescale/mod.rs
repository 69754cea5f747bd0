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
    Authorization, BackendEndpoint, BackendVersion, BatchingConfig, CacheConfig,
    ControlServiceAuth, ControlServiceAuthKind, CredentialsConfig, CredentialsLocation,
    ErrorResponseConfig, ErrorsConfig, FilterConfig, LimiterConfig, MappingRuleConfig, Secret,
    ServiceConfig, SkippedPolicy, UpstreamConfig,
};
use crate::diagnostics::{index, join, Diagnostics};

mod policies;
mod rate_limit;
mod reader;
mod suggest;

use policies::{policy_chain, Acceptance};
use reader::{kind_of, lua_text, Reader, COMPARED};
use suggest::Fields;

/// Where each FilterConfig service (and each of its rules) came from in the 3scale document.
#[derive(Debug, Clone, Default)]
pub struct ThreescalePaths {
    services: Vec<SourceService>,
    /// `services`, `proxy_configs` or `proxy_config.content`: the list as a whole.
    list: String,
    /// The policy object of each entry of `skipped_policies`.
    skipped: Vec<String>,
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
    /// The service has a `proxy` object; without one, what is said about its fields is said
    /// at `proxy`.
    proxy: bool,
    /// `proxy.backend` is a URL (a string), not an object.
    backend_url: bool,
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
                    ServiceField::Authorization => "proxy.policy_chain".into(),
                    ServiceField::BackendVersion => "backend_version".into(),
                    ServiceField::Hosts => "proxy.hosts".into(),
                    ServiceField::Host(k) => {
                        match self.services.get(i).and_then(|s| s.hosts.as_ref()) {
                            Some(sources) => {
                                format!("proxy.hosts[{}]", sources.get(k).copied().unwrap_or(k))
                            }
                            None => "proxy.hosts".into(),
                        }
                    }
                    ServiceField::ControlServiceAuth | ServiceField::AuthValue => {
                        "backend_authentication_value".into()
                    }
                    ServiceField::BackendEndpoint
                        if self.services.get(i).is_some_and(|s| s.backend_url) =>
                    {
                        "proxy.backend".into()
                    }
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
                    // Limiters come from the policy chain's `rate_limit` policies; their
                    // problems are reported where they are translated.
                    ServiceField::Limiter(..)
                    | ServiceField::Cache(_)
                    | ServiceField::Batching(_) => "proxy.policy_chain".into(),
                };
                let has_proxy = self.services.get(i).is_some_and(|s| s.proxy);
                if tail.starts_with("proxy.") && !has_proxy {
                    return join(&b, "proxy");
                }
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
            Loc::SkippedPolicy(k) => self.skipped.get(k).cloned().unwrap_or_default(),
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

/// The top level of a 3scale document.
const DOCUMENT_FIELDS: Fields = Fields {
    read: &[
        "services",
        "proxy_config",
        "proxy_configs",
        "provider_key",
        "tollgate",
    ],
    ignored: &["id", "timestamp", "oidc"],
};

/// tollgate's own options inside a 3scale document (`"tollgate": {…}`): strict, as our own
/// contract is.
const TOLLGATE_FIELDS: &[&str] = &["accept_skipped_policies"];

/// Translates a parsed 3scale document, reporting every structural problem. `None` only when
/// the document is not a 3scale configuration at all. `accept_skipped_policies`: policies the
/// caller accepts the gateway will not run (added to those the document's `tollgate` object
/// names).
pub fn translate(
    root: &Value,
    accept_skipped_policies: &[String],
    diags: &mut Diagnostics,
) -> Option<Translation> {
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
    let mut top = Reader::new(obj, String::new(), &DOCUMENT_FIELDS, diags);
    let provider_key = top.text("provider_key");
    let mut acceptance = Acceptance::default();
    for name in accept_skipped_policies {
        acceptance.add(name, String::new());
    }
    if let Some(options) = top.object("tollgate") {
        tollgate_options(options, &mut acceptance, top.diags);
    }
    let mut entries: Vec<(String, &Map<String, Value>)> = Vec::new();
    let list;
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

    let mut config = FilterConfig::new(Vec::with_capacity(entries.len()));
    let mut paths = ThreescalePaths {
        services: Vec::with_capacity(entries.len()),
        list,
        skipped: Vec::new(),
    };
    for (at, service) in entries {
        let Some((s, sources)) = service_config(
            service,
            &at,
            provider_key.as_deref(),
            &mut acceptance,
            diags,
        ) else {
            continue;
        };
        // configuration_store.lua: a service whose id an earlier one has is skipped whole.
        if let Some(first) = config
            .services
            .iter()
            .zip(&paths.services)
            .find(|(earlier, _)| earlier.id == s.id)
            .map(|(_, source)| source.at.clone())
        {
            diags.warning(
                join(&at, "id"),
                format!(
                    "service id '{}' is also the id of {first}: APIcast keeps the first and \
                     skips this service, and so does tollgate",
                    s.id
                ),
            );
            continue;
        }
        for skipped in sources.skipped {
            config.skipped_policies.push(SkippedPolicy {
                service: s.id.clone(),
                policy: skipped.policy,
            });
            paths.skipped.push(skipped.at);
        }
        config.services.push(s);
        paths.services.push(SourceService {
            at,
            rules: sources.rules,
            hosts: sources.hosts,
            proxy: sources.proxy,
            backend_url: sources.backend_url,
        });
    }
    acceptance.report_unused(diags);
    Some(Translation {
        config,
        paths,
        complete: diags.errors().count() == errors_before,
    })
}

/// `"tollgate": {"accept_skipped_policies": ["cors", …]}`.
fn tollgate_options(
    options: &Map<String, Value>,
    acceptance: &mut Acceptance,
    diags: &mut Diagnostics,
) {
    for key in options.keys() {
        if !TOLLGATE_FIELDS.contains(&key.as_str()) {
            diags.error(
                join("tollgate", key),
                format!(
                    "unknown field '{key}': tollgate's options are {}",
                    TOLLGATE_FIELDS.join(", ")
                ),
            );
        }
    }
    let at = "tollgate.accept_skipped_policies";
    match options.get("accept_skipped_policies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(names)) => {
            for (k, name) in names.iter().enumerate() {
                match name {
                    Value::String(n) => acceptance.add(n, index(at, k)),
                    other => diags.error(
                        index(at, k),
                        format!("expected a policy name, found {}", kind_of(other)),
                    ),
                }
            }
        }
        Some(other) => diags.error(
            at,
            format!(
                "expected an array of policy names, found {}",
                kind_of(other)
            ),
        ),
    }
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

/// A service object.
const SERVICE_FIELDS: Fields = Fields {
    read: &[
        "id",
        "system_name",
        "name",
        "backend_version",
        "backend_authentication_type",
        "backend_authentication_value",
        "proxy",
    ],
    // Porta's service, as its `spec.json` serializes it.
    ignored: &[
        "account_id",
        "description",
        "txt_support",
        "txt_api",
        "txt_features",
        "created_at",
        "updated_at",
        "logo_file_name",
        "logo_content_type",
        "logo_file_size",
        "state",
        "intentions_required",
        "terms",
        "buyers_manage_apps",
        "buyers_manage_keys",
        "custom_keys_enabled",
        "buyer_plan_change_permission",
        "buyer_can_select_plan",
        "notification_settings",
        "default_application_plan_id",
        "default_service_plan_id",
        "default_end_user_plan_id",
        "end_user_registration_required",
        "tenant_id",
        "mandatory_app_key",
        "buyer_key_regenerate_enabled",
        "support_email",
        "tech_support_email",
        "admin_support_email",
        "credit_card_support_email",
        "referrer_filters_required",
        "deployment_option",
        "kubernetes_service_link",
        "proxiable?",
        "display_provider_keys",
        "act_as_product",
    ],
};

/// What a service keeps besides its FilterConfig: where its parts came from, and the policies
/// of its chain the gateway does not run.
struct Sources {
    rules: Vec<usize>,
    hosts: Option<Vec<usize>>,
    proxy: bool,
    backend_url: bool,
    skipped: Vec<policies::SkippedAt>,
}

/// A service and where its parts came from; `None` when a value that identifies it was
/// refused (its id, its backend_version).
fn service_config(
    obj: &Map<String, Value>,
    at: &str,
    provider_key: Option<&str>,
    acceptance: &mut Acceptance,
    diags: &mut Diagnostics,
) -> Option<(ServiceConfig, Sources)> {
    let mut r = Reader::new(obj, at.to_owned(), &SERVICE_FIELDS, diags);

    // configuration.lua: `tostring(service.id or 'default')`.
    let id = match r.text("id") {
        Some(id) => Some(id),
        None if r.value("id").is_none() => {
            r.warning(
                "id",
                "no id: APIcast calls this service 'default' (service_id=default in its calls \
                 to the control service), and so does tollgate",
            );
            Some("default".to_owned())
        }
        None => None,
    };
    let name = r
        .text("system_name")
        .or_else(|| r.text("name"))
        .unwrap_or_default();

    // A service without proxy gets APIcast's defaults for all of it (`service.proxy or {}`).
    let no_proxy = Map::new();
    let (proxy_obj, given) = match r.object("proxy") {
        Some(p) => (p, true),
        None => {
            if r.value("proxy").is_none() {
                r.warning(
                    "proxy",
                    "no proxy: APIcast's defaults apply (the host localhost, no mapping rules, \
                     no api_backend), and tollgate's too",
                );
            }
            (&no_proxy, false)
        }
    };
    // Read now for backend_version; the chain itself is read with the rest of the proxy.
    let authorizes = policies::authorizes_with_3scale(proxy_obj.get("policy_chain"));

    // configuration.lua reads it with `tostring`; configuration/service.lua finds the
    // credentials of versions 1, 2 and oauth, and none for anything else (or nothing).
    let mut refused_version = false;
    let backend_version = match r.value("backend_version") {
        None => None,
        Some(v) => {
            let text = lua_text(v);
            match text.as_deref() {
                Some("1") => Some(BackendVersion::UserKey),
                Some("2") => Some(BackendVersion::AppIdKey),
                Some("oauth") => Some(BackendVersion::OAuth),
                _ => {
                    let shown = text.unwrap_or_else(|| kind_of(v).to_owned());
                    let message =
                        format!("unknown backend_version '{shown}': expected 1, 2 or oauth");
                    if authorizes {
                        r.error("backend_version", message);
                        refused_version = true;
                    } else {
                        r.warning(
                            "backend_version",
                            format!("{message} (unused: this service does not authorize)"),
                        );
                    }
                    None
                }
            }
        }
    };

    // backend_client.lua sends `<type>=<value>` when the service has a type, and only
    // `service_id` otherwise.
    let auth_type = r.compared("backend_authentication_type");
    let auth_value = r.text("backend_authentication_value");
    let control_service_auth = match (auth_type.as_deref(), auth_value) {
        (Some(t), Some(value)) => {
            let kind = match t {
                "service_token" => Some(ControlServiceAuthKind::ServiceToken),
                "provider_key" => Some(ControlServiceAuthKind::ProviderKey),
                other => {
                    r.error(
                        "backend_authentication_type",
                        format!("unknown type '{other}': expected service_token or provider_key"),
                    );
                    None
                }
            };
            kind.map(|kind| ControlServiceAuth {
                kind,
                value: Secret(value),
            })
        }
        // tollgate's reading of Porta's spec.json, whose top level has the provider key.
        (None, None) => provider_key.map(|k| ControlServiceAuth {
            kind: ControlServiceAuthKind::ProviderKey,
            value: Secret(k.to_owned()),
        }),
        (Some(_), None) => {
            r.warning(
                "backend_authentication_type",
                "a type without backend_authentication_value: APIcast sends no token, and \
                 neither does tollgate",
            );
            None
        }
        (None, Some(_)) => {
            r.warning(
                "backend_authentication_value",
                "a value without backend_authentication_type: APIcast does not send it, and \
                 neither does tollgate",
            );
            None
        }
    };

    let proxy_at = r.at("proxy");
    let proxy = proxy_config(proxy_obj, &proxy_at, given, acceptance, r.diags);

    debug_assert_eq!(authorizes, proxy.authorizes, "two readings of {at}'s chain");
    let id = id?;
    if refused_version {
        return None;
    }
    Some((
        ServiceConfig {
            id,
            name,
            hosts: proxy.hosts,
            authorization: if proxy.authorizes {
                Authorization::Threescale
            } else {
                Authorization::None
            },
            backend_version,
            control_service_auth,
            backend: proxy.backend,
            credentials: proxy.credentials,
            upstream: proxy.upstream,
            errors: proxy.errors,
            mapping_rules: proxy.rules,
            limiters: proxy.limiters,
            rate_limit_headers: proxy.rate_limit_headers,
            cache: proxy.cache,
            batching: proxy.batching,
        },
        Sources {
            rules: proxy.rule_sources,
            hosts: proxy.host_sources,
            proxy: given,
            backend_url: proxy.backend_url,
            skipped: proxy.skipped,
        },
    ))
}

struct Proxy {
    hosts: Vec<String>,
    /// `backend` was given as a URL.
    backend_url: bool,
    host_sources: Option<Vec<usize>>,
    authorizes: bool,
    skipped: Vec<policies::SkippedAt>,
    limiters: Vec<LimiterConfig>,
    rate_limit_headers: bool,
    cache: CacheConfig,
    batching: Option<BatchingConfig>,
    backend: BackendEndpoint,
    credentials: CredentialsConfig,
    upstream: UpstreamConfig,
    errors: ErrorsConfig,
    rules: Vec<MappingRuleConfig>,
    rule_sources: Vec<usize>,
}

/// A proxy object.
const PROXY_FIELDS: Fields = Fields {
    read: &[
        "hosts",
        "backend",
        "credentials_location",
        "auth_user_key",
        "auth_app_id",
        "auth_app_key",
        "authentication_method",
        "api_backend",
        "hostname_rewrite",
        "secret_token",
        "error_auth_missing",
        "error_headers_auth_missing",
        "error_status_auth_missing",
        "error_auth_failed",
        "error_headers_auth_failed",
        "error_status_auth_failed",
        "error_no_match",
        "error_headers_no_match",
        "error_status_no_match",
        "error_limits_exceeded",
        "error_headers_limits_exceeded",
        "error_status_limits_exceeded",
        "policy_chain",
        "proxy_rules",
    ],
    // Porta's proxy, as its `spec.json` serializes it.
    ignored: &[
        "id",
        "tenant_id",
        "service_id",
        "endpoint",
        "sandbox_endpoint",
        "deployed_at",
        "created_at",
        "updated_at",
        "oauth_login_url",
        "api_test_path",
        "api_test_success",
        "apicast_configuration_driven",
        "oidc_issuer_endpoint",
        "oidc_issuer_type",
        "lock_version",
        "staging_domain",
        "production_domain",
        "hostname_rewrite_for_sandbox",
        "endpoint_port",
        "valid?",
        "service_backend_version",
        "jwt_claim_with_client_id",
        "jwt_claim_with_client_id_type",
        "policies_config",
        "oidc_configuration",
    ],
};

const BACKEND_FIELDS: Fields = Fields {
    read: &["endpoint", "host"],
    ignored: &[],
};

/// Reads the proxy object. A field of the wrong type is reported and replaced by its default,
/// and a bad rule is reported and left out, so the rest can still be checked. `given`: the
/// service has a proxy object (without one, its defaults were already reported).
fn proxy_config(
    obj: &Map<String, Value>,
    at: &str,
    given: bool,
    acceptance: &mut Acceptance,
    diags: &mut Diagnostics,
) -> Proxy {
    let mut r = Reader::new(obj, at.to_owned(), &PROXY_FIELDS, diags);

    let (hosts, host_sources) = match r.array("hosts") {
        None => {
            if given && r.value("hosts").is_none() {
                r.warning(
                    "hosts",
                    "no hosts: APIcast serves this service for the host localhost, and so does \
                     tollgate",
                );
            }
            (vec!["localhost".to_owned()], None)
        }
        Some(items) => {
            let mut hosts = Vec::with_capacity(items.len());
            let mut sources = Vec::with_capacity(items.len());
            for (k, h) in items.iter().enumerate() {
                match lua_text(h) {
                    Some(host) => {
                        hosts.push(host);
                        sources.push(k);
                    }
                    None => {
                        let p = index(&r.at("hosts"), k);
                        r.diags
                            .error(p, format!("expected a host name, found {}", kind_of(h)));
                        r.failed = true;
                    }
                }
            }
            (hosts, Some(sources))
        }
    };

    // configuration.lua: `backend.endpoint or tostring(backend)`, so a URL as a string works.
    let backend = match r.value("backend") {
        None => BackendEndpoint::default(),
        Some(Value::String(url)) => BackendEndpoint {
            endpoint: Some(url.clone()),
            host: None,
        },
        Some(Value::Object(b)) => {
            let mut br = Reader::new(b, r.at("backend"), &BACKEND_FIELDS, r.diags);
            let endpoint = br.text("endpoint");
            let host = br.text("host");
            if br.failed {
                r.failed = true;
            }
            BackendEndpoint { endpoint, host }
        }
        Some(other) => {
            r.error(
                "backend",
                format!("expected an object or a URL, found {}", kind_of(other)),
            );
            BackendEndpoint::default()
        }
    };

    let location = match r.compared("credentials_location").as_deref() {
        None | Some("query") => CredentialsLocation::Query,
        Some("headers") => CredentialsLocation::Headers,
        Some("authorization") => CredentialsLocation::Authorization,
        Some(other) => {
            r.error(
                "credentials_location",
                format!("unknown location '{other}': expected query, headers or authorization"),
            );
            CredentialsLocation::Query
        }
    };
    let defaults = CredentialsConfig::default();
    let credentials = CredentialsConfig {
        location,
        user_key: r
            .text("auth_user_key")
            .unwrap_or(defaults.user_key)
            .to_ascii_lowercase(),
        app_id: r
            .text("auth_app_id")
            .unwrap_or(defaults.app_id)
            .to_ascii_lowercase(),
        app_key: r
            .text("auth_app_key")
            .unwrap_or(defaults.app_key)
            .to_ascii_lowercase(),
    };

    if r.compared("authentication_method").as_deref() == Some("oidc") {
        r.error(
            "authentication_method",
            "OpenID Connect (JWT verification) is not supported yet: tollgate cannot decide these requests as APIcast would",
        );
    }

    // configuration.lua keeps hostname_rewrite only when it is a non-empty string.
    let hostname_rewrite = match r.value("hostname_rewrite") {
        None => None,
        Some(Value::String(h)) => Some(h.clone()),
        Some(other) => {
            r.warning(
                "hostname_rewrite",
                format!(
                    "{} is ignored: APIcast uses hostname_rewrite only when it is a string, and \
                     so does tollgate",
                    kind_of(other)
                ),
            );
            None
        }
    };
    let upstream = UpstreamConfig {
        api_backend: r.text("api_backend"),
        hostname_rewrite,
        secret_token: r.text("secret_token").map(Secret),
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
        if let Some(body) = r.text(&format!("error_{suffix}")) {
            e.body = body;
        }
        if let Some(ct) = r.text(&format!("error_headers_{suffix}")) {
            e.content_type = ct;
        }
        let status_key = format!("error_status_{suffix}");
        if let Some(status) = r.integer(&status_key) {
            match u16::try_from(status) {
                Ok(s) => e.status = s,
                Err(_) => r.error(
                    &status_key,
                    format!("status {status} is not between 200 and 599"),
                ),
            }
        }
    }

    let chain = policy_chain(&mut r, acceptance);

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
        backend_url: matches!(r.value("backend"), Some(Value::String(_))),
        host_sources,
        authorizes: chain.authorizes,
        skipped: chain.skipped,
        limiters: chain.limiters,
        rate_limit_headers: chain.rate_limit_headers,
        cache: chain.cache,
        batching: chain.batching,
        backend,
        credentials,
        upstream,
        errors,
        rules,
        rule_sources,
    }
}

/// A mapping rule object.
const RULE_FIELDS: Fields = Fields {
    read: &[
        "http_method",
        "pattern",
        "metric_system_name",
        "delta",
        "last",
        "querystring_parameters",
    ],
    // Porta's proxy rule, as its `spec.json` serializes it.
    ignored: &[
        "id",
        "proxy_id",
        "metric_id",
        "tenant_id",
        "created_at",
        "updated_at",
        "redirect_url",
        "position",
        "owner_id",
        "owner_type",
        "parameters",
    ],
};

fn mapping_rule(
    obj: &Map<String, Value>,
    at: String,
    diags: &mut Diagnostics,
) -> Option<MappingRuleConfig> {
    let mut r = Reader::new(obj, at, &RULE_FIELDS, diags);
    let required = |r: &mut Reader<'_, '_>, v: Option<String>, key: &str| {
        if v.is_none() && r.value(key).is_none() {
            r.error(key, "missing");
        }
        v
    };
    // mapping_rule.lua: the method is compared with `==`, the pattern goes through
    // `ngx.re.gsub`, the metric is concatenated into `usage[…]`.
    let method = r.compared("http_method");
    let method = required(&mut r, method, "http_method");
    let pattern = r.text("pattern");
    let pattern = required(&mut r, pattern, "pattern");
    let metric = r.text("metric_system_name");
    let metric = required(&mut r, metric, "metric_system_name");
    // A missing delta counts as 0 in APIcast (`rule.delta or 0`).
    let delta = r.count("delta").unwrap_or(0);
    let last = r.flag("last").unwrap_or(false);
    let mut querystring_parameters = BTreeMap::new();
    match r.value("querystring_parameters") {
        None => {}
        // An empty Lua table is often serialised as an empty array.
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Object(params)) => {
            let qat = r.at("querystring_parameters");
            for (name, value) in params {
                match value {
                    Value::Null => {}
                    Value::String(s) => {
                        querystring_parameters.insert(name.clone(), s.clone());
                    }
                    other => {
                        r.diags.error(
                            join(&qat, name),
                            format!("expected a string, found {}{COMPARED}", kind_of(other)),
                        );
                        r.failed = true;
                    }
                }
            }
        }
        Some(other) => {
            r.error(
                "querystring_parameters",
                format!("expected an object, found {}", kind_of(other)),
            );
        }
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
