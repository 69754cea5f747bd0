//! Mapping-rule matching: tollgate's `decide` against APIcast's rule-by-rule regex loop.
//!
//! Run with `cargo bench --bench matching`. For N = 10, 100, 1,000 and 10,000 mapping rules it
//! builds one realistic 3scale service (versioned prefixes, nested resources, `.json`/`.xml`
//! suffixes, trailing `$`, query conditions, mixed methods, ~1% regex patterns), a request set
//! of mostly hits and some misses, cross-checks that tollgate and the naive baseline match the
//! same rules for every request, then reports median ns per decision for both.
//!
//! Method: every bench (tollgate and baseline, each size) is warmed up (>= 3 passes, >= 200 ms)
//! and calibrated, then samples are taken in 31 interleaved rounds, so the speed drifts of a
//! shared VM hit all configurations alike. A sample is one untimed pass, then whole passes over
//! the request set repeated until it lasts >= 20 ms; the figure is the median over samples of
//! (sample time / decisions in the sample). A bench whose 31 samples would exceed the budget
//! (the 10,000-rule baseline) takes fewer (never under 11), spread over the rounds, each still
//! one or more full passes, so every sample sees the same request mix.
//!
//! Optional arguments, for profiling: rule counts (`-- 1000 10000`), `--tollgate-only`, and
//! `--profile` (tollgate's decisions only, in a loop, for `perf record`).

// A benchmark aborting loudly on a broken invariant (bad config, mismatch) is intended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use tollgate::args::RequestArgs;
use tollgate::config::FilterConfigPaths;
use tollgate::config::{
    Authorization, BackendEndpoint, BackendVersion, ControlServiceAuth, ControlServiceAuthKind,
    CredentialsConfig, ErrorsConfig, FilterConfig, MappingRuleConfig, Secret, ServiceConfig,
    UpstreamConfig,
};
use tollgate::path::{self, PathBuffers};
use tollgate::rules::query::QueryCondition;
use tollgate::{Compiled, Diagnostics, RequestView, RuleIndex, Scratch, Verdict};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const REQUESTS: usize = 1_000;
const RULE_SEED: u64 = 0x35ca_1e00_7011_6a7e;
const HOST: &str = "api.example.com";
const SAMPLES: usize = 31;
const MIN_SAMPLES: usize = 11;
const MIN_SAMPLE_TIME: Duration = Duration::from_millis(20);
/// Soft cap on the sampling phase of one measurement.
const MEASURE_BUDGET: Duration = Duration::from_secs(12);

// Targets (informational).
const TARGET_RATIO: f64 = 1.5;
const TARGET_NS_AT_1000: f64 = 500.0;
const TARGET_SPEEDUP_AT_10000: f64 = 50.0;

// ---------------------------------------------------------------------------------------------
// Deterministic generation
// ---------------------------------------------------------------------------------------------

/// Knuth's MMIX LCG; the high bits are good enough for picking words.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self) -> usize {
        self.below(100)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PREFIXES: [&str; 9] = [
    "/v1",
    "/v2",
    "/v3",
    "/api",
    "/api/v1",
    "/api/v2",
    "/rest/v1",
    "/public/v1",
    "/admin/api",
];

const RESOURCES: [&str; 64] = [
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
    "departments",
    "projects",
    "tasks",
    "comments",
    "attachments",
    "messages",
    "notifications",
    "webhooks",
    "events",
    "sessions",
    "tokens",
    "devices",
    "locations",
    "stores",
    "brands",
    "tags",
    "reports",
    "metrics",
    "alerts",
    "policies",
    "roles",
    "permissions",
    "groups",
    "teams",
    "contracts",
    "quotes",
    "leads",
    "campaigns",
    "segments",
    "templates",
    "documents",
    "folders",
    "files",
    "images",
    "videos",
    "playlists",
    "tracks",
    "artists",
    "albums",
    "bookings",
    "reservations",
    "flights",
    "hotels",
    "tickets",
    "vehicles",
];

/// `(method, weight)`; weights sum to 100.
const METHODS: [(&str, usize); 6] = [
    ("GET", 45),
    ("POST", 20),
    ("PUT", 10),
    ("DELETE", 10),
    ("PATCH", 10),
    ("ANY", 5),
];

fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_owned()
    } else {
        word.to_owned()
    }
}

fn placeholder_name(rng: &mut Lcg, resource: &str) -> String {
    let one = singular(resource);
    match rng.percent() {
        0..=29 => "id".to_owned(),
        30..=79 => format!("{one}_id"),
        _ => {
            let mut camel = one.replace('_', "");
            camel.push_str("Id");
            camel
        }
    }
}

/// A concrete value for a placeholder: numeric ids mostly, slugs and hex ids sometimes.
fn placeholder_value(rng: &mut Lcg) -> String {
    match rng.percent() {
        0..=59 => format!("{}", 1 + rng.below(99_999)),
        60..=79 => format!("{:08x}", rng.next() as u32),
        80..=94 => format!("acme-{}", rng.below(1_000)),
        // Percent-encoded: both sides see the path after NGINX's normalisation.
        _ => format!("john%40example{}.com", rng.below(100)),
    }
}

/// One generated mapping rule and a request path that instantiates it.
struct RuleSpec {
    config: MappingRuleConfig,
    /// A concrete path this rule matches (before normalisation).
    example: String,
    /// Query arguments the rule's conditions need, `&`-joined (may be empty).
    example_query: String,
}

fn pick_method(rng: &mut Lcg) -> &'static str {
    let mut r = rng.percent();
    for (m, w) in METHODS {
        if r < w {
            return m;
        }
        r -= w;
    }
    "GET"
}

fn plain_rule(rng: &mut Lcg) -> RuleSpec {
    let prefix = *rng.pick(&PREFIXES);
    let depth = match rng.percent() {
        0..=29 => 1,
        30..=74 => 2,
        _ => 3,
    };
    let mut chain: Vec<&str> = Vec::with_capacity(depth);
    while chain.len() < depth {
        let w = *rng.pick(&RESOURCES);
        if !chain.contains(&w) {
            chain.push(w);
        }
    }
    let mut pattern = prefix.to_owned();
    let mut example = prefix.to_owned();
    for (k, res) in chain.iter().enumerate() {
        pattern.push('/');
        pattern.push_str(res);
        example.push('/');
        example.push_str(res);
        let last = k + 1 == depth;
        let with_id = if last {
            rng.percent() < 50
        } else {
            rng.percent() < 90
        };
        if with_id {
            pattern.push_str("/{");
            pattern.push_str(&placeholder_name(rng, res));
            pattern.push('}');
            example.push('/');
            example.push_str(&placeholder_value(rng));
        }
    }
    let suffix = match rng.percent() {
        0..=49 => "",
        50..=84 => ".json",
        _ => ".xml",
    };
    pattern.push_str(suffix);
    example.push_str(suffix);
    if rng.percent() < 30 {
        pattern.push('$');
    }
    let mut query = BTreeMap::new();
    let mut example_query = String::new();
    match rng.percent() {
        0..=7 => {
            query.insert("format".to_owned(), "{format}".to_owned());
            example_query.push_str("format=json");
        }
        8..=11 => {
            query.insert("type".to_owned(), "premium".to_owned());
            example_query.push_str("type=premium");
        }
        12..=13 => {
            query.insert("status".to_owned(), "active".to_owned());
            query.insert("page".to_owned(), "{page}".to_owned());
            example_query.push_str("status=active&page=2");
        }
        _ => {}
    }
    let metric = if rng.percent() < 10 {
        "hits".to_owned()
    } else {
        chain.last().copied().unwrap_or("hits").to_owned()
    };
    let delta = match rng.percent() {
        0..=84 => 1,
        85..=94 => 2,
        95..=97 => 5,
        _ => 10,
    };
    RuleSpec {
        config: MappingRuleConfig {
            method: pick_method(rng).to_owned(),
            pattern,
            metric,
            delta,
            querystring_parameters: query,
            last: rng.percent() < 2,
        },
        example,
        example_query,
    }
}

