//! `tollgate explain`: what the gateway would decide for one request, as one JSON object.
//!
//! The request is given curl-style (`-X`, `-H`, `-d`, URL) and taken byte for byte: the URL's
//! path is not normalised here, header values may be any bytes, so explain shows exactly what
//! the filter would do with the same request.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use tollgate::decision::Verdict;
use tollgate::{Credentials, Decision, RequestView, Scratch};

use crate::input::load;
use crate::{ConfigArg, Failure, Format};

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Request method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<OsString>,
    /// A request header, 'Name: value' ('Name:' or 'Name;' for an empty value). Repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<OsString>,
    /// Request body, as curl -d: several are joined with '&', '@FILE' reads a file. Implies
    /// POST and Content-Type: application/x-www-form-urlencoded unless given.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    data: Vec<OsString>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// The request URL: http://host[:port]/path?query (or /path?query with -H 'Host: …').
    #[arg(value_name = "URL")]
    url: OsString,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authrep: Option<String>,
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

/// Splits `scheme://authority/target` without touching the path.
fn parse_url(url: &[u8]) -> Result<(Option<Vec<u8>>, Vec<u8>), Failure> {
    let lower: Vec<u8> = url.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let rest = if lower.starts_with(b"http://") {
        url.get(7..)
    } else if lower.starts_with(b"https://") {
        url.get(8..)
    } else if url.first() == Some(&b'/') {
        return Ok((None, url.to_vec()));
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
    let authority = rest.get(..end).unwrap_or_default().to_vec();
    let mut target = rest.get(end..).unwrap_or_default().to_vec();
    if target.first() != Some(&b'/') {
        target.insert(0, b'/');
    }
    Ok((Some(authority), target))
}

fn build_request(args: &ExplainArgs) -> Result<Request, Failure> {
    let (url_authority, target) = parse_url(&bytes(&args.url))?;
    let mut headers = args
        .headers
        .iter()
        .map(|h| parse_header(&bytes(h)))
        .collect::<Result<Vec<_>, _>>()?;
    let host_header = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .map(|(_, v)| v.clone());
    let authority = host_header.or(url_authority).ok_or_else(|| {
        Failure::usage("the URL has no host: give http://host/path or -H 'Host: …'")
    })?;
    let body = if args.data.is_empty() {
        None
    } else {
        let mut body = Vec::new();
        for (i, d) in args.data.iter().enumerate() {
            if i > 0 {
                body.push(b'&');
            }
            let d = bytes(d);
            match d.strip_prefix(b"@") {
                Some(file) => {
                    let file = lossy(file);
                    let content = std::fs::read(&file)
                        .map_err(|e| Failure::usage(format!("cannot read {file}: {e}")))?;
                    // curl -d strips line breaks from files.
                    body.extend(content.into_iter().filter(|&b| b != b'\n' && b != b'\r'));
                }
                None => body.extend(d),
            }
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        {
            headers.push((
                b"Content-Type".to_vec(),
                b"application/x-www-form-urlencoded".to_vec(),
            ));
        }
        Some(body)
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

fn explanation(decision: &Decision<'_, '_>, scratch: &Scratch) -> Explanation {
    let service = decision.service;
    let (outcome, reason) = match decision.verdict {
        Verdict::Authorize => ("authorize", None),
        Verdict::Forward => ("forward", None),
        Verdict::Deny(r) => ("deny", Some(r.as_str())),
    };
    let response = decision.response();
    let path = match decision.verdict {
        Verdict::Deny(tollgate::DenyReason::BadRequest(_) | tollgate::DenyReason::UriTooLong) => {
            None
        }
        _ => Some(lossy(scratch.matched_path())),
    };
    let authrep = match (decision.verdict, service, &decision.credentials) {
        (Verdict::Authorize, Some(s), Some(c)) => {
            let mut q = String::new();
            s.write_authrep(c, scratch.usage(), &mut q);
            Some(q)
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
        status: response.map(|r| r.status),
        content_type: response.map(|r| r.content_type.to_owned()),
        body: response.map(|r| r.body.to_owned()),
        authrep,
    }
}

pub fn run(args: &ExplainArgs) -> Result<ExitCode, Failure> {
    let request = build_request(args)?;
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
    let e = explanation(&decision, &scratch);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&e).unwrap_or_default()),
        Format::Text => print!("{}", text(&e, &decision)),
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
    match decision.verdict {
        Verdict::Authorize => {
            line("outcome", "authorize: ask the control service".into());
            if let Some(q) = &e.authrep {
                line("authrep", format!("GET {q}"));
            }
        }
        Verdict::Forward => line(
            "outcome",
            "forward: the service does not authorize with 3scale (no apicast policy)".into(),
        ),
        Verdict::Deny(reason) => {
            line("outcome", format!("deny: {reason}"));
            if let (Some(s), Some(ct), Some(b)) = (e.status, &e.content_type, &e.body) {
                line("response", format!("{s} ({ct}) {b:?}"));
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
        let (a, t) = parse_url(b"http://API.example.com:8080//a/../b%2F?x=1#f").unwrap();
        assert_eq!(a.unwrap(), b"API.example.com:8080");
        assert_eq!(t, b"//a/../b%2F?x=1#f");
        let (a, t) = parse_url(b"https://h?user_key=1").unwrap();
        assert_eq!(a.unwrap(), b"h");
        assert_eq!(t, b"/?user_key=1");
        let (a, t) = parse_url(b"/p").unwrap();
        assert!(a.is_none());
        assert_eq!(t, b"/p");
        assert!(parse_url(b"ftp://x").is_err());
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
