//! Writes the seed corpora: fuzz/corpus/{load,decide,flow,matcher}/<name>.
//!
//!     cd fuzz && cargo run --example seeds
//!
//! Every seed is written from the same definitions and encoders the targets read (src/lib.rs),
//! so the seeds stay in the targets' formats. Existing files of the same name are overwritten;
//! nothing else in the corpus directories is touched.

use std::path::{Path, PathBuf};

use tollgate_fuzz::{
    adversarial_configs, example_configs, fixed_index, header, inline_configs, method,
    ConfigChoice, DecideInput, HeaderName, HostChoice, MatcherInput, MethodChoice,
};

/// Seeds stay small enough to commit.
const MAX_SEED_BYTES: usize = 200 * 1024;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    assert!(
        bytes.len() <= MAX_SEED_BYTES,
        "{name}: {} bytes",
        bytes.len()
    );
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A request to fixed configuration `config`'s first host.
fn req(config: &str, m: &str, target: &str, headers: &[(&str, &str)]) -> DecideInput {
    DecideInput {
        config: ConfigChoice::Fixed(fixed_index(config)),
        host: HostChoice::Known {
            index: 0,
            upper: false,
            port: false,
            dot: false,
        },
        method: method(m),
        target: target.as_bytes().to_vec(),
        headers: headers
            .iter()
            .map(|(n, v)| (header(n), v.as_bytes().to_vec()))
            .collect(),
        body: None,
        urlencoded: false,
    }
}

fn load_seeds(dir: &Path) {
    for (name, text) in example_configs() {
        write(dir, &format!("example-{name}.json"), text.as_bytes());
    }
    for (name, text) in inline_configs().into_iter().chain(adversarial_configs()) {
        write(dir, &format!("{name}.json"), text.as_bytes());
    }
    // What overflowed the stack before nesting was limited (natively; under AddressSanitizer
    // 8,552 levels did).
    write(
        dir,
        "regression-nested-groups-20000.json",
        tollgate_fuzz::nested_groups_config(20_000).as_bytes(),
    );
    // The same services as tollgate's own FilterConfig, as `tollgate generate filter` writes.
    for (name, text) in inline_configs() {
        let loaded = tollgate::load(text.as_bytes());
        let config = loaded.config.expect("the inline configurations compile");
        write(
            dir,
            &format!("filter-config-{name}.json"),
            config.to_json_pretty().as_bytes(),
        );
    }
}

