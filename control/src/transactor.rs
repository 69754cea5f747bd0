//! The Service Management API's decisions, as pure functions of (data, counters, parameters,
//! `3scale-options`, now). The axum handlers in `api.rs` only move bytes in and out.
//!
//! Processing order follows apisonator (`listener.rb` `do_api_method`, `transactor.rb`):
//! parameter encoding, service credentials, `user_id`, `usage` shape, application lookup, then
//! the validators `Key → State → ServiceState → Limits` (oauth endpoints:
//! `OauthSetting → OauthKey → RedirectURI → State → ServiceState → Limits`), first failure wins.

use std::collections::BTreeMap;

use crate::data::{App, BackendVersion, Data, Service};
use crate::params::{ParamError, Params, Value};
use crate::periods::Period;
use crate::store::{Key, Op, Store};
use crate::xml;

/// Which auth endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Authrep,
    OauthAuthorize,
    OauthAuthrep,
}

impl Endpoint {
    fn oauth(self) -> bool {
        matches!(self, Endpoint::OauthAuthorize | Endpoint::OauthAuthrep)
    }
    fn reports(self) -> bool {
        matches!(self, Endpoint::Authrep | Endpoint::OauthAuthrep)
    }
}

/// An HTTP answer: status, extra headers, body (the content type is always apisonator's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Counters changed (persist them).
    pub changed: bool,
}

impl Answer {
    fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            changed: false,
        }
    }
}

/// A request error (`Backend::Error`): `<error code=…>` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Fail {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            status,
            code,
            message: message.into(),
        }
    }
    fn answer(&self, no_body: bool) -> Answer {
        Answer {
            status: self.status,
            headers: Vec::new(),
            body: if no_body {
                String::new()
            } else {
                xml::error(self.code, &self.message)
            },
            changed: false,
        }
    }
}

impl From<ParamError> for Fail {
    fn from(e: ParamError) -> Fail {
        Fail::new(400, "bad_request", e.message())
    }
}

fn not_valid_data() -> Fail {
    Fail::new(422, "not_valid_data", "all data must be valid UTF8")
}

/// The `3scale-options` extensions.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extensions {
    pub no_body: bool,
    pub rejection_reason_header: bool,
    pub limit_headers: bool,
    pub hierarchy: bool,
    pub flat_usage: bool,
    pub list_app_keys: bool,
}

impl Extensions {
    /// Parses the header value (itself a query string); an unparsable header enables nothing.
    /// `no_body` may also come as a URL parameter.
    pub fn parse(header: Option<&[u8]>, params: Option<&Params>) -> Extensions {
        let h = header
            .and_then(|h| {
                let mut p = Params::default();
                p.add_bytes(h).ok().map(|()| p)
            })
            .unwrap_or_default();
        let one = |k: &str| h.get_str(k) == Some("1");
        let truthy = |v: Option<&str>| v.is_some_and(|v| v != "0" && v != "false");
        Extensions {
            no_body: truthy(h.get_str("no_body"))
                || truthy(params.and_then(|p| p.get_str("no_body"))),
            rejection_reason_header: one("rejection_reason_header"),
            limit_headers: one("limit_headers"),
            hierarchy: one("hierarchy"),
            flat_usage: one("flat_usage"),
            list_app_keys: one("list_app_keys"),
        }
    }
}

/// apisonator's `normalize_non_empty_keys!`: strings only, stripped, empty → absent.
fn normalized<'a>(p: &'a Params, key: &str) -> Option<&'a str> {
    p.get_str(key).map(ruby_strip).filter(|s| !s.is_empty())
}

fn ruby_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0' || c == '\u{b}')
}

