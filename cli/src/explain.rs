//! `tollgate explain`: what the gateway would decide for one request, as one JSON object.
//!
//! The request is given curl-style (`-X`, `-H`, `-d` and its variants, `-G`, `-u`, URL) and
//! taken byte for byte: the URL's path is not normalised here, header values may be any bytes,
//! so explain shows exactly what the filter would do with the same request.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgMatches, Args};
use serde::Serialize;
use tollgate::decision::Verdict;
use tollgate::model::limiter::{application_value, LimitKey};
use tollgate::{Credentials, Decision, Reply, RequestView, Scratch};

use crate::input::{load, read_input};
use crate::{ConfigArg, Failure, Format};

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Request method (default GET, or POST with data unless -G).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<OsString>,
    /// A request header, 'Name: value' ('Name:' or 'Name;' for an empty value). Repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<OsString>,
    /// Request body, as curl -d: '@FILE' reads a file (without its line breaks, '-' is
    /// standard input). Several data flags are joined with '&' in their order. Data implies
    /// POST and Content-Type: application/x-www-form-urlencoded unless given.
    #[arg(
        short = 'd',
        long = "data",
        visible_alias = "data-ascii",
        value_name = "DATA",
        allow_hyphen_values = true
    )]
    data: Vec<OsString>,
    /// As -d, without '@FILE'.
    #[arg(long = "data-raw", value_name = "DATA", allow_hyphen_values = true)]
    data_raw: Vec<OsString>,
    /// As -d, but '@FILE' keeps the file's line breaks.
    #[arg(long = "data-binary", value_name = "DATA", allow_hyphen_values = true)]
    data_binary: Vec<OsString>,
    /// Data URL-encoded as curl does: 'content', '=content', 'name=content', '@FILE' or
    /// 'name@FILE'; only the content is encoded.
    #[arg(
        long = "data-urlencode",
        value_name = "DATA",
        allow_hyphen_values = true
    )]
    data_urlencode: Vec<OsString>,
    /// Send the data in the query string of a GET instead of a body (curl -G).
    #[arg(short = 'G', long = "get")]
    get: bool,
    /// Basic authentication, as curl -u: an Authorization header (a -H Authorization wins).
    #[arg(short = 'u', long = "user", value_name = "USER:PASSWORD")]
    user: Option<OsString>,
    /// Output format; with json, failures are JSON too.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// The request URL: http://[user:password@]host[:port]/path?query (or /path?query with
    /// -H 'Host: …').
    #[arg(value_name = "URL")]
    url: OsString,
}

impl ExplainArgs {
    pub fn format(&self) -> Format {
        self.format
    }
}

/// The JSON `explain` prints. Its keys are a contract; see the README.
#[derive(Serialize)]
struct Explanation {
    service_id: Option<String>,
    service_name: Option<String>,
    credentials: Option<BTreeMap<&'static str, String>>,
    /// The path the rules were matched against (normalised as NGINX does, re-escaped).
    path: Option<String>,
    matched_rules: Vec<String>,
    usage: BTreeMap<String, i64>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// The content type the client receives: none for an empty body, as Envoy sends it.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// The call a request of this key waits for when no answer is cached: the authrep, or
    /// (batched) the authorize call.
    #[serde(skip_serializing_if = "Option::is_none")]
    authrep: Option<String>,
    /// How the answer is cached and the usage reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<CacheJson>,
    /// The local limiters that count this request, checked before the control service (their
    /// live state is in the gateway, not here).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    limiters: Vec<LimiterJson>,
    /// The request as explain understood the command line.
    request: RequestJson,
}

#[derive(Serialize)]
struct CacheJson {
    /// `strict`, `resilient`, `allow` or `none`.
    mode: &'static str,
    /// `authrep` (cached requests reported afterwards, one authrep each) or `batched`.
    reporting: &'static str,
    /// How long an authorization is used without a fresh answer.
    ttl_seconds: u64,
    /// Batched: seconds between reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_report_seconds: Option<u64>,
}

#[derive(Serialize)]
struct LimiterJson {
    name: String,
    limit: String,
    cost: u64,
    key: String,
    /// The request's value for the key (`None`: the client's address, which only the
    /// gateway knows).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_value: Option<String>,
}