fn decide_seeds(dir: &Path) {
    let basic = format!("Basic {}", b64(b"id:key"));
    let mut seeds: Vec<(&str, DecideInput)> = vec![
        (
            "query-v1-get",
            req("inline-query-v1", "GET", "/?user_key=k1", &[]),
        ),
        (
            "query-v1-post-json",
            req(
                "inline-query-v1",
                "POST",
                "/v1/7.json?user_key=a%2Bb+c%26d",
                &[],
            ),
        ),
        (
            "query-v1-bad-path",
            req(
                "inline-query-v1",
                "GET",
                "/a/%2E%2E/../..%00?user_key=k#f",
                &[],
            ),
        ),
        (
            "headers-v2",
            req(
                "inline-headers-v2",
                "GET",
                "/caf%C3%A9",
                &[("X-App-Id", "i"), ("x_app_key", "k")],
            ),
        ),
        (
            "oauth-bearer",
            req(
                "inline-oauth",
                "PUT",
                "/x",
                &[("Authorization", "Bearer t0k")],
            ),
        ),
        (
            "many-basic",
            req(
                "inline-many-rules",
                "GET",
                "/v1/words/hello.json",
                &[("authorization", &basic)],
            ),
        ),
        (
            "many-regex",
            req(
                "inline-many-rules",
                "GET",
                "/x/1+2?api_user=me&api_key=s%21",
                &[],
            ),
        ),
        (
            "many-conditions",
            req(
                "inline-many-rules",
                "GET",
                "/q?n=a+b&m&=x&api_user=me&api_key=s",
                &[],
            ),
        ),
        (
            "example-twitter",
            req(
                "example-twitter",
                "GET",
                "/1.1/statuses/show/42.json",
                &[("X-App-Id", "app"), ("X-App-Key", "key")],
            ),
        ),
        (
            "example-sendgrid",
            req(
                "example-sendgrid",
                "GET",
                "/api/stats.get.json?aggregate=1&api_user=u&api_key=k",
                &[],
            ),
        ),
        (
            "adv-identical-8000-x",
            req(
                "adv-1000-identical",
                "GET",
                &format!("/{}?user_key=k", "x".repeat(8000)),
                &[],
            ),
        ),
        (
            "adv-placeholder-names-json",
            req(
                "adv-1000-placeholder-names",
                "GET",
                &format!("/ra/{}?user_key=k", ".json".repeat(1500)),
                &[],
            ),
        ),
        (
            "adv-chain-8000-x",
            req(
                "adv-32-chained-placeholders",
                "GET",
                &format!("/{}?user_key=k", "x".repeat(8000)),
                &[],
            ),
        ),
        (
            "adv-alternation",
            req("adv-top-level-alternation", "GET", "/xx/v?user_key=k", &[]),
        ),
        (
            "adv-starred-groups",
            req(
                "adv-100-starred-groups",
                "GET",
                &format!("/{}c?user_key=k", "ab".repeat(3000)),
                &[],
            ),
        ),
        (
            "adv-methods",
            req("adv-64-methods-100-any", "M63", "/m63/1?user_key=k", &[]),
        ),
        (
            "adv-methods-any",
            req("adv-64-methods-100-any", "M7", "/y/a99?user_key=k", &[]),
        ),
        (
            "adv-conditions-8000-amp",
            req(
                "adv-300-query-conditions",
                "GET",
                &format!("/q?{}method=m7&user_key=k", "&".repeat(8000)),
                &[],
            ),
        ),
        (
            "adv-conditions-last",
            req(
                "adv-300-query-conditions",
                "GET",
                "/q?method=m299&user_key=k",
                &[],
            ),
        ),
    ];
    // Body arguments (urlencoded POST), an odd host spelling, a raw method and header.
    let mut body = req("inline-query-v1", "POST", "/v1/1.json", &[]);
    body.body = Some(b"user_key=k&x=%41".to_vec());
    body.urlencoded = true;
    seeds.push(("query-v1-body", body));
    let mut host = req("inline-query-v1", "GET", "/", &[]);
    host.host = HostChoice::Known {
        index: 1,
        upper: true,
        port: true,
        dot: true,
    };
    seeds.push(("query-v1-host-spelling", host));
    let mut raw = req("inline-headers-v2", "GET", "/", &[]);
    raw.method = MethodChoice::Raw(b"G\x00T".to_vec());
    raw.host = HostChoice::Raw(b"[::1]:80".to_vec());
    raw.headers
        .push((HeaderName::Raw(b"X-APP-ID".to_vec()), b"\xff".to_vec()));
    seeds.push(("raw-fields", raw));
    // Configurations from the input itself.
    let adversarial = adversarial_configs();
    let adversarial = |name: &str| {
        adversarial
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text.clone())
            .expect("an adversarial configuration of that name")
    };
    for (name, text) in [
        ("fuzzed-query-v1", inline_configs()[0].1.clone()),
        (
            "fuzzed-alternation",
            adversarial("adv-top-level-alternation"),
        ),
        (
            "fuzzed-nested-groups",
            adversarial("adv-5000-nested-groups"),
        ),
    ] {
        let mut s = req("inline-query-v1", "GET", "/a?user_key=k", &[]);
        s.config = ConfigChoice::Fuzzed(text.as_bytes().to_vec());
        seeds.push((name, s));
    }
    let mut s = req("inline-query-v1", "GET", "/?user_key=k", &[]);
    s.host = HostChoice::Raw(b"h".to_vec());
    s.config = ConfigChoice::Fuzzed(
        br#"{"services":[{"id":1,"backend_version":"1","backend_authentication_type":"service_token","backend_authentication_value":"s","proxy":{"hosts":["h"],"proxy_rules":[{"http_method":"ANY","pattern":"/{x}$","metric_system_name":"hits","delta":1}]}}]}"#
            .to_vec(),
    );
    seeds.push(("fuzzed-minimal", s));
    for (name, input) in seeds {
        let bytes = input.encode();
        assert_eq!(DecideInput::decode(&bytes), input, "{name} round-trips");
        write(dir, name, &bytes);
        // The same request for `flow`, with event scripts (fuzz_targets/flow.rs): end of stream
        // then the control service's 200 answer; a body in two parts, read, then a limits
        // answer; trailers, then the stream's end, then a late answer.
        let flow = dir.with_file_name("flow");
        for (suffix, script) in [
            ("ok", &[1u8, 3, 6][..]),
            ("body", &[0, 8 * 3, 8 * 7 + 8, 2, 8 + 3]),
            ("ended", &[0, 1, 2, 7, 3]),
        ] {
            let mut seed = bytes.clone();
            seed.extend_from_slice(script);
            seed.push(u8::try_from(script.len()).unwrap_or(0));
            write(&flow, &format!("{name}-{suffix}"), &seed);
        }
    }
}

