//! The gateway as a proxy configuration generator sees it: virtual hosts with their domains,
//! the upstreams they route to, the control service's target, and each service's rules.
//!
//! A projection of the compiled model: every check a generator needs ran in the compiler
//! (domains a route table can hold, one control service), so building the view cannot fail,
//! and a generator only renders it. Host claiming is the host index's: a host two services
//! list belongs to the first, here as in the filter.

use std::net::IpAddr;

use crate::index::ServiceIndex;
use crate::url::HttpUrl;

use super::{Compiled, Service};

/// Why a generator cannot point the control-service cluster anywhere on its own; `check`
/// warns with the same words.
pub const NO_CONTROL_SERVICE: &str =
    "no service names its control service (backend.endpoint): a generated proxy configuration \
     needs one (with `generate envoy`: give --backend-url)";

/// Where a proxy connects: scheme, host and port, and how to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    https: bool,
    /// Lower-case; IPv6 literals keep their brackets.
    host: String,
    port: u16,
}

impl Target {
    /// The server `url` names (its path and query are not part of the target).
    pub fn of(url: &HttpUrl) -> Self {
        Self {
            https: url.https,
            host: url.host.clone(),
            port: url.effective_port(),
        }
    }

    pub fn tls(&self) -> bool {
        self.https
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The host as written in the URL (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host without the brackets of an IPv6 literal.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host[:port]` as a request to it names it: the port only when it is not the scheme's
    /// default.
    pub fn authority(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an address, when it is a literal one (no name to resolve).
    pub fn ip(&self) -> Option<IpAddr> {
        self.bare_host().parse().ok()
    }

    /// The TLS server name to send: the host name, for TLS to a name (TLS allows no IP
    /// address there).
    pub fn sni(&self) -> Option<&str> {
        (self.https && self.ip().is_none()).then_some(self.host.as_str())
    }

    /// What the peer's certificate must name: its DNS name or its IP address.
    pub fn subject_alt_name(&self) -> SubjectAltName {
        match self.ip() {
            Some(ip) => SubjectAltName::Ip(ip),
            None => SubjectAltName::Dns(self.host.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
}

/// Where a virtual host sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No `api_backend`: answered 404 after authorizing, as APIcast does.
    NotFound,
    Upstream(UpstreamRoute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRoute {
    /// Position in [`Gateway::upstreams`].
    upstream: usize,
    host_header: String,
    root_path: String,
    path_prefix: String,
}

impl UpstreamRoute {
    /// Position of the target in [`Gateway::upstreams`].
    pub fn upstream(&self) -> usize {
        self.upstream
    }

    /// The `Host` the upstream request carries: `hostname_rewrite`, else the backend's
    /// host (with its port when it is not the scheme's default).
    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// What a request for `/` is sent upstream as: exactly the backend's path, trailing `/`
    /// included (`http://h/v2/` sends `/v2/`); `""` when the backend has no path and the
    /// request's path goes unchanged.
    pub fn root_path(&self) -> &str {
        &self.root_path
    }

    /// What is put in front of the path of any other request: the backend's path with runs of
    /// `/` merged and without a trailing `/`, so `/v2` and `/v2/` both make `/x` into `/v2/x`
    /// (APIcast joins the two with a `/` and merges the slashes); `""` for none.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }
}

/// The backend path a request path goes below: runs of `/` merged, no trailing `/`.
fn merged_prefix(path: &str) -> String {
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    while merged.ends_with('/') {
        merged.pop();
    }
    merged
}

/// The requests one service receives: those for its domains.
#[derive(Debug, Clone)]
pub struct VirtualHost<'c> {
    service: &'c Service,
    route: Route,
}

impl<'c> VirtualHost<'c> {
    pub fn service_index(&self) -> ServiceIndex {
        self.service.index()
    }

    /// The service, for its id, name and rule table ([`Service::rules`]).
    pub fn service(&self) -> &'c Service {
        self.service
    }

    /// The hosts it answers, lower-case without port, none claimed by an earlier service.
    pub fn domains(&self) -> &'c [Box<str>] {
        self.service.domains()
    }

    pub fn route(&self) -> &Route {
        &self.route
    }
}

/// The validated view generators render.
#[derive(Debug, Clone)]
pub struct Gateway<'c> {
    virtual_hosts: Vec<VirtualHost<'c>>,
    upstreams: Vec<Target>,
    control: Option<Target>,
    control_cluster: &'c str,
}

impl<'c> Gateway<'c> {
    pub(super) fn new(compiled: &'c Compiled) -> Self {
        let mut upstreams: Vec<Target> = Vec::new();
        let mut virtual_hosts = Vec::new();
        // A service left without a domain is unreachable: no virtual host, no upstream.
        for service in compiled
            .services()
            .iter()
            .filter(|s| !s.domains().is_empty())
        {
            let upstream = service.upstream();
            let route = match upstream.api_backend() {
                None => Route::NotFound,
                Some(url) => {
                    let target = Target::of(url);
                    let position = match upstreams.iter().position(|t| *t == target) {
                        Some(p) => p,
                        None => {
                            upstreams.push(target);
                            upstreams.len() - 1
                        }
                    };
                    Route::Upstream(UpstreamRoute {
                        upstream: position,
                        host_header: upstream.host_header().unwrap_or_default(),
                        root_path: url.path.clone(),
                        path_prefix: merged_prefix(&url.path),
                    })
                }
            };
            virtual_hosts.push(VirtualHost { service, route });
        }
        Self {
            virtual_hosts,
            upstreams,
            control: compiled.control_url.as_ref().map(Target::of),
            control_cluster: compiled.control_cluster(),
        }
    }

    /// One per reachable service, in configuration order.
    pub fn virtual_hosts(&self) -> &[VirtualHost<'c>] {
        &self.virtual_hosts
    }

    /// Distinct upstream targets, in the order virtual hosts first route to them.
    pub fn upstreams(&self) -> &[Target] {
        &self.upstreams
    }

    /// The control service the services name; `None` when none does ([`NO_CONTROL_SERVICE`]).
    pub fn control(&self) -> Option<&Target> {
        self.control.as_ref()
    }

    /// The name the filter calls the control service's cluster by.
    pub fn control_cluster(&self) -> &'c str {
        self.control_cluster
    }
}