/// Finds the service from `provider_key` [+ `service_id`] or `service_token` + `service_id`.
pub(crate) fn resolve_service<'d>(
    data: &'d Data,
    p: &Params,
) -> Result<(usize, &'d Service), Fail> {
    let service_id = normalized(p, "service_id");
    if let Some(pk) = normalized(p, "provider_key") {
        let mut own = data
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.provider_key.as_deref() == Some(pk))
            .peekable();
        if own.peek().is_none() {
            return Err(match service_id {
                Some(_) => Fail::new(
                    403,
                    "provider_key_invalid",
                    format!("provider key \"{pk}\" is invalid"),
                ),
                None => Fail::new(
                    403,
                    "provider_key_invalid_or_service_missing",
                    format!("provider key \"{pk}\" invalid and/or service ID missing"),
                ),
            });
        }
        return match service_id {
            None => own.next().ok_or_else(|| {
                Fail::new(
                    403,
                    "provider_key_invalid_or_service_missing",
                    format!("provider key \"{pk}\" invalid and/or service ID missing"),
                )
            }),
            Some(sid) => own.find(|(_, s)| s.id == sid).ok_or_else(|| {
                Fail::new(
                    403,
                    "service_id_invalid",
                    format!("service id \"{sid}\" is invalid"),
                )
            }),
        };
    }
    let token = p
        .get_str("service_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Fail::new(
                403,
                "provider_key_or_service_token_required",
                "Provider key or service token are required",
            )
        })?;
    let sid =
        service_id.ok_or_else(|| Fail::new(422, "service_id_missing", "Service ID is missing"))?;
    data.services
        .iter()
        .enumerate()
        .find(|(_, s)| s.id == sid && s.service_token.as_deref() == Some(token))
        .ok_or_else(|| {
            Fail::new(
                403,
                "service_token_invalid",
                format!("service token \"{token}\" or service id \"{sid}\" is invalid"),
            )
        })
}

/// Parses `usage` into the effective usage per metric (ancestors included unless `flat`).
pub(crate) fn parse_usage(
    svc: &Service,
    usage: &BTreeMap<String, Value>,
    flat: bool,
) -> Result<BTreeMap<usize, Op>, Fail> {
    let mut eff: BTreeMap<usize, Op> = BTreeMap::new();
    for (name, value) in usage {
        let name = ruby_strip(name);
        let Some(&metric) = svc.metric_index.get(name) else {
            return Err(Fail::new(
                404,
                "metric_invalid",
                format!("metric \"{name}\" is invalid"),
            ));
        };
        let op = parse_value(name, value)?;
        let targets = if flat {
            vec![metric]
        } else {
            svc.with_ancestors(metric)
        };
        for m in targets {
            eff.entry(m)
                .and_modify(|o| *o = o.combine(op))
                .or_insert(op);
        }
    }
    Ok(eff)
}

fn parse_value(metric: &str, value: &Value) -> Result<Op, Fail> {
    let empty = || {
        Fail::new(
            403,
            "usage_value_invalid",
            format!("usage value for metric \"{metric}\" can not be empty"),
        )
    };
    let raw = match value {
        Value::Str(s) => s.as_str(),
        Value::Null => return Err(empty()),
        // apisonator would stringify the structure; any such value is invalid.
        _ => {
            return Err(Fail::new(
                403,
                "usage_value_invalid",
                format!("usage value for metric \"{metric}\" is invalid"),
            ))
        }
    };
    let t = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        return Err(empty());
    }
    let digits = t.strip_prefix('#').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fail::new(
            403,
            "usage_value_invalid",
            format!("usage value \"{raw}\" for metric \"{metric}\" is invalid"),
        ));
    }
    let n = digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    Ok(if raw.starts_with('#') {
        Op::Set(n)
    } else if t.starts_with('#') {
        // " #5": passes apisonator's regex but is not a set; Ruby's to_i makes it 0.
        Op::Add(0)
    } else {
        Op::Add(n)
    })
}

struct Rejection {
    code: &'static str,
    reason: String,
}

