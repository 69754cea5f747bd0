//! The request path exactly as APIcast matches it: `escape_uri(ngx.var.uri)`.
//!
//! NGINX's `$uri` is the request path percent-decoded, with runs of `/` merged, `.` and `..`
//! segments resolved and the query dropped; an encoded `/` (`%2F`) becomes a real separator and
//! `%2E%2E` a real dot segment, while a decoded `%`, `#` or `?` stays a literal character.
//! APIcast then re-escapes it with NGINX's `ngx_escape_uri(NGX_ESCAPE_URI)`, so the matched
//! string is ASCII: `/caf%C3%A9`, `/a%25b`, `/foo%20/bar`.
//!
//! Requests NGINX itself refuses with 400 (a bad escape, `%00`, `..` above the root, control
//! characters, a target that does not start with `/`) are reported as [`BadPath`].

use std::fmt;

use crate::percent::{escaped, hex_value};

/// Why NGINX would answer 400 Bad Request before APIcast sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// The request target does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits, or cut short.
    BadEscape,
    /// `%00`.
    NulByte,
    /// A `..` segment that would climb above the root.
    AboveRoot,
    /// A raw control character or space in the request target.
    ControlCharacter,
}

impl fmt::Display for BadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadPath::NotAbsolute => "the request target does not start with '/'",
            BadPath::BadEscape => "the path has an invalid percent-escape",
            BadPath::NulByte => "the path contains %00",
            BadPath::AboveRoot => "the path climbs above the root with '..'",
            BadPath::ControlCharacter => "the request target contains a control character",
        })
    }
}

/// The raw query of a request target: after the first raw `?` that comes before any `#`, up to
/// the next `#`. Empty when there is none.
pub fn raw_query(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) if target.get(i) == Some(&b'?') => {
            let rest = target.get(i + 1..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
            rest.get(..end).unwrap_or_default()
        }
        _ => &[],
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Usual,
    Slash,
    Dot,
    DotDot,
}

/// Decodes and normalises the path of `target` into `decoded` (cleared first), as NGINX builds
/// `$uri` with `merge_slashes on`.
pub fn decode_uri(target: &[u8], decoded: &mut Vec<u8>) -> Result<(), BadPath> {
    decoded.clear();
    if target.first() != Some(&b'/') {
        return Err(BadPath::NotAbsolute);
    }
    // NGINX's request-line parser refuses these anywhere in the target, query included.
    if target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err(BadPath::ControlCharacter);
    }
    let mut state = State::Usual;
    let mut i = 0;
    while let Some(&raw) = target.get(i) {
        i += 1;
        let ch = match raw {
            b'%' => {
                let (hi, lo) = match (target.get(i), target.get(i + 1)) {
                    (Some(&h), Some(&l)) => (hex_value(h), hex_value(l)),
                    _ => return Err(BadPath::BadEscape),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(BadPath::BadEscape);
                };
                i += 2;
                let byte = hi << 4 | lo;
                match byte {
                    0 => return Err(BadPath::NulByte),
                    // A decoded '%', '#' or '?' is an ordinary character of the path.
                    b'%' | b'#' | b'?' => {
                        decoded.push(byte);
                        state = State::Usual;
                        continue;
                    }
                    // Anything else is processed as if it had been sent raw ("/" separates,
                    // "." forms dot segments).
                    _ => byte,
                }
            }
            // The path ends at a raw '?' (query) or '#' (fragment).
            b'?' | b'#' => break,
            other => other,
        };
        state = step(state, ch, decoded)?;
    }
    match state {
        State::Dot => {
            decoded.pop();
        }
        State::DotDot => climb(decoded)?,
        State::Usual | State::Slash => {}
    }
    Ok(())
}

/// One byte of the dot-segment / slash-merging state machine.
fn step(state: State, ch: u8, out: &mut Vec<u8>) -> Result<State, BadPath> {
    Ok(match (state, ch) {
        (State::Slash, b'/') => State::Slash,
        (State::Slash, b'.') => {
            out.push(ch);
            State::Dot
        }
        (State::Dot, b'/') => {
            out.pop();
            State::Slash
        }
        (State::Dot, b'.') => {
            out.push(ch);
            State::DotDot
        }
        (State::DotDot, b'/') => {
            climb(out)?;
            State::Slash
        }
        (_, b'/') => {
            out.push(ch);
            State::Slash
        }
        _ => {
            out.push(ch);
            State::Usual
        }
    })
}

