//! A 3scale mapping-rule pattern, read as APIcast's `regexpify` reads it (reference §1.2):
//! 1. runs of `/` become one `/`;
//! 2. everything from the first `?` is dropped;
//! 3. each `{…}` (lazy, at least one character, no newline) becomes a placeholder: one
//!    non-empty run of `[A-Za-z0-9_\-.~%!$&'()*+,;=@:]`;
//! 4. `.` is literal; the match is anchored at the start only; a trailing `$` anchors the end.
//!
//! Every other regex metacharacter keeps its regex meaning in APIcast (`+` is a quantifier).
//! Patterns made only of literal bytes, placeholders and a trailing `$` go into the trie; the
//! rest keep APIcast's regex and are evaluated as one.

/// One step of a trie-expressible pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Byte(u8),
    Placeholder,
    /// `$`: the path must end here.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternKind {
    /// Literal bytes and placeholders, optionally ending in [`Token::End`].
    Plain(Vec<Token>),
    /// Uses regex syntax: the anchored regex APIcast would build, in `regex-lite` syntax.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub kind: PatternKind,
    /// Something the provider should know about this pattern (it never matches, or it is a regex).
    pub note: Option<String>,
}

/// The placeholder's character class, as APIcast writes it (after the `.` escape).
pub const PLACEHOLDER_REGEX: &str = r"([\w\-\.~%!$&'()*+,;=@:]+)";

