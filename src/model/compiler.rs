//! The compiler, `FilterConfig` → [`Compiled`]: every semantic check, every precomputation, once.
//!
//! Problems are reported against a [`Loc`] (a place in the model) and rendered through
//! [`SourcePaths`] as a JSON path of whatever document the configuration came from, so a
//! provider who gave us 3scale JSON reads `services[1].proxy.proxy_rules[4].pattern`, and one
//! who gave us a FilterConfig reads `services[1].mapping_rules[4].pattern`.

use crate::backend;
use crate::config::location::{
    CredentialName, ErrorField, ErrorKind, Loc, RuleField, ServiceField, SourcePaths,
};
use crate::config::{Authorization, FilterConfig, ServiceConfig};
use crate::credentials::CredentialSource;
use crate::diagnostics::Diagnostics;
use crate::index::{MetricIndex, ServiceIndex};
use crate::rules::lint::{is_token_char, ServiceLints};
use crate::rules::pattern::analyze;
use crate::rules::query::QueryCondition;
use crate::rules::{RefusalKind, RuleInput, RuleLimits, RuleSet};
use crate::service::{normalize_host, HostIndex, MAX_HOST_LEN};
use crate::url::HttpUrl;

use super::gateway::NO_CONTROL_SERVICE;
use super::service::{Metric, Service, ServiceErrors, Upstream};
use super::Compiled;
use super::{cache, limiter};

/// The longest control-service timeout accepted.
pub const MAX_CONTROL_SERVICE_TIMEOUT_MS: u32 = 60_000;
/// Trie nodes all services' mapping rules may need together, before compression (about one
/// per pattern byte no other pattern shares): a 60,000-rule configuration needs about a
/// million; compiling takes about 100 bytes a node, once.
pub const MAX_TRIE_NODES: usize = 4_000_000;
/// The range of `request_line_max_bytes`: a decision's working memory grows with it (see
/// [`crate::decision::Scratch`]), and even `GET / HTTP/1.1` needs 16 bytes.
pub const REQUEST_LINE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u32> = 64..=1024 * 1024;

/// Validates and compiles `config`. Every problem goes to `diags`; `None` if any is an error.
pub fn compile(
    config: &FilterConfig,
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Option<Compiled> {
    let errors_before = diags.errors().count();
    if config.services.is_empty() {
        diags.warning(
            paths.path(Loc::Services),
            "the configuration has no services: every request gets the unknown-host answer \
             (404, empty body)",
        );
    }
    let cluster = &config.control_service.cluster;
    if cluster.is_empty()
        || cluster
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        diags.error(
            paths.path(Loc::ControlService("cluster")),
            format!("'{cluster}' is not an Envoy cluster name"),
        );
    }
    let timeout = config.control_service.timeout_ms;
    if timeout == 0 || timeout > MAX_CONTROL_SERVICE_TIMEOUT_MS {
        diags.error(
            paths.path(Loc::ControlService("timeout_ms")),
            format!(
                "timeout {timeout} ms is not between 1 and {MAX_CONTROL_SERVICE_TIMEOUT_MS} \
                 (0 would make Envoy wait forever)"
            ),
        );
    }
    let line_max = config.request_line_max_bytes;
    if !REQUEST_LINE_MAX_BYTES_RANGE.contains(&line_max) {
        diags.error(
            paths.path(Loc::Field("request_line_max_bytes")),
            format!(
                "{line_max} is not between {} and {} bytes",
                REQUEST_LINE_MAX_BYTES_RANGE.start(),
                REQUEST_LINE_MAX_BYTES_RANGE.end()
            ),
        );
    }
    let mut hosts = HostIndex::default();
    let mut nodes_left = MAX_TRIE_NODES;
    let mut services = Vec::with_capacity(config.services.len());
    let mut seen_ids: Vec<&str> = Vec::new();
    for (i, svc) in config.services.iter().enumerate() {
        let at = |f: ServiceField| paths.path(Loc::Service(i, f));
        if svc.id.is_empty() {
            diags.error(at(ServiceField::Id), "the service id is empty");
        } else if let Some(first) = seen_ids.iter().position(|&s| s == svc.id) {
            diags.error(
                at(ServiceField::Id),
                format!(
                    "service id '{}' is also the id of {}",
                    svc.id,
                    paths.path(Loc::Service(first, ServiceField::Whole))
                ),
            );
        }
        seen_ids.push(&svc.id);
        let domains = index_hosts(svc, i, &mut hosts, paths, diags);
        if let Some(mut service) = compile_service(svc, i, &mut nodes_left, paths, diags) {
            service.domains = domains;
            services.push(service);
        }
    }
    for (k, skipped) in config.skipped_policies.iter().enumerate() {
        diags.warning(
            paths.path(Loc::SkippedPolicy(k)),
            format!(
                "the gateway does not run policy '{}' of service '{}': tollgate does not \
                 implement it",
                skipped.policy, skipped.service
            ),
        );
    }
    let control_url = agreed_control_url(&services, paths, diags);
    let authority = config.control_service.authority.as_deref();
    if let Some(a) = authority {
        check_authority(a, paths.path(Loc::ControlService("authority")), diags);
    }
    for service in &mut services {
        service.settle_control_authority(authority, control_url.as_ref(), cluster);
    }
    if diags.errors().count() > errors_before {
        return None;
    }
    Some(Compiled {
        services,
        hosts,
        control_url,
        control_cluster: cluster.as_str().into(),
        control_timeout_ms: timeout,
        request_body_max_bytes: usize::try_from(config.request_body_max_bytes)
            .unwrap_or(usize::MAX),
        request_line_max_bytes: usize::try_from(line_max).unwrap_or(usize::MAX),
    })
}