fn matcher_seeds(dir: &Path) {
    let chain: String = (0..32).map(|i| format!("{{p{i}}}")).collect();
    let x8000 = format!("/{}", "x".repeat(8000));
    let seeds: Vec<(&str, Vec<String>, String)> = vec![
        ("identical", vec!["/{a}x".into(); 8], x8000.clone()),
        (
            "placeholder-names",
            (0..8).map(|i| format!("/r{{p{i}}}/{{id}}.json")).collect(),
            format!("/ra/{}", ".json".repeat(1500)),
        ),
        (
            "chain",
            vec![
                format!("/{chain}"),
                format!("/{chain}$"),
                format!("/{chain}y$"),
            ],
            x8000,
        ),
        (
            "alternation",
            vec!["/a|/v".into(), "/(a|v)".into(), "/a|v$".into()],
            "/xx/v".into(),
        ),
        (
            "starred-groups",
            vec![format!("/{}$", "(a|b)*".repeat(100)), "/(a|b)*c".into()],
            format!("/{}", "ab".repeat(3000)),
        ),
        (
            "nested-groups",
            vec![
                format!("/{}a{}", "(".repeat(5000), ")".repeat(5000)),
                "/((a))".into(),
            ],
            "/a".into(),
        ),
        (
            "words",
            vec![
                "/v1/words/{word}.json".into(),
                "/v1/words/{word}.json$".into(),
                "/v1/{a}/{b}".into(),
                "/foo?a_param={x}".into(),
                "/{a}{b}x".into(),
                "".into(),
                "relative".into(),
                "/".into(),
            ],
            "/v1/words/hello.json".into(),
        ),
        (
            "regexish",
            vec![
                "/(x|y)/{id}+".into(),
                "/a.*b".into(),
                r"/[a-z]+/\d{2}".into(),
                "/x%2Fy".into(),
                r"/\{x\}".into(),
                "/bad(regex".into(),
                "/(ab)+c$".into(),
                "/[^/]+/(a|b1)".into(),
            ],
            "/y/12".into(),
        ),
        (
            "classes",
            vec![
                "/[ab]x".into(),
                r"/\d+\.json$".into(),
                "/a+b*".into(),
                "/(x|{id}|/)".into(),
                "/({id})+".into(),
                "/(a|b)+$".into(),
                r"/\w+".into(),
                "/^a".into(),
            ],
            "/aab".into(),
        ),
        (
            "braces-and-escapes",
            vec![
                "/{".into(),
                "/{}".into(),
                "/a{2}".into(),
                r"/\{id}".into(),
                r"/\.{id}".into(),
                "//a//{id}//".into(),
                "/%{id}%".into(),
                r"/a\".into(),
            ],
            "/aa/".into(),
        ),
    ];
    for (name, patterns, path) in seeds {
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let bytes = MatcherInput::encode(&patterns, &path);
        let decoded = MatcherInput::decode(&bytes).expect("a seed has patterns");
        assert_eq!(decoded.path, path.as_bytes(), "{name} round-trips");
        write(dir, name, &bytes);
    }
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    load_seeds(&corpus.join("load"));
    decide_seeds(&corpus.join("decide"));
    matcher_seeds(&corpus.join("matcher"));
    println!("wrote the seeds under {}", corpus.display());
}