fn key_invalid(key: Option<&str>) -> Rejection {
    Rejection {
        code: "application_key_invalid",
        reason: match key {
            None | Some("") => "application key is missing".to_owned(),
            Some(k) => format!("application key \"{k}\" is invalid"),
        },
    }
}

/// GET /transactions/{authorize,authrep,oauth_authorize,oauth_authrep}.xml
pub fn auth(
    data: &Data,
    store: &mut Store,
    endpoint: Endpoint,
    query: &[u8],
    options: Option<&[u8]>,
    now_ms: i64,
) -> Answer {
    let calls = &mut store.calls;
    let count = match endpoint {
        Endpoint::Authorize => &mut calls.authorize,
        Endpoint::Authrep => &mut calls.authrep,
        Endpoint::OauthAuthorize => &mut calls.oauth_authorize,
        Endpoint::OauthAuthrep => &mut calls.oauth_authrep,
    };
    *count = count.saturating_add(1);
    let now = now_ms.div_euclid(1000);
    let mut answer = match Params::parse_bytes(query) {
        Err(e) => Fail::from(e).answer(Extensions::parse(options, None).no_body),
        Ok(params) => {
            let ext = Extensions::parse(options, Some(&params));
            auth_inner(data, store, endpoint, &params, ext, now, now_ms)
                .unwrap_or_else(|f| f.answer(ext.no_body))
        }
    };
    // The call count changed: persist it too.
    answer.changed = true;
    answer
}