/// A pattern with regex syntax, as some 3scale users write them (APIcast keeps the regex).
/// A rule using regex syntax. The trie expands classes, groups of alternatives and repeated
/// atoms; with `engine`, the patterns use constructs it does not (a repeated group), so they
/// take the regex-engine path.
fn regex_rule(rng: &mut Lcg, engine: bool) -> RuleSpec {
    let prefix = *rng.pick(&PREFIXES);
    let res = *rng.pick(&RESOURCES);
    let id = placeholder_value(rng);
    let (pattern, example) = match rng.below(3) {
        0 if engine => (
            format!("{prefix}/{res}/([0-9]+,)+[0-9]+$"),
            format!(
                "{prefix}/{res}/{},{}",
                1 + rng.below(999),
                1 + rng.below(999)
            ),
        ),
        1 if engine => (
            format!("{prefix}/{res}/{{id}}/(daily|weekly)(-summary)*.json"),
            format!("{prefix}/{res}/{id}/weekly-summary.json"),
        ),
        _ if engine => {
            let what = *rng.pick(&["export", "import"]);
            (
                format!("{prefix}/{res}/(export|import)(-v[0-9])*.csv"),
                format!("{prefix}/{res}/{what}-v2.csv"),
            )
        }
        0 => {
            let period = *rng.pick(&["daily", "weekly", "monthly"]);
            (
                format!("{prefix}/{res}/{{id}}/(daily|weekly|monthly).json"),
                format!("{prefix}/{res}/{id}/{period}.json"),
            )
        }
        1 => (
            format!("{prefix}/{res}/[0-9]+$"),
            format!("{prefix}/{res}/{}", 1 + rng.below(99_999)),
        ),
        _ => {
            let what = *rng.pick(&["export", "import"]);
            (
                format!("{prefix}/{res}/(export|import).csv"),
                format!("{prefix}/{res}/{what}.csv"),
            )
        }
    };
    RuleSpec {
        config: MappingRuleConfig {
            method: if rng.percent() < 80 { "GET" } else { "ANY" }.to_owned(),
            pattern,
            metric: res.to_owned(),
            delta: 1,
            querystring_parameters: BTreeMap::new(),
            last: false,
        },
        example,
        example_query: String::new(),
    }
}

/// `n` unique rules, ~1% of them regex patterns (every 100th, starting at index 50); with
/// `engine`, patterns only a regex engine can evaluate.
fn generate_rules(n: usize, engine: bool) -> Vec<RuleSpec> {
    let mut rng = Lcg(RULE_SEED);
    let mut seen: HashSet<(String, String)> = HashSet::with_capacity(n);
    let mut rules = Vec::with_capacity(n);
    while rules.len() < n {
        let spec = if rules.len() % 100 == 50 {
            regex_rule(&mut rng, engine)
        } else {
            plain_rule(&mut rng)
        };
        let key = (spec.config.method.clone(), spec.config.pattern.clone());
        if seen.insert(key) {
            rules.push(spec);
        }
    }
    rules
}

fn service_config(rules: &[RuleSpec]) -> FilterConfig {
    FilterConfig::new(vec![ServiceConfig {
        id: "2555417777820".into(),
        name: "bench-api".into(),
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
        mapping_rules: rules.iter().map(|r| r.config.clone()).collect(),
        limiters: Vec::new(),
        rate_limit_headers: false,
        cache: Default::default(),
        batching: None,
    }])
}

/// An owned request; [`RequestView`]s borrow from it.
struct OwnedRequest {
    method: &'static str,
    target: String,
}

const MISS_METHODS: [&str; 2] = ["GET", "POST"];
const EXTRA_ARGS: [&str; 4] = ["page=3", "lang=en", "per_page=50", "sort=desc"];

