//! Request arguments as APIcast sees them, read straight from the raw bytes without allocating.
//!
//! Two different readers exist in APIcast, and both are reproduced:
//! - credentials use NGINX's `$arg_<name>`: case-insensitive name, first occurrence that has a
//!   `=`, value **raw** (not percent-decoded) up to the next `&` ([`raw_arg`]);
//! - mapping-rule query conditions and body credentials use lua-nginx-module's arg tables:
//!   names and values percent-decoded (`+` is a space, an invalid `%` escape stays as it is),
//!   a bare `name` is the flag `true`, empty names are skipped and only the first
//!   [`MAX_ARGS`] `&`-separated pieces are parsed, empty ones included ([`FormArgs`]).

use crate::percent::hex_value;

/// lua-nginx-module parses at most this many arguments (`get_uri_args`/`get_post_args` default).
pub const MAX_ARGS: usize = 100;

/// NGINX `$arg_<name>`: the raw value of the first `name=` at the start of the query or right
/// after a `&`, compared case-insensitively. (NGINX searches the whole query for the name and
/// keeps only hits at those places, which is the same as looking at each `&` piece.)
pub fn raw_arg<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    if name.is_empty() {
        return None;
    }
    query.split(|&b| b == b'&').find_map(|piece| {
        let (head, tail) = piece.split_at_checked(name.len())?;
        let value = tail.strip_prefix(b"=")?;
        head.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// One argument's value in a lua-nginx-module arg table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgValue<'a> {
    /// `?name` with no `=`: Lua `true`.
    Flag,
    /// The still-encoded value; compare with [`decoded_eq`] or decode with [`decode_into`].
    Raw(&'a [u8]),
}

/// Iterates `(raw name, value)` over an urlencoded string the way lua-nginx-module builds its
/// arg table (`ngx_http_lua_parse_args`): pieces split on `&`, the name ends at the first `=`,
/// pieces with an empty name are skipped, and parsing stops after the [`MAX_ARGS`]th `&`, so
/// every piece counts toward the limit, empty ones (`&&`) included. The last piece, with no
/// `&` after it, is parsed when that limit was not reached.
#[derive(Debug, Clone)]
pub struct FormArgs<'a> {
    rest: &'a [u8],
    pieces: usize,
    done: bool,
}

impl<'a> FormArgs<'a> {
    pub fn new(encoded: &'a [u8]) -> Self {
        Self {
            rest: encoded,
            pieces: 0,
            done: encoded.is_empty(),
        }
    }
}

impl<'a> Iterator for FormArgs<'a> {
    type Item = (&'a [u8], ArgValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let piece = match self.rest.iter().position(|&b| b == b'&') {
                Some(i) => {
                    let piece = self.rest.get(..i).unwrap_or_default();
                    self.rest = self.rest.get(i + 1..).unwrap_or_default();
                    self.pieces += 1;
                    // lua-nginx-module stops right after the piece its limit counts.
                    self.done = self.pieces >= MAX_ARGS || self.rest.is_empty();
                    piece
                }
                None => {
                    self.done = true;
                    self.rest
                }
            };
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(i) => (
                    piece.get(..i).unwrap_or_default(),
                    ArgValue::Raw(piece.get(i + 1..).unwrap_or_default()),
                ),
                None => (piece, ArgValue::Flag),
            };
            // Decoding never turns a non-empty name into an empty one.
            if name.is_empty() {
                continue;
            }
            return Some((name, value));
        }
        None
    }
}

/// The value the arg table holds for `name` when a repeated argument is read as APIcast's
/// mapping rules read it: the **last** occurrence.
pub fn last_arg<'a>(encoded: &'a [u8], name: &[u8]) -> Option<ArgValue<'a>> {
    FormArgs::new(encoded)
        .filter(|(raw_name, _)| decoded_eq(raw_name, name))
        .last()
        .map(|(_, v)| v)
}

/// The first occurrence of `name` in the arg table (how credentials read a repeated body arg).
pub fn first_arg<'a>(encoded: &'a [u8], name: &[u8]) -> Option<ArgValue<'a>> {
    FormArgs::new(encoded)
        .find(|(raw_name, _)| decoded_eq(raw_name, name))
        .map(|(_, v)| v)
}

/// Decodes one urlencoded component byte by byte: `+` is a space, `%XX` a byte, and a `%` not
/// followed by two hex digits is kept as it is.
pub struct Decoded<'a> {
    rest: &'a [u8],
}

impl<'a> Decoded<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        Self { rest: raw }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, tail) = self.rest.split_first()?;
        match first {
            b'+' => {
                self.rest = tail;
                Some(b' ')
            }
            b'%' => {
                if let [h, l, after @ ..] = tail {
                    if let (Some(h), Some(l)) = (hex_value(*h), hex_value(*l)) {
                        self.rest = after;
                        return Some(h << 4 | l);
                    }
                }
                self.rest = tail;
                Some(b'%')
            }
            other => {
                self.rest = tail;
                Some(other)
            }
        }
    }
}

/// Whether `raw` decodes to exactly `expected`, without allocating.
pub fn decoded_eq(raw: &[u8], expected: &[u8]) -> bool {
    // A decoded component is never longer than its encoding.
    if expected.len() > raw.len() {
        return false;
    }
    let mut decoded = Decoded::new(raw);
    for &e in expected {
        if decoded.next() != Some(e) {
            return false;
        }
    }
    decoded.next().is_none()
}

pub fn decode_into(raw: &[u8], out: &mut Vec<u8>) {
    out.extend(Decoded::new(raw));
}