fn auth_inner(
    data: &Data,
    store: &mut Store,
    endpoint: Endpoint,
    p: &Params,
    ext: Extensions,
    now: i64,
    now_ms: i64,
) -> Result<Answer, Fail> {
    if p.invalid_utf8 {
        return Err(not_valid_data());
    }
    let (si, svc) = resolve_service(data, p)?;
    if p.get("user_id").is_some() {
        return Err(Fail::new(
            400,
            "end_users_no_longer_supported",
            "End-users are no longer supported, do not specify the user_id parameter",
        ));
    }
    let usage = match p.get("usage") {
        None => None,
        Some(Value::Map(m)) => Some(m),
        Some(_) => return Ok(Answer::empty(403)),
    };
    let app_id = normalized(p, "app_id");
    let user_key = normalized(p, "user_key");
    // app_key: stripped, but an empty one stays "" (it forces key checking).
    let app_key = p.get_str("app_key").map(ruby_strip);
    if endpoint.oauth() && app_id.is_none() {
        return Err(Fail::new(
            404,
            "application_not_found",
            "application id is missing",
        ));
    }
    if app_id.is_some() && user_key.is_some() {
        return Err(Fail::new(
            403,
            "authentication_error",
            "either app_id or user_key is allowed, not both",
        ));
    }
    let (ai, app) = find_app(svc, app_id, user_key)?;

    // With no_body, the usage is resolved before the validators (apisonator preloads limits).
    let mut eff = None;
    if ext.no_body {
        if let Some(u) = usage {
            eff = Some(parse_usage(svc, u, ext.flat_usage)?);
        }
    }

    let mut rejection = None;
    if endpoint.oauth() && svc.backend_version != BackendVersion::Oauth {
        rejection = Some(Rejection {
            code: "oauth_not_enabled",
            reason: "oauth is not enabled".to_owned(),
        });
    }
    let check_key = match (endpoint.oauth(), svc.backend_version) {
        (_, BackendVersion::UserKey) if !endpoint.oauth() => None,
        (true, _) | (false, BackendVersion::Oauth) => {
            // OauthKey: only checked when sent; an empty key fails.
            app_key
                .filter(|k| k.is_empty() || !app.keys.iter().any(|x| x == k))
                .map(|k| key_invalid(Some(k)))
        }
        (false, _) => {
            // apisonator's Key validator: an app without keys accepts any key, even an
            // empty one; an app with keys needs one of them.
            let ok =
                app.keys.is_empty() || app_key.is_some_and(|k| app.keys.iter().any(|x| x == k));
            (!ok).then(|| key_invalid(app_key))
        }
    };
    rejection = rejection.or(check_key);
    let mut redirect_element = "redirect_url";
    if endpoint.oauth() && rejection.is_none() {
        let (name, requested) = match (p.get_str("redirect_url"), p.get_str("redirect_uri")) {
            (Some(u), _) => ("redirect_url", Some(u)),
            (None, Some(u)) => ("redirect_uri", Some(u)),
            (None, None) => ("redirect_url", None),
        };
        redirect_element = name;
        if let (Some(want), Some(got)) = (app.redirect_url.as_deref(), requested) {
            if want != got {
                rejection = Some(Rejection {
                    code: if name == "redirect_uri" {
                        "redirect_uri_invalid"
                    } else {
                        "redirect_url_invalid"
                    },
                    reason: format!("{name} \"{got}\" is invalid"),
                });
            }
        }
    }
    if rejection.is_none() && !app.active {
        rejection = Some(Rejection {
            code: "application_not_active",
            reason: "application is not active".to_owned(),
        });
    }
    if rejection.is_none() && !svc.active {
        rejection = Some(Rejection {
            code: "service_not_active",
            reason: "service is not active".to_owned(),
        });
    }

    let plan = svc.plans.get(app.plan);
    let limits = plan.map(|p| p.limits.as_slice()).unwrap_or(&[]);
    let key = |metric: usize, period: Period| Key {
        service: si,
        app: ai,
        metric,
        period,
    };
    let mut eff = eff.unwrap_or_default();
    if rejection.is_none() {
        // Limits: usage errors surface only here, after the other validators passed.
        if let Some(u) = usage {
            if !ext.no_body {
                eff = parse_usage(svc, u, ext.flat_usage)?;
            }
        }
        let exceeded = limits.iter().any(|l| {
            let stored = store.get(key(l.metric, l.period), now);
            if usage.is_none_or(|u| u.is_empty()) {
                stored > l.max
            } else {
                eff.get(&l.metric)
                    .is_some_and(|op| op.apply(stored) > l.max)
            }
        });
        if exceeded {
            rejection = Some(Rejection {
                code: "limits_exceeded",
                reason: "usage limits are exceeded".to_owned(),
            });
        }
    }
    let authorized = rejection.is_none();
    let mut changed = false;
    if authorized && endpoint.reports() {
        for (&m, &op) in &eff {
            if op != Op::Add(0) {
                store.apply(si, ai, m, op, now);
                changed = true;
            }
        }
    }

    let reports: Vec<xml::Report> = limits
        .iter()
        .map(|l| {
            let (start, end) = l.period.window(now);
            xml::Report {
                metric: svc.metric_name(l.metric),
                period: l.period,
                start,
                end,
                max: l.max,
                current: store.get(key(l.metric, l.period), now),
            }
        })
        .collect();

    let mut headers = Vec::new();
    let limits_exceeded = rejection
        .as_ref()
        .is_some_and(|r| r.code == "limits_exceeded");
    if let Some(r) = &rejection {
        if ext.rejection_reason_header {
            headers.push(("3scale-rejection-reason", r.code.to_owned()));
        }
    }
    if ext.limit_headers && (authorized || limits_exceeded) {
        let has_usage = usage.is_some_and(|u| !u.is_empty());
        let mut best: Option<(i128, Period, &xml::Report)> = None;
        for (r, l) in reports.iter().zip(limits) {
            let amount = match eff.get(&l.metric) {
                Some(op) => op.amount(),
                None if has_usage => continue,
                None => 0,
            };
            let left = i128::from(r.max) - i128::from(r.current);
            let remaining = if left <= 0 {
                0
            } else if amount == 0 {
                continue; // unconstrained by this call
            } else {
                left / i128::from(amount)
            };
            let better = match &best {
                None => true,
                Some((b, bp, _)) => remaining < *b || (remaining == *b && r.period > *bp),
            };
            if better {
                best = Some((remaining, r.period, r));
            }
        }
        match best {
            Some((remaining, _, r)) => {
                let reset = match r.end {
                    None => -1,
                    Some(end) => (end * 1000 - now_ms + 999).div_euclid(1000),
                };
                headers.push(("3scale-limit-remaining", remaining.to_string()));
                headers.push(("3scale-limit-reset", reset.to_string()));
                headers.push(("3scale-limit-max-value", r.max.to_string()));
            }
            None => {
                headers.push(("3scale-limit-remaining", "-1".to_owned()));
                headers.push(("3scale-limit-reset", "-1".to_owned()));
            }
        }
    }

    let body = if ext.no_body {
        String::new()
    } else {
        let hierarchy = ext.hierarchy.then(|| {
            limits
                .iter()
                .map(|l| {
                    let children = svc
                        .metrics
                        .get(l.metric)
                        .map(|m| m.children.iter().map(|&c| svc.metric_name(c)).collect())
                        .unwrap_or_default();
                    (svc.metric_name(l.metric), children)
                })
                .collect()
        });
        xml::Status {
            authorized,
            reason: rejection.as_ref().map(|r| r.reason.as_str()),
            application: endpoint.oauth().then(|| xml::Application {
                id: &app.id,
                key: app.keys.first().map_or("", String::as_str),
                redirect_element,
                redirect_url: app.redirect_url.as_deref().unwrap_or(""),
            }),
            plan: plan.map_or("", |p| p.name.as_str()),
            reports,
            app_keys: ext.list_app_keys.then_some((
                app.id.as_str(),
                svc.id.as_str(),
                app.keys.as_slice(),
            )),
            hierarchy,
        }
        .to_xml()
    };
    Ok(Answer {
        status: if authorized { 200 } else { 409 },
        headers,
        body,
        changed,
    })
}