fn generate_requests(rules: &[RuleSpec], seed: u64) -> Vec<OwnedRequest> {
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(REQUESTS);
    while out.len() < REQUESTS {
        let roll = rng.percent();
        if roll < 90 {
            let spec = rng.pick(rules);
            let method = match spec.config.method.as_str() {
                "ANY" => *rng.pick(&["GET", "POST", "PUT"]),
                "GET" => "GET",
                "POST" => "POST",
                "PUT" => "PUT",
                "DELETE" => "DELETE",
                "PATCH" => "PATCH",
                other => panic!("unexpected method {other}"),
            };
            let mut target = spec.example.clone();
            // Some clients add a sub-resource under a prefix rule, or double a slash.
            if !spec.config.pattern.ends_with('$') && rng.percent() < 10 {
                target.push_str("/history");
            }
            if rng.percent() < 3 {
                target = target.replacen('/', "//", 2);
            }
            let mut args: Vec<String> = vec!["user_key=k123".to_owned()];
            if !spec.example_query.is_empty() {
                args.push(spec.example_query.clone());
            }
            if rng.percent() < 30 {
                args.push((*rng.pick(&EXTRA_ARGS)).to_owned());
            }
            if args.len() > 1 && rng.percent() < 50 {
                args.rotate_left(1);
            }
            target.push('?');
            target.push_str(&args.join("&"));
            out.push(OwnedRequest { method, target });
        } else {
            let res = *rng.pick(&RESOURCES);
            let id = 1 + rng.below(99_999);
            let target = match roll {
                90..=93 => format!("/v4/{res}/{id}?user_key=k123"),
                94..=96 => format!("/v1/unknown-{res}/{id}.json?user_key=k123"),
                _ => "/internal/healthz?user_key=k123".to_owned(),
            };
            out.push(OwnedRequest {
                method: MISS_METHODS[rng.below(MISS_METHODS.len())],
                target,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The naive baseline: APIcast's loop over every rule
// ---------------------------------------------------------------------------------------------

struct BaselineRule {
    /// `None` for `ANY`.
    method: Option<Vec<u8>>,
    regex: regex::Regex,
    conditions: Vec<QueryCondition>,
    metric: u32,
    delta: i64,
    last: bool,
}

struct Baseline {
    rules: Vec<BaselineRule>,
    metric_names: Vec<String>,
}

#[derive(Default)]
struct BaselineScratch {
    path: PathBuffers,
    matched: Vec<u32>,
    usage: Vec<(u32, i64)>,
}

/// The regex APIcast builds for a pattern.
fn apicast_regex(pattern: &str) -> String {
    // The regex APIcast builds for the pattern, whatever path tollgate compiles it to.
    tollgate::rules::pattern::apicast_regex(pattern)
}

impl Baseline {
    fn new(config: &FilterConfig) -> Self {
        let svc = &config.services[0];
        let mut metric_names: Vec<String> =
            svc.mapping_rules.iter().map(|r| r.metric.clone()).collect();
        metric_names.sort_unstable();
        metric_names.dedup();
        let rules = svc
            .mapping_rules
            .iter()
            .map(|r| {
                let source = apicast_regex(&r.pattern);
                BaselineRule {
                    method: (r.method != "ANY").then(|| r.method.as_bytes().to_vec()),
                    regex: regex::Regex::new(&source)
                        .unwrap_or_else(|e| panic!("baseline regex {source:?}: {e}")),
                    conditions: r
                        .querystring_parameters
                        .iter()
                        .map(|(k, v)| QueryCondition::new(k, v))
                        .collect(),
                    metric: metric_names.binary_search(&r.metric).unwrap() as u32,
                    delta: r.delta,
                    last: r.last,
                }
            })
            .collect();
        Self {
            rules,
            metric_names,
        }
    }

    /// Fills `scratch.matched` and `scratch.usage` (totals > 0, by metric id). `false` for a
    /// target NGINX would refuse.
    fn evaluate(&self, method: &[u8], target: &[u8], scratch: &mut BaselineScratch) -> bool {
        let BaselineScratch {
            path,
            matched,
            usage,
        } = scratch;
        matched.clear();
        usage.clear();
        let Ok(p) = path::normalize(target, path) else {
            return false;
        };
        let Ok(p) = std::str::from_utf8(p) else {
            return false;
        };
        let args = RequestArgs {
            query: path::raw_query(target),
            body: None,
        };
        for (id, rule) in self.rules.iter().enumerate() {
            if rule.method.as_deref().is_some_and(|m| m != method) {
                continue;
            }
            if !rule.regex.is_match(p) {
                continue;
            }
            if !rule.conditions.iter().all(|c| c.holds(&args)) {
                continue;
            }
            matched.push(id as u32);
            match usage.iter_mut().find(|(m, _)| *m == rule.metric) {
                Some((_, total)) => *total += rule.delta,
                None => usage.push((rule.metric, rule.delta)),
            }
            if rule.last {
                break;
            }
        }
        usage.retain(|&(_, t)| t > 0);
        usage.sort_unstable_by_key(|&(m, _)| m);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check
// ---------------------------------------------------------------------------------------------

struct CheckStats {
    authorized: usize,
    matched_total: usize,
}

fn cross_check(
    n: usize,
    compiled: &Compiled,
    baseline: &Baseline,
    requests: &[OwnedRequest],
) -> CheckStats {
    let service = &compiled.services()[0];
    let headers: Vec<(&str, &str)> = Vec::new();
    let mut scratch = Scratch::new();
    let mut bscratch = BaselineScratch::default();
    let mut stats = CheckStats {
        authorized: 0,
        matched_total: 0,
    };
    let mut mismatches = 0usize;
    for r in requests {
        let req = RequestView {
            method: r.method.as_bytes(),
            authority: HOST.as_bytes(),
            target: r.target.as_bytes(),
            headers: &headers,
            body: None,
        };
        let decision = compiled.decide(&req, tollgate::time::Timestamp::default(), &mut scratch);
        let ok = baseline.evaluate(req.method, req.target, &mut bscratch);
        let t_usage: Vec<(&str, i64)> = scratch
            .usage()
            .iter()
            .map(|&(m, t)| (service.metric_name(m), t))
            .collect();
        let b_usage: Vec<(&str, i64)> = bscratch
            .usage
            .iter()
            .map(|&(m, t)| (baseline.metric_names[m as usize].as_str(), t))
            .collect();
        let t_auth = decision.verdict == Verdict::Authorize;
        let b_auth = ok && !b_usage.is_empty();
        let t_matched: Vec<u32> = scratch.matched_rules().iter().map(|r| r.get()).collect();
        if t_matched != bscratch.matched || t_usage != b_usage || t_auth != b_auth {
            mismatches += 1;
            if mismatches <= 5 {
                let show = |ids: &[u32]| {
                    ids.iter()
                        .map(|&i| format!("#{i} {}", service.rules().pattern(RuleIndex::new(i))))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                eprintln!(
                    "MISMATCH at N={n}: {} {} (normalised {:?})\n  tollgate: {:?} rules [{}] usage {:?}\n  baseline: rules [{}] usage {:?}",
                    r.method,
                    r.target,
                    String::from_utf8_lossy(scratch.matched_path()),
                    decision.verdict,
                    show(&t_matched),
                    t_usage,
                    show(&bscratch.matched),
                    b_usage,
                );
            }
        }
        if t_auth {
            stats.authorized += 1;
        }
        stats.matched_total += scratch.matched_rules().len();
    }
    if mismatches > 0 {
        eprintln!(
            "error: tollgate and the APIcast baseline disagree on {mismatches} of {} requests at N={n}; aborting",
            requests.len()
        );
        std::process::exit(1);
    }
    stats
}

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

/// One thing to time: `pass` decides every request of a case once.
struct Bench<'a> {
    decisions: usize,
    pass: Box<dyn FnMut() + 'a>,
    per_pass: Duration,
    passes_per_sample: u32,
    samples: usize,
    /// ns per decision, one per sample.
    results: Vec<f64>,
}

struct Measurement {
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    samples: usize,
    passes_per_sample: u32,
}

impl<'a> Bench<'a> {
    fn new(decisions: usize, pass: impl FnMut() + 'a) -> Self {
        Self {
            decisions,
            pass: Box::new(pass),
            per_pass: Duration::ZERO,
            passes_per_sample: 1,
            samples: SAMPLES,
            results: Vec::new(),
        }
    }

    /// Warm-up (at least 3 passes and 200 ms), then sizes the samples: enough passes for
    /// >= 20 ms each, and fewer samples (never under 11) when 31 would blow the budget.
    fn calibrate(&mut self) {
        let start = Instant::now();
        let mut warm = 0u32;
        while warm < 3 || start.elapsed() < Duration::from_millis(200) {
            (self.pass)();
            warm += 1;
        }
        self.per_pass = start.elapsed() / warm;
        let per = self.per_pass.as_nanos().max(1);
        self.passes_per_sample =
            u32::try_from(MIN_SAMPLE_TIME.as_nanos().div_ceil(per)).unwrap_or(u32::MAX);
        let sample_time = self.per_pass * self.passes_per_sample;
        if sample_time * SAMPLES as u32 > MEASURE_BUDGET {
            let fit = (MEASURE_BUDGET.as_nanos() / sample_time.as_nanos().max(1)) as usize;
            self.samples = (fit | 1).clamp(MIN_SAMPLES, SAMPLES);
        }
    }

    fn sample(&mut self) {
        // The filter runs warm: one untimed pass first, unless a pass is itself long.
        if self.per_pass < Duration::from_millis(100) {
            (self.pass)();
        }
        let t = Instant::now();
        for _ in 0..self.passes_per_sample {
            (self.pass)();
        }
        let ns = t.elapsed().as_nanos() as f64;
        self.results
            .push(ns / (self.decisions as f64 * f64::from(self.passes_per_sample)));
    }

    fn measurement(&self) -> Measurement {
        let mut r = self.results.clone();
        r.sort_by(f64::total_cmp);
        Measurement {
            median_ns: r.get(r.len() / 2).copied().unwrap_or(f64::NAN),
            min_ns: r.first().copied().unwrap_or(f64::NAN),
            max_ns: r.last().copied().unwrap_or(f64::NAN),
            samples: r.len(),
            passes_per_sample: self.passes_per_sample,
        }
    }
}

/// Takes every bench's samples in rounds, so slow drifts of the machine's speed (this matters
/// on shared VMs) hit all configurations alike. A bench with fewer samples is spread evenly
/// over the rounds.
fn run_interleaved(benches: &mut [Bench<'_>]) {
    for round in 0..SAMPLES {
        for b in benches.iter_mut() {
            if (round + 1) * b.samples / SAMPLES > round * b.samples / SAMPLES {
                b.sample();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases and report
// ---------------------------------------------------------------------------------------------

/// One configuration size: compiled config, baseline and requests.
struct Case {
    n: usize,
    /// 1% of the rules need the regex engine (reported apart from the targets).
    engine: bool,
    compiled: Compiled,
    baseline: Baseline,
    requests: Vec<OwnedRequest>,
    check: CheckStats,
}

fn build_case(n: usize, engine: bool) -> Case {
    let specs = generate_rules(n, engine);
    let config = service_config(&specs);
    let mut diags = Diagnostics::new();
    let Some(compiled) = tollgate::compile(&config, &FilterConfigPaths, &mut diags) else {
        for d in diags.errors() {
            eprintln!("{d}");
        }
        panic!("the generated {n}-rule configuration does not compile");
    };
    assert_eq!(compiled.services()[0].rules().len(), n);
    let baseline = Baseline::new(&config);
    let requests = generate_requests(&specs, 0x7011_6a7e ^ n as u64);
    let check = cross_check(n, &compiled, &baseline, &requests);
    Case {
        n,
        engine,
        compiled,
        baseline,
        requests,
        check,
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

fn pass_miss(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn spread(m: &Measurement) -> String {
    format!(
        "({:.0}..{:.0}, {}x{})",
        m.min_ns, m.max_ns, m.samples, m.passes_per_sample
    )
}

fn request_views<'a>(
    requests: &'a [OwnedRequest],
    headers: &'a Vec<(&'a str, &'a str)>,
) -> Vec<RequestView<'a>> {
    requests
        .iter()
        .map(|r| RequestView {
            method: r.method.as_bytes(),
            authority: HOST.as_bytes(),
            target: r.target.as_bytes(),
            headers,
            body: None,
        })
        .collect()
}

/// `--profile`: only tollgate's decisions, in a loop for 10 s per size (TOLLGATE_PROFILE_SECONDS), so a profiler
/// (`perf record`) sees nothing else. No baseline, no cross-check, no figures.
fn profile(sizes: &[usize]) {
    let headers: Vec<(&str, &str)> = Vec::new();
    for &n in sizes {
        let specs = generate_rules(n, false);
        let config = service_config(&specs);
        let compiled = tollgate::compile(&config, &FilterConfigPaths, &mut Diagnostics::new())
            .expect("the generated configuration compiles");
        let requests = generate_requests(&specs, 0x7011_6a7e ^ n as u64);
        let views = request_views(&requests, &headers);
        let mut scratch = Scratch::new();
        let seconds = std::env::var("TOLLGATE_PROFILE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        let until = Instant::now() + std::time::Duration::from_secs(seconds);
        // A fixed number of passes instead, for instruction counts (valgrind --tool=callgrind).
        let passes: Option<u64> = std::env::var("TOLLGATE_PROFILE_PASSES")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut decisions = 0u64;
        while passes.map_or(Instant::now() < until, |p| {
            decisions < p * views.len() as u64
        }) {
            for req in &views {
                black_box(
                    compiled
                        .decide(
                            black_box(req),
                            tollgate::time::Timestamp::default(),
                            &mut scratch,
                        )
                        .verdict,
                );
            }
            decisions += views.len() as u64;
        }
        let (mut states, mut steps, mut bytes) = (0u64, 0u64, 0u64);
        for req in &views {
            black_box(
                compiled
                    .decide(req, tollgate::time::Timestamp::default(), &mut scratch)
                    .verdict,
            );
            let work = scratch.match_work();
            (states, steps, bytes) = (
                states + work.dfa_states,
                steps + work.steps,
                bytes + work.bytes,
            );
        }
        let per = |x: u64| x as f64 / views.len() as f64;
        eprintln!(
            "N={n}: {decisions} decisions; per decision: {:.2} DFA states, {:.1} steps, {:.1} path bytes walked",
            per(states),
            per(steps),
            per(bytes)
        );
    }
}

fn main() {
    let started = Instant::now();
    // Optional arguments (for profiling): rule counts to run instead of all, and
    // `--tollgate-only` to skip timing the baseline (the cross-check still runs).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let with_baseline = !args.iter().any(|a| a == "--tollgate-only");
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = SIZES.to_vec();
    }
    if args.iter().any(|a| a == "--profile") {
        profile(&sizes);
        return;
    }

    println!("tollgate mapping-rule matching benchmark");
    println!(
        "cpu: {}",
        cpu_model().unwrap_or_else(|| "unknown (/proc/cpuinfo not readable)".into())
    );
    println!(
        "{REQUESTS} requests per config (~90% aimed at rules, ~10% misses); median of {SAMPLES} \
         samples (>= {MIN_SAMPLES} for slow passes), each >= {} ms of full passes, all benches \
         interleaved",
        MIN_SAMPLE_TIME.as_millis()
    );
    println!(
        "baseline = APIcast: normalise, then every rule in order (method, regex, query args);\n\
         tollgate = the whole decide() (also host lookup and credentials), one Scratch reused"
    );
    println!();

    // The sizes, then (in a full run) 10,000 rules with 1% on the regex engine.
    let mut variants: Vec<(usize, bool)> = sizes.iter().map(|&n| (n, false)).collect();
    if sizes.contains(&10_000) {
        variants.push((10_000, true));
    }
    let cases: Vec<Case> = variants
        .iter()
        .map(|&(n, engine)| {
            let case = build_case(n, engine);
            eprintln!(
                "  built and cross-checked N={n} ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            case
        })
        .collect();

    let headers: Vec<(&str, &str)> = Vec::new();
    let views: Vec<Vec<RequestView<'_>>> = cases
        .iter()
        .map(|c| request_views(&c.requests, &headers))
        .collect();

    // benches[2k] times tollgate on case k, benches[2k + 1] the baseline (if enabled).
    let mut benches: Vec<Bench<'_>> = Vec::new();
    for (case, views) in cases.iter().zip(&views) {
        let compiled = &case.compiled;
        let mut scratch = Scratch::new();
        benches.push(Bench::new(views.len(), move || {
            for req in views {
                let d = compiled.decide(
                    black_box(req),
                    tollgate::time::Timestamp::default(),
                    &mut scratch,
                );
                black_box(d.verdict);
            }
        }));
        if with_baseline {
            let baseline = &case.baseline;
            let mut bscratch = BaselineScratch::default();
            benches.push(Bench::new(views.len(), move || {
                for req in views {
                    let req = black_box(req);
                    black_box(baseline.evaluate(req.method, req.target, &mut bscratch));
                    black_box(bscratch.usage.len());
                }
            }));
        }
    }
    for b in &mut benches {
        b.calibrate();
    }
    eprintln!(
        "  calibrated ({:.1} s); sampling...",
        started.elapsed().as_secs_f64()
    );
    run_interleaved(&mut benches);
    let stride = if with_baseline { 2 } else { 1 };
    let results: Vec<(&Case, Measurement, Option<Measurement>)> = cases
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let t = benches[k * stride].measurement();
            let b = with_baseline.then(|| benches[k * stride + 1].measurement());
            (c, t, b)
        })
        .collect();

    println!(
        "{:>6} {:>7} {:>5} {:>6} {:>5} | {:>8} {:>20} | {:>10} {:>24} | {:>7}",
        "rules",
        "trie",
        "regex",
        "auth",
        "match",
        "tollgate",
        "(min..max, n)",
        "baseline",
        "(min..max, n)",
        "speedup"
    );
    println!(
        "{:>6} {:>7} {:>5} {:>6} {:>5} | {:>8} {:>20} | {:>10} {:>24} | {:>7}",
        "", "KiB", "rules", "", "/req", "ns/dec", "", "ns/dec", "", "base/tg"
    );
    println!("{}", "-".repeat(112));
    for (c, t, b) in &results {
        let service = &c.compiled.services()[0];
        let (b_median, b_spread, speedup) = match b {
            Some(b) => (
                format!("{:.1}", b.median_ns),
                spread(b),
                format!("{:.1}x", b.median_ns / t.median_ns),
            ),
            None => ("-".into(), String::new(), "-".into()),
        };
        println!(
            "{:>6} {:>7} {:>5} {:>5.1}% {:>5.2} | {:>8.1} {:>20} | {:>10} {:>24} | {:>7}",
            if c.engine {
                format!("{}*", c.n)
            } else {
                c.n.to_string()
            },
            service.rules().trie_bytes().div_ceil(1024),
            service.rules().regex_rule_count(),
            c.check.authorized as f64 * 100.0 / c.requests.len() as f64,
            c.check.matched_total as f64 / c.requests.len() as f64,
            t.median_ns,
            spread(t),
            b_median,
            b_spread,
            speedup,
        );
    }
    println!();
    println!(
        "trie KiB = memory of the compiled rules; regex = rules tollgate evaluates with a regex engine (gated by their literal prefix); \
         * = 1% of the rules use\nconstructs only a regex engine handles (a repeated group), \
         apart from the targets below;"
    );
    println!(
        "auth = requests tollgate authorizes (the rest: no match); match/req = matched rules per \
         request;\nn = samples x passes per sample; every request of every size was cross-checked \
         against the baseline (same rules, same usage)"
    );
    println!();

    let at = |n: usize| results.iter().find(|(c, _, _)| c.n == n && !c.engine);
    let (Some(r10), Some(r1k), Some(r10k)) = (at(10), at(1_000), at(10_000)) else {
        println!("(targets need the 10, 1,000 and 10,000-rule runs)");
        return;
    };
    let ratio = r10k.1.median_ns / r10.1.median_ns;
    println!("tollgate(10,000) / tollgate(10) = {ratio:.2}");
    println!();
    println!("targets (informational):");
    println!(
        "  {}  tollgate(10,000) / tollgate(10) <= {TARGET_RATIO:.1}         measured {ratio:.2}",
        pass_miss(ratio <= TARGET_RATIO)
    );
    println!(
        "  {}  median at 1,000 rules <= {TARGET_NS_AT_1000:.0} ns              measured {:.1} ns",
        pass_miss(r1k.1.median_ns <= TARGET_NS_AT_1000),
        r1k.1.median_ns
    );
    match &r10k.2 {
        Some(b) => {
            let speedup = b.median_ns / r10k.1.median_ns;
            println!(
                "  {}  >= {TARGET_SPEEDUP_AT_10000:.0}x faster than baseline at 10,000   measured {speedup:.1}x",
                pass_miss(speedup >= TARGET_SPEEDUP_AT_10000)
            );
        }
        None => println!("  ----  speedup at 10,000 rules: baseline not timed (--tollgate-only)"),
    }
    println!();
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
}
