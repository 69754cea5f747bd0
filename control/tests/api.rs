//! Real HTTP against `tollgate_control::spawn`.
// Tests may panic on unexpected answers; that is how they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;

use tollgate_control::{spawn, Running};

const DATA: &str = r#"
services:
  - id: 42
    service_token: tok42
    provider_key: pk
    metrics:
      - name: hits
      - {name: search, parent: hits}
      - {name: update, parent: hits}
      - {name: admin, parent: hits}
    plans:
      - name: basic
        limits:
          hits: {minute: 3, day: 100}
          search: {eternity: 50}
          admin: {month: 0}
      - name: free
    applications:
      - {app_id: app1, app_keys: [key1, "k+y&=é"], plan: basic}
      - {app_id: nokeys, plan: free}
      - {app_id: paused, app_keys: [k], plan: free, state: suspended}
  - id: 7
    service_token: tok7
    provider_key: pk
    backend_version: "1"
    metrics: [{name: hits}]
    plans: [{name: p, limits: {hits: {hour: 10}}}]
    applications: [{user_key: "uk+1", plan: p}]
  - id: 9
    service_token: tok9
    backend_version: oauth
    metrics: [{name: hits}]
    plans: [{name: o}]
    applications: [{app_id: client, app_keys: [secret], plan: o, redirect_url: "https://app.example/cb"}]
"#;

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn collect(mut res: ureq::http::Response<ureq::Body>) -> Answer {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = res.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(s: &Running, path_and_query: &str, options: Option<&str>) -> Answer {
    let mut req = agent().get(format!("{}{}", s.url(), path_and_query));
    if let Some(o) = options {
        req = req.header("3scale-options", o);
    }
    collect(req.call().unwrap())
}

fn post(s: &Running, path: &str, body: &str) -> Answer {
    let res = agent()
        .post(format!("{}{}", s.url(), path))
        .header("content-type", "application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    collect(res)
}

fn json(s: &Running, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(s, path, None).body).unwrap()
}

const OPTS: &str = "rejection_reason_header=1&limit_headers=1";
const T: &str = "service_token=tok42&service_id=42";

/// 2024-03-06 12:00:30 UTC, a Wednesday, 30 s into a minute.
const NOW_MS: i64 = 1_709_726_430_000;

fn started() -> Running {
    let s = spawn(DATA, None).unwrap();
    s.clock().set_ms(Some(NOW_MS));
    s
}

#[test]
fn authrep_authorized_body_and_headers() {
    let s = started();
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage%5Bsearch%5D=1"),
        Some(OPTS),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("application/vnd.3scale-v2.0+xml"));
    assert_eq!(
        a.body,
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><status><authorized>true</authorized><plan>basic</plan><usage_reports>"#,
            r#"<usage_report metric="hits" period="day"><period_start>2024-03-06 00:00:00 +0000</period_start><period_end>2024-03-07 00:00:00 +0000</period_end><max_value>100</max_value><current_value>1</current_value></usage_report>"#,
            r#"<usage_report metric="hits" period="minute"><period_start>2024-03-06 12:00:00 +0000</period_start><period_end>2024-03-06 12:01:00 +0000</period_end><max_value>3</max_value><current_value>1</current_value></usage_report>"#,
            r#"<usage_report metric="search" period="eternity"><max_value>50</max_value><current_value>1</current_value></usage_report>"#,
            r#"<usage_report metric="admin" period="month"><period_start>2024-03-01 00:00:00 +0000</period_start><period_end>2024-04-01 00:00:00 +0000</period_end><max_value>0</max_value><current_value>0</current_value></usage_report>"#,
            r#"</usage_reports></status>"#
        )
    );
    // Lowest remaining: hits/minute (3-1)/1 = 2, resets in 30 s.
    assert_eq!(a.header("3scale-limit-remaining"), Some("2"));
    assert_eq!(a.header("3scale-limit-reset"), Some("30"));
    assert_eq!(a.header("3scale-limit-max-value"), Some("3"));
    assert_eq!(a.header("3scale-rejection-reason"), None);
}

