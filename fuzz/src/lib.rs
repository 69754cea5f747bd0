//! What the fuzz targets (fuzz_targets/*.rs) and the seed generator (examples/seeds.rs) share:
//! the fixed configurations `decide` chooses from, and the input formats of `decide` and
//! `matcher`, with an encoder for each so the seeds are written in exactly the format the
//! targets read. See README.md beside this crate.

use std::path::Path;

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------

/// One service of a 3scale document, with the defaults the fixtures share.
fn service(id: u32, host: &str, location: &str, rules: Value) -> Value {
    json!({
        "id": id, "backend_version": "1",
        "backend_authentication_type": "service_token",
        "backend_authentication_value": format!("st-{id}"),
        "proxy": {
            "hosts": [host],
            "api_backend": "https://api.example:8443/base/",
            "credentials_location": location,
            "proxy_rules": rules,
        }
    })
}

fn rule(method: &str, pattern: &str, metric: &str) -> Value {
    json!({"http_method": method, "pattern": pattern, "metric_system_name": metric, "delta": 1})
}

fn doc(services: Vec<Value>) -> String {
    json!({ "services": services }).to_string()
}

/// Small 3scale documents: placeholders, `$`, regex-flavoured patterns, `ANY` rules,
/// `querystring_parameters`, and credentials in the query, headers and `Authorization`.
pub fn inline_configs() -> Vec<(&'static str, String)> {
    let query = doc(vec![json!({
        "id": "1", "backend_version": "1",
        "backend_authentication_type": "service_token", "backend_authentication_value": "st-1",
        "proxy": {
            "hosts": ["a.example", "A2.Example:8080"],
            "api_backend": "http://a.upstream:8080/base",
            "proxy_rules": [
                {"http_method": "GET", "pattern": "/", "metric_system_name": "hits", "delta": 1},
                {"http_method": "POST", "pattern": "/v1/{id}.json$", "metric_system_name": "writes", "delta": 2},
                {"http_method": "ANY", "pattern": "/a", "metric_system_name": "a b/c[é]#&=+", "delta": 1}
            ]
        }
    })]);
    let headers = json!({"proxy_config": {"content": {
        "id": 2, "backend_version": "2",
        "backend_authentication_type": "provider_key", "backend_authentication_value": "pk &=+#%é",
        "proxy": {
            "hosts": ["b.example"],
            "credentials_location": "headers",
            "auth_app_id": "X-App-Id", "auth_app_key": "X-App-Key",
            "error_status_auth_missing": 403, "error_auth_missing": "nope",
            "error_headers_auth_missing": "application/json",
            "proxy_rules": [
                {"http_method": "ANY", "pattern": "/{x}", "metric_system_name": "hits", "delta": 1},
                {"http_method": "GET", "pattern": "/", "metric_system_name": "zero", "delta": 0}
            ]
        }
    }}})
    .to_string();
    let oauth = doc(vec![json!({
        "id": 3, "backend_version": "oauth",
        "backend_authentication_type": "service_token", "backend_authentication_value": "st-3",
        "proxy": {
            "hosts": ["c.example"],
            "credentials_location": "authorization",
            "proxy_rules": [
                {"http_method": "ANY", "pattern": "/", "metric_system_name": "hits", "delta": 1}
            ]
        }
    })]);
    // Shared with the core's property tests.
    let many = include_str!("../../testdata/many-rules.json").to_owned();
    vec![
        ("inline-query-v1", query),
        ("inline-headers-v2", headers),
        ("inline-oauth", oauth),
        ("inline-many-rules", many),
    ]
}

/// Host of every adversarial configuration; credentials in the query (`user_key`).
pub const ADVERSARIAL_HOST: &str = "adv.example";