/// `out` ends with "/.."; drop that and the segment before it, keeping its leading '/'.
fn climb(out: &mut Vec<u8>) -> Result<(), BadPath> {
    let keep = out.len().checked_sub(4).ok_or(BadPath::AboveRoot)?;
    let slash = out
        .get(..=keep)
        .and_then(|head| head.iter().rposition(|&b| b == b'/'))
        .ok_or(BadPath::AboveRoot)?;
    out.truncate(slash + 1);
    Ok(())
}

/// Bytes `ngx_escape_uri(NGX_ESCAPE_URI)` re-escapes (NGINX 1.21.1 and later): controls,
/// space, `" # % < > ? \ ^ `` { | }`, DEL and every byte from 0x80.
// Evaluated at compile time: an out-of-range index fails the build, never a request.
#[allow(clippy::indexing_slicing)]
const fn escape_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b <= 0x20 || b >= 0x7f;
        b += 1;
    }
    let specials = b"\"#%<>?\\^`{|}";
    let mut i = 0;
    while i < specials.len() {
        t[specials[i] as usize] = true;
        i += 1;
    }
    t
}

static NEEDS_ESCAPE: [bool; 256] = escape_table();

/// Whether the matched path can contain `b` literally. Every byte NGINX re-escapes is absent,
/// except `%` itself, which starts each escape.
pub fn can_appear_in_matched_path(b: u8) -> bool {
    b == b'%' || !NEEDS_ESCAPE.get(usize::from(b)).copied().unwrap_or(true)
}

/// Appends `decoded` to `out`, re-escaped as APIcast's `escape_uri` does (upper-case hex).
pub fn escape_into(decoded: &[u8], out: &mut Vec<u8>) {
    for &b in decoded {
        if NEEDS_ESCAPE.get(usize::from(b)).copied().unwrap_or(true) {
            out.extend_from_slice(&escaped(b));
        } else {
            out.push(b);
        }
    }
}

/// The path part of `target` when normalising would leave it unchanged: it starts with '/',
/// has no escape, no "//", no dot segment, nothing to re-escape, and the target has no
/// control character. Most requests take this path.
fn already_normal(target: &[u8]) -> Option<&[u8]> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let (path, rest) = target.split_at(end);
    if path.first() != Some(&b'/') || rest.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return None;
    }
    let mut previous_slash = false;
    for &b in path {
        let needs_work = NEEDS_ESCAPE.get(usize::from(b)).copied().unwrap_or(true)
            || (previous_slash && (b == b'/' || b == b'.'));
        if needs_work {
            return None;
        }
        previous_slash = b == b'/';
    }
    Some(path)
}

/// Reusable buffers for [`normalize`], so a request allocates nothing once they have grown.
#[derive(Debug, Default, Clone)]
pub struct PathBuffers {
    decoded: Vec<u8>,
    escaped: Vec<u8>,
}

impl PathBuffers {
    /// The last normalised path (valid after a successful [`normalize`]).
    pub fn matched(&self) -> &[u8] {
        &self.escaped
    }

    /// Forgets the last path.
    pub fn clear(&mut self) {
        self.escaped.clear();
        self.decoded.clear();
    }

    /// Gives back memory beyond `retain` bytes per buffer (after an unusually long path).
    pub fn trim(&mut self, retain: usize) {
        for buffer in [&mut self.decoded, &mut self.escaped] {
            if buffer.capacity() > retain {
                buffer.clear();
                buffer.shrink_to(retain);
            }
        }
    }

    /// Heap bytes held.
    pub fn capacity_bytes(&self) -> usize {
        self.decoded.capacity() + self.escaped.capacity()
    }
}