#[test]
fn limits_exceeded_and_denied_authrep_does_not_count() {
    let s = started();
    let q = format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[hits]=1");
    for _ in 0..3 {
        assert_eq!(get(&s, &q, Some(OPTS)).status, 200);
    }
    let a = get(&s, &q, Some(OPTS));
    assert_eq!(a.status, 409);
    assert_eq!(a.header("3scale-rejection-reason"), Some("limits_exceeded"));
    assert_eq!(a.header("3scale-limit-remaining"), Some("0"));
    assert_eq!(a.header("3scale-limit-reset"), Some("30"));
    assert_eq!(a.header("3scale-limit-max-value"), Some("3"));
    assert!(
        a.body
            .contains("<reason>usage limits are exceeded</reason>"),
        "{}",
        a.body
    );
    assert!(
        a.body
            .contains("<max_value>3</max_value><current_value>3</current_value>"),
        "{}",
        a.body
    );
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        3
    );
    // authorize never counts.
    let a = get(
        &s,
        &format!("/transactions/authorize.xml?{T}&app_id=app1&app_key=key1"),
        Some(OPTS),
    );
    assert_eq!(a.status, 200, "stored 3 <= 3: {}", a.body);
    // The next minute is a new window.
    s.clock().set_ms(Some(NOW_MS + 30_000));
    assert_eq!(get(&s, &q, Some(OPTS)).status, 200);
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        1
    );
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["day"],
        4
    );
}

#[test]
fn disabled_metric_has_max_value_zero() {
    let s = started();
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[admin]=1"),
        Some(OPTS),
    );
    assert_eq!(a.status, 409);
    assert_eq!(a.header("3scale-rejection-reason"), Some("limits_exceeded"));
    assert_eq!(a.header("3scale-limit-max-value"), Some("0"));
    assert_eq!(a.header("3scale-limit-remaining"), Some("0"));
    // Nothing counted, not even hits.
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"],
        serde_json::json!({"hits": {"total": 0}, "search": {"total": 0}, "update": {"total": 0}, "admin": {"total": 0}})
    );
}

#[test]
fn hierarchy_method_counts_toward_hits() {
    let s = started();
    let a = get(&s, &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[search]=2&usage[update]=1"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    let u = json(&s, "/_tollgate/usage");
    let app = &u["services"]["42"]["applications"]["app1"];
    assert_eq!(app["hits"]["day"], 3);
    assert_eq!(app["search"]["eternity"], 2);
    assert_eq!(app["update"]["week"], 1);
    // A child's usage is checked against the parent's limit: hits/minute is 3 of 3.
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[update]=1"),
        Some(OPTS),
    );
    assert_eq!(a.status, 409);
}