pub fn decode(raw: &[u8]) -> Vec<u8> {
    Decoded::new(raw).collect()
}

/// The arguments mapping rules see: the URI query, and the urlencoded body when APIcast would
/// read it. A body argument wins over a URI argument of the same name.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestArgs<'a> {
    pub query: &'a [u8],
    pub body: Option<&'a [u8]>,
}

impl<'a> RequestArgs<'a> {
    pub fn get(&self, name: &[u8]) -> Option<ArgValue<'a>> {
        if let Some(body) = self.body {
            if let Some(v) = last_arg(body, name) {
                return Some(v);
            }
        }
        last_arg(self.query, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn raw_arg_follows_nginx_arg_lookup() {
        assert_eq!(raw_arg(b"user_key=k1", b"user_key"), Some(&b"k1"[..]));
        // case-insensitive name
        assert_eq!(raw_arg(b"USER_KEY=k1", b"user_key"), Some(&b"k1"[..]));
        // first occurrence wins
        assert_eq!(
            raw_arg(b"user_key=k1&user_key=k2", b"user_key"),
            Some(&b"k1"[..])
        );
        // first occurrence *with* '=' wins
        assert_eq!(
            raw_arg(b"user_key&user_key=k2", b"user_key"),
            Some(&b"k2"[..])
        );
        // must start the query or follow '&'
        assert_eq!(raw_arg(b"a=user_key=k", b"user_key"), None);
        assert_eq!(
            raw_arg(b"xuser_key=1&user_key=2", b"user_key"),
            Some(&b"2"[..])
        );
        // empty value is present
        assert_eq!(raw_arg(b"user_key=", b"user_key"), Some(&b""[..]));
        assert_eq!(raw_arg(b"user_key", b"user_key"), None);
        // raw: not decoded
        assert_eq!(
            raw_arg(b"user_key=a%2Bb+c%26d&x=1", b"user_key"),
            Some(&b"a%2Bb+c%26d"[..])
        );
        assert_eq!(raw_arg(b"", b"user_key"), None);
        assert_eq!(raw_arg(b"user_key=1", b""), None);
    }

    #[test]
    fn decoding_keeps_invalid_escapes() {
        assert_eq!(decode(b"a+b%20c"), b"a b c");
        assert_eq!(decode(b"%zz%4"), b"%zz%4");
        assert_eq!(decode(b"%"), b"%");
        assert_eq!(decode(b"caf%c3%A9"), "café".as_bytes());
        assert!(decoded_eq(b"a%2520b", b"a%20b"));
        assert!(!decoded_eq(b"a%20b", b"a%20b"));
        assert!(decoded_eq(b"", b""));
        assert!(!decoded_eq(b"ab", b"a"));
    }

    #[test]
    fn form_args_match_lua_tables() {
        let args: Vec<_> = FormArgs::new(b"a=1&&=x&b&c=&a=2").collect();
        assert_eq!(
            args,
            vec![
                (&b"a"[..], ArgValue::Raw(b"1")),
                (&b"b"[..], ArgValue::Flag),
                (&b"c"[..], ArgValue::Raw(b"")),
                (&b"a"[..], ArgValue::Raw(b"2")),
            ]
        );
        assert_eq!(
            last_arg(b"speed=3x&x=1&speed=2x", b"speed"),
            Some(ArgValue::Raw(b"2x"))
        );
        assert_eq!(
            first_arg(b"speed=3x&x=1&speed=2x", b"speed"),
            Some(ArgValue::Raw(b"3x"))
        );
        // names are decoded before comparing
        assert_eq!(last_arg(b"a%5Fb=1", b"a_b"), Some(ArgValue::Raw(b"1")));
    }

    #[test]
    fn empty_pieces_count_toward_the_limit() {
        // ngx_http_lua_parse_args counts every '&', even between empty pieces.
        let q = format!("{}late=1", "&".repeat(MAX_ARGS));
        assert_eq!(last_arg(q.as_bytes(), b"late"), None);
        let q = format!("{}late=1", "&".repeat(MAX_ARGS - 1));
        assert_eq!(last_arg(q.as_bytes(), b"late"), Some(ArgValue::Raw(b"1")));
        let q = format!("{}late=1", "=x&".repeat(MAX_ARGS));
        assert_eq!(last_arg(q.as_bytes(), b"late"), None);
        // The 100th piece itself is still parsed.
        let q = format!("{}late=1&after=1", "&".repeat(MAX_ARGS - 1));
        assert_eq!(last_arg(q.as_bytes(), b"late"), Some(ArgValue::Raw(b"1")));
        assert_eq!(last_arg(q.as_bytes(), b"after"), None);
        // A trailing '&' ends the string: nothing after it.
        assert_eq!(FormArgs::new(b"a=1&").count(), 1);
    }

    #[test]
    fn only_the_first_hundred_args_count() {
        let mut q = Vec::new();
        for i in 0..MAX_ARGS {
            q.extend_from_slice(format!("p{i}=1&").as_bytes());
        }
        q.extend_from_slice(b"late=1");
        assert_eq!(last_arg(&q, b"p99"), Some(ArgValue::Raw(b"1")));
        assert_eq!(last_arg(&q, b"late"), None);
    }

    #[test]
    fn body_args_win_over_uri_args() {
        let args = RequestArgs {
            query: b"a_param=val3&another_param=val2",
            body: Some(b"a_param=val1"),
        };
        assert_eq!(args.get(b"a_param"), Some(ArgValue::Raw(b"val1")));
        assert_eq!(args.get(b"another_param"), Some(ArgValue::Raw(b"val2")));
        assert_eq!(args.get(b"missing"), None);
    }
}