/// Bytes a placeholder may consume.
// Evaluated at compile time: an out-of-range index fails the build, never a request.
#[allow(clippy::indexing_slicing)]
pub const fn placeholder_class() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"_-.~%!$&'()*+,;=@:";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Characters that are regex syntax in PCRE outside a class (after APIcast's own rewriting:
/// `.` is escaped, `?` cannot remain and a leftover `{`/`}` is literal).
fn is_regex_syntax(b: u8) -> bool {
    matches!(
        b,
        b'\\' | b'^' | b'$' | b'|' | b'*' | b'+' | b'(' | b')' | b'[' | b']'
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Byte(u8),
    Placeholder,
}

/// Steps 1–3 of `regexpify`: merge slashes, cut the query, find placeholders.
fn pieces(pattern: &str) -> Vec<Piece> {
    let mut bytes: Vec<u8> = Vec::with_capacity(pattern.len());
    for &b in pattern.as_bytes() {
        if b == b'?' {
            break;
        }
        if b == b'/' && bytes.last() == Some(&b'/') {
            continue;
        }
        bytes.push(b);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'{' {
            if let Some(close) = placeholder_end(&bytes, i) {
                out.push(Piece::Placeholder);
                i = close + 1;
                continue;
            }
        }
        out.push(Piece::Byte(b));
        i += 1;
    }
    out
}

/// For `{` at `open`, the index of the `}` closing `\{.+?\}`: the first `}` at least two
/// bytes on, with no newline in between (PCRE's `.` does not match one).
fn placeholder_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut k = open + 1;
    while let Some(&b) = bytes.get(k) {
        if b == b'\n' {
            return None;
        }
        if b == b'}' && k >= open + 2 {
            return Some(k);
        }
        k += 1;
    }
    None
}

/// Reads a pattern. Never fails: what APIcast could not use is reported in the note and, for
/// a regex that does not compile, by [`crate::rules`] at compile time.
pub fn analyze(pattern: &str) -> Analysis {
    let pieces = pieces(pattern);
    let mut body = pieces.as_slice();
    let mut anchored = false;
    while let [rest @ .., Piece::Byte(b'$')] = body {
        body = rest;
        anchored = true;
    }
    let syntax = body.iter().find_map(|p| match *p {
        Piece::Byte(b) if is_regex_syntax(b) => Some(b),
        _ => None,
    });
    if let Some(first) = syntax {
        let note = format!(
            "uses regular-expression syntax ('{}'), which APIcast evaluates as a regex; \
             tollgate does the same, on its slower regex path",
            char::from(first)
        );
        return Analysis {
            kind: PatternKind::Regex(regex_source(&pieces)),
            note: Some(note),
        };
    }
    let mut tokens: Vec<Token> = body
        .iter()
        .map(|p| match *p {
            Piece::Byte(b) => Token::Byte(b),
            Piece::Placeholder => Token::Placeholder,
        })
        .collect();
    if anchored {
        tokens.push(Token::End);
    }
    let unmatchable = tokens.iter().find_map(|t| match *t {
        Token::Byte(b) if !crate::path::can_appear_in_matched_path(b) => Some(b),
        _ => None,
    });
    let note = match (tokens.first(), unmatchable) {
        (None, _) => Some("is empty, so it matches every path".to_owned()),
        (Some(Token::Byte(b'/')), None) => None,
        (Some(Token::Byte(b'/')), Some(b)) => Some(format!(
            "contains {}, which the gateway always percent-escapes in the path it matches \
             (as %{b:02X}), so it never matches; write %{b:02X} instead",
            if b.is_ascii_graphic() {
                format!("'{}'", char::from(b))
            } else {
                format!("byte 0x{b:02X}")
            }
        )),
        (Some(_), _) => {
            Some("does not start with '/', so it never matches a request path".to_owned())
        }
    };
    Analysis {
        kind: PatternKind::Plain(tokens),
        note,
    }
}

/// The regex APIcast builds (`^` + pattern with placeholders and `.` rewritten), spelled for
/// `regex-lite`: a leftover brace is a literal in PCRE, so it is escaped here.
fn regex_source(pieces: &[Piece]) -> String {
    let mut re = String::from("^");
    let mut escaped = false;
    for piece in pieces {
        match *piece {
            Piece::Placeholder => {
                re.push_str(PLACEHOLDER_REGEX);
                escaped = false;
            }
            Piece::Byte(b'.') => {
                // APIcast escapes every '.', even one after a backslash.
                re.push_str(r"\.");
                escaped = false;
            }
            Piece::Byte(b @ (b'{' | b'}')) => {
                if !escaped {
                    re.push('\\');
                }
                re.push(char::from(b));
                escaped = false;
            }
            Piece::Byte(b) => {
                push_byte(&mut re, b);
                escaped = b == b'\\' && !escaped;
            }
        }
    }
    re
}

fn push_byte(re: &mut String, b: u8) {
    if b.is_ascii() {
        re.push(char::from(b));
    } else {
        // A non-ASCII byte never occurs in the escaped path; keep it as a literal byte escape.
        re.push_str(&format!(r"\x{b:02X}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn plain(s: &str) -> Vec<Token> {
        match analyze(s).kind {
            PatternKind::Plain(t) => t,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn regex(s: &str) -> String {
        match analyze(s).kind {
            PatternKind::Regex(r) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn lit(s: &str) -> Vec<Token> {
        s.bytes().map(Token::Byte).collect()
    }

    #[test]
    fn slashes_merge_and_query_is_cut() {
        assert_eq!(plain("///foo///bar///"), lit("/foo/bar/"));
        assert_eq!(plain("/foo?bar=baz"), lit("/foo"));
        assert_eq!(
            plain("/foo$?bar={x}"),
            [lit("/foo"), vec![Token::End]].concat()
        );
    }

    #[test]
    fn placeholders_are_lazy_brace_pairs() {
        let mut want = lit("/foo/");
        want.push(Token::Placeholder);
        want.extend(lit("/bar"));
        assert_eq!(plain("/foo/{wildcard}/bar"), want);
        // `{id}.json`: placeholder then literal
        let mut want = lit("/w/");
        want.push(Token::Placeholder);
        want.extend(lit(".json"));
        assert_eq!(plain("/w/{id}.json"), want);
        // `{}` is not a placeholder (needs one character); `{}}` is.
        assert_eq!(plain("/a{}"), lit("/a{}"));
        assert_eq!(
            plain("/a{}}"),
            [lit("/a"), vec![Token::Placeholder]].concat()
        );
        // A brace pair may span a '/' (PCRE's '.' matches it).
        assert_eq!(
            plain("/a{b/c}d"),
            [lit("/a"), vec![Token::Placeholder], lit("d")].concat()
        );
        // An unclosed brace is a literal.
        assert_eq!(plain("/a{b"), lit("/a{b"));
    }

    #[test]
    fn only_a_trailing_dollar_is_the_end_anchor() {
        assert_eq!(plain("/abc$"), [lit("/abc"), vec![Token::End]].concat());
        assert_eq!(plain("/abc$$"), [lit("/abc"), vec![Token::End]].concat());
        assert_eq!(regex("/a$b"), "^/a$b");
    }

    #[test]
    fn regex_syntax_keeps_apicast_regex() {
        assert_eq!(regex("/a+b"), "^/a+b");
        assert_eq!(
            regex("/v1/(x|y)/{id}.json"),
            format!(r"^/v1/(x|y)/{PLACEHOLDER_REGEX}\.json")
        );
        assert_eq!(regex(r"/abc\{d\}"), format!(r"^/abc\{PLACEHOLDER_REGEX}"));
        assert!(analyze("/a*").note.unwrap().contains("'*'"));
    }

    #[test]
    fn notes_for_odd_plain_patterns() {
        assert!(analyze("/a b").note.unwrap().contains("as %20"));
        assert!(analyze("/caf\u{e9}").note.unwrap().contains("byte 0xC3"));
        assert!(analyze("/a{}").note.unwrap().contains("'{'"));
        assert_eq!(analyze("/a%20b").note, None);
        assert!(analyze("").note.unwrap().contains("every path"));
        assert!(analyze("foo").note.unwrap().contains("never matches"));
        assert_eq!(analyze("/foo").note, None);
    }
}