fn find_app<'s>(
    svc: &'s Service,
    app_id: Option<&str>,
    user_key: Option<&str>,
) -> Result<(usize, &'s App), Fail> {
    let lookup = |id: &str| {
        svc.app_index
            .get(id)
            .and_then(|&i| svc.apps.get(i).map(|a| (i, a)))
    };
    if svc.backend_version == BackendVersion::UserKey {
        let Some(k) = user_key else {
            return Err(Fail::new(403, "user_key_invalid", "user key is missing"));
        };
        lookup(k).ok_or_else(|| {
            Fail::new(
                403,
                "user_key_invalid",
                format!("user key \"{k}\" is invalid"),
            )
        })
    } else {
        let Some(id) = app_id else {
            return Err(Fail::new(
                404,
                "application_not_found",
                "application id is missing",
            ));
        };
        lookup(id).ok_or_else(|| {
            Fail::new(
                404,
                "application_not_found",
                format!("application with id=\"{id}\" was not found"),
            )
        })
    }
}

/// POST /transactions.xml. The answer is 202 once the request is well formed; the transactions
/// are then applied all-or-nothing (apisonator does this asynchronously and silently drops a batch
/// with any invalid transaction; so do we, with a line on stderr).
pub fn report(
    data: &Data,
    store: &mut Store,
    content_type: Option<&str>,
    query: &[u8],
    body: &[u8],
    options: Option<&[u8]>,
    now_ms: i64,
) -> Answer {
    store.calls.report = store.calls.report.saturating_add(1);
    let ext = Extensions::parse(options, None);
    let mut answer = report_inner(data, store, content_type, query, body, ext, now_ms)
        .unwrap_or_else(|f| f.answer(ext.no_body));
    answer.changed = true;
    answer
}

