//! Worst cases: what ONE decision costs for adversarial configurations and requests.
//!
//! Run with `cargo bench --bench worst_cases`. For each family of adversarial inputs (a
//! configuration and a request aimed at its matcher) it reports the median wall time of one
//! whole `decide()` and the peak heap memory that decision allocated on top of what was
//! allocated before it, against the targets: every family within 2 ms and 1 MiB. Each family
//! is measured twice: with the default `request_line_max_bytes` (8 KiB, APIcast's NGINX buffer)
//! and the longest target that fits, and with the limit raised to 64 KiB and a 60,000-byte
//! target (Envoy's default header limit admits 60 KiB), so the growth with the target's length
//! shows. A typical decision (a realistic service with 100 REST rules) is printed for
//! reference, and so is what `tollgate::load` costs for configurations built to be expensive to
//! compile (no target is set for those; they are not counted in the summary).
//!
//! Method: every case runs in a child process (this binary re-invoked with `--child ...`), so a
//! crash (a stack overflow aborts the process), a runaway allocation (the child's address space
//! is capped) or a hang (the child is killed after a timeout) is reported instead of ending the
//! run. The child compiles the configuration, then decides the request once with a fresh
//! [`Scratch`] (cold: the scratch's buffers grow, as the filter's first such request would make
//! them) and then again with the same, warm, scratch (as the filter reuses it), at least 3 and
//! at most 21 times, stopping once the case has used about 3 s. The time is the median over
//! all samples; the memory is the peak over all of them, the cold one included (it is the
//! largest). Memory is counted by a `#[global_allocator]` wrapping `std::alloc::System` that
//! tracks the bytes currently allocated and their peak (`peak_alloc`: this crate forbids
//! `unsafe`, which a `GlobalAlloc` impl needs; it counts a reallocation as a new block plus the
//! old one until the copy is done). Right before a decision the peak is reset to the current
//! bytes (the baseline); after it, peak minus baseline is the extra memory the decision needed,
//! and current minus baseline what it kept (in the Scratch, for a decision). Before timing, the
//! decision is checked against APIcast's rule-by-rule regex loop and its outcome printed, so a
//! reader sees the request really reached the matcher.
//!
//! Optional arguments: words selecting cases by key (`-- chain regex`), e.g. `identical`,
//! `distinct`, `chain`, `regex`, `alt`, `star`, `mix`, `query`, `literal`, `ladder`, `typical`,
//! `load`.

// A benchmark aborting loudly on a broken invariant (bad config, bad child output) is intended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use serde_json::{json, Value};

use tollgate::args::RequestArgs;
use tollgate::config::FilterConfigPaths;
use tollgate::config::{
    Authorization, BackendEndpoint, BackendVersion, ControlServiceAuth, ControlServiceAuthKind,
    CredentialsConfig, ErrorsConfig, FilterConfig, MappingRuleConfig, Secret, ServiceConfig,
    UpstreamConfig,
};
use tollgate::path::{self, PathBuffers};
use tollgate::rules::query::QueryCondition;
use tollgate::{Diagnostics, RequestView, Scratch, Verdict};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const HOST: &str = "api.example.com";
/// In every request, after the path: the service reads `user_key` from the query.
const CREDENTIALS: &str = "?user_key=k";

/// The default `request_line_max_bytes` (APIcast's 8 KiB NGINX buffer).
const DEFAULT_LINE_MAX: u32 = tollgate::config::DEFAULT_REQUEST_LINE_MAX_BYTES;
/// The raised limit, and the target used with it.
const LONG_LINE_MAX: u32 = 64 * 1024;
const LONG_TARGET: usize = 60_000;
/// What a request line adds to a GET's target: `GET `, ` HTTP/1.1` and CRLF.
const GET_LINE_OVERHEAD: usize = "GET ".len() + " HTTP/1.1\r\n".len();

// Targets, per decision.
const TARGET_TIME: Duration = Duration::from_millis(2);
const TARGET_BYTES: usize = 1024 * 1024;

const MIN_SAMPLES: usize = 3;
const MAX_SAMPLES: usize = 21;
/// A case stops sampling once it has used this much (and has MIN_SAMPLES)...
const SAMPLE_BUDGET: Duration = Duration::from_secs(3);
/// ...and takes no further sample that would end past this, even short of MIN_SAMPLES.
const SAMPLE_CAP: Duration = Duration::from_secs(8);
/// A child still running after this is killed and reported as a timeout.
const DECIDE_TIMEOUT: Duration = Duration::from_secs(20);
const LOAD_TIMEOUT: Duration = Duration::from_secs(25);
/// A load predicted (from a smaller count) to take longer than this is not run.
const LOAD_PREDICTION_MAX: Duration = Duration::from_secs(20);
/// Address-space cap of a child (`ulimit -v`), so a runaway case fails alone.
const CHILD_MEMORY_CAP: u64 = 6 * 1024 * 1024 * 1024;
/// The stack of the thread that loads the deeply nested pattern.
const NESTED_STACK: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Configurations and requests
// ---------------------------------------------------------------------------------------------

fn rule(method: &str, pattern: impl Into<String>, metric: &str) -> MappingRuleConfig {
    MappingRuleConfig {
        method: method.to_owned(),
        pattern: pattern.into(),
        metric: metric.to_owned(),
        delta: 1,
        querystring_parameters: BTreeMap::new(),
        last: false,
    }
}

