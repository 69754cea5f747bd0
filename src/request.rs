//! What the core needs to know about a request, borrowed from whoever holds it (Envoy's header
//! map in the filter, command-line arguments in `explain`).

/// A request's headers. Only a visitor is required so the filter can hand over whatever it
/// already fetched, without copying it into another structure.
pub trait Headers {
    /// Calls `f` with each `(name, value)` in order until it returns `false`.
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool);
}

fn each_pair<'a, K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: &'a [(K, V)],
    f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool,
) {
    for (name, value) in pairs {
        if !f(name.as_ref(), value.as_ref()) {
            break;
        }
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> Headers for &[(K, V)] {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool) {
        each_pair(self, f)
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> Headers for [(K, V); N] {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool) {
        each_pair(self, f)
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> Headers for Vec<(K, V)> {
    fn each<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> bool) {
        each_pair(self, f)
    }
}

/// NGINX's `$http_<name>` comparison: case-insensitive, with `-` and `_` interchangeable.
/// `wanted` must already be lower-case with `_` for `-`.
pub fn nginx_var_name_eq(header: &[u8], wanted: &[u8]) -> bool {
    header.len() == wanted.len()
        && header.iter().zip(wanted).all(|(&h, &w)| {
            let h = h.to_ascii_lowercase();
            let h = if h == b'-' { b'_' } else { h };
            h == w
        })
}

/// The first header whose name matches `wanted` as NGINX's `$http_<wanted>` does.
pub fn nginx_header<'a>(headers: &'a dyn Headers, wanted: &[u8]) -> Option<&'a [u8]> {
    let mut found = None;
    headers.each(&mut |name, value| {
        if nginx_var_name_eq(name, wanted) {
            found = Some(value);
            false
        } else {
            true
        }
    });
    found
}

/// Whether any header named `name` (case-insensitive) contains `needle` (case-insensitive).
/// APIcast joins repeated headers with "," before searching, which is the same thing.
pub fn any_header_contains(headers: &dyn Headers, name: &[u8], needle: &[u8]) -> bool {
    let mut found = false;
    headers.each(&mut |n, value| {
        if n.eq_ignore_ascii_case(name)
            && value
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        {
            found = true;
        }
        !found
    });
    found
}

/// One request, as the core sees it.
#[derive(Clone, Copy)]
pub struct RequestView<'r> {
    /// `:method`, compared exactly (case-sensitive) with mapping-rule methods.
    pub method: &'r [u8],
    /// `:authority` (or `Host`), port and case allowed.
    pub authority: &'r [u8],
    /// `:path`: the raw request target, query included.
    pub target: &'r [u8],
    pub headers: &'r dyn Headers,
    /// The request body, if the caller read it. Used for urlencoded arguments only.
    pub body: Option<&'r [u8]>,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn header_names_follow_nginx_variables() {
        let h: Vec<(&str, &str)> = vec![("User_Key", "a"), ("USER-KEY", "b")];
        assert_eq!(nginx_header(&h, b"user_key"), Some(&b"a"[..]));
        let h: Vec<(&str, &str)> = vec![("USER-KEY", "b")];
        assert_eq!(nginx_header(&h, b"user_key"), Some(&b"b"[..]));
        assert_eq!(nginx_header(&h, b"user_ke"), None);
        let h: Vec<(&str, &str)> = vec![("x-api-key", "")];
        assert_eq!(nginx_header(&h, b"x_api_key"), Some(&b""[..]));
    }

    #[test]
    fn content_type_search_spans_repeated_headers() {
        let h: Vec<(&str, &str)> = vec![
            ("content-type", "text/plain"),
            (
                "Content-Type",
                "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            ),
        ];
        assert!(any_header_contains(
            &h,
            b"content-type",
            b"application/x-www-form-urlencoded"
        ));
        let h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        assert!(!any_header_contains(
            &h,
            b"content-type",
            b"application/x-www-form-urlencoded"
        ));
    }
}