#[test]
fn credentials() {
    let s = started();
    let base = "/transactions/authrep.xml?";
    // Wrong key, missing key.
    let a = get(
        &s,
        &format!("{base}{T}&app_id=app1&app_key=nope"),
        Some(OPTS),
    );
    assert_eq!(
        (a.status, a.header("3scale-rejection-reason")),
        (409, Some("application_key_invalid"))
    );
    assert!(
        a.body
            .contains(r#"<reason>application key "nope" is invalid</reason>"#),
        "{}",
        a.body
    );
    assert_eq!(a.header("3scale-limit-remaining"), None);
    let a = get(&s, &format!("{base}{T}&app_id=app1"), None);
    assert!(
        a.body
            .contains("<reason>application key is missing</reason>"),
        "{}",
        a.body
    );
    // A keyless app needs no key and accepts any (apisonator's Key validator), so it
    // passes a gateway that always sends one.
    for key in ["", "&app_key=", "&app_key=anything"] {
        assert_eq!(
            get(&s, &format!("{base}{T}&app_id=nokeys{key}"), None).status,
            200,
            "{key}"
        );
    }
    // Percent-decoding: the second key is `k+y&=é`.
    assert_eq!(
        get(
            &s,
            &format!("{base}{T}&app_id=app1&app_key=k%2By%26%3D%C3%A9"),
            None
        )
        .status,
        200
    );
    assert_eq!(
        get(
            &s,
            &format!("{base}{T}&app_id=app1&app_key=k+y%26%3D%C3%A9"),
            None
        )
        .status,
        409
    );
    // Unknown app.
    let a = get(&s, &format!("{base}{T}&app_id=ghost"), None);
    assert_eq!(a.status, 404);
    assert_eq!(
        a.body,
        r#"<?xml version="1.0" encoding="UTF-8"?><error code="application_not_found">application with id="ghost" was not found</error>"#
    );
    // Suspended.
    let a = get(
        &s,
        &format!("{base}{T}&app_id=paused&app_key=k"),
        Some(OPTS),
    );
    assert_eq!(
        a.header("3scale-rejection-reason"),
        Some("application_not_active")
    );
    // Service credentials.
    let a = get(
        &s,
        &format!("{base}service_token=bad&service_id=42&app_id=app1&app_key=key1"),
        None,
    );
    assert_eq!(a.status, 403);
    assert!(
        a.body.contains(r#"code="service_token_invalid""#),
        "{}",
        a.body
    );
    let a = get(
        &s,
        &format!("{base}service_token=tok42&app_id=app1&app_key=key1"),
        None,
    );
    assert_eq!(
        (a.status, a.body.contains("service_id_missing")),
        (422, true)
    );
    let a = get(&s, &format!("{base}app_id=app1&app_key=key1"), None);
    assert_eq!(
        (
            a.status,
            a.body.contains("provider_key_or_service_token_required")
        ),
        (403, true)
    );
    let a = get(
        &s,
        &format!("{base}provider_key=nope&service_id=42&app_id=app1&app_key=key1"),
        None,
    );
    assert!(
        a.body.contains(r#"code="provider_key_invalid""#),
        "{}",
        a.body
    );
    let a = get(
        &s,
        &format!("{base}provider_key=nope&app_id=app1&app_key=key1"),
        None,
    );
    assert!(
        a.body
            .contains(r#"code="provider_key_invalid_or_service_missing""#),
        "{}",
        a.body
    );
    // provider_key without service_id: the default (first) service.
    assert_eq!(
        get(
            &s,
            &format!("{base}provider_key=pk&app_id=app1&app_key=key1"),
            None
        )
        .status,
        200
    );
    let a = get(
        &s,
        &format!("{base}provider_key=pk&service_id=9&app_id=client"),
        None,
    );
    assert!(
        a.body.contains(r#"code="service_id_invalid""#),
        "{}",
        a.body
    );
    // Both app_id and user_key.
    let a = get(&s, &format!("{base}{T}&app_id=app1&user_key=x"), None);
    assert!(a.body.contains("authentication_error"), "{}", a.body);
    // no_body.
    let a = get(&s, &format!("{base}{T}&app_id=ghost"), Some("no_body=1"));
    assert_eq!((a.status, a.body.as_str()), (404, ""));
}

#[test]
fn user_key_service() {
    let s = started();
    let a = get(
        &s,
        "/transactions/authrep.xml?service_token=tok7&service_id=7&user_key=uk%2B1&usage[hits]=1",
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let a = get(
        &s,
        "/transactions/authrep.xml?service_token=tok7&service_id=7&user_key=uk+1",
        None,
    );
    assert_eq!(a.status, 403);
    assert!(
        a.body
            .contains(r#"<error code="user_key_invalid">user key "uk 1" is invalid</error>"#),
        "{}",
        a.body
    );
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["7"]["applications"]["uk+1"]["hits"]["hour"],
        1
    );
}

#[test]
fn oauth_variants() {
    let s = started();
    let a = get(&s, "/transactions/oauth_authrep.xml?service_token=tok9&service_id=9&app_id=client&usage[hits]=1", None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("<application><id>client</id><key>secret</key><redirect_url>https://app.example/cb</redirect_url></application>"), "{}", a.body);
    let a = get(&s, "/transactions/oauth_authorize.xml?service_token=tok9&service_id=9&app_id=client&app_key=wrong", Some(OPTS));
    assert_eq!(
        a.header("3scale-rejection-reason"),
        Some("application_key_invalid")
    );
    let a = get(&s, "/transactions/oauth_authorize.xml?service_token=tok9&service_id=9&app_id=client&redirect_uri=https://evil", Some(OPTS));
    assert_eq!(
        a.header("3scale-rejection-reason"),
        Some("redirect_uri_invalid")
    );
    let a = get(
        &s,
        "/transactions/oauth_authorize.xml?service_token=tok9&service_id=9&access_token=x",
        None,
    );
    assert_eq!(a.status, 404);
    // oauth endpoints on a non-oauth service.
    let a = get(
        &s,
        &format!("/transactions/oauth_authrep.xml?{T}&app_id=app1&app_key=key1"),
        Some(OPTS),
    );
    assert_eq!(
        a.header("3scale-rejection-reason"),
        Some("oauth_not_enabled")
    );
}

#[test]
fn bad_input_is_an_error_answer() {
    let s = started();
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=a%zz"),
        None,
    );
    assert_eq!(a.status, 400);
    assert!(
        a.body.contains(
            r#"<error code="bad_request">Invalid query parameters: invalid %-encoding</error>"#
        ),
        "{}",
        a.body
    );
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=%FF"),
        None,
    );
    assert_eq!((a.status, a.body.contains("not_valid_data")), (422, true));
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&usage[]=1&usage[hits]=1"),
        None,
    );
    assert_eq!(a.status, 400);
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage=1"),
        None,
    );
    assert_eq!((a.status, a.body.as_str()), (403, ""));
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[nope]=1"),
        None,
    );
    assert_eq!(
        (a.status, a.body.contains(r#"metric "nope" is invalid"#)),
        (404, true)
    );
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[hits]=-1"),
        None,
    );
    assert_eq!(
        (a.status, a.body.contains("usage_value_invalid")),
        (403, true)
    );
    // A bad key wins over a bad usage (Limits is the last validator).
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=x&usage[nope]=1"),
        None,
    );
    assert_eq!(a.status, 409);
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&user_id=u&app_id=app1"),
        None,
    );
    assert_eq!(a.status, 400);
    // Unknown route and method.
    assert_eq!(get(&s, "/nope", None).status, 404);
    assert_eq!(get(&s, "/transactions.xml", None).status, 404);
    // Oversized body.
    let big = "x".repeat(tollgate_control::MAX_BODY + 1);
    assert_eq!(post(&s, "/transactions.xml", &big).status, 413);
    // Still alive.
    assert_eq!(
        get(
            &s,
            &format!("/transactions/authorize.xml?{T}&app_id=nokeys"),
            None
        )
        .status,
        200
    );
}