fn service_config(rules: Vec<MappingRuleConfig>, line_max: u32) -> FilterConfig {
    let mut config = FilterConfig::new(vec![ServiceConfig {
        id: "2555417777820".into(),
        name: "worst-cases".into(),
        hosts: vec![HOST.into()],
        authorization: Authorization::Threescale,
        backend_version: Some(BackendVersion::UserKey),
        control_service_auth: Some(ControlServiceAuth {
            kind: ControlServiceAuthKind::ServiceToken,
            value: Secret("8f1b2c3d4e5f60718293a4b5c6d7e8f9".into()),
        }),
        backend: BackendEndpoint {
            endpoint: Some("https://su1.3scale.net".into()),
            host: None,
        },
        credentials: CredentialsConfig::default(),
        upstream: UpstreamConfig {
            api_backend: Some("https://backend.example.com:443".into()),
            hostname_rewrite: None,
            secret_token: None,
        },
        errors: ErrorsConfig::default(),
        mapping_rules: rules,
        limiters: Vec::new(),
        rate_limit_headers: false,
        cache: Default::default(),
        batching: None,
    }]);
    config.request_line_max_bytes = line_max;
    config
}

/// `prefix`, then `unit` as many times as fits, then `suffix`: at most `max_len` bytes.
fn fill(prefix: &str, unit: &str, suffix: &str, max_len: usize) -> String {
    let room = max_len.saturating_sub(prefix.len() + suffix.len());
    format!("{prefix}{}{suffix}", unit.repeat(room / unit.len()))
}

/// Placeholder names `a`..`z`, then `aa`, `ab`, ...
fn name(i: usize) -> String {
    let letter = |k: usize| char::from(b'a' + (k % 26) as u8);
    if i < 26 {
        letter(i).to_string()
    } else {
        format!("{}{}", letter(i / 26 - 1), letter(i))
    }
}

/// One decision case: a service's rules and a GET request to it.
struct DecideSpec {
    rules: Vec<MappingRuleConfig>,
    target: String,
}

struct Family {
    /// For the command line and the child's arguments.
    key: &'static str,
    label: &'static str,
    /// The rules and a target of at most this many bytes (the typical one ignores it).
    build: fn(usize) -> DecideSpec,
}

const TYPICAL_RESOURCES: [&str; 19] = [
    "accounts",
    "users",
    "orders",
    "invoices",
    "products",
    "payments",
    "subscriptions",
    "plans",
    "customers",
    "carts",
    "items",
    "shipments",
    "refunds",
    "coupons",
    "reviews",
    "categories",
    "warehouses",
    "suppliers",
    "employees",
];

/// A realistic REST service: 100 rules (5 per resource, 5 nested under accounts).
fn typical(_: usize) -> DecideSpec {
    let mut rules = Vec::new();
    for res in TYPICAL_RESOURCES {
        rules.push(rule("GET", format!("/v1/{res}.json"), res));
        rules.push(rule("POST", format!("/v1/{res}.json"), res));
        rules.push(rule("GET", format!("/v1/{res}/{{id}}.json"), res));
        rules.push(rule("PUT", format!("/v1/{res}/{{id}}.json"), res));
        rules.push(rule("DELETE", format!("/v1/{res}/{{id}}.json$"), res));
    }
    rules.push(rule("GET", "/v1/accounts/{id}/orders.json", "orders"));
    rules.push(rule("POST", "/v1/accounts/{id}/orders.json", "orders"));
    rules.push(rule(
        "GET",
        "/v1/accounts/{account_id}/orders/{id}.json",
        "orders",
    ));
    rules.push(rule("GET", "/v1/accounts/{id}/invoices.json", "invoices"));
    rules.push(rule("GET", "/v1/accounts/{id}/users.json", "users"));
    assert_eq!(rules.len(), 100);
    DecideSpec {
        rules,
        target: format!("/v1/accounts/123/orders.json{CREDENTIALS}"),
    }
}

fn identical(n: usize, max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..n).map(|_| rule("GET", "/{a}x", "hits")).collect(),
        target: fill("/", "x", CREDENTIALS, max_len),
    }
}

fn identical_1000(max_len: usize) -> DecideSpec {
    identical(1_000, max_len)
}

fn identical_100(max_len: usize) -> DecideSpec {
    identical(100, max_len)
}

fn distinct_names(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..1_000)
            .map(|i| rule("GET", format!("/r{{p{i}}}/{{id}}.json"), "hits"))
            .collect(),
        target: fill("/ra/", ".json", CREDENTIALS, max_len),
    }
}

fn distinct_literals(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..1_000)
            .map(|i| rule("GET", format!("/r{i}/{{id}}.json"), "hits"))
            .collect(),
        target: fill("/r7/", ".json", CREDENTIALS, max_len),
    }
}

fn chain32_pattern() -> String {
    let mut p = String::from("/");
    for i in 0..32 {
        p.push('{');
        p.push_str(&name(i));
        p.push('}');
    }
    p
}

fn chain32_end(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", format!("{}$", chain32_pattern()), "hits")],
        target: fill("/", "a", CREDENTIALS, max_len),
    }
}