fn limiters(decision: &Decision<'_, '_>, scratch: &Scratch, request: &Request) -> Vec<LimiterJson> {
    let Some(service) = decision.service else {
        return Vec::new();
    };
    if !matches!(decision.verdict, Verdict::Authorize | Verdict::Forward) {
        return Vec::new();
    }
    service
        .limiters()
        .iter()
        .filter_map(|l| {
            let cost = l.cost(scratch.usage())?;
            let key_value = match l.key() {
                LimitKey::Service => Some(String::new()),
                LimitKey::Application => {
                    Some(lossy(application_value(decision.credentials.as_ref())))
                }
                LimitKey::Header(name) => Some(
                    request
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                        .map(|(_, v)| lossy(v))
                        .unwrap_or_default(),
                ),
                LimitKey::ClientAddress => None,
            };
            Some(LimiterJson {
                name: l.name().to_owned(),
                limit: l.summary().to_owned(),
                cost,
                key: l.key().describe(),
                key_value,
            })
        })
        .collect()
}

#[derive(Serialize)]
struct RequestJson {
    method: String,
    target: String,
    authority: String,
    headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
}

fn bytes(s: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request, owned, as parsed from the command line.
struct Request {
    method: Vec<u8>,
    authority: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Request {
    fn json(&self) -> RequestJson {
        RequestJson {
            method: lossy(&self.method),
            target: lossy(&self.target),
            authority: lossy(&self.authority),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (lossy(n), lossy(v)))
                .collect(),
            body: self.body.as_deref().map(lossy),
        }
    }

    /// The request as it goes on the wire: request line, `Host`, the other headers, the body.
    fn text(&self) -> String {
        let mut out = format!(
            "{} {} HTTP/1.1\nHost: {}\n",
            lossy(&self.method),
            lossy(&self.target),
            lossy(&self.authority)
        );
        for (n, v) in &self.headers {
            if !n.eq_ignore_ascii_case(b"host") {
                out.push_str(&format!("{}: {}\n", lossy(n), lossy(v)));
            }
        }
        if let Some(body) = &self.body {
            out.push('\n');
            out.push_str(&lossy(body));
            out.push('\n');
        }
        out
    }
}

fn parse_header(raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let split = raw.iter().position(|&b| b == b':' || b == b';');
    let (name, value) = match split {
        Some(i) => {
            let name = raw.get(..i).unwrap_or_default();
            let value = raw.get(i + 1..).unwrap_or_default();
            // 'Name;' means an empty value, as in curl.
            let value = if raw.get(i) == Some(&b';') {
                if !value.is_empty() {
                    return Err(Failure::usage(format!(
                        "invalid header '{}': expected 'Name: value'",
                        lossy(raw)
                    )));
                }
                &[][..]
            } else {
                value
            };
            let start = value
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t'))
                .unwrap_or(value.len());
            (name, value.get(start..).unwrap_or_default())
        }
        None => {
            return Err(Failure::usage(format!(
                "invalid header '{}': expected 'Name: value'",
                lossy(raw)
            )))
        }
    };
    if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(Failure::usage(format!(
            "invalid header name in '{}'",
            lossy(raw)
        )));
    }
    Ok((name.to_vec(), value.to_vec()))
}

/// A URL split without touching the path.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    authority: Option<Vec<u8>>,
    /// `user:password` before the host, percent-decoded as curl does.
    userinfo: Option<Vec<u8>>,
    target: Vec<u8>,
}

/// Splits `scheme://[userinfo@]authority/target` without touching the path.
fn parse_url(url: &[u8]) -> Result<Url, Failure> {
    let lower: Vec<u8> = url.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let rest = if lower.starts_with(b"http://") {
        url.get(7..)
    } else if lower.starts_with(b"https://") {
        url.get(8..)
    } else if url.first() == Some(&b'/') {
        return Ok(Url {
            authority: None,
            userinfo: None,
            target: url.to_vec(),
        });
    } else {
        return Err(Failure::usage(format!(
            "'{}' is not a URL: expected http://host/path or /path",
            lossy(url)
        )));
    };
    let rest = rest.unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or_default();
    let (userinfo, authority) = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => (
            Some(percent_decode(authority.get(..at).unwrap_or_default())),
            authority.get(at + 1..).unwrap_or_default(),
        ),
        None => (None, authority),
    };
    let mut target = rest.get(end..).unwrap_or_default().to_vec();
    if target.first() != Some(&b'/') {
        target.insert(0, b'/');
    }
    Ok(Url {
        authority: Some(authority.to_vec()),
        userinfo,
        target,
    })
}