fn index_hosts(
    svc: &ServiceConfig,
    i: usize,
    hosts: &mut HostIndex,
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Box<[Box<str>]> {
    let service_index = ServiceIndex::from_usize(i);
    let mut claimed = Vec::new();
    if svc.hosts.is_empty() {
        diags.warning(
            paths.path(Loc::Service(i, ServiceField::Hosts)),
            "no hosts: no request can reach this service",
        );
    }
    for (k, host) in svc.hosts.iter().enumerate() {
        let at = paths.path(Loc::Service(i, ServiceField::Host(k)));
        if let Some(why) = not_a_host_name(host) {
            diags.error(at, why);
            continue;
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        let Some(normalized) = normalize_host(host.as_bytes(), &mut buf) else {
            diags.error(at, "host name is longer than 255 characters");
            continue;
        };
        if normalized.is_empty() {
            diags.error(at, "host name is empty");
            continue;
        }
        if !is_domain(normalized) {
            diags.error(
                at,
                format!(
                    "host '{host}' cannot be a virtual host domain: hosts are matched exactly \
                     (no wildcards), and a name has no spaces or control characters"
                ),
            );
            continue;
        }
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        if has_port {
            diags.warning(
                at.clone(),
                "the port is ignored: services are found by host name alone",
            );
        }
        if let Some(owner) = hosts.insert(normalized, service_index) {
            diags.warning(
                at,
                format!(
                    "host '{}' is already served by {}; the first service wins",
                    String::from_utf8_lossy(normalized),
                    paths.path(Loc::Service(owner.as_usize(), ServiceField::Whole))
                ),
            );
        } else {
            claimed.push(String::from_utf8_lossy(normalized).into());
        }
    }
    claimed.into()
}

/// Why `host` (as configured) is not a host name at all: a URL, or a host with a path, query
/// or user. APIcast compares the request's host with it as text, so such a host never matches
/// a request (`https://x/` is not the host `https`).
fn not_a_host_name(host: &str) -> Option<String> {
    let authority_end = |s: &str| s.find(['/', '?', '#']).unwrap_or(s.len());
    if let Some((_, rest)) = host.split_once("://") {
        let authority = rest.get(..authority_end(rest)).unwrap_or(rest);
        let name = authority.rsplit('@').next().unwrap_or(authority);
        return Some(format!(
            "'{host}' is a URL, not a host name: write its host name ('{name}')"
        ));
    }
    let end = authority_end(host);
    if end < host.len() {
        let name = host.get(..end).unwrap_or(host);
        return Some(format!(
            "'{host}' has a path or a query: hosts are host names only ('{name}'); a service \
             is found by host alone"
        ));
    }
    if host.contains(['@', '\\']) {
        return Some(format!(
            "'{host}' is not a host name ('@' and '\\' have no place in one)"
        ));
    }
    None
}

/// Whether a normalised host can be a virtual host's domain in a proxy's route table: Envoy
/// (and NGINX) read `*` as a wildcard, which the host index does not.
fn is_domain(host: &[u8]) -> bool {
    !host
        .iter()
        .any(|&b| b == b'*' || b.is_ascii_whitespace() || b.is_ascii_control())
}

/// The control service every service names (`backend.endpoint`), if any does: the gateway
/// has one control-service cluster, so services that name different ones (by scheme, host
/// and port; the filter sends its own path) are an error at the second one.
fn agreed_control_url(
    services: &[Service],
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Option<HttpUrl> {
    let mut first: Option<(&HttpUrl, usize)> = None;
    for service in services {
        let Some(url) = service.backend_endpoint.as_ref() else {
            continue;
        };
        let i = service.index.as_usize();
        match first {
            None => first = Some((url, i)),
            Some((agreed, at)) if !same_target(agreed, url) => diags.error(
                paths.path(Loc::Service(i, ServiceField::BackendEndpoint)),
                format!(
                    "the control service {url} is not the one {} names ({agreed}): one \
                     control-service cluster serves every service",
                    paths.path(Loc::Service(at, ServiceField::BackendEndpoint))
                ),
            ),
            Some(_) => {}
        }
    }
    if first.is_none() && !services.is_empty() {
        diags.warning(paths.path(Loc::Services), NO_CONTROL_SERVICE);
    }
    first.map(|(url, _)| url.clone())
}

/// Whether two URLs reach the same server: scheme, host and port.
pub(super) fn same_target(a: &HttpUrl, b: &HttpUrl) -> bool {
    (a.https, &a.host, a.effective_port()) == (b.https, &b.host, b.effective_port())
}

/// A `:authority` the operator gives: a host, with a port perhaps; nothing a header or a
/// request line could not carry.
fn check_authority(value: &str, at: String, diags: &mut Diagnostics) {
    if value.is_empty()
        || value
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        diags.error(
            at,
            format!(
                "'{value}' is not a host (with an optional port) for the control service's calls"
            ),
        );
    }
}

fn check_header_value(value: &str, at: String, what: &str, diags: &mut Diagnostics) {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        diags.error(
            at,
            format!("{what} contains a line break or NUL, which no HTTP header may carry"),
        );
    }
}

fn compile_service(
    svc: &ServiceConfig,
    i: usize,
    nodes_left: &mut usize,
    paths: &dyn SourcePaths,
    diags: &mut Diagnostics,
) -> Option<Service> {
    let at = |f: ServiceField| paths.path(Loc::Service(i, f));
    let mut ok = true;

    let authorizes = svc.authorization == Authorization::Threescale;
    match &svc.control_service_auth {
        Some(auth) if auth.value.expose().is_empty() => {
            diags.error(
                at(ServiceField::AuthValue),
                format!(
                    "the {} is empty: the control service would refuse every call",
                    auth.kind.param()
                ),
            );
            ok = false;
        }
        None if authorizes => diags.warning(
            at(ServiceField::ControlServiceAuth),
            "no control-service token (backend_authentication_type and _value): the control \
             service is called without a token, with service_id and the credentials only, as \
             APIcast calls it",
        ),
        _ => {}
    }
    if authorizes && svc.backend_version.is_none() {
        diags.warning(
            at(ServiceField::BackendVersion),
            "no backend_version: APIcast finds no credentials for this service, so every \
             request gets the auth-missing error, and so does tollgate",
        );
    }
    if !authorizes {
        diags.warning(
            at(ServiceField::Authorization),
            "no 'apicast' policy: APIcast does not authorize these requests with 3scale, and \
             neither does tollgate: no credentials, mapping rules or control-service call, and \
             no secret token; they are forwarded to api_backend (APIcast itself proxies only \
             where another policy of the chain picks an upstream)",
        );
    }

    let backend_endpoint = match &svc.backend.endpoint {
        None => None,
        Some(e) => match HttpUrl::parse(e) {
            Ok(url) => Some(url),
            Err(why) => {
                diags.error(at(ServiceField::BackendEndpoint), why.to_string());
                ok = false;
                None
            }
        },
    };
    if let Some(h) = &svc.backend.host {
        check_header_value(h, at(ServiceField::BackendHost), "the backend host", diags);
    }

    let api_backend = match svc.upstream.api_backend.as_deref() {
        None | Some("") => {
            diags.warning(
                at(ServiceField::ApiBackend),
                if authorizes {
                    "no api_backend: requests are authorized, then answered 404 (no upstream)"
                } else {
                    "no api_backend: requests are answered 404 (no upstream)"
                },
            );
            None
        }
        Some(u) => match HttpUrl::parse(u) {
            Ok(url) => Some(url),
            Err(why) => {
                diags.error(at(ServiceField::ApiBackend), why.to_string());
                ok = false;
                None
            }
        },
    };
    let hostname_rewrite = svc
        .upstream
        .hostname_rewrite
        .as_deref()
        .filter(|h| !h.is_empty());
    if let Some(h) = hostname_rewrite {
        check_header_value(
            h,
            at(ServiceField::HostnameRewrite),
            "hostname_rewrite",
            diags,
        );
    }
    if let Some(t) = &svc.upstream.secret_token {
        check_header_value(
            t.expose(),
            at(ServiceField::SecretToken),
            "the secret token",
            diags,
        );
    }

    for (name, which) in [
        (&svc.credentials.user_key, CredentialName::UserKey),
        (&svc.credentials.app_id, CredentialName::AppId),
        (&svc.credentials.app_key, CredentialName::AppKey),
    ] {
        if name.is_empty() {
            diags.error(
                at(ServiceField::Credential(which)),
                "the parameter name is empty",
            );
            ok = false;
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            diags.warning(
                at(ServiceField::Credential(which)),
                format!("'{name}' has characters 3scale does not allow in a parameter name (letters, digits, '_' and '-')"),
            );
        }
    }

    let error_configs = [
        &svc.errors.auth_missing,
        &svc.errors.auth_failed,
        &svc.errors.no_match,
        &svc.errors.limits_exceeded,
    ];
    for (kind, e) in ErrorKind::ALL.into_iter().zip(error_configs) {
        if !(200..=599).contains(&e.status) {
            diags.error(
                at(ServiceField::Error(kind, ErrorField::Status)),
                format!("status {} is not between 200 and 599", e.status),
            );
            ok = false;
        }
        check_header_value(
            &e.content_type,
            at(ServiceField::Error(kind, ErrorField::ContentType)),
            "the content type",
            diags,
        );
    }
    let errors = ServiceErrors {
        auth_missing: (&svc.errors.auth_missing).into(),
        auth_failed: (&svc.errors.auth_failed).into(),
        no_match: (&svc.errors.no_match).into(),
        limits_exceeded: (&svc.errors.limits_exceeded).into(),
    };

    // Metric ids in name order: usage sorted by id is then sorted by name, as APIcast sends it.
    let mut names: Vec<&str> = svc
        .mapping_rules
        .iter()
        .map(|r| r.metric.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let metrics: Vec<Metric> = names
        .iter()
        .map(|n| Metric {
            name: (*n).into(),
            usage_key: backend::usage_key(n).into(),
        })
        .collect();

    let mut inputs = Vec::with_capacity(svc.mapping_rules.len());
    let mut lints = ServiceLints::new(i, svc.mapping_rules.len());
    for (j, rule) in svc.mapping_rules.iter().enumerate() {
        let rat = |f: RuleField<'_>| paths.path(Loc::Rule(i, j, f));
        if rule.method.is_empty() || !rule.method.bytes().all(is_token_char) {
            diags.error(
                rat(RuleField::Method),
                format!("'{}' is not an HTTP method", rule.method),
            );
            ok = false;
        }
        if rule.metric.is_empty() {
            diags.error(rat(RuleField::Metric), "the metric name is empty");
            ok = false;
        }
        if rule.delta <= 0 {
            diags.warning(
                rat(RuleField::Delta),
                format!("delta {} adds nothing: a request matched only by such rules gets the no-match error", rule.delta),
            );
        }
        let analysis = analyze(&rule.pattern);
        lints.rule(j, &rule.method, &rule.pattern, &analysis, paths, diags);
        let mut conditions = Vec::with_capacity(rule.querystring_parameters.len());
        for (name, value) in &rule.querystring_parameters {
            if name.is_empty() {
                diags.warning(
                    rat(RuleField::Query(name)),
                    "an empty argument name is never present, so this rule never matches",
                );
            }
            conditions.push(QueryCondition::new(name, value));
        }
        let metric = names
            .binary_search(&rule.metric.as_str())
            .ok()
            .map_or(MetricIndex::default(), MetricIndex::from_usize);
        inputs.push(RuleInput {
            method: rule.method.clone(),
            pattern: rule.pattern.clone(),
            analysis,
            metric,
            delta: rule.delta,
            last: rule.last,
            conditions,
        });
    }
    lints.finish(&inputs, paths, diags);
    let limits = RuleLimits {
        max_nodes: *nodes_left,
        ..RuleLimits::DEFAULT
    };
    let built = RuleSet::build(inputs, limits);
    *nodes_left = nodes_left.saturating_sub(built.nodes);
    for b in built.uncompilable {
        diags.warning(
            paths.path(Loc::Rule(i, b.rule, RuleField::Pattern)),
            format!("pattern is not a regular expression tollgate can evaluate ({}); this rule never matches", b.reason),
        );
    }
    for r in built.refused {
        let field = match r.kind {
            RefusalKind::TooManyMethods => RuleField::Method,
            RefusalKind::TooManyNodes | RefusalKind::Pattern => RuleField::Pattern,
        };
        diags.error(paths.path(Loc::Rule(i, r.rule, field)), r.reason);
        ok = false;
    }
    let rules = built.set;
    if svc.mapping_rules.is_empty() {
        diags.warning(
            at(ServiceField::Rules),
            "no mapping rules: every request gets the no-match error",
        );
    }

    // Seeds the hashes of limiter and cache slots, so a client cannot aim at one.
    let secret = svc
        .control_service_auth
        .as_ref()
        .map_or("", |a| a.value.expose());
    let limiters = limiter::compile_limiters(
        &svc.limiters,
        &limiter::LimiterContext {
            service: i,
            service_id: &svc.id,
            authorizes,
            metrics: &metrics,
            secret,
        },
        paths,
        diags,
    );
    let cache = cache::compile_cache(
        &svc.cache,
        svc.batching.as_ref(),
        &cache::CacheContext {
            service: i,
            service_id: &svc.id,
            secret,
        },
        paths,
        diags,
    );
    let limiters = limiters.filter(|_| ok)?;
    let cache = cache?;
    let credentials = CredentialSource::new(svc.backend_version, &svc.credentials);
    let auth = svc.control_service_auth.as_ref();
    Some(Service {
        index: ServiceIndex::from_usize(i),
        id: svc.id.as_str().into(),
        name: svc.name.as_str().into(),
        authorizes,
        backend_version: svc.backend_version,
        auth_kind: auth.map(|a| a.kind),
        auth_value: auth.map(|a| a.value.clone()).unwrap_or_default(),
        backend_endpoint,
        backend_host: svc.backend.host.as_deref().map(Into::into),
        upstream: Upstream {
            api_backend,
            hostname_rewrite: hostname_rewrite.map(Into::into),
            secret_token: svc
                .upstream
                .secret_token
                .clone()
                .filter(|t| !t.expose().is_empty()),
        },
        // Settled once the gateway's control service is known.
        control_authority: Box::default(),
        domains: Box::default(),
        credentials,
        errors,
        rules,
        metrics,
        limiters,
        rate_limit_headers: svc.rate_limit_headers,
        cache,
        service_params: backend::service_params(
            &svc.id,
            auth.map(|a| (a.kind.param(), a.value.expose())),
        ),
    })
}