fn chain32_x(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", format!("{}x", chain32_pattern()), "hits")],
        target: fill("/", "a", CREDENTIALS, max_len),
    }
}

fn regex_groups(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..100)
            .map(|i| rule("GET", format!("/v1/(x|y)+/{{id}}{i}.json"), "hits"))
            .collect(),
        target: fill("/v1/", "xy", CREDENTIALS, max_len),
    }
}

/// A repeated group of a two-byte alternative: only a regex engine evaluates it, and each of
/// the 100 regexes would scan the whole run, so the decision is refused at the bound.
fn regex_engine(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..100)
            .map(|i| rule("GET", format!("/v1/(xy|z)+/{{id}}{i}.json"), "hits"))
            .collect(),
        target: fill("/v1/", "xy", CREDENTIALS, max_len),
    }
}

/// Three regex-engine rules: within the bound at 8 KiB.
fn regex_engine_few(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..3)
            .map(|i| rule("GET", format!("/v1/([0-9]+,)+[0-9]+{i}$"), "hits"))
            .collect(),
        target: fill("/v1/", "1,", CREDENTIALS, max_len),
    }
}

fn top_level_alt(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", "/a|/v", "hits")],
        target: fill("/", "v", CREDENTIALS, max_len),
    }
}

fn star_groups(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", format!("/{}$", "(a|b)*".repeat(100)), "hits")],
        target: fill("/", "a", CREDENTIALS, max_len),
    }
}

fn mix(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![
            rule("GET", "/{a}{b}{c}{d}", "hits"),
            rule("GET", r"/[a-z]+/\d{2}", "hits"),
            rule("GET", "/{a}{b}x", "hits"),
            rule("GET", "/u|/v", "hits"),
        ],
        target: fill("/", "a", CREDENTIALS, max_len),
    }
}

fn query_conditions(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (0..300)
            .map(|i| {
                let mut r = rule("GET", "/search", &format!("m{i}"));
                r.querystring_parameters
                    .insert("method".into(), format!("m{i}"));
                r
            })
            .collect(),
        target: fill("/search?", "&", "&method=m7&user_key=k", max_len),
    }
}

fn long_literal(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", format!("/{{a}}{}", "x".repeat(250)), "hits")],
        target: fill("/", "x", CREDENTIALS, max_len),
    }
}

fn literal_ladder(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: (1..=250)
            .map(|i| rule("GET", format!("/{{a}}{}y", "x".repeat(i)), "hits"))
            .collect(),
        target: fill("/", "x", CREDENTIALS, max_len),
    }
}

/// One long rule of placeholders and literals: two positions live all along the path, never
/// the same two (so a DFA would not pay off).
fn long_rule(max_len: usize) -> DecideSpec {
    DecideSpec {
        rules: vec![rule("GET", "/{a}x".repeat(20_000), "hits")],
        target: fill("/", "bx/", CREDENTIALS, max_len),
    }
}

const TYPICAL: Family = Family {
    key: "typical",
    label: "typical: 100 REST rules (reference)",
    build: typical,
};