/// The string APIcast matches mapping rules against, for a raw request target.
pub fn normalize<'b>(target: &[u8], buffers: &'b mut PathBuffers) -> Result<&'b [u8], BadPath> {
    // Cleared first, so a refused target never leaves the previous request's path behind.
    buffers.escaped.clear();
    if let Some(path) = already_normal(target) {
        buffers.escaped.extend_from_slice(path);
        return Ok(&buffers.escaped);
    }
    decode_uri(target, &mut buffers.decoded)?;
    escape_into(&buffers.decoded, &mut buffers.escaped);
    Ok(&buffers.escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn norm(target: &str) -> Result<String, BadPath> {
        let mut b = PathBuffers::default();
        normalize(target.as_bytes(), &mut b).map(|p| String::from_utf8(p.to_vec()).unwrap())
    }

    /// The table in the reference (§1.3), observed in NGINX with APIcast's escape.
    #[test]
    fn reference_table() {
        let cases = [
            ("/foo%20/bar/", "/foo%20/bar/"),
            ("//foo///bar", "/foo/bar"),
            ("/foo/./bar/../baz", "/foo/baz"),
            ("/foo%2Fbar", "/foo/bar"),
            ("/a%25b", "/a%25b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%2Bb", "/a+b"),
            ("/x%7By%7D", "/x%7By%7D"),
            ("/foo%3Fbar", "/foo%3Fbar"),
            (
                "/~a!b$c&d'e(f)g*h+i,j;k=l:m@n",
                "/~a!b$c&d'e(f)g*h+i,j;k=l:m@n",
            ),
            ("/A/B", "/A/B"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn section_8_facts() {
        assert_eq!(norm("/a%2F%2Fb").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a/%2E%2E/b").as_deref(), Ok("/b"));
        assert_eq!(norm("/a/%2e/b").as_deref(), Ok("/a/b"));
        assert_eq!(norm("/a+b").as_deref(), Ok("/a+b"));
        assert_eq!(norm("/.."), Err(BadPath::AboveRoot));
        assert_eq!(norm("/%2E%2E"), Err(BadPath::AboveRoot));
        assert_eq!(norm("/a/../../b"), Err(BadPath::AboveRoot));
        assert_eq!(norm("/%00"), Err(BadPath::NulByte));
    }

    #[test]
    fn query_and_fragment_end_the_path() {
        assert_eq!(norm("/foo?a=b/../c").as_deref(), Ok("/foo"));
        assert_eq!(norm("/foo#frag").as_deref(), Ok("/foo"));
        assert_eq!(norm("/foo/.?x").as_deref(), Ok("/foo/"));
        assert_eq!(norm("/foo/..?x").as_deref(), Ok("/"));
        assert_eq!(norm("/foo%23bar").as_deref(), Ok("/foo%23bar"));
        assert_eq!(raw_query(b"/p?a=1&b=2#frag"), b"a=1&b=2");
        assert_eq!(raw_query(b"/p#frag?a=1"), b"");
        assert_eq!(raw_query(b"/p%3Fa=1"), b"");
        assert_eq!(raw_query(b"/p?"), b"");
    }

    #[test]
    fn dot_segments_at_the_end() {
        assert_eq!(norm("/foo/.").as_deref(), Ok("/foo/"));
        assert_eq!(norm("/foo/..").as_deref(), Ok("/"));
        assert_eq!(norm("/foo/bar/..").as_deref(), Ok("/foo/"));
        assert_eq!(norm("/...").as_deref(), Ok("/..."));
        assert_eq!(norm("/a..b/.c").as_deref(), Ok("/a..b/.c"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
    }

    #[test]
    fn a_refused_target_leaves_no_previous_path() {
        let mut b = PathBuffers::default();
        normalize(b"/previous", &mut b).unwrap();
        assert!(normalize(b"/%zz", &mut b).is_err());
        assert_eq!(b.matched(), b"");
    }

    #[test]
    fn bad_targets() {
        assert_eq!(norm(""), Err(BadPath::NotAbsolute));
        assert_eq!(norm("*"), Err(BadPath::NotAbsolute));
        assert_eq!(norm("/a%zz"), Err(BadPath::BadEscape));
        assert_eq!(norm("/a%4"), Err(BadPath::BadEscape));
        assert_eq!(norm("/a%"), Err(BadPath::BadEscape));
        assert_eq!(norm("/a b"), Err(BadPath::ControlCharacter));
        assert_eq!(norm("/a?b\tc"), Err(BadPath::ControlCharacter));
    }

    #[test]
    fn non_utf8_and_escapes_come_out_ascii() {
        let mut b = PathBuffers::default();
        let p = normalize(b"/\xff\xfe%FF\x80", &mut b).unwrap();
        assert_eq!(p, b"/%FF%FE%FF%80");
        let p = normalize(b"/%22%3C%3E%5C%5E%60%7C%20%7F%01", &mut b).unwrap();
        assert_eq!(p, b"/%22%3C%3E%5C%5E%60%7C%20%7F%01");
        // '[' and ']' survive: NGINX does not escape them.
        let p = normalize(b"/a%5Bb%5D", &mut b).unwrap();
        assert_eq!(p, b"/a[b]");
    }
}
