//! The two URLs a 3scale service names: `api_backend` (the upstream API) and
//! `backend.endpoint` (the control service). Only what a gateway can route to is accepted:
//! `http` or `https`, a host, an optional port, an optional path and query. No user info.

use std::fmt;

use crate::fault::Fault;

/// Why a URL is not one a gateway can route to. Always the configuration's (or an operator's
/// option's) fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("'{0}' is not an absolute http(s) URL")]
    NotAbsolute(String),
    #[error("scheme '{0}' is not http or https")]
    Scheme(String),
    #[error("user information in the URL is not supported")]
    UserInfo,
    #[error("a URL fragment is not allowed here")]
    Fragment,
    #[error("the URL contains a space or control character")]
    ControlCharacter,
    #[error("unclosed '[' in an IPv6 address")]
    UnclosedBracket,
    #[error("'[{0}]' is not an IPv6 address")]
    NotIpv6(String),
    #[error("unexpected '{0}' after the IPv6 address")]
    AfterIpv6(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("'{0}' is not a valid host name")]
    Host(String),
    #[error("'{0}' is not a valid port")]
    Port(String),
}

impl UrlError {
    pub fn fault(&self) -> Fault {
        Fault::Configuration
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    /// Lower-cased host; IPv6 literals keep their brackets.
    pub host: String,
    /// The port as written, if any.
    pub port: Option<u16>,
    /// The path as written (a trailing `/` kept: APIcast sends it upstream), `""` when the
    /// URL has none or only `/`.
    pub path: String,
    /// Query without the `?`, if any.
    pub query: Option<String>,
}

impl HttpUrl {
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| UrlError::NotAbsolute(input.to_owned()))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(UrlError::Scheme(other.to_owned())),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        if tail.contains('#') {
            return Err(UrlError::Fragment);
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (tail, None),
        };
        if path.bytes().any(|b| b <= 0x20 || b == 0x7f)
            || query
                .as_deref()
                .is_some_and(|q| q.bytes().any(|b| b <= 0x20 || b == 0x7f))
        {
            return Err(UrlError::ControlCharacter);
        }
        Ok(Self {
            https,
            host,
            port,
            path: if path == "/" {
                String::new()
            } else {
                path.to_owned()
            },
            query,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    pub fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// The port a connection goes to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.default_port())
    }

    /// `host[:port]`, with the port only when it is not the scheme's default (APIcast's `Host`).
    pub fn host_header(&self) -> String {
        match self.port {
            Some(p) if p != self.default_port() => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']').ok_or(UrlError::UnclosedBracket)?;
        let (inner, after) = rest.split_at(close);
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UrlError::NotIpv6(inner.to_owned()));
        }
        let after = after.get(1..).unwrap_or_default();
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UrlError::AfterIpv6(after.to_owned())),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(UrlError::Host(host));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(UrlError::Port(p.to_owned())),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_what_3scale_configs_contain() {
        let u = HttpUrl::parse("https://echo-api.3scale.net:443").unwrap();
        assert!(u.https);
        assert_eq!(u.host, "echo-api.3scale.net");
        assert_eq!(u.port, Some(443));
        assert_eq!(u.host_header(), "echo-api.3scale.net");
        let u = HttpUrl::parse("http://127.0.0.1:8081/foo/").unwrap();
        assert_eq!(u.path, "/foo/");
        assert_eq!(u.host_header(), "127.0.0.1:8081");
        assert_eq!(u.to_string(), "http://127.0.0.1:8081/foo/");
        for bare in ["http://h", "http://h/", "http://h/?x=1"] {
            assert_eq!(HttpUrl::parse(bare).unwrap().path, "", "{bare}");
        }
        let u = HttpUrl::parse("HTTP://API.Example.com/v1?x=1").unwrap();
        assert_eq!(u.host, "api.example.com");
        assert_eq!(u.query.as_deref(), Some("x=1"));
        let u = HttpUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.effective_port(), 9000);
    }

    #[test]
    fn rejects_what_a_gateway_cannot_route_to() {
        for bad in [
            "test.com",
            "ftp://x",
            "http://",
            "http://user:pw@host",
            "http://host:0",
            "http://host:99999",
            "http://host:abc",
            "http://ho st/",
            "http://host/a b",
            "http://[::1",
            "http://host/#frag",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