#[test]
fn set_usage() {
    let s = started();
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[search]=%2310"),
        None,
    );
    assert_eq!(a.status, 409, "#10 > hits/minute 3");
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[search]=%232"),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        2
    );
}

#[test]
fn report_counts() {
    let s = started();
    let a = post(
        &s,
        "/transactions.xml",
        "service_token=tok42&service_id=42&transactions%5B0%5D%5Bapp_id%5D=app1&transactions[0][usage][search]=2&transactions[1][app_id]=nokeys&transactions[1][usage][hits]=5",
    );
    assert_eq!((a.status, a.body.as_str()), (202, ""));
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        2
    );
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["search"]["eternity"],
        2
    );
    assert_eq!(
        u["services"]["42"]["applications"]["nokeys"]["hits"]["day"],
        5
    );
    // All or nothing: one unknown app drops the batch, still 202.
    let a = post(&s, "/transactions.xml", "service_token=tok42&service_id=42&transactions[0][app_id]=app1&transactions[0][usage][hits]=1&transactions[1][app_id]=ghost&transactions[1][usage][hits]=1");
    assert_eq!(a.status, 202);
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        2
    );
    // Request errors.
    let a = post(&s, "/transactions.xml", "service_token=tok42&service_id=42");
    assert_eq!(
        (a.status, a.body.contains("transactions_is_blank")),
        (400, true)
    );
    let a = post(
        &s,
        "/transactions.xml",
        "service_token=bad&service_id=42&transactions[0][app_id]=app1",
    );
    assert_eq!(a.status, 403);
    let a = post(
        &s,
        "/transactions.xml",
        "provider_key=pk&transactions[0][app_id]=app1&transactions[0][usage][hits]=1",
    );
    assert_eq!(a.status, 202);
}