/// `%XX` decoded, as curl decodes a URL's user and password; unlike form arguments
/// (`tollgate::args::decode`), `+` stays `+`.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let hex = |at: usize| s.get(at).copied().and_then(tollgate::percent::hex_value);
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// curl's `--data-urlencode` encoding of the content: unreserved bytes as they are, a space
/// as `+`, every other byte `%XX`.
fn urlencode(content: &[u8], out: &mut Vec<u8>) {
    for &b in content {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&tollgate::percent::escaped(b)),
        }
    }
}

/// Standard base64 with padding, for curl -u's `Authorization: Basic`.
fn base64(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| {
        let i = (n >> shift & 63) as usize;
        ALPHABET.get(i).copied().unwrap_or(b'=')
    };
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { b'=' });
    }
    out
}

/// The flags that carry data, as curl reads each.
#[derive(Clone, Copy)]
enum DataFlag {
    /// `-d`/`--data`/`--data-ascii`: `@FILE` without its line breaks.
    Ascii,
    /// `--data-raw`: no `@FILE`.
    Raw,
    /// `--data-binary`: `@FILE` byte for byte.
    Binary,
    /// `--data-urlencode`.
    UrlEncode,
}

impl DataFlag {
    const ALL: [(DataFlag, &'static str); 4] = [
        (DataFlag::Ascii, "data"),
        (DataFlag::Raw, "data_raw"),
        (DataFlag::Binary, "data_binary"),
        (DataFlag::UrlEncode, "data_urlencode"),
    ];

    /// One flag's value, as it goes into the body (or the query, with -G).
    fn read(self, value: &[u8]) -> Result<Vec<u8>, Failure> {
        let file = |name: &[u8]| read_input(Path::new(&lossy(name)));
        match (self, value.strip_prefix(b"@")) {
            (DataFlag::Ascii, Some(name)) => {
                let content = file(name)?;
                Ok(content
                    .into_iter()
                    .filter(|&b| b != b'\n' && b != b'\r')
                    .collect())
            }
            (DataFlag::Binary, Some(name)) => file(name),
            (DataFlag::Ascii | DataFlag::Binary | DataFlag::Raw, _) => Ok(value.to_vec()),
            (DataFlag::UrlEncode, _) => {
                // curl splits at the first '=', or failing one at the first '@' (a file).
                let split = value
                    .iter()
                    .position(|&b| b == b'=')
                    .or_else(|| value.iter().position(|&b| b == b'@'));
                let (name, content) = match split {
                    Some(at) => {
                        let name = value.get(..at).unwrap_or_default();
                        let rest = value.get(at + 1..).unwrap_or_default();
                        if value.get(at) == Some(&b'@') {
                            (name, file(rest)?)
                        } else {
                            (name, rest.to_vec())
                        }
                    }
                    None => (&[][..], value.to_vec()),
                };
                let mut out = Vec::new();
                if !name.is_empty() {
                    out.extend_from_slice(name);
                    out.push(b'=');
                }
                urlencode(&content, &mut out);
                Ok(out)
            }
        }
    }
}

impl ExplainArgs {
    /// Every data flag's value in command-line order (curl joins them in that order), from
    /// clap's matches; without them, flag by flag.
    fn data_in_order(&self, matches: Option<&ArgMatches>) -> Vec<(DataFlag, Vec<u8>)> {
        let fields = [
            &self.data,
            &self.data_raw,
            &self.data_binary,
            &self.data_urlencode,
        ];
        let mut all: Vec<(usize, DataFlag, Vec<u8>)> = Vec::new();
        for ((flag, id), values) in DataFlag::ALL.into_iter().zip(fields) {
            let indices: Vec<usize> = matches
                .and_then(|m| m.indices_of(id))
                .map(Iterator::collect)
                .unwrap_or_default();
            for (i, v) in values.iter().enumerate() {
                let at = indices.get(i).copied().unwrap_or(usize::MAX);
                all.push((at, flag, bytes(v)));
            }
        }
        all.sort_by_key(|(at, _, _)| *at);
        all.into_iter().map(|(_, f, v)| (f, v)).collect()
    }
}

fn has_header(headers: &[(Vec<u8>, Vec<u8>)], name: &[u8]) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn build_request(args: &ExplainArgs, matches: Option<&ArgMatches>) -> Result<Request, Failure> {
    let url = parse_url(&bytes(&args.url))?;
    let mut headers = args
        .headers
        .iter()
        .map(|h| parse_header(&bytes(h)))
        .collect::<Result<Vec<_>, _>>()?;
    let host_header = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .map(|(_, v)| v.clone());
    let authority = host_header.or(url.authority).ok_or_else(|| {
        Failure::usage("the URL has no host: give http://host/path or -H 'Host: …'")
    })?;
    // curl -u, or the URL's user:password; a header given with -H replaces curl's own.
    let user = match &args.user {
        Some(u) => {
            let u = bytes(u);
            if !u.contains(&b':') {
                return Err(Failure::usage(
                    "-u needs USER:PASSWORD: explain cannot ask for the password",
                ));
            }
            Some(u)
        }
        None => url.userinfo.map(|mut u| {
            if !u.contains(&b':') {
                u.push(b':');
            }
            u
        }),
    };
    if let Some(user) = user.filter(|_| !has_header(&headers, b"authorization")) {
        let mut value = b"Basic ".to_vec();
        value.extend(base64(&user));
        headers.insert(0, (b"Authorization".to_vec(), value));
    }
    let mut data: Option<Vec<u8>> = None;
    for (flag, value) in args.data_in_order(matches) {
        let part = flag.read(&value)?;
        match &mut data {
            Some(joined) => {
                joined.push(b'&');
                joined.extend(part);
            }
            None => data = Some(part),
        }
    }
    let mut target = url.target;
    let body = match data {
        Some(query) if args.get => {
            // curl -G: the data goes into the query, before any fragment.
            let fragment = target
                .iter()
                .position(|&b| b == b'#')
                .unwrap_or(target.len());
            let tail = target.split_off(fragment);
            target.push(if target.contains(&b'?') { b'&' } else { b'?' });
            target.extend(query);
            target.extend(tail);
            None
        }
        Some(body) => {
            if !has_header(&headers, b"content-type") {
                headers.push((
                    b"Content-Type".to_vec(),
                    b"application/x-www-form-urlencoded".to_vec(),
                ));
            }
            Some(body)
        }
        None => None,
    };
    let method = match &args.method {
        Some(m) => bytes(m),
        None if body.is_some() => b"POST".to_vec(),
        None => b"GET".to_vec(),
    };
    if method.is_empty() {
        return Err(Failure::usage("the method is empty"));
    }
    Ok(Request {
        method,
        authority,
        target,
        headers,
        body,
    })
}

fn credentials_map(c: &Credentials<'_>) -> BTreeMap<&'static str, String> {
    c.params().map(|(k, v)| (k, lossy(v))).collect()
}

fn explanation(decision: &Decision<'_, '_>, scratch: &Scratch, request: &Request) -> Explanation {
    let service = decision.service;
    let (outcome, reason) = match decision.verdict {
        Verdict::Authorize => ("authorize", None),
        Verdict::Forward => ("forward", None),
        Verdict::Deny(r) => ("deny", Some(r.as_str())),
    };
    // The filter replies with the same Reply, and sends its headers() as they are here.
    let reply = decision.response().map(|response| Reply {
        response,
        retry_after: None,
    });
    let content_type = reply.and_then(|r| {
        let mut digits = [0u8; 20];
        let found = r
            .headers(&mut digits)
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
            .map(|(_, v)| lossy(v));
        found
    });
    let path = match decision.verdict {
        Verdict::Deny(tollgate::DenyReason::BadRequest(_) | tollgate::DenyReason::UriTooLong) => {
            None
        }
        _ => Some(lossy(scratch.matched_path())),
    };
    let authrep = match (decision.verdict, service, &decision.credentials) {
        (Verdict::Authorize, Some(s), Some(c)) => {
            let call = match s.cache().batching() {
                Some(_) => tollgate::backend::AuthCall::Authorize,
                None => tollgate::backend::AuthCall::Authrep,
            };
            let mut q = String::new();
            s.write_auth_call(call, c, scratch.usage(), &mut q);
            Some(q)
        }
        _ => None,
    };
    let cache = match (decision.verdict, service) {
        (Verdict::Authorize, Some(s)) => {
            let c = s.cache();
            Some(CacheJson {
                mode: c.mode().as_str(),
                reporting: if c.batching().is_some() {
                    "batched"
                } else {
                    "authrep"
                },
                ttl_seconds: c.ttl_ns() / 1_000_000_000,
                batch_report_seconds: c.batching().map(|b| b.interval_ns() / 1_000_000_000),
            })
        }
        _ => None,
    };
    Explanation {
        service_id: service.map(|s| s.id().to_string()),
        service_name: service.map(|s| s.name().to_string()),
        credentials: decision.credentials.as_ref().map(credentials_map),
        path,
        matched_rules: service
            .map(|s| {
                scratch
                    .matched_rules()
                    .iter()
                    .map(|&id| s.rules().pattern(id).to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        usage: service
            .map(|s| {
                scratch
                    .usage()
                    .iter()
                    .map(|&(m, total)| (s.metric_name(m).to_owned(), total))
                    .collect()
            })
            .unwrap_or_default(),
        outcome,
        reason,
        status: reply.map(|r| r.response.status),
        content_type,
        body: reply.map(|r| r.response.body.to_owned()),
        authrep,
        cache,
        limiters: limiters(decision, scratch, request),
        request: request.json(),
    }
}

pub fn run(args: &ExplainArgs, matches: Option<&ArgMatches>) -> Result<ExitCode, Failure> {
    let request = build_request(args, matches)?;
    let loaded = load(&args.config)?;
    let view = RequestView {
        method: &request.method,
        authority: &request.authority,
        target: &request.target,
        headers: &request.headers,
        body: request.body.as_deref(),
    };
    let mut scratch = Scratch::new();
    // The machine's clock stands in for the gateway's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let now = tollgate::time::Timestamp::from_nanos(now);
    let decision = loaded.compiled.decide(&view, now, &mut scratch);
    let e = explanation(&decision, &scratch, &request);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default()),
        Format::Text => print!("{}\n{}", request.text(), text(&e, &decision)),
    }
    Ok(ExitCode::SUCCESS)
}

fn text(e: &Explanation, decision: &Decision<'_, '_>) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line(
        "service",
        match (&e.service_id, &e.service_name) {
            (Some(id), Some(name)) if !name.is_empty() => format!("{id} ({name})"),
            (Some(id), _) => id.clone(),
            _ => "none for this host".into(),
        },
    );
    if let Some(p) = &e.path {
        line("path", p.clone());
    }
    line(
        "credentials",
        match &e.credentials {
            Some(c) => c
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            None => "none".into(),
        },
    );
    line(
        "rules",
        if e.matched_rules.is_empty() {
            "none matched".into()
        } else {
            e.matched_rules.join(", ")
        },
    );
    line(
        "usage",
        if e.usage.is_empty() {
            "nothing".into()
        } else {
            e.usage
                .iter()
                .map(|(m, n)| format!("{m}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        },
    );
    for l in &e.limiters {
        let key = match (&l.key_value, l.key.as_str()) {
            (_, "service") => "one bucket for the service".to_owned(),
            (Some(v), k) => format!("{k} {v:?}"),
            (None, k) => format!("{k} (known to the gateway)"),
        };
        line(
            "limiter",
            format!("{}: {}; costs {}; key {key}", l.name, l.limit, l.cost),
        );
    }
    match decision.verdict {
        Verdict::Authorize => {
            line("outcome", "authorize: ask the control service".into());
            if let Some(q) = &e.authrep {
                line("authrep", format!("GET {q}"));
            }
            if let Some(c) = &e.cache {
                line(
                    "cache",
                    match (c.mode, c.batch_report_seconds) {
                        ("none", None) => "none: every request waits for its authrep".into(),
                        (mode, None) => format!(
                            "{mode}: an answer is used {} s; a cached request goes on at once and is reported afterwards",
                            c.ttl_seconds
                        ),
                        (mode, Some(every)) => format!(
                            "{mode}, batched: an authorize answer is used {} s; usage is reported every {every} s",
                            c.ttl_seconds
                        ),
                    },
                );
            }
        }
        Verdict::Forward => line(
            "outcome",
            "forward: the service does not authorize with 3scale (no apicast policy)".into(),
        ),
        Verdict::Deny(reason) => {
            line("outcome", format!("deny: {reason}"));
            if let Some(status) = e.status {
                line(
                    "response",
                    match (&e.content_type, e.body.as_deref()) {
                        (Some(ct), Some(b)) if !b.is_empty() => {
                            format!("{status}, content-type: {ct}, body {b:?}")
                        }
                        _ => format!("{status}, empty body"),
                    },
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_without_normalising() {
        let u = parse_url(b"http://API.example.com:8080//a/../b%2F?x=1#f").unwrap();
        assert_eq!(u.authority.unwrap(), b"API.example.com:8080");
        assert_eq!(u.target, b"//a/../b%2F?x=1#f");
        assert_eq!(u.userinfo, None);
        let u = parse_url(b"https://h?user_key=1").unwrap();
        assert_eq!(u.authority.unwrap(), b"h");
        assert_eq!(u.target, b"/?user_key=1");
        let u = parse_url(b"/p").unwrap();
        assert!(u.authority.is_none());
        assert_eq!(u.target, b"/p");
        assert!(parse_url(b"ftp://x").is_err());
        // curl takes user:password before the host, percent-decoded.
        let u = parse_url(b"http://me%40x:p%3Aw@h:81/p").unwrap();
        assert_eq!(u.authority.unwrap(), b"h:81");
        assert_eq!(u.userinfo.unwrap(), b"me@x:p:w");
        assert_eq!(
            parse_url(b"http://a+b:p@h/").unwrap().userinfo.unwrap(),
            b"a+b:p"
        );
    }

    #[test]
    fn data_is_encoded_as_curl_encodes_it() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"a b+c&d/~", b"a+b%2Bc%26d%2F~"),
            // Only the content after the first '=' is encoded; the name is taken as it is.
            (b"a b=c d", b"a b=c+d"),
            (b"=a b", b"a+b"),
            (b"name=x=y z", b"name=x%3Dy+z"),
            // The first '=' wins over an '@'; without '=', '@' names a file.
            (b"n@x=y z", b"n@x=y+z"),
            (b"\xff", b"%FF"),
        ];
        for (value, encoded) in cases {
            assert_eq!(DataFlag::UrlEncode.read(value).unwrap(), encoded);
        }
        assert_eq!(DataFlag::Raw.read(b"@file").unwrap(), b"@file");
        assert_eq!(DataFlag::Ascii.read(b"--boundary").unwrap(), b"--boundary");
        // Basic authentication as curl sends it: standard base64, padded.
        for (plain, encoded) in [
            (&b"user:pass"[..], &b"dXNlcjpwYXNz"[..]),
            (b"a:", b"YTo="),
            (b"ab:", b"YWI6"),
            (b"", b""),
            (b"\xff\xfe", b"//4="),
        ] {
            assert_eq!(base64(plain), encoded);
        }
    }

    #[test]
    fn headers_parse_like_curl() {
        assert_eq!(
            parse_header(b"X-Key: v").unwrap(),
            (b"X-Key".to_vec(), b"v".to_vec())
        );
        assert_eq!(
            parse_header(b"X-Key:").unwrap(),
            (b"X-Key".to_vec(), vec![])
        );
        assert_eq!(
            parse_header(b"X-Key;").unwrap(),
            (b"X-Key".to_vec(), vec![])
        );
        assert_eq!(
            parse_header(b"X: a:b").unwrap(),
            (b"X".to_vec(), b"a:b".to_vec())
        );
        assert_eq!(
            parse_header(b"X: \xff").unwrap(),
            (b"X".to_vec(), b"\xff".to_vec())
        );
        assert!(parse_header(b"NoColon").is_err());
        assert!(parse_header(b": v").is_err());
    }
}