fn report_inner(
    data: &Data,
    store: &mut Store,
    content_type: Option<&str>,
    query: &[u8],
    body: &[u8],
    ext: Extensions,
    now_ms: i64,
) -> Result<Answer, Fail> {
    if let Some(ct) = content_type {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !media.is_empty() && media != "application/x-www-form-urlencoded" {
            // multipart/form-data is accepted by apisonator but not supported here.
            return Err(Fail::new(
                400,
                "content_type_invalid",
                format!("invalid Content-Type: {ct}"),
            ));
        }
    }
    let mut p = Params::parse_bytes(query)?;
    p.add_bytes(body)?;
    let (si, svc) = resolve_service(data, &p)?;
    if p.invalid_utf8 {
        return Err(not_valid_data());
    }
    let txs = match p.get("transactions") {
        None | Some(Value::Null) => return Err(blank()),
        Some(Value::Str(s)) if s.trim().is_empty() => return Err(blank()),
        Some(Value::Map(m)) if m.is_empty() => return Err(blank()),
        Some(Value::Map(m)) => m,
        Some(_) => {
            return Err(Fail::new(
                400,
                "transactions_format_invalid",
                "transactions format is invalid",
            ))
        }
    };
    let mut batch = Vec::new();
    for tx in txs.values() {
        let Value::Map(tx) = tx else {
            return Err(Fail::new(
                400,
                "transactions_has_nil_transaction",
                "transactions has a nil transaction",
            ));
        };
        if tx.contains_key("user_id") {
            return Err(Fail::new(
                400,
                "end_users_no_longer_supported",
                "End-users are no longer supported, do not specify the user_id parameter",
            ));
        }
        batch.push(tx);
    }
    let now = now_ms.div_euclid(1000);
    let mut ops = Vec::new();
    let mut problem = None;
    for (i, tx) in batch.iter().enumerate() {
        match report_transaction(svc, tx, ext.flat_usage, now) {
            Ok((app, at, eff)) => ops.extend(eff.into_iter().map(|(m, op)| (app, m, op, at))),
            Err(f) => {
                problem = Some(format!("transaction {i}: {} {}", f.code, f.message));
                break;
            }
        }
    }
    let calls = &mut store.calls;
    calls.report_transactions = calls
        .report_transactions
        .saturating_add(u64::try_from(batch.len()).unwrap_or(u64::MAX));
    match problem {
        Some(p) => {
            calls.report_dropped = calls.report_dropped.saturating_add(1);
            eprintln!(
                "tollgate control: report for service {} dropped: {p}",
                svc.id
            );
        }
        None => {
            for (app, m, op, at) in ops {
                if op != Op::Add(0) {
                    store.apply(si, app, m, op, at);
                }
            }
        }
    }
    Ok(Answer::empty(202))
}

fn blank() -> Fail {
    Fail::new(
        400,
        "transactions_is_blank",
        "transactions parameter is blank",
    )
}

type Tx = (usize, i64, BTreeMap<usize, Op>);

fn report_transaction(
    svc: &Service,
    tx: &BTreeMap<String, Value>,
    flat: bool,
    now: i64,
) -> Result<Tx, Fail> {
    let get = |k: &str| {
        tx.get(k)
            .and_then(Value::as_str)
            .map(ruby_strip)
            .filter(|s| !s.is_empty())
    };
    let (app_id, user_key) = (get("app_id"), get("user_key"));
    let id = match (app_id, user_key) {
        (Some(_), Some(_)) => {
            return Err(Fail::new(
                403,
                "authentication_error",
                "either app_id or user_key is allowed, not both",
            ))
        }
        (Some(id), None) if svc.backend_version != BackendVersion::UserKey => id,
        (None, Some(k)) if svc.backend_version == BackendVersion::UserKey => k,
        (None, Some(k)) => {
            return Err(Fail::new(
                403,
                "user_key_invalid",
                format!("user key \"{k}\" is invalid"),
            ))
        }
        (Some(id), None) => {
            return Err(Fail::new(
                404,
                "application_not_found",
                format!("application with id=\"{id}\" was not found"),
            ))
        }
        (None, None) => {
            return Err(Fail::new(
                404,
                "application_not_found",
                "application id is missing",
            ))
        }
    };
    let (app, _) = find_app(
        svc,
        Some(id).filter(|_| svc.backend_version != BackendVersion::UserKey),
        Some(id).filter(|_| svc.backend_version == BackendVersion::UserKey),
    )?;
    let at = match tx
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
    {
        None => now,
        Some(t) if t < now - 86_400 => {
            return Err(Fail::new(
                409,
                "transaction_timestamp_too_old",
                "reporting transactions older than 86400 seconds is not allowed",
            ))
        }
        Some(t) if t > now + 3600 => {
            return Err(Fail::new(
                409,
                "transaction_timestamp_too_new",
                "reporting transactions more than 3600 seconds in the future is not allowed",
            ))
        }
        Some(t) => t,
    };
    let eff = match tx.get("usage") {
        None => BTreeMap::new(),
        Some(Value::Map(u)) => parse_usage(svc, u, flat)?,
        Some(_) => return Err(Fail::new(403, "usage_value_invalid", "usage is invalid")),
    };
    Ok((app, at, eff))
}