/// Configurations built to be expensive: many rules, long placeholder chains, deep nesting,
/// many methods, many query conditions. Each is well under 200 KB.
pub fn adversarial_configs() -> Vec<(&'static str, String)> {
    let one = |rules: Vec<Value>| doc(vec![service(7, ADVERSARIAL_HOST, "query", rules.into())]);
    let chain: String = (0..32).map(|i| format!("{{p{i}}}")).collect();
    let groups = format!("/{}$", "(a|b)*".repeat(100));
    let mut methods: Vec<Value> = (0..64)
        .map(|i| rule(&format!("M{i}"), &format!("/m{i}/{{id}}"), "by_method"))
        .collect();
    methods.extend((0..100).map(|i| rule("ANY", &format!("/{{x}}/a{i}"), "any")));
    let conditions: Vec<Value> = (0..300)
        .map(|i| {
            json!({"http_method": "GET", "pattern": "/q", "metric_system_name": format!("m{i}"),
                   "delta": 1, "querystring_parameters": {"method": format!("m{i}")}})
        })
        .collect();
    vec![
        (
            "adv-1000-identical",
            one((0..1000).map(|_| rule("GET", "/{a}x", "hits")).collect()),
        ),
        (
            "adv-1000-placeholder-names",
            one((0..1000)
                .map(|i| rule("GET", &format!("/r{{p{i}}}/{{id}}.json"), "hits"))
                .collect()),
        ),
        (
            "adv-32-chained-placeholders",
            one(vec![
                rule("GET", &format!("/{chain}"), "hits"),
                rule("GET", &format!("/{chain}$"), "hits"),
                rule("GET", &format!("/{chain}y$"), "hits"),
            ]),
        ),
        (
            "adv-top-level-alternation",
            one(vec![rule("GET", "/a|/v", "hits")]),
        ),
        (
            "adv-100-starred-groups",
            one(vec![rule("GET", &groups, "hits")]),
        ),
        ("adv-5000-nested-groups", nested_groups_config(5000)),
        ("adv-64-methods-100-any", one(methods)),
        ("adv-300-query-conditions", one(conditions)),
    ]
}

/// A configuration whose first pattern nests `depth` groups: `/((...(a)...))`. Before patterns
/// nesting deeper than 250 were refused, analysing one 20,000 deep overflowed the stack.
pub fn nested_groups_config(depth: usize) -> String {
    let nested = format!("/{}a{}", "(".repeat(depth), ")".repeat(depth));
    doc(vec![service(
        7,
        ADVERSARIAL_HOST,
        "query",
        vec![rule("GET", &nested, "hits"), rule("GET", "/", "hits")].into(),
    )])
}

/// The example configurations (`examples/*.json` of the project), by file name.
pub fn example_configs() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect();
    out.sort();
    out
}

/// Adversarial configurations that are meant to be refused (a pattern nesting groups deeper
/// than PCRE accepts): seeds for `load`, not configurations for `decide`.
pub const REFUSED: &[&str] = &["adv-5000-nested-groups"];

/// Every configuration `decide` chooses from, in selector order: inline, adversarial (less
/// [`REFUSED`]), then the examples (last, so a new example does not shift the others'
/// selectors).
pub fn fixed_config_sources() -> Vec<(String, String)> {
    inline_configs()
        .into_iter()
        .chain(
            adversarial_configs()
                .into_iter()
                .filter(|(name, _)| !REFUSED.contains(name)),
        )
        .map(|(n, d)| (n.to_owned(), d))
        .chain(
            example_configs()
                .into_iter()
                .map(|(n, d)| (format!("example-{n}"), d)),
        )
        .collect()
}

/// A configuration that loaded, with the hosts its services answer for.
pub struct Fixed {
    pub name: String,
    pub compiled: tollgate::Compiled,
    pub hosts: Vec<String>,
}

/// Loads `bytes`; `None` if it does not compile.
pub fn load(name: &str, bytes: &[u8]) -> Option<Fixed> {
    let loaded = tollgate::load(bytes);
    let (config, compiled) = (loaded.config?, loaded.compiled?);
    let hosts = config
        .services
        .iter()
        .flat_map(|s| s.hosts.iter().cloned())
        .collect();
    Some(Fixed {
        name: name.to_owned(),
        compiled,
        hosts,
    })
}

