//! A small HTTP client for the tests and the demo: any status is an answer (never an error),
//! headers are kept as bytes, and every request has a deadline so a hang fails the test.

use std::time::{Duration, Instant};

use ureq::http::HeaderValue;

use crate::{HarnessError, Result};

/// What a client received.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `(lower-case name, value)`, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: String,
    /// How long the answer took to arrive.
    pub elapsed: Duration,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The echo upstream's JSON description of the request it received.
    pub fn echoed(&self) -> Option<serde_json::Value> {
        if self.header("x-echo").as_deref() == Some("1") {
            serde_json::from_str(&self.body).ok()
        } else {
            None
        }
    }
}

/// A request to send through the gateway.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, sent as is.
    pub target: &'a str,
    pub host: &'a str,
    pub headers: Vec<(&'a str, Vec<u8>)>,
    pub body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, host: &'a str, target: &'a str) -> Self {
        Self {
            method,
            target,
            host,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn form(mut self, body: &'a str) -> Self {
        self.headers.push((
            "content-type",
            b"application/x-www-form-urlencoded".to_vec(),
        ));
        self.body = Some(body.as_bytes());
        self
    }
}

/// A client for one listener on 127.0.0.1.
pub struct Client {
    agent: ureq::Agent,
    port: u16,
}

impl Client {
    pub fn new(port: u16, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .allow_non_standard_methods(true)
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            port,
        }
    }

    pub fn send(&self, request: &Request<'_>) -> Result<Answer> {
        let url = format!("http://127.0.0.1:{}{}", self.port, request.target);
        let mut builder = ureq::http::Request::builder()
            .method(request.method)
            .uri(&url)
            .header("host", request.host);
        for (name, value) in &request.headers {
            let value = HeaderValue::from_bytes(value).map_err(|source| HarnessError::Header {
                name: (*name).to_owned(),
                source,
            })?;
            builder = builder.header(*name, value);
        }
        let what = format!("{} {url}", request.method);
        let started = Instant::now();
        // The outer error is a request that cannot be built, the inner one no answer.
        let response = match request.body {
            Some(body) => builder.body(body.to_vec()).map(|r| self.agent.run(r)),
            None => builder.body(()).map(|r| self.agent.run(r)),
        }
        .map_err(HarnessError::http(&what))?
        .map_err(HarnessError::http(&what))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        let body = response
            .into_body()
            .read_to_string()
            .unwrap_or_else(|e| format!("<unreadable body: {e}>"));
        Ok(Answer {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }
}
