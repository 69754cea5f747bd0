//! Application credentials, found where APIcast finds them (reference §2).
//!
//! - `backend_version` 1 wants `user_key`, 2 wants `app_id` **and** `app_key`, `oauth` wants
//!   `access_token` (and always falls back to a `Bearer` token).
//! - `query`: NGINX `$arg_<name>` (raw value, first occurrence, case-insensitive name), then the
//!   urlencoded body (decoded, exact name, first occurrence).
//! - `headers`: NGINX `$http_<name>` (case-insensitive, `-` and `_` interchangeable).
//! - `authorization`: `Basic` (base64 split at the last `:`) or `Bearer`, scheme case-sensitive.
//!
//! An empty value is present. A missing slot means the request gets the "credentials missing"
//! error before any mapping rule is looked at.

use std::borrow::Cow;

use crate::args::{self, ArgValue};
use crate::config::{BackendVersion, CredentialsConfig, CredentialsLocation};
use crate::request::{nginx_header, Headers};

/// The credentials of one request. Values are bytes exactly as APIcast would send them to the
/// control service (before percent-encoding): raw from the query and headers, decoded from the
/// body and from Basic auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'r> {
    UserKey(Cow<'r, [u8]>),
    AppId {
        app_id: Cow<'r, [u8]>,
        app_key: Cow<'r, [u8]>,
    },
    AccessToken(Cow<'r, [u8]>),
}

/// A control-service parameter: `(name, value)`.
pub type Param<'a> = (&'static str, &'a [u8]);

impl Credentials<'_> {
    /// `(control-service parameter name, value)` in the order they are sent.
    pub fn params(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        let (first, second): (Param<'_>, Option<Param<'_>>) = match self {
            Credentials::UserKey(k) => (("user_key", k), None),
            Credentials::AppId { app_id, app_key } => {
                (("app_id", app_id), Some(("app_key", app_key.as_ref())))
            }
            Credentials::AccessToken(t) => (("access_token", t), None),
        };
        std::iter::once(first).chain(second)
    }

    pub fn into_owned(self) -> Credentials<'static> {
        let own = |c: Cow<'_, [u8]>| Cow::Owned(c.into_owned());
        match self {
            Credentials::UserKey(k) => Credentials::UserKey(own(k)),
            Credentials::AppId { app_id, app_key } => Credentials::AppId {
                app_id: own(app_id),
                app_key: own(app_key),
            },
            Credentials::AccessToken(t) => Credentials::AccessToken(own(t)),
        }
    }
}

/// Per-service extraction settings, precomputed at configure time.
#[derive(Debug, Clone)]
pub struct CredentialSource {
    /// `None`: no `backend_version`, so APIcast finds no credentials at all.
    version: Option<BackendVersion>,
    location: CredentialsLocation,
    user_key: Name,
    app_id: Name,
    app_key: Name,
    access_token: Name,
}

/// A parameter name as the query/body lookups use it and as `$http_<name>` compares it.
#[derive(Debug, Clone)]
struct Name {
    arg: Box<[u8]>,
    header: Box<[u8]>,
}

impl Name {
    fn new(name: &str) -> Self {
        let arg: Box<[u8]> = name.to_ascii_lowercase().into_bytes().into();
        let header = arg
            .iter()
            .map(|&b| if b == b'-' { b'_' } else { b })
            .collect();
        Self { arg, header }
    }
}

/// Where a credential may come from, besides the headers.
#[derive(Clone, Copy)]
pub struct Sources<'r> {
    pub headers: &'r dyn Headers,
    /// The raw query string.
    pub query: &'r [u8],
    /// The urlencoded body, only when APIcast would read it (POST/PUT/PATCH, urlencoded).
    pub body: Option<&'r [u8]>,
}

impl CredentialSource {
    pub fn new(version: Option<BackendVersion>, config: &CredentialsConfig) -> Self {
        Self {
            version,
            location: config.location,
            user_key: Name::new(&config.user_key),
            app_id: Name::new(&config.app_id),
            app_key: Name::new(&config.app_key),
            access_token: Name::new("access_token"),
        }
    }

    /// Whether credentials may come from an urlencoded body (the `query` location's fallback).
    pub fn reads_body(&self) -> bool {
        self.version.is_some() && self.location == CredentialsLocation::Query
    }