/// Report timestamps: UNIX seconds, or `YYYY-MM-DD[ HH:MM:SS][ ][UTC|Z|±HH[:]MM]` (also with
/// `/` or `T`). Anything else means "now", as apisonator does for unparsable input.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, rest) = s.split_at(s.find(['-', '/'])?);
    let rest = rest.get(1..)?;
    let (mo, rest) = rest.split_at(rest.find(['-', '/'])?);
    let rest = rest.get(1..)?;
    let day_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (d, rest) = rest.split_at(day_len);
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut t = crate::periods::days_from_civil(y, mo as u32, d as u32) * 86_400;
    let rest = rest.trim_start_matches([' ', 'T']);
    let mut rest = rest;
    if rest.len() >= 8 && rest.as_bytes().get(2) == Some(&b':') {
        let (hms, r) = rest.split_at(8);
        let mut it = hms.split(':');
        let (h, m, sec) = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
        t += h * 3600 + m * 60 + sec;
        rest = r.trim_start();
    }
    match rest {
        "" | "UTC" | "Z" | "GMT" => Some(t),
        off => {
            let sign = match off.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let digits: String = off.get(1..)?.chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 {
                return None;
            }
            let (h, m) = (num(digits.get(..2)?)?, num(digits.get(2..)?)?);
            Some(t - sign * (h * 3600 + m * 60))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1271980765"), Some(1_271_980_765));
        assert_eq!(parse_timestamp("2010-04-22 23:59:30"), Some(1_271_980_770));
        assert_eq!(
            parse_timestamp("2010-04-22 23:59:30 UTC"),
            Some(1_271_980_770)
        );
        assert_eq!(
            parse_timestamp("2010-04-22 23:59:30 +0200"),
            Some(1_271_980_770 - 7200)
        );
        assert_eq!(
            parse_timestamp("2010-04-22 23:59:30 -02:00"),
            Some(1_271_980_770 + 7200)
        );
        assert_eq!(parse_timestamp("2012/10/01"), Some(1_349_049_600));
        assert_eq!(parse_timestamp("2012garbage2012"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn usage_values() {
        let v = |s: &str| parse_value("hits", &Value::Str(s.to_owned()));
        assert_eq!(v("3"), Ok(Op::Add(3)));
        assert_eq!(v(" 3 "), Ok(Op::Add(3)));
        assert_eq!(v("#3"), Ok(Op::Set(3)));
        assert_eq!(v(" #5"), Ok(Op::Add(0)));
        for bad in ["##3", "#", "-#55", "-1", "1.5", "x"] {
            assert_eq!(
                v(bad).map_err(|f| f.code),
                Err("usage_value_invalid"),
                "{bad}"
            );
        }
        assert_eq!(
            v(" ").map_err(|f| f.message),
            Err("usage value for metric \"hits\" can not be empty".to_owned())
        );
    }
}