const FAMILIES: [Family; 16] = [
    Family {
        key: "identical-1000",
        label: "1,000 identical GET /{a}x",
        build: identical_1000,
    },
    Family {
        key: "identical-100",
        label: "100 identical GET /{a}x",
        build: identical_100,
    },
    Family {
        key: "distinct-names",
        label: "1,000 GET /r{p<i>}/{id}.json",
        build: distinct_names,
    },
    Family {
        key: "distinct-literals",
        label: "1,000 GET /r<i>/{id}.json",
        build: distinct_literals,
    },
    Family {
        key: "chain-end",
        label: "32 placeholders /{a}..{af}$",
        build: chain32_end,
    },
    Family {
        key: "chain-x",
        label: "32 placeholders /{a}..{af}x (no match)",
        build: chain32_x,
    },
    Family {
        key: "regex-groups",
        label: "100 /v1/(x|y)+/{id}<i>.json (class run)",
        build: regex_groups,
    },
    Family {
        key: "regex-engine",
        label: "100 regex-engine /v1/(xy|z)+/{id}<i>.json",
        build: regex_engine,
    },
    Family {
        key: "regex-engine-few",
        label: "3 regex-engine /v1/([0-9]+,)+[0-9]+<i>$",
        build: regex_engine_few,
    },
    Family {
        key: "alt",
        label: "top-level | : /a|/v",
        build: top_level_alt,
    },
    Family {
        key: "star-groups",
        label: "/(a|b)* x100 $",
        build: star_groups,
    },
    Family {
        key: "mix",
        label: "mix {a}{b}{c}{d},[a-z]+/\\d{2},{a}{b}x,u|v",
        build: mix,
    },
    Family {
        key: "query",
        label: "300 /search?method=m<i>, & run",
        build: query_conditions,
    },
    Family {
        key: "long-literal",
        label: "/{a} + x*250",
        build: long_literal,
    },
    Family {
        key: "long-rule",
        label: "one rule /{a}x x20,000, path /bx/bx/...",
        build: long_rule,
    },
    Family {
        key: "literal-ladder",
        label: "250 rules /{a} + x*i + y (no match)",
        build: literal_ladder,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The default limit, the longest target that fits.
    Default,
    /// The limit raised to 64 KiB, a 60,000-byte target.
    Long,
}

impl Variant {
    fn key(self) -> &'static str {
        match self {
            Variant::Default => "8k",
            Variant::Long => "64k",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "8k" => Variant::Default,
            "64k" => Variant::Long,
            other => panic!("unknown variant {other}"),
        }
    }

    fn line_max(self) -> u32 {
        match self {
            Variant::Default => DEFAULT_LINE_MAX,
            Variant::Long => LONG_LINE_MAX,
        }
    }

    fn max_target(self) -> usize {
        match self {
            Variant::Default => DEFAULT_LINE_MAX as usize - GET_LINE_OVERHEAD,
            Variant::Long => LONG_TARGET,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compile-cost documents (3scale JSON, through tollgate::load)
// ---------------------------------------------------------------------------------------------

fn threescale_document(rules: &[(String, String)]) -> Vec<u8> {
    let proxy_rules: Vec<Value> = rules
        .iter()
        .map(|(method, pattern)| {
            json!({
                "http_method": method,
                "pattern": pattern,
                "metric_system_name": "hits",
                "delta": 1,
                "parameters": [],
                "querystring_parameters": {},
                "last": false
            })
        })
        .collect();
    let doc = json!({
        "services": [{
            "id": 2_555_417_777_820_u64,
            "system_name": "worst-cases",
            "backend_version": "1",
            "backend_authentication_type": "service_token",
            "backend_authentication_value": "8f1b2c3d4e5f60718293a4b5c6d7e8f9",
            "proxy": {
                "api_backend": "https://backend.example.com:443",
                "hosts": [HOST],
                "credentials_location": "query",
                "auth_user_key": "user_key",
                "backend": {"endpoint": "https://su1.3scale.net", "host": "su1.3scale.net"},
                "proxy_rules": proxy_rules
            }
        }]
    });
    serde_json::to_vec(&doc).unwrap()
}

fn any_rules(n: usize) -> impl Iterator<Item = (String, String)> {
    (0..n).map(|i| ("ANY".to_owned(), format!("/v1/any{i}/{{id}}.json")))
}

/// 64 methods (`M0`..`M63`) with 15 rules each, and 1,000 `ANY` rules.
fn doc_many_methods() -> Vec<u8> {
    let mut rules: Vec<(String, String)> = Vec::new();
    for m in 0..64 {
        for j in 0..15 {
            rules.push((format!("M{m}"), format!("/v1/m{m}/r{j}/{{id}}.json")));
        }
    }
    rules.extend(any_rules(1_000));
    threescale_document(&rules)
}

/// `n` methods with one rule each, and 1,000 `ANY` rules.
fn doc_distinct_methods(n: usize) -> Vec<u8> {
    let mut rules: Vec<(String, String)> = (0..n)
        .map(|m| (format!("M{m}"), format!("/v1/m{m}/{{id}}.json")))
        .collect();
    rules.extend(any_rules(1_000));
    threescale_document(&rules)
}

/// One rule nested `depth` groups deep.
fn doc_nested(depth: usize) -> Vec<u8> {
    let pattern = format!("/{}a{}", "(".repeat(depth), ")".repeat(depth));
    threescale_document(&[("GET".to_owned(), pattern)])
}

// ---------------------------------------------------------------------------------------------
// Measuring (in the child)
// ---------------------------------------------------------------------------------------------

/// What one run of a measured function cost.
struct Cost {
    time: Duration,
    /// Peak heap bytes over the baseline (what was allocated right before).
    peak: usize,
    /// Heap bytes still allocated after it, over the baseline (its result, grown buffers).
    kept: usize,
}

/// Runs `f` once and measures it.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let baseline = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let start = Instant::now();
    let out = black_box(f());
    let time = start.elapsed();
    let peak = ALLOC.peak_usage().saturating_sub(baseline);
    let kept = ALLOC.current_usage().saturating_sub(baseline);
    (out, Cost { time, peak, kept })
}

/// Calls `sample` (which returns its time) per the budget, counting the `n` samples already
/// taken since `start` (the last one lasting `last`): at least MIN_SAMPLES, at most
/// MAX_SAMPLES, stopping once SAMPLE_BUDGET is used, never starting one that would end past
/// SAMPLE_CAP.
fn sample_loop(
    start: Instant,
    mut n: usize,
    mut last: Duration,
    mut sample: impl FnMut() -> Duration,
) {
    loop {
        let used = start.elapsed();
        if n >= MAX_SAMPLES
            || (n >= MIN_SAMPLES && used >= SAMPLE_BUDGET)
            || used + last > SAMPLE_CAP
        {
            break;
        }
        last = sample();
        n += 1;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What APIcast would match: every rule in order, its regex on the normalised path, then its
/// query conditions. `None` when a regex is beyond the `regex` crate's limits.
fn apicast_matches(rules: &[MappingRuleConfig], target: &str) -> Option<usize> {
    let mut buffers = PathBuffers::default();
    let path = path::normalize(target.as_bytes(), &mut buffers).ok()?;
    let path = std::str::from_utf8(path).ok()?;
    let args = RequestArgs {
        query: path::raw_query(target.as_bytes()),
        body: None,
    };
    let mut matched = 0;
    for r in rules {
        if r.method != "ANY" && r.method != "GET" {
            continue;
        }
        let source = tollgate::rules::pattern::apicast_regex(&r.pattern);
        let re = regex::RegexBuilder::new(&source)
            .size_limit(1 << 26)
            .build()
            .ok()?;
        if re.is_match(path)
            && r.querystring_parameters
                .iter()
                .all(|(k, v)| QueryCondition::new(k, v).holds(&args))
        {
            matched += 1;
        }
    }
    Some(matched)
}

fn child_decide(family: &Family, variant: Variant) -> Value {
    let spec = (family.build)(variant.max_target());
    let config = service_config(spec.rules, variant.line_max());
    let mut diags = Diagnostics::new();
    let start = Instant::now();
    let compiled = tollgate::compile(&config, &FilterConfigPaths, &mut diags);
    let compile_time = start.elapsed();
    let Some(compiled) = compiled else {
        let errors: Vec<String> = diags.errors().map(ToString::to_string).collect();
        panic!("the configuration does not compile: {errors:?}");
    };
    let warnings: Vec<String> = diags.warnings().map(ToString::to_string).collect();
    let rules = &config.services[0].mapping_rules;
    let headers: [(&str, &str); 0] = [];
    let view = RequestView {
        method: b"GET",
        authority: HOST.as_bytes(),
        target: spec.target.as_bytes(),
        headers: &headers,
        body: None,
    };

    let mut samples: Vec<u64> = Vec::new();
    let mut scratch = Scratch::new();
    let start = Instant::now();
    // Cold: a fresh scratch grows its buffers for this request.
    let ((verdict, matched, work), cold) = measure(|| {
        let d = compiled.decide(
            black_box(&view),
            tollgate::time::Timestamp::default(),
            &mut scratch,
        );
        (
            d.verdict,
            scratch.matched_rules().len(),
            scratch.match_work(),
        )
    });
    samples.push(nanos(cold.time));
    // Warm: the same scratch, as the filter reuses it.
    let mut peak_warm = 0;
    sample_loop(start, 1, cold.time, || {
        let (_, warm) = measure(|| {
            let d = compiled.decide(
                black_box(&view),
                tollgate::time::Timestamp::default(),
                &mut scratch,
            );
            black_box(d.verdict)
        });
        samples.push(nanos(warm.time));
        peak_warm = peak_warm.max(warm.peak);
        warm.time
    });
    let verdict_name = match verdict {
        Verdict::Authorize => "authorize".to_owned(),
        Verdict::Forward => "forward".to_owned(),
        Verdict::Deny(reason) => format!("deny {}", reason.as_str()),
    };
    // Refused at the bound on matching work is an outcome of the matcher too.
    let reached = matches!(
        verdict,
        Verdict::Authorize
            | Verdict::Deny(tollgate::DenyReason::NoMatch | tollgate::DenyReason::MatchLimit)
    );
    json!({
        "target_len": spec.target.len(),
        "line_max": variant.line_max(),
        "rules": rules.len(),
        "compile_ns": nanos(compile_time),
        "warnings": warnings.len(),
        "first_warning": warnings.first(),
        "verdict": verdict_name,
        "reached": reached,
        "matched": matched,
        "steps": work.steps,
        "dfa_states": work.dfa_states,
        "regex_units": scratch.rules().regex_units(),
        "apicast_matched": apicast_matches(rules, &spec.target),
        "samples_ns": samples,
        "peak_cold": cold.peak,
        "peak_warm": peak_warm,
        "kept": cold.kept,
    })
}

/// Loads `doc` per the sampling budget; the peak is the largest over the samples.
fn load_samples(doc: &[u8]) -> Value {
    let mut samples: Vec<u64> = Vec::new();
    let mut peak_max = 0;
    let mut kept = 0;
    let mut summary = Value::Null;
    sample_loop(Instant::now(), 0, Duration::ZERO, || {
        let (loaded, cost) = measure(|| tollgate::load(black_box(doc)));
        samples.push(nanos(cost.time));
        peak_max = peak_max.max(cost.peak);
        kept = cost.kept;
        if summary.is_null() {
            let d = &loaded.diagnostics;
            summary = json!({
                "compiled": loaded.compiled.is_some(),
                "rules": loaded.config.as_ref().map(|c| c.services.iter().map(|s| s.mapping_rules.len()).sum::<usize>()),
                "errors": d.errors().count(),
                "warnings": d.warnings().count(),
                "first_diagnostic": d.iter().next().map(ToString::to_string),
            });
        }
        drop(loaded);
        cost.time
    });
    let mut out = summary;
    out["doc_bytes"] = json!(doc.len());
    out["samples_ns"] = json!(samples);
    out["peak"] = json!(peak_max);
    out["kept"] = json!(kept);
    out
}

fn child_load(key: &str) -> Value {
    if key == "nested-main" {
        return load_samples(&doc_nested(5_000));
    }
    if key == "nested" {
        let doc = doc_nested(5_000);
        let worker = std::thread::Builder::new()
            .name("nested-load".into())
            .stack_size(NESTED_STACK)
            .spawn(move || load_samples(&doc))
            .unwrap();
        return match worker.join() {
            Ok(v) => v,
            Err(_) => json!({"panic": "the load panicked"}),
        };
    }
    if key == "many-methods" {
        return load_samples(&doc_many_methods());
    }
    if let Some(n) = key.strip_prefix("methods-") {
        return load_samples(&doc_distinct_methods(n.parse().unwrap()));
    }
    panic!("unknown load case {key}");
}

fn child_main(args: &[String]) {
    let out = match args {
        [kind, key, variant] if kind == "decide" => {
            let family = std::iter::once(&TYPICAL)
                .chain(FAMILIES.iter())
                .find(|f| f.key == key)
                .unwrap_or_else(|| panic!("unknown family {key}"));
            child_decide(family, Variant::parse(variant))
        }
        [kind, key] if kind == "load" => child_load(key),
        other => panic!("bad child arguments {other:?}"),
    };
    println!("RESULT {out}");
}

// ---------------------------------------------------------------------------------------------
// Running children (in the parent)
// ---------------------------------------------------------------------------------------------

/// Why a case has no result.
#[derive(Debug, thiserror::Error)]
enum NoResult {
    #[error("timeout: killed after {:.0} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("bad child output: {0}")]
    BadOutput(serde_json::Error),
    #[error("{how}: stack overflow: {last_line}")]
    StackOverflow { how: String, last_line: String },
    #[error("{how}: out of memory under the {cap} cap: {last_line}")]
    OutOfMemory {
        how: String,
        cap: String,
        last_line: String,
    },
    #[error("{how}: {last_line}")]
    Failed { how: String, last_line: String },
    #[error("skipped: {0}")]
    Skipped(String),
}

/// The child's result, or why there is none (crash, timeout, out of memory).
fn run_child(args: &[&str], timeout: Duration) -> Result<Value, NoResult> {
    let exe = std::env::current_exe().unwrap();
    let cap_kib = CHILD_MEMORY_CAP / 1024;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {cap_kib} 2>/dev/null; exec \"$0\" \"$@\""
        ))
        .arg(exe)
        .arg("--child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if timed_out {
        return Err(NoResult::Timeout(timeout));
    }
    if status.success() {
        if let Some(line) = out.lines().find_map(|l| l.strip_prefix("RESULT ")) {
            return serde_json::from_str(line).map_err(NoResult::BadOutput);
        }
    }
    let last_line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned();
    let how = match status.signal() {
        Some(6) => "crashed (SIGABRT)".to_owned(),
        Some(11) => "crashed (SIGSEGV)".to_owned(),
        Some(9) => "killed (SIGKILL)".to_owned(),
        Some(sig) => format!("crashed (signal {sig})"),
        None => format!("failed ({status})"),
    };
    if err.contains("has overflowed its stack") {
        Err(NoResult::StackOverflow { how, last_line })
    } else if err.contains("memory allocation of") {
        Err(NoResult::OutOfMemory {
            how,
            cap: fmt_bytes(CHILD_MEMORY_CAP as usize),
            last_line,
        })
    } else {
        Err(NoResult::Failed { how, last_line })
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// A diagnostic with the pattern it quotes (`pattern '...'`) cut short when long, and cut to
/// `max` characters as a whole (the middle elided), so it fits a line.
fn shorten(text: &str, max: usize) -> String {
    let elide = |t: &str, keep: usize| -> String {
        let chars: Vec<char> = t.chars().collect();
        if chars.len() <= keep {
            return t.to_owned();
        }
        let head: String = chars[..keep / 2].iter().collect();
        let tail: String = chars[chars.len() - keep / 2..].iter().collect();
        format!("{head}...({} chars)...{tail}", chars.len())
    };
    let mut text = text.to_owned();
    if let Some(open) = text.find("pattern '").map(|i| i + "pattern '".len()) {
        if let Some(len) = text[open..].find("' ") {
            let quoted = elide(&text[open..open + len], 24);
            text.replace_range(open..open + len, &quoted);
        }
    }
    elide(&text, max)
}

fn fmt_time_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_bytes(b: usize) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// With thousands separators.
fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap())
        .collect();
    groups.join(",")
}

struct Timing {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn timing(v: &Value) -> Timing {
    let mut s: Vec<f64> = v["samples_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    s.sort_by(f64::total_cmp);
    Timing {
        median: s.get(s.len() / 2).copied().unwrap_or(f64::NAN),
        min: s.first().copied().unwrap_or(f64::NAN),
        max: s.last().copied().unwrap_or(f64::NAN),
        n: s.len(),
    }
}

fn as_usize(v: &Value) -> usize {
    v.as_u64().unwrap_or(0) as usize
}

/// One row of the decision table.
struct Row {
    label: &'static str,
    variant: Variant,
    counted: bool,
    result: Result<Value, NoResult>,
}

impl Row {
    /// Within both targets (and really decided by the matcher).
    fn within(&self) -> bool {
        let Ok(v) = &self.result else {
            return false;
        };
        let t = timing(v);
        let peak = as_usize(&v["peak_cold"]).max(as_usize(&v["peak_warm"]));
        v["reached"].as_bool() == Some(true)
            && t.median <= TARGET_TIME.as_nanos() as f64
            && peak <= TARGET_BYTES
    }
}

const WIDTH: usize = 42;

fn print_sanity(row: &Row) {
    let head = format!("{:<WIDTH$} {:>3}", row.label, row.variant.key());
    match &row.result {
        Err(why) => println!("  {head}  {why}"),
        Ok(v) => {
            let matched = as_usize(&v["matched"]);
            let refused = v["verdict"].as_str() == Some("deny match_limit");
            let apicast = match v["apicast_matched"].as_u64() {
                Some(a) if refused => {
                    format!("refused at the bound on matching work; APIcast matches {a}")
                }
                Some(a) if a as usize == matched => format!("APIcast matches {a} too"),
                Some(a) => format!("MISMATCH: APIcast matches {a}"),
                None => "APIcast regex n/a".to_owned(),
            };
            let reached = if v["reached"].as_bool() == Some(true) {
                ""
            } else {
                "  <- DID NOT REACH THE MATCHER"
            };
            let warnings = match as_usize(&v["warnings"]) {
                0 => String::new(),
                n => format!(
                    "\n      {n} warning(s), first: {}",
                    shorten(v["first_warning"].as_str().unwrap_or(""), 300)
                ),
            };
            println!(
                "  {head}  {:>6} B: {}, {} rule(s) matched ({apicast}); compiled {} rules in {}; \
                 work: {} steps, {} DFA states, {} regex units{warnings}{reached}",
                fmt_count(v["target_len"].as_u64().unwrap_or(0)),
                v["verdict"].as_str().unwrap_or("?"),
                matched,
                fmt_count(v["rules"].as_u64().unwrap_or(0)),
                fmt_time_ns(v["compile_ns"].as_f64().unwrap_or(f64::NAN)),
                fmt_count(v["steps"].as_u64().unwrap_or(0)),
                fmt_count(v["dfa_states"].as_u64().unwrap_or(0)),
                fmt_count(v["regex_units"].as_u64().unwrap_or(0)),
            );
        }
    }
}

fn print_row(row: &Row) {
    let status = |ok: bool| if ok { "PASS" } else { "FAIL" };
    match &row.result {
        Err(why) => println!(
            "{:<WIDTH$} {:>7} {:>7} | {why}",
            row.label,
            fmt_count(u64::from(row.variant.line_max())),
            "",
        ),
        Ok(v) => {
            let t = timing(v);
            let cold = as_usize(&v["peak_cold"]);
            let warm = as_usize(&v["peak_warm"]);
            let verdict = if v["reached"].as_bool() == Some(true) {
                status(row.within())
            } else {
                "INVALID"
            };
            println!(
                "{:<WIDTH$} {:>7} {:>7} | {:>9} {:>21} {:>3} | {:>10} {:>10} {:>10} | {}",
                row.label,
                fmt_count(u64::from(row.variant.line_max())),
                fmt_count(v["target_len"].as_u64().unwrap_or(0)),
                fmt_time_ns(t.median),
                format!("{}..{}", fmt_time_ns(t.min), fmt_time_ns(t.max)),
                t.n,
                fmt_bytes(cold),
                fmt_bytes(warm),
                fmt_bytes(as_usize(&v["kept"])),
                if row.counted { verdict } else { "(ref)" },
            );
        }
    }
}

struct LoadRow {
    label: String,
    result: Result<Value, NoResult>,
}

fn print_load_row(row: &LoadRow) {
    match &row.result {
        Err(why) => println!("{:<WIDTH$} | {why}", row.label),
        Ok(v) if v.get("panic").is_some() => {
            println!("{:<WIDTH$} | {}", row.label, v["panic"]);
        }
        Ok(v) => {
            let t = timing(v);
            let outcome = if v["compiled"].as_bool() == Some(true) {
                format!(
                    "compiled {} rules",
                    fmt_count(v["rules"].as_u64().unwrap_or(0))
                )
            } else {
                "rejected".to_owned()
            };
            let diag = match v["first_diagnostic"].as_str() {
                Some(d) => format!(
                    "\n{:WIDTH$}   {} error(s), {} warning(s), first: {}",
                    "",
                    as_usize(&v["errors"]),
                    as_usize(&v["warnings"]),
                    shorten(d, 300)
                ),
                None => String::new(),
            };
            println!(
                "{:<WIDTH$} {:>9} | {:>9} {:>21} {:>3} | {:>10} {:>10} | {outcome}{diag}",
                row.label,
                fmt_bytes(as_usize(&v["doc_bytes"])),
                fmt_time_ns(t.median),
                format!("{}..{}", fmt_time_ns(t.min), fmt_time_ns(t.max)),
                t.n,
                fmt_bytes(as_usize(&v["peak"])),
                fmt_bytes(as_usize(&v["kept"])),
            );
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))?
        .split_once(':')?
        .1
        .trim()
        .to_owned();
    let cores = info.lines().filter(|l| l.starts_with("processor")).count();
    Some(format!("{model} ({cores} logical CPUs)"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        child_main(&args[pos + 1..]);
        return;
    }
    let started = Instant::now();
    // `cargo bench` passes `--bench`; other words select cases by key.
    let words: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let selected = |key: &str| words.is_empty() || words.iter().any(|w| key.contains(w));

    println!("tollgate worst cases: the cost of ONE decision for adversarial inputs");
    println!(
        "cpu: {}",
        cpu_model().unwrap_or_else(|| "unknown (/proc/cpuinfo not readable)".into())
    );
    println!(
        "each case in its own process (address space capped at {}, killed after {} s); \
         time = median of {MIN_SAMPLES}..{MAX_SAMPLES} decisions (~{} s per case), \
         the first with a fresh Scratch, then reusing it",
        fmt_bytes(CHILD_MEMORY_CAP as usize),
        DECIDE_TIMEOUT.as_secs(),
        SAMPLE_BUDGET.as_secs()
    );
    println!(
        "memory = peak heap allocated during a decision over what was allocated before it \
         (cold: fresh Scratch, warm: reused Scratch)"
    );
    println!();
    println!("decisions checked once (outcome, rules matched, APIcast's rule-by-rule regex loop on the same request):");

    let mut rows: Vec<Row> = Vec::new();
    let families = std::iter::once((&TYPICAL, false)).chain(FAMILIES.iter().map(|f| (f, true)));
    for (family, counted) in families {
        if !selected(family.key) {
            continue;
        }
        let variants: &[Variant] = if counted {
            &[Variant::Default, Variant::Long]
        } else {
            &[Variant::Default]
        };
        for &variant in variants {
            let result = run_child(&["decide", family.key, variant.key()], DECIDE_TIMEOUT);
            let row = Row {
                label: family.label,
                variant,
                counted,
                result,
            };
            print_sanity(&row);
            rows.push(row);
        }
    }

    let mut load_rows: Vec<LoadRow> = Vec::new();
    if selected("load") {
        load_rows.push(LoadRow {
            label: "64 methods x 15 rules + 1,000 ANY".into(),
            result: run_child(&["load", "many-methods"], LOAD_TIMEOUT),
        });
        // Measured with fewer methods first; the full count only when predicted to fit.
        let small = 100;
        let full = 1_000;
        let first = run_child(&["load", &format!("methods-{small}")], LOAD_TIMEOUT);
        let prediction = first.as_ref().ok().map(|v| {
            let scale = full as f64 / small as f64;
            (
                timing(v).median * scale,
                as_usize(&v["peak"]) as f64 * scale,
            )
        });
        load_rows.push(LoadRow {
            label: format!("{small} methods + 1,000 ANY"),
            result: first,
        });
        let full_label = format!("{} methods + 1,000 ANY", fmt_count(full));
        let full_result = match prediction {
            Some((ns, bytes))
                if ns <= LOAD_PREDICTION_MAX.as_nanos() as f64
                    && bytes < CHILD_MEMORY_CAP as f64 =>
            {
                run_child(&["load", &format!("methods-{full}")], LOAD_TIMEOUT)
            }
            Some((ns, bytes)) => Err(NoResult::Skipped(format!(
                "{small} methods predict {} and {} (linear)",
                fmt_time_ns(ns),
                fmt_bytes(bytes as usize)
            ))),
            None => Err(NoResult::Skipped(format!("the {small}-method case failed"))),
        };
        load_rows.push(LoadRow {
            label: full_label,
            result: full_result,
        });
        // Last: the case that may overflow the stack (in its own process all the same).
        load_rows.push(LoadRow {
            label: "5,000 nested groups (64 MiB stack)".into(),
            result: run_child(&["load", "nested"], LOAD_TIMEOUT),
        });
        load_rows.push(LoadRow {
            label: "5,000 nested groups (main thread stack)".into(),
            result: run_child(&["load", "nested-main"], LOAD_TIMEOUT),
        });
    }

    println!();
    println!(
        "{:<WIDTH$} {:>7} {:>7} | {:>9} {:>21} {:>3} | {:>10} {:>10} {:>10} | 2 ms,",
        "family",
        "line",
        "target",
        "median",
        "min..max",
        "n",
        "peak extra",
        "peak extra",
        "kept in"
    );
    println!(
        "{:<WIDTH$} {:>7} {:>7} | {:>9} {:>21} {:>3} | {:>10} {:>10} {:>10} | 1 MiB",
        "", "max B", "B", "", "", "", "cold", "warm", "Scratch"
    );
    println!("{}", "-".repeat(WIDTH + 103));
    for row in &rows {
        print_row(row);
    }
    if !load_rows.is_empty() {
        println!();
        println!(
            "compile cost: tollgate::load on a 3scale JSON document (no target; not counted below)"
        );
        println!(
            "{:<WIDTH$} {:>9} | {:>9} {:>21} {:>3} | {:>10} {:>10} | outcome",
            "configuration", "document", "median", "min..max", "n", "peak", "result"
        );
        println!("{}", "-".repeat(WIDTH + 103));
        for row in &load_rows {
            print_load_row(row);
        }
    }
    println!();
    let counted: Vec<&Row> = rows.iter().filter(|r| r.counted).collect();
    let within = counted.iter().filter(|r| r.within()).count();
    println!(
        "peak extra = heap allocated during the decision over the baseline (cold: fresh Scratch, \
         warm: reused); kept in Scratch = what the cold\ndecision left allocated (the filter \
         keeps one Scratch per worker); result = heap held by the Loaded value; \
         INVALID = the request\ndid not reach the matcher (the row measures nothing useful)"
    );
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "worst cases: {within}/{} within 2 ms and 1 MiB",
        counted.len()
    );
}