/// The fixed configurations, loaded; panics (naming the diagnostics) if one does not compile.
pub fn fixed_configs() -> Vec<Fixed> {
    fixed_config_sources()
        .into_iter()
        .map(|(name, text)| {
            load(&name, text.as_bytes()).unwrap_or_else(|| {
                let loaded = tollgate::load(text.as_bytes());
                let listing: Vec<String> =
                    loaded.diagnostics.iter().map(|d| d.to_string()).collect();
                panic!("fixed configuration {name} does not compile: {listing:#?}")
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// `decide` input
// ---------------------------------------------------------------------------------------------
//
//   byte 0  config: >= FUZZED_CONFIG (1 input in 8) loads the last field as the
//           configuration; otherwise fixed configuration `byte % count`
//   byte 1  host: bit 7 set takes the authority field; otherwise host `(byte & 15) % count`
//           of the configuration, upper-cased (bit 4), with ":8080" (bit 5), with a trailing
//           dot (bit 6)
//   byte 2  method: >= RAW_METHOD takes the method field; otherwise METHODS[byte % len]
//   byte 3  bits 0-2: header count; bit 3: a body; bit 4: add an urlencoded Content-Type
//   fields  each a little-endian u16 length and that many bytes (cut short at the end of
//           input): [method] [authority] target, (name, value) per header, [body]; a
//           1-byte header name is HEADER_NAMES[byte % len]. The configuration, when fuzzed,
//           is the rest of the input.

pub const FUZZED_CONFIG: u8 = 0xE0;
pub const RAW_METHOD: u8 = 0xF0;

pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "get", "ANY", "", "M7", "M63",
];

pub const HEADER_NAMES: &[&str] = &[
    "authorization",
    "Authorization",
    "content-type",
    "Content-Type",
    "user_key",
    "User-Key",
    "app_id",
    "app_key",
    "X-App-Id",
    "X-App-Key",
    "x_app_key",
    "api_user",
    "API_User",
    "api_key",
    "access_token",
    "Access-Token",
];

pub const URLENCODED: &[u8] = b"application/x-www-form-urlencoded";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChoice {
    Fixed(u8),
    Fuzzed(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChoice {
    Known {
        index: u8,
        upper: bool,
        port: bool,
        dot: bool,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodChoice {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderName {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecideInput {
    pub config: ConfigChoice,
    pub host: HostChoice,
    pub method: MethodChoice,
    pub target: Vec<u8>,
    /// At most 7.
    pub headers: Vec<(HeaderName, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
    pub urlencoded: bool,
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    fn field(&mut self) -> &'a [u8] {
        let n = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        let (field, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        field
    }
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    let n = u16::try_from(field.len()).expect("a field is at most 65535 bytes");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(field);
}

impl DecideInput {
    pub fn decode(bytes: &[u8]) -> Self {
        let mut r = Reader { rest: bytes };
        let (config, host, method, flags) = (r.byte(), r.byte(), r.byte(), r.byte());
        let method = if method >= RAW_METHOD {
            MethodChoice::Raw(r.field().to_vec())
        } else {
            MethodChoice::Known(method)
        };
        let host = if host & 0x80 != 0 {
            HostChoice::Raw(r.field().to_vec())
        } else {
            HostChoice::Known {
                index: host & 0x0F,
                upper: host & 0x10 != 0,
                port: host & 0x20 != 0,
                dot: host & 0x40 != 0,
            }
        };
        let target = r.field().to_vec();
        let headers = (0..flags & 7)
            .map(|_| {
                let name = match r.field() {
                    [b] => HeaderName::Known(*b),
                    name => HeaderName::Raw(name.to_vec()),
                };
                (name, r.field().to_vec())
            })
            .collect();
        let body = (flags & 8 != 0).then(|| r.field().to_vec());
        let config = if config >= FUZZED_CONFIG {
            ConfigChoice::Fuzzed(r.rest.to_vec())
        } else {
            ConfigChoice::Fixed(config)
        };
        DecideInput {
            config,
            host,
            method,
            target,
            headers,
            body,
            urlencoded: flags & 16 != 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.headers.len() <= 7, "at most 7 headers");
        let mut out = vec![
            match self.config {
                ConfigChoice::Fixed(i) => {
                    assert!(i < FUZZED_CONFIG);
                    i
                }
                ConfigChoice::Fuzzed(_) => FUZZED_CONFIG,
            },
            match self.host {
                HostChoice::Known {
                    index,
                    upper,
                    port,
                    dot,
                } => {
                    (index & 0x0F) | u8::from(upper) << 4 | u8::from(port) << 5 | u8::from(dot) << 6
                }
                HostChoice::Raw(_) => 0x80,
            },
            match self.method {
                MethodChoice::Known(i) => {
                    assert!(i < RAW_METHOD);
                    i
                }
                MethodChoice::Raw(_) => RAW_METHOD,
            },
            self.headers.len() as u8
                | u8::from(self.body.is_some()) << 3
                | u8::from(self.urlencoded) << 4,
        ];
        if let MethodChoice::Raw(m) = &self.method {
            put_field(&mut out, m);
        }
        if let HostChoice::Raw(h) = &self.host {
            put_field(&mut out, h);
        }
        put_field(&mut out, &self.target);
        for (name, value) in &self.headers {
            match name {
                HeaderName::Known(i) => put_field(&mut out, &[*i]),
                HeaderName::Raw(n) => {
                    assert!(
                        n.len() != 1,
                        "a 1-byte raw header name reads as a known one"
                    );
                    put_field(&mut out, n);
                }
            }
            put_field(&mut out, value);
        }
        if let Some(body) = &self.body {
            put_field(&mut out, body);
        }
        if let ConfigChoice::Fuzzed(c) = &self.config {
            out.extend_from_slice(c);
        }
        out
    }

    /// The authority this input asks for, given the chosen configuration's hosts.
    pub fn authority(&self, hosts: &[String]) -> Vec<u8> {
        match &self.host {
            HostChoice::Raw(h) => h.clone(),
            HostChoice::Known {
                index,
                upper,
                port,
                dot,
            } => {
                let Some(host) = hosts.get(usize::from(*index) % hosts.len().max(1)) else {
                    return Vec::new();
                };
                let mut a = host.as_bytes().to_vec();
                if *upper {
                    a.make_ascii_uppercase();
                }
                if *dot {
                    a.push(b'.');
                }
                if *port {
                    a.extend_from_slice(b":8080");
                }
                a
            }
        }
    }

    pub fn method_bytes(&self) -> Vec<u8> {
        match &self.method {
            MethodChoice::Known(i) => METHODS[usize::from(*i) % METHODS.len()].as_bytes().to_vec(),
            MethodChoice::Raw(m) => m.clone(),
        }
    }

    pub fn header_list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let name = match name {
                    HeaderName::Known(i) => HEADER_NAMES[usize::from(*i) % HEADER_NAMES.len()]
                        .as_bytes()
                        .to_vec(),
                    HeaderName::Raw(n) => n.clone(),
                };
                (name, value.clone())
            })
            .collect();
        if self.urlencoded {
            out.push((b"content-type".to_vec(), URLENCODED.to_vec()));
        }
        out
    }
}

/// The index of a fixed configuration by name, for seeds.
pub fn fixed_index(name: &str) -> u8 {
    let i = fixed_config_sources()
        .iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no fixed configuration {name}"));
    u8::try_from(i).expect("fewer than 224 fixed configurations")
}

/// The index of a header name in [`HEADER_NAMES`], for seeds.
pub fn header(name: &str) -> HeaderName {
    match HEADER_NAMES.iter().position(|n| *n == name) {
        Some(i) => HeaderName::Known(i as u8),
        None => HeaderName::Raw(name.as_bytes().to_vec()),
    }
}

/// The index of a method in [`METHODS`], for seeds.
pub fn method(name: &str) -> MethodChoice {
    match METHODS.iter().position(|n| *n == name) {
        Some(i) => MethodChoice::Known(i as u8),
        None => MethodChoice::Raw(name.as_bytes().to_vec()),
    }
}

// ---------------------------------------------------------------------------------------------
// `matcher` input
// ---------------------------------------------------------------------------------------------
//
// Lines separated by '\n': up to MAX_PATTERNS patterns, then the path (the last line; lines
// in between are ignored). An ASCII byte stands for itself; a byte >= 0x80 stands for an entry
// of PATTERN_TOKENS (in a pattern) or PATH_TOKENS (in the path), so random bytes land on the
// pattern alphabet half the time and seeds stay readable text.

pub const MAX_PATTERNS: usize = 8;

pub const PATTERN_TOKENS: &[&str] = &[
    "/",
    "/",
    "/",
    "a",
    "b",
    "x",
    "1",
    "2",
    ".",
    "-",
    "_",
    "~",
    "%",
    "{id}",
    "{id}",
    "$",
    "$",
    "+",
    "*",
    "(",
    ")",
    "|",
    "[",
    "]",
    "^",
    "\\d",
    "\\",
    "{",
    "}",
    "?",
    ":",
    "@",
    "!",
    ",",
    ";",
    "=",
    "&",
    "'",
    "[0-9]+",
    "[^/]+",
    "[ab]",
    "(a|b)",
    "(a|b1)",
    "(x|{id}|/)",
    "({id})+",
    "(a|b)+",
    "a+",
    "b*",
    "\\.",
    "\\w",
    "\\/",
    "\\{",
    "{2}",
    "{a\nb}",
    "%2F",
    "%C3%A9",
    "é",
    ".*",
    "\\d+",
    "(?:",
    "(?i)",
    "\\b",
    "\\D",
    "\\s",
    "[[:alpha:]]",
    "[a-",
    "{1,3}",
    "?a={x}",
];

pub const PATH_TOKENS: &[&str] = &[
    "/", "/", "/", "a", "b", "x", "1", "2", ".", "-", "_", "~", "%", "%2F", "%25", "%C3%A9", "$",
    "+", "*", "(", ")", "|", "[", "]", "^", "!", ":", "@", ",", ";", "=", "&", "'", "ab", "/a",
    "b1", "11", "id", "\\", "{", "}", "\"", " ", "json", ".json", "/v1", "y", "z", "A", "Z", "9",
];

fn expand(line: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    for &b in line {
        if b.is_ascii() {
            out.push(b);
        } else {
            out.extend_from_slice(tokens[usize::from(b - 0x80) % tokens.len()].as_bytes());
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatcherInput {
    /// Byte strings, as patterns may be any bytes (the target keeps the UTF-8 ones).
    pub patterns: Vec<Vec<u8>>,
    pub path: Vec<u8>,
}

impl MatcherInput {
    /// `None` when the input has no pattern.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let (path, patterns) = lines.split_last()?;
        if patterns.is_empty() {
            return None;
        }
        Some(MatcherInput {
            patterns: patterns
                .iter()
                .take(MAX_PATTERNS)
                .map(|p| expand(p, PATTERN_TOKENS))
                .collect(),
            path: expand(path, PATH_TOKENS),
        })
    }

    /// Patterns and path spelled in ASCII (without '\n'), one line each.
    pub fn encode(patterns: &[&str], path: &str) -> Vec<u8> {
        assert!(!patterns.is_empty() && patterns.len() <= MAX_PATTERNS);
        let mut out = Vec::new();
        for p in patterns.iter().chain(std::iter::once(&path)) {
            assert!(p.is_ascii() && !p.contains('\n'), "{p:?}: ASCII, one line");
            out.extend_from_slice(p.as_bytes());
            out.push(b'\n');
        }
        out.pop();
        out
    }
}