#[test]
fn requests_log_keeps_raw_targets() {
    let s = started();
    get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=k%2By"),
        None,
    );
    post(
        &s,
        "/transactions.xml",
        "service_token=tok42&service_id=42&transactions[0][app_id]=app1",
    );
    json(&s, "/_tollgate/usage");
    let log = json(&s, "/_tollgate/requests");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(
        log[0]["path_and_query"],
        format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=k%2By")
    );
    assert_eq!(log[0]["status"], 409);
    assert_eq!(log[0]["host"], s.addr().to_string());
    assert_eq!(log[1]["method"], "POST");
    assert_eq!(log[1]["path_and_query"], "/transactions.xml");
    assert_eq!(log[1]["status"], 202);
}

#[test]
fn usage_shape() {
    let s = started();
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(u["now"], "2024-03-06 12:00:30 +0000");
    // Every metric is listed with its total, counted or not.
    assert_eq!(
        u["services"]["9"]["applications"]["client"],
        serde_json::json!({"hits": {"total": 0}})
    );
    assert!(u["services"]["42"]["applications"]
        .as_object()
        .unwrap()
        .contains_key("nokeys"));
}

#[test]
fn state_survives_restart() {
    let dir = std::env::temp_dir().join(format!("tollgate-control-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    {
        let s = spawn(DATA, Some(path.clone())).unwrap();
        let a = get(
            &s,
            &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[search]=2"),
            None,
        );
        assert_eq!(a.status, 200);
    }
    {
        let s = spawn(DATA, Some(path.clone())).unwrap();
        let u = json(&s, "/_tollgate/usage");
        assert_eq!(
            u["services"]["42"]["applications"]["app1"]["search"]["eternity"], 2,
            "{u}"
        );
        assert_eq!(
            u["services"]["42"]["applications"]["app1"]["hits"]["year"], 2,
            "{u}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn example_data_serves_the_examples() {
    let yaml = std::fs::read_to_string(tollgate_testsupport::example("control.yaml")).unwrap();
    let s = spawn(&yaml, None).unwrap();
    let sg = "service_token=sendgrid-service-token-8f2c1b7e&service_id=2555417735060";
    for _ in 0..5 {
        let a = get(
            &s,
            &format!(
                "/transactions/authrep.xml?{sg}&app_id=bench-app&app_key=bench-key&usage[mail]=1"
            ),
            Some(OPTS),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.header("3scale-limit-remaining"), Some("-1"));
    }
    let q =
        format!("/transactions/authrep.xml?{sg}&app_id=demo-app&app_key=demo-key&usage[mail]=1");
    for _ in 0..3 {
        assert_eq!(get(&s, &q, Some(OPTS)).status, 200);
    }
    let a = get(&s, &q, Some(OPTS));
    if a.status == 200 {
        // The minute rolled over between calls; try once more.
        let a = get(&s, &q, Some(OPTS));
        assert_eq!(a.status, 200);
    } else {
        assert_eq!(a.header("3scale-rejection-reason"), Some("limits_exceeded"));
    }
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{sg}&app_id=demo-app&app_key=demo-key&usage[blocks]=1"),
        Some(OPTS),
    );
    assert_eq!(
        (a.status, a.header("3scale-limit-max-value")),
        (409, Some("0"))
    );
    let a = get(&s, "/transactions/authrep.xml?provider_key=sendgrid-provider-key-3a9e&app_id=pro-app&app_key=pro-key-2&usage[stats]=1", None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = get(&s, "/transactions/authrep.xml?service_token=twitter-service-token-51d0c9aa&service_id=2555417735077&app_id=tw-app&app_key=tw-key&usage[statuses_update]=1", None);
    assert_eq!(a.status, 200, "{}", a.body);
}

fn total(u: &serde_json::Value, service: &str, app: &str, metric: &str) -> u64 {
    u["services"][service]["applications"][app][metric]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total for {service}/{app}/{metric}: {u}"))
}

fn calls(s: &Running) -> serde_json::Value {
    json(s, "/_tollgate/calls")
}

#[test]
fn batched_reports_as_apisonator_takes_them() {
    let s = started();
    // Three transactions in one POST, keys percent-encoded and raw, the credentials in the query.
    // app1's plan allows 3 hits a minute: a report is not refused by limits, nor for a suspended
    // app. An app_key in a report is not read.
    let a = post(
        &s,
        &format!("/transactions.xml?{T}"),
        "transactions%5B0%5D%5Bapp_id%5D=app1&transactions%5B0%5D%5Busage%5D%5Bhits%5D=3\
         &transactions[1][app_id]=app1&transactions[1][app_key]=wrong&transactions[1][usage][search]=4\
         &transactions%5B2%5D%5Bapp_id%5D=paused&transactions[2][usage][update]=2",
    );
    assert_eq!((a.status, a.body.as_str()), (202, ""));
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(total(&u, "42", "app1", "hits"), 7, "{u}");
    assert_eq!(total(&u, "42", "app1", "search"), 4);
    assert_eq!(
        u["services"]["42"]["applications"]["app1"]["hits"]["minute"],
        7
    );
    assert_eq!(total(&u, "42", "paused", "hits"), 2);
    assert_eq!(total(&u, "42", "paused", "update"), 2);
    assert_eq!(total(&u, "42", "nokeys", "hits"), 0);
    // An authrep now sees the reported usage: over the minute's 3.
    let a = get(
        &s,
        &format!("/transactions/authrep.xml?{T}&app_id=app1&app_key=key1&usage[hits]=1"),
        Some(OPTS),
    );
    assert_eq!(a.header("3scale-rejection-reason"), Some("limits_exceeded"));

    // user_key on a backend_version 1 service; provider_key + service_id in the body.
    let a = post(
        &s,
        "/transactions.xml",
        "provider_key=pk&service_id=7&transactions%5B0%5D%5Buser_key%5D=uk%2B1&transactions%5B0%5D%5Busage%5D%5Bhits%5D=11",
    );
    assert_eq!(a.status, 202);
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(total(&u, "7", "uk+1", "hits"), 11, "{u}");

    // access_token is an unknown parameter to apisonator ≥ 3.0: beside an app_id it changes
    // nothing; alone it identifies no application, so the batch is dropped.
    let a = post(
        &s,
        "/transactions.xml",
        "service_token=tok9&service_id=9&transactions[0][app_id]=client&transactions[0][access_token]=tkn&transactions[0][usage][hits]=2",
    );
    assert_eq!(a.status, 202);
    let a = post(
        &s,
        "/transactions.xml",
        "service_token=tok9&service_id=9&transactions[0][access_token]=tkn&transactions[0][usage][hits]=5",
    );
    assert_eq!(a.status, 202);
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(total(&u, "9", "client", "hits"), 2, "{u}");

    // One invalid transaction drops the whole POST: an unknown app, metric or value, a
    // timestamp too old, a user_key on an app_id service.
    for bad in [
        "transactions[1][app_id]=ghost&transactions[1][usage][hits]=1",
        "transactions[1][app_id]=app1&transactions[1][usage][nope]=1",
        "transactions[1][app_id]=app1&transactions[1][usage][hits]=-1",
        "transactions[1][app_id]=app1&transactions[1][usage][hits]=1&transactions[1][timestamp]=2024-03-04%2012:00:00",
        "transactions[1][user_key]=app1&transactions[1][usage][hits]=1",
    ] {
        let a = post(
            &s,
            "/transactions.xml",
            &format!("{T}&transactions[0][app_id]=nokeys&transactions[0][usage][hits]=1&{bad}"),
        );
        assert_eq!((a.status, a.body.as_str()), (202, ""), "{bad}");
        let u = json(&s, "/_tollgate/usage");
        assert_eq!(total(&u, "42", "nokeys", "hits"), 0, "{bad}: {u}");
        assert_eq!(total(&u, "42", "app1", "hits"), 7, "{bad}: {u}");
    }
    let c = calls(&s);
    assert_eq!(
        (
            &c["report"],
            &c["report_transactions"],
            &c["report_dropped"]
        ),
        (&json_n(9), &json_n(3 + 1 + 1 + 1 + 5 * 2), &json_n(6)),
        "{c}"
    );
    assert_eq!(c["authrep"], 1);
}

fn json_n(n: u64) -> serde_json::Value {
    serde_json::json!(n)
}

#[test]
fn calls_are_exact_under_concurrency() {
    let s = started();
    let url = s.url();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = agent();
                for _ in 0..20 {
                    let path = match i % 4 {
                        0 => format!("/transactions/authrep.xml?{T}&app_id=nokeys&usage[hits]=1"),
                        1 => format!("/transactions/authorize.xml?{T}&app_id=nokeys"),
                        2 => "/transactions/oauth_authrep.xml?service_token=tok9&service_id=9&app_id=client&usage[hits]=1".to_owned(),
                        _ => String::new(),
                    };
                    let status = if path.is_empty() {
                        agent
                            .post(format!("{url}/transactions.xml"))
                            .header("content-type", "application/x-www-form-urlencoded")
                            .send(format!("{T}&transactions[0][app_id]=nokeys&transactions[0][usage][search]=2&transactions[1][app_id]=app1&transactions[1][usage][hits]=1"))
                            .unwrap()
                            .status()
                    } else {
                        agent.get(format!("{url}{path}")).call().unwrap().status()
                    };
                    assert!(status.is_success(), "{path}: {status}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = calls(&s);
    assert_eq!(
        c,
        serde_json::json!({"authrep": 40, "authorize": 40, "oauth_authrep": 40, "oauth_authorize": 0,
                           "report": 40, "report_transactions": 80, "report_dropped": 0}),
    );
    let u = json(&s, "/_tollgate/usage");
    // authreps 40 × 1 hit; reports 40 × 2 search (→ hits).
    assert_eq!(total(&u, "42", "nokeys", "hits"), 40 + 80, "{u}");
    assert_eq!(total(&u, "42", "nokeys", "search"), 80);
    assert_eq!(total(&u, "42", "app1", "hits"), 40);
    assert_eq!(total(&u, "9", "client", "hits"), 40);
}

/// The e2e tests stop the service mid-run and start it again on the same port with the same
/// state file: usage and call counts before and after add up.
#[test]
fn counts_and_calls_add_up_across_a_restart_on_the_same_port() {
    let dir = std::env::temp_dir().join(format!("tollgate-control-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    let report = format!("{T}&transactions[0][app_id]=nokeys&transactions[0][usage][hits]=3");
    let authrep = format!("/transactions/authrep.xml?{T}&app_id=nokeys&usage[search]=1");
    let s = tollgate_control::spawn_on(DATA, Some(path.clone()), "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = s.addr();
    for _ in 0..3 {
        assert_eq!(post(&s, "/transactions.xml", &report).status, 202);
        assert_eq!(get(&s, &authrep, None).status, 200);
    }
    // Dropping it right after the last answer: the write on shutdown has it all.
    drop(s);
    let s = tollgate_control::spawn_on(DATA, Some(path.clone()), addr).unwrap();
    assert_eq!(s.addr(), addr);
    for _ in 0..2 {
        assert_eq!(post(&s, "/transactions.xml", &report).status, 202);
        assert_eq!(get(&s, &authrep, None).status, 200);
    }
    let u = json(&s, "/_tollgate/usage");
    assert_eq!(total(&u, "42", "nokeys", "hits"), 5 * 3 + 5, "{u}");
    assert_eq!(total(&u, "42", "nokeys", "search"), 5);
    let c = calls(&s);
    assert_eq!(
        (&c["report"], &c["report_transactions"], &c["authrep"]),
        (&json_n(5), &json_n(5), &json_n(5)),
        "{c}"
    );
    drop(s);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(written["calls"]["authrep"], 5, "{written}");
    let _ = std::fs::remove_dir_all(&dir);
}