    pub fn extract<'r>(&self, src: Sources<'r>) -> Option<Credentials<'r>> {
        match self.version? {
            BackendVersion::UserKey => {
                let user_key = match self.location {
                    CredentialsLocation::Query => from_query(&self.user_key, src),
                    CredentialsLocation::Headers => header(&self.user_key, src),
                    CredentialsLocation::Authorization => {
                        let auth = authorization(src);
                        auth.userid
                            .or(auth.password)
                            .or(auth.token.map(Cow::Borrowed))
                    }
                };
                user_key.map(Credentials::UserKey)
            }
            BackendVersion::AppIdKey => {
                let (app_id, app_key) = match self.location {
                    CredentialsLocation::Query => (
                        from_query(&self.app_id, src),
                        from_query(&self.app_key, src),
                    ),
                    CredentialsLocation::Headers => {
                        (header(&self.app_id, src), header(&self.app_key, src))
                    }
                    CredentialsLocation::Authorization => {
                        let auth = authorization(src);
                        (auth.userid.or(auth.token.map(Cow::Borrowed)), auth.password)
                    }
                };
                Some(Credentials::AppId {
                    app_id: app_id?,
                    app_key: app_key?,
                })
            }
            BackendVersion::OAuth => {
                let token = match self.location {
                    CredentialsLocation::Query => from_query(&self.access_token, src),
                    CredentialsLocation::Headers => header(&self.access_token, src),
                    CredentialsLocation::Authorization => None,
                };
                // RFC 6750: a Bearer token is always accepted.
                token
                    .or_else(|| authorization(src).token.map(Cow::Borrowed))
                    .map(Credentials::AccessToken)
            }
        }
    }
}

fn from_query<'r>(name: &Name, src: Sources<'r>) -> Option<Cow<'r, [u8]>> {
    if let Some(raw) = args::raw_arg(src.query, &name.arg) {
        return Some(Cow::Borrowed(raw));
    }
    match args::first_arg(src.body?, &name.arg)? {
        ArgValue::Raw(raw) => Some(Cow::Owned(args::decode(raw))),
        ArgValue::Flag => Some(Cow::Borrowed(&[])),
    }
}

fn header<'r>(name: &Name, src: Sources<'r>) -> Option<Cow<'r, [u8]>> {
    nginx_header(src.headers, &name.header).map(Cow::Borrowed)
}

fn authorization(src: Sources<'_>) -> Authorization<'_> {
    nginx_header(src.headers, b"authorization")
        .map(Authorization::parse)
        .unwrap_or_default()
}

/// An `Authorization` header as `resty.http_authorization` reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Authorization<'r> {
    pub userid: Option<Cow<'r, [u8]>>,
    pub password: Option<Cow<'r, [u8]>>,
    pub token: Option<&'r [u8]>,
}

impl<'r> Authorization<'r> {
    /// Lua `^(%w+)%s*(.*)$`: an alphanumeric scheme, optional whitespace, the parameter.
    /// Only `Basic` and `Bearer` are understood, case-sensitively.
    pub fn parse(value: &'r [u8]) -> Self {
        let scheme_len = value
            .iter()
            .position(|b| !b.is_ascii_alphanumeric())
            .unwrap_or(value.len());
        let (scheme, rest) = value.split_at(scheme_len);
        let param_start = rest
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
            .unwrap_or(rest.len());
        let param = rest.get(param_start..).unwrap_or_default();
        match scheme {
            b"Basic" => {
                let Some(decoded) = nginx_decode_base64(param) else {
                    return Self::default();
                };
                // Lua `^(.*):(.*)$` is greedy: split at the last ':'.
                match decoded.iter().rposition(|&b| b == b':') {
                    Some(colon) => {
                        let password = decoded.get(colon + 1..).unwrap_or_default().to_vec();
                        let mut userid = decoded;
                        userid.truncate(colon);
                        Self {
                            userid: Some(Cow::Owned(userid)),
                            password: Some(Cow::Owned(password)),
                            token: None,
                        }
                    }
                    None => Self::default(),
                }
            }
            b"Bearer" => Self {
                token: Some(param),
                ..Self::default()
            },
            _ => Self::default(),
        }
    }
}

fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// `ngx.decode_base64`: the standard alphabet up to the first `=` (anything after it is
/// ignored), padding optional, a stray character or a length of 4n+1 is an error.
pub fn nginx_decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let end = input.iter().position(|&b| b == b'=').unwrap_or(input.len());
    let data = input.get(..end)?;
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for chunk in data.chunks(4) {
        let mut v = [0u8; 4];
        for (slot, &b) in v.iter_mut().zip(chunk) {
            *slot = base64_value(b)?;
        }
        let [a, b, c, d] = v;
        out.push(a << 2 | b >> 4);
        if chunk.len() > 2 {
            out.push(b << 4 | c >> 2);
        }
        if chunk.len() > 3 {
            out.push(c << 6 | d);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn source(version: BackendVersion, location: CredentialsLocation) -> CredentialSource {
        CredentialSource::new(
            Some(version),
            &CredentialsConfig {
                location,
                ..CredentialsConfig::default()
            },
        )
    }

    fn extract<'r>(
        s: &CredentialSource,
        headers: &'r [(&'r str, &'r [u8])],
        query: &'r str,
        body: Option<&'r str>,
    ) -> Option<Credentials<'r>> {
        let headers: Vec<(&str, &[u8])> = headers.to_vec();
        let found = s.extract(Sources {
            headers: &headers,
            query: query.as_bytes(),
            body: body.map(str::as_bytes),
        });
        found.map(Credentials::into_owned)
    }

    fn uk(v: &[u8]) -> Option<Credentials<'_>> {
        Some(Credentials::UserKey(Cow::Borrowed(v)))
    }

    fn app<'a>(id: &'a [u8], key: &'a [u8]) -> Option<Credentials<'a>> {
        Some(Credentials::AppId {
            app_id: Cow::Borrowed(id),
            app_key: Cow::Borrowed(key),
        })
    }

    #[test]
    fn v1_query_facts() {
        let s = source(BackendVersion::UserKey, CredentialsLocation::Query);
        assert_eq!(extract(&s, &[], "user_key=k1", None), uk(b"k1"));
        assert_eq!(extract(&s, &[], "USER_KEY=k1", None), uk(b"k1"));
        assert_eq!(extract(&s, &[], "user_key=k1&user_key=k2", None), uk(b"k1"));
        assert_eq!(extract(&s, &[], "user_key=", None), uk(b""));
        assert_eq!(extract(&s, &[], "user_key", None), None);
        assert_eq!(extract(&s, &[], "user_key&user_key=k2", None), uk(b"k2"));
        assert_eq!(extract(&s, &[], "a=user_key=k", None), None);
        assert_eq!(
            extract(&s, &[], "user_key=a%2Bb+c%26d", None),
            uk(b"a%2Bb+c%26d")
        );
        // The body is a fallback, decoded.
        assert_eq!(extract(&s, &[], "", Some("user_key=a%2Bb+c")), uk(b"a+b c"));
        assert_eq!(extract(&s, &[], "user_key=q", Some("user_key=b")), uk(b"q"));
        // Body names are exact (lua table lookup), not case-insensitive.
        assert_eq!(extract(&s, &[], "", Some("USER_KEY=b")), None);
    }

    #[test]
    fn without_a_backend_version_nothing_is_found() {
        // configuration/service.lua has no extractor for a missing version.
        let s = CredentialSource::new(None, &CredentialsConfig::default());
        assert_eq!(
            extract(&s, &[], "user_key=k1&app_id=a&app_key=b", None),
            None
        );
        assert_eq!(
            extract(&s, &[("Authorization", b"Bearer t")], "", None),
            None
        );
        assert!(!s.reads_body(), "nothing to wait for");
    }

    #[test]
    fn renamed_query_parameters() {
        let s = CredentialSource::new(
            Some(BackendVersion::AppIdKey),
            &CredentialsConfig {
                location: CredentialsLocation::Query,
                user_key: "user_key".into(),
                app_id: "API_User".into(),
                app_key: "api_key".into(),
            },
        );
        assert_eq!(
            extract(&s, &[], "api_user=me&api_key=secret", None),
            app(b"me", b"secret")
        );
        // v2 needs both; each missing one may come from the body.
        assert_eq!(extract(&s, &[], "api_user=me", None), None);
        assert_eq!(extract(&s, &[], "api_key=secret", None), None);
        assert_eq!(
            extract(&s, &[], "api_user=me", Some("api_key=s%21")),
            Some(Credentials::AppId {
                app_id: Cow::Borrowed(b"me"),
                app_key: Cow::Owned(b"s!".to_vec()),
            })
        );
    }

    #[test]
    fn headers_location() {
        let s = CredentialSource::new(
            Some(BackendVersion::UserKey),
            &CredentialsConfig {
                location: CredentialsLocation::Headers,
                user_key: "X-Api-Key".into(),
                ..CredentialsConfig::default()
            },
        );
        assert_eq!(extract(&s, &[("x_api_key", b"k")], "", None), uk(b"k"));
        assert_eq!(extract(&s, &[("X-API-KEY", b"k")], "", None), uk(b"k"));
        assert_eq!(extract(&s, &[("x-api-key", b"")], "", None), uk(b""));
        assert_eq!(
            extract(&s, &[("x-api-key", b"\xff\xfe")], "", None),
            uk(b"\xff\xfe")
        );
        // Query is not consulted for the headers location.
        assert_eq!(extract(&s, &[], "x-api-key=k", None), None);
        let v2 = source(BackendVersion::AppIdKey, CredentialsLocation::Headers);
        assert_eq!(
            extract(&v2, &[("app_id", b"i"), ("App-Key", b"k")], "", None),
            app(b"i", b"k")
        );
        assert_eq!(extract(&v2, &[("app_id", b"i")], "", None), None);
    }

    #[test]
    fn basic_and_bearer() {
        let v1 = source(BackendVersion::UserKey, CredentialsLocation::Authorization);
        let v2 = source(BackendVersion::AppIdKey, CredentialsLocation::Authorization);
        // TEST 28: "value:\n" gives user_key=value.
        assert_eq!(
            extract(&v1, &[("authorization", b"Basic dmFsdWU6Cg==")], "", None),
            uk(b"value")
        );
        // TEST 34: foo:bar.
        assert_eq!(
            extract(&v2, &[("Authorization", b"Basic Zm9vOmJhcg==")], "", None),
            app(b"foo", b"bar")
        );
        // Split at the last ':' ("id:se:cret").
        assert_eq!(
            extract(
                &v2,
                &[("authorization", b"Basic aWQ6c2U6Y3JldA==")],
                "",
                None
            ),
            app(b"id:se", b"cret")
        );
        // Padding optional; anything after '=' ignored ("k1:pw").
        assert_eq!(
            extract(&v1, &[("authorization", b"Basic azE6cHc")], "", None),
            uk(b"k1")
        );
        assert_eq!(
            extract(
                &v1,
                &[("authorization", b"Basic azE6cHc= trailing")],
                "",
                None
            ),
            uk(b"k1")
        );
        // ":pw": the empty userid wins.
        assert_eq!(
            extract(&v1, &[("authorization", b"Basic OnB3")], "", None),
            uk(b"")
        );
        // No ':' (base64 of "onlyid"), bad base64, URL-safe alphabet, lower-case scheme.
        for bad in [
            &b"Basic b25seWlk"[..],
            b"Basic !!!!",
            b"Basic a-_b",
            b"basic Zm9vOmJhcg==",
            b"Basic a",
        ] {
            assert_eq!(extract(&v1, &[("authorization", bad)], "", None), None);
        }
        // Bearer: v1 uses the token, v2 gets only app_id (so it is missing).
        assert_eq!(
            extract(&v1, &[("authorization", b"Bearer token")], "", None),
            uk(b"token")
        );
        assert_eq!(
            extract(&v1, &[("authorization", b"Bearer")], "", None),
            uk(b"")
        );
        assert_eq!(
            extract(&v2, &[("authorization", b"Bearer token")], "", None),
            None
        );
        assert_eq!(
            extract(&v1, &[("authorization", b"bearer token")], "", None),
            None
        );
    }

    #[test]
    fn oauth_falls_back_to_bearer_everywhere() {
        for location in [
            CredentialsLocation::Query,
            CredentialsLocation::Headers,
            CredentialsLocation::Authorization,
        ] {
            let s = source(BackendVersion::OAuth, location);
            assert_eq!(
                extract(&s, &[("authorization", b"Bearer t0k")], "", None),
                Some(Credentials::AccessToken(Cow::Borrowed(b"t0k"))),
                "{location:?}"
            );
            assert_eq!(extract(&s, &[], "", None), None);
        }
        let q = source(BackendVersion::OAuth, CredentialsLocation::Query);
        assert_eq!(
            extract(
                &q,
                &[("authorization", b"Bearer b")],
                "access_token=q",
                None
            ),
            Some(Credentials::AccessToken(Cow::Borrowed(b"q")))
        );
        let h = source(BackendVersion::OAuth, CredentialsLocation::Headers);
        assert_eq!(
            extract(&h, &[("Access-Token", b"h")], "", None),
            Some(Credentials::AccessToken(Cow::Borrowed(b"h")))
        );
    }

    #[test]
    fn base64_follows_nginx() {
        assert_eq!(nginx_decode_base64(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(nginx_decode_base64(b"Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(nginx_decode_base64(b"Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(nginx_decode_base64(b"").as_deref(), Some(&b""[..]));
        assert_eq!(nginx_decode_base64(b"Z"), None);
        assert_eq!(nginx_decode_base64(b"Zm9vY"), None);
        assert_eq!(nginx_decode_base64(b"Zm 9v"), None);
    }
}
