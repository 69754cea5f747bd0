//! Which service serves a request: its host (reference §4.1 `hosts`).
//!
//! Request and configured hosts are compared lower-cased, without port and without a trailing
//! dot. The first service listing a host wins.

use hashbrown::HashMap;

use crate::index::ServiceIndex;

/// Longest host name looked up; longer ones (DNS allows 253) find no service.
pub const MAX_HOST_LEN: usize = 255;

/// `host[:port]` → lower-case host without port or trailing dot. IPv6 literals keep brackets.
/// Returns the normalised host in `buf` (no allocation), or `None` if it is too long.
pub fn normalize_host<'b>(authority: &[u8], buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b [u8]> {
    let host = if authority.first() == Some(&b'[') {
        match authority.iter().position(|&b| b == b']') {
            Some(close) => authority.get(..=close)?,
            None => authority,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => authority.get(..colon)?,
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let out = buf.get_mut(..host.len())?;
    for (o, &h) in out.iter_mut().zip(host) {
        *o = h.to_ascii_lowercase();
    }
    Some(out)
}

/// Host name → index of the service that serves it.
#[derive(Debug, Default, Clone)]
pub struct HostIndex {
    map: HashMap<Box<[u8]>, ServiceIndex>,
}

impl HostIndex {
    /// Adds `host` for `service` unless a service already has it; returns the earlier owner.
    pub fn insert(&mut self, host: &[u8], service: ServiceIndex) -> Option<ServiceIndex> {
        if let Some(&owner) = self.map.get(host) {
            return Some(owner);
        }
        self.map.insert(host.into(), service);
        None
    }

    pub fn lookup(&self, authority: &[u8]) -> Option<ServiceIndex> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = normalize_host(authority, &mut buf)?;
        self.map.get(host).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn norm(a: &str) -> Option<String> {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize_host(a.as_bytes(), &mut buf).map(|h| String::from_utf8_lossy(h).into_owned())
    }

    #[test]
    fn hosts_lose_case_port_and_trailing_dot() {
        assert_eq!(
            norm("API.Example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(norm("api.example.com.").as_deref(), Some("api.example.com"));
        assert_eq!(norm("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(norm("").as_deref(), Some(""));
        assert_eq!(norm(&"a".repeat(300)), None);
    }

    #[test]
    fn first_service_wins() {
        let mut idx = HostIndex::default();
        let (first, second) = (ServiceIndex::new(0), ServiceIndex::new(1));
        assert_eq!(idx.insert(b"a.example", first), None);
        assert_eq!(idx.insert(b"a.example", second), Some(first));
        assert_eq!(idx.lookup(b"A.EXAMPLE:443"), Some(first));
        assert_eq!(idx.lookup(b"b.example"), None);
    }
}
