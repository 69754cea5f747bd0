//! Lints over one service's mapping rules: rules that can never match a request APIcast
//! serves, or can never run, each reported as a warning at the rule's field.
//!
//! What a rule is matched against decides most of them (reference §1.3): the path NGINX
//! decoded and normalised (`.` and `..` segments resolved, slashes merged), re-escaped with
//! upper-case hex; the method as NGINX read it, which is upper-case letters, `_` and `-` only.
//! A pattern that needs anything else in a path, or a method NGINX refuses, never matches. A
//! rule after a `last: true` rule that matches all the requests it matches never runs.
//!
//! The lints never change what a rule does: tollgate matches such rules exactly as APIcast
//! does (they just never match).

use crate::config::location::{Loc, RuleField, SourcePaths};
use crate::diagnostics::Diagnostics;
use crate::path::can_appear_in_matched_path;
use crate::percent::hex_value;

use super::pattern::{
    contexts, literal_prefix, pieces, Analysis, ByteClass, Context, PatternKind, Piece, Token,
};
use super::{RuleInput, ANY_METHOD};

/// The methods NGINX's request parser knows by name.
const NGINX_METHODS: [&str; 16] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
];

/// Token comparisons the shadowing lint may spend on one service (a rule is compared with
/// every earlier `last` rule of its method); past this, later rules are not checked.
const SHADOW_WORK: usize = 1 << 22;

/// RFC 9110 `tchar`: what a method may be made of at all (the compiler refuses the rest).
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One service's lints, fed its rules in configuration order as the compiler reads them (so
/// each rule's warnings come with the compiler's own), then [`ServiceLints::finish`]ed.
#[derive(Debug)]
pub struct ServiceLints {
    service: usize,
    /// Whether each rule read so far can match some request at all (`false` for one not read).
    live: Vec<bool>,
}

impl ServiceLints {
    pub fn new(service: usize, rules: usize) -> Self {
        Self {
            service,
            live: Vec::with_capacity(rules),
        }
    }

    /// Rule `j`'s own lints (its method, its pattern) and its pattern's [`Analysis::note`],
    /// unless the pattern never matches.
    pub fn rule(
        &mut self,
        j: usize,
        method: &str,
        pattern: &str,
        analysis: &Analysis,
        paths: &dyn SourcePaths,
        diags: &mut Diagnostics,
    ) {
        let at = |field| paths.path(Loc::Rule(self.service, j, field));
        let method_problem = method_problem(method);
        if let Some(m) = &method_problem {
            diags.warning(at(RuleField::Method), m.message.clone());
        }
        let pieces = pieces(pattern);
        let context = contexts(&pieces);
        let never = never_matches(&pieces, &context, &analysis.kind);
        match &never {
            Some(why) => diags.warning(
                at(RuleField::Pattern),
                format!("pattern '{pattern}' never matches: {why}"),
            ),
            None => {
                if let Some(note) = &analysis.note {
                    diags.warning(
                        at(RuleField::Pattern),
                        format!("pattern '{pattern}' {note}"),
                    );
                }
                if let Some(dots) = literal_dot(&pieces, &context) {
                    diags.warning(
                        at(RuleField::Pattern),
                        format!("pattern '{pattern}' {dots}"),
                    );
                }
            }
        }
        if self.live.len() <= j {
            self.live.resize(j + 1, false);
        }
        if let Some(live) = self.live.get_mut(j) {
            *live = never.is_none() && !method_problem.is_some_and(|m| m.never);
        }
    }

    /// The lints over all of `rules` (those [`Self::rule`] read): the rules that never run.
    pub fn finish(self, rules: &[RuleInput], paths: &dyn SourcePaths, diags: &mut Diagnostics) {
        let at = |j: usize| paths.path(Loc::Rule(self.service, j, RuleField::Pattern));
        shadowing(rules, &self.live, |j, by| {
            let (rule, earlier) = match (rules.get(j), rules.get(by)) {
                (Some(r), Some(e)) => (r, e),
                _ => return,
            };
            diags.warning(
                at(j),
                format!(
                    "pattern '{}' never runs: the rule at {} ('{} {}', last: true) matches \
                     every request this rule matches and ends the evaluation there; move this \
                     rule above it, or set 'last' to false on that rule",
                    rule.pattern,
                    at(by),
                    earlier.method,
                    earlier.pattern
                ),
            );
        });
    }
}

struct MethodProblem {
    message: String,
    /// The rule can never match (rather than only rarely).
    never: bool,
}

fn method_problem(method: &str) -> Option<MethodProblem> {
    if method == "TRACE" || method == "CONNECT" {
        return Some(MethodProblem {
            message: format!(
                "'{method}' never matches: NGINX answers 405 to every {method} request before \
                 any rule is matched"
            ),
            never: true,
        });
    }
    if method == ANY_METHOD
        || NGINX_METHODS.contains(&method)
        || method.is_empty()
        || !method.bytes().all(is_token_char)
    {
        // Fine, or refused by the compiler.
        return None;
    }
    let upper = method.to_ascii_uppercase();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        let fix = if upper == ANY_METHOD {
            "write 'ANY' for a rule that matches every method".to_owned()
        } else {
            format!("write '{upper}'")
        };
        let request = if upper == ANY_METHOD {
            "any".to_owned()
        } else {
            format!("a {upper}")
        };
        return Some(MethodProblem {
            message: format!(
                "methods are compared case-sensitively: '{method}' never matches {request} \
                 request (NGINX refuses a method in lower case); {fix}"
            ),
            never: true,
        });
    }
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Some(MethodProblem {
            message: format!(
                "'{method}' never matches: NGINX refuses a request whose method has anything \
                 but upper-case letters, '_' and '-' (it answers 400)"
            ),
            never: true,
        });
    }
    let hint = match closest_method(method) {
        Some(m) => format!("did you mean '{m}'?"),
        None => "use one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, or ANY for every \
                 method"
            .to_owned(),
    };
    Some(MethodProblem {
        message: format!(
            "'{method}' is not an HTTP method: the rule matches only a request whose method \
             is exactly '{method}'; {hint}"
        ),
        never: false,
    })
}

/// The known method (or `ANY`) within two edits of `method`, the closest first.
fn closest_method(method: &str) -> Option<&'static str> {
    NGINX_METHODS
        .iter()
        .chain(std::iter::once(&ANY_METHOD))
        .map(|m| (crate::diagnostics::edit_distance(method, m), *m))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, m)| m)
}

/// Why no request can match `pattern`, if none can: the problem and its fix.
fn never_matches(pieces: &[Piece], context: &[Context], kind: &PatternKind) -> Option<String> {
    let at = |k: usize| pieces.get(k).copied().zip(context.get(k).copied());
    let alternatives =
        (0..pieces.len()).any(|k| matches!(at(k), Some((Piece::Byte(b'|'), Context::Outside))));
    // Read from the pieces, so regex patterns are covered too; with alternatives, another one
    // may still match.
    if !alternatives {
        for k in 0..pieces.len() {
            match at(k) {
                Some((Piece::Byte(b'$'), Context::Outside))
                    if consumes_after_dollar(pieces, context, k) =>
                {
                    return Some(
                        "'$' anchors the end of the path, so nothing can follow it; put '$' \
                         at the end of the path part (before any '?'), or remove it"
                            .to_owned(),
                    );
                }
                Some((Piece::Byte(b'\\'), Context::Outside))
                    if at(k + 1).map(|(p, _)| p) == Some(Piece::Byte(b'.')) =>
                {
                    return Some(
                        "APIcast escapes every '.' itself, so '\\.' becomes a literal \
                         backslash followed by any character, and the path the gateway \
                         matches never holds a backslash (it is escaped as %5C); write '.' \
                         without the backslash"
                            .to_owned(),
                    );
                }
                _ => {}
            }
        }
    }
    let PatternKind::Trie(variants) = kind else {
        return None;
    };
    let mut reasons = variants.iter().map(|v| impossible(v));
    let first = reasons.next()??;
    if !reasons.all(|r| r.is_some()) {
        return None;
    }
    Some(first.explain(pieces))
}

/// Whether the `$` at `k` is followed by something that must consume a character (a literal,
/// an escaped punctuation mark, a placeholder), not made optional by `*`.
fn consumes_after_dollar(pieces: &[Piece], context: &[Context], k: usize) -> bool {
    let mut next = k + 1;
    while matches!(
        (pieces.get(next), context.get(next)),
        (Some(Piece::Byte(b'$' | b')')), Some(Context::Outside))
    ) {
        next += 1;
    }
    let consumes = match (pieces.get(next), context.get(next)) {
        (Some(Piece::Placeholder), _) => true,
        (Some(Piece::Byte(b)), Some(Context::Outside)) => {
            !matches!(b, b'\\' | b'^' | b'|' | b'*' | b'+' | b'(' | b'[')
        }
        (Some(Piece::Byte(b)), Some(Context::Escaped)) => !b.is_ascii_alphanumeric(),
        _ => false,
    };
    let optional = matches!(
        (pieces.get(next + 1), context.get(next + 1)),
        (Some(Piece::Byte(b'*')), Some(Context::Outside))
    );
    consumes && !optional
}

/// Why a token sequence matches no path the gateway matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impossible {
    /// It does not start with `/`.
    NotAbsolute,
    /// A byte the gateway always escapes.
    Escaped(u8),
    /// A `.` or `..` segment.
    DotSegment(&'static str),
    /// `%XX` for a byte the gateway decodes and does not escape again.
    Decoded([u8; 3]),
    /// `%xx` with a lower-case hex digit.
    LowerHex([u8; 3]),
    /// `%` not followed by two hex digits.
    BarePercent,
    /// `%00`: NGINX refuses the request.
    Nul,
}

fn impossible(tokens: &[Token]) -> Option<Impossible> {
    let byte = |k: usize| match tokens.get(k) {
        Some(Token::Byte(b)) => Some(*b),
        _ => None,
    };
    if let Some(b) = byte(0) {
        if b != b'/' {
            return Some(Impossible::NotAbsolute);
        }
    }
    for (k, token) in tokens.iter().enumerate() {
        let Token::Byte(b) = *token else {
            continue;
        };
        if !can_appear_in_matched_path(b) {
            return Some(Impossible::Escaped(b));
        }
        if b == b'/' {
            let dots = (1..=3).take_while(|&n| byte(k + n) == Some(b'.')).count();
            let ends = |n: usize| {
                byte(k + n + 1) == Some(b'/') || tokens.get(k + n + 1) == Some(&Token::End)
            };
            if (dots == 1 || dots == 2) && ends(dots) {
                return Some(Impossible::DotSegment(if dots == 1 { "." } else { ".." }));
            }
        }
        if b == b'%' {
            match (tokens.get(k + 1), tokens.get(k + 2)) {
                (Some(Token::Byte(h)), Some(Token::Byte(l))) => {
                    let (Some(hi), Some(lo)) = (hex_value(*h), hex_value(*l)) else {
                        return Some(Impossible::BarePercent);
                    };
                    let decoded = hi << 4 | lo;
                    let text = [b'%', *h, *l];
                    if decoded == 0 {
                        return Some(Impossible::Nul);
                    }
                    if can_appear_in_matched_path(decoded) && decoded != b'%' {
                        return Some(Impossible::Decoded(text));
                    }
                    if h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                        return Some(Impossible::LowerHex(text));
                    }
                }
                (Some(Token::Byte(h)), _) if hex_value(*h).is_none() => {
                    return Some(Impossible::BarePercent)
                }
                (Some(Token::End), _) | (Some(Token::Byte(_)), Some(Token::End)) => {
                    return Some(Impossible::BarePercent)
                }
                _ => {}
            }
        }
    }
    None
}

impl Impossible {
    fn explain(self, pieces: &[Piece]) -> String {
        let text = |t: [u8; 3]| String::from_utf8_lossy(&t).into_owned();
        match self {
            Impossible::NotAbsolute => {
                "it does not start with '/', and every request path does; add the leading '/'"
                    .to_owned()
            }
            Impossible::Escaped(b @ (b'{' | b'}')) => brace(b, pieces),
            Impossible::Escaped(b) => {
                let what = if b.is_ascii_graphic() {
                    format!("'{}'", char::from(b))
                } else {
                    format!("byte 0x{b:02X}")
                };
                format!(
                    "the gateway percent-escapes {what} in the path it matches (as %{b:02X}); \
                     write %{b:02X} instead"
                )
            }
            Impossible::DotSegment(segment) => format!(
                "the gateway resolves '.' and '..' segments before matching (as NGINX does), \
                 so the path it matches has no '{segment}' segment; write the path as it \
                 reads once resolved"
            ),
            Impossible::Decoded(t) => {
                let [_, h, l] = t;
                let decoded = hex_value(h).unwrap_or(0) << 4 | hex_value(l).unwrap_or(0);
                format!(
                    "the gateway decodes '{}' before matching and does not escape '{}' again, \
                     so the path it matches never holds '{}'; write '{}' instead",
                    text(t),
                    char::from(decoded),
                    text(t),
                    char::from(decoded)
                )
            }
            Impossible::LowerHex(t) => {
                let upper = text(t).to_ascii_uppercase();
                format!(
                    "the gateway writes the escapes of the path it matches with upper-case hex \
                     digits ('{upper}'), never '{}'; write '{upper}'",
                    text(t)
                )
            }
            Impossible::BarePercent => "a '%' in the path the gateway matches always starts \
                an escape of two hex digits ('%' itself is '%25'); write '%25' for a literal '%'"
                .to_owned(),
            Impossible::Nul => {
                "a request whose path holds '%00' is refused (400) before any rule is matched"
                    .to_owned()
            }
        }
    }
}

/// A literal brace: an unclosed `{`, an empty `{}`, or a `}` that closes nothing.
fn brace(b: u8, pieces: &[Piece]) -> String {
    let position = pieces
        .iter()
        .position(|p| *p == Piece::Byte(b))
        .unwrap_or_default();
    let word = |p: &&Piece| matches!(p, Piece::Byte(c) if c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    let name: Vec<u8> = if b == b'{' {
        pieces
            .iter()
            .skip(position + 1)
            .take_while(word)
            .filter_map(|p| match p {
                Piece::Byte(c) => Some(*c),
                Piece::Placeholder => None,
            })
            .collect()
    } else {
        let mut before: Vec<u8> = pieces
            .iter()
            .take(position)
            .rev()
            .take_while(word)
            .filter_map(|p| match p {
                Piece::Byte(c) => Some(*c),
                Piece::Placeholder => None,
            })
            .collect();
        before.reverse();
        before
    };
    let name = if name.is_empty() {
        "id".to_owned()
    } else {
        String::from_utf8_lossy(&name).into_owned()
    };
    let escaped = format!("%{b:02X}");
    let problem = match b {
        b'{' if pieces.get(position + 1) == Some(&Piece::Byte(b'}')) => {
            "'{}' is not a placeholder (a placeholder has a name between its braces)".to_owned()
        }
        b'{' => "no '}' closes its '{'".to_owned(),
        _ => "its '}' closes no '{'".to_owned(),
    };
    format!(
        "{problem}, so the brace is a literal character, which the gateway escapes (as \
         {escaped}) in the path it matches; did you mean '{{{name}}}'?"
    )
}

/// A note for a pattern that repeats a `.` as if it meant any character (`/v1/.*`).
fn literal_dot(pieces: &[Piece], context: &[Context]) -> Option<String> {
    let (k, quantifier) = (0..pieces.len()).find_map(|k| {
        let outside = |k: usize| context.get(k) == Some(&Context::Outside);
        match (pieces.get(k), pieces.get(k + 1)) {
            (Some(Piece::Byte(b'.')), Some(Piece::Byte(q @ (b'*' | b'+'))))
                if outside(k) && outside(k + 1) =>
            {
                Some((k, *q))
            }
            _ => None,
        }
    })?;
    let (repeat, meaning) = if quantifier == b'*' {
        (".*", "any number of dots")
    } else {
        (".+", "one or more dots")
    };
    let rest = pieces.get(k + 2..).unwrap_or_default();
    let fix = if rest.is_empty() {
        format!("a pattern already matches every path that starts with it, so drop '{repeat}'")
    } else if rest.iter().all(|p| *p == Piece::Byte(b'$')) {
        format!("a pattern already matches every path that starts with it, so drop '{repeat}$'")
    } else {
        "write '{name}' for any one segment".to_owned()
    };
    Some(format!(
        "uses '{repeat}', but '.' is a literal dot (APIcast escapes every '.'), so '{repeat}' \
         means {meaning}, not any characters; {fix}"
    ))
}

/// Calls `report(j, k)` for each rule `j` that never runs because the earlier rule `k`, with
/// `last: true` and no query conditions, matches every request `j` matches.
fn shadowing(rules: &[RuleInput], live: &[bool], mut report: impl FnMut(usize, usize)) {
    let mut work = 0usize;
    // The earlier `last` rules that can shadow, by the literal bytes each variant starts with.
    let mut heads = Heads::default();
    for (j, rule) in rules.iter().enumerate() {
        if !live.get(j).copied().unwrap_or(false) {
            continue;
        }
        let later = match &rule.analysis.kind {
            PatternKind::Trie(variants) => Later::Variants(variants),
            PatternKind::Regex(_) => Later::Prefix(
                literal_prefix(&rule.pattern)
                    .into_iter()
                    .map(Token::Byte)
                    .collect(),
            ),
            PatternKind::Refused(_) => continue,
        };
        let candidates = heads.candidates(later.first());
        work += 1 + candidates.len();
        let by = candidates.into_iter().find(|&k| {
            let Some(shadow) = rules.get(k) else {
                return false;
            };
            let PatternKind::Trie(earlier) = &shadow.analysis.kind else {
                return false;
            };
            if shadow.method != ANY_METHOD && shadow.method != rule.method {
                return false;
            }
            work += earlier.len() * later.len();
            work <= SHADOW_WORK && later.covered_by(earlier)
        });
        if let Some(k) = by {
            report(j, k);
        }
        if work > SHADOW_WORK {
            return;
        }
        if let (true, true, PatternKind::Trie(variants)) =
            (rule.last, rule.conditions.is_empty(), &rule.analysis.kind)
        {
            for v in variants {
                heads.insert(v, j);
            }
        }
    }
}

/// The shadowing rules by the literal bytes (the head) each of their variants starts with: a
/// trie of heads. An earlier variant covers a later one only if its head is a prefix of the
/// later head, or that head plus the byte of a one-byte run right after it (`/ab` covers
/// `/ab+`); [`covers`] then decides.
#[derive(Default)]
struct Heads {
    edges: hashbrown::HashMap<(usize, u8), usize>,
    /// Per node (0 is the root), the rules whose head ends there, in configuration order.
    rules: Vec<Vec<usize>>,
}

impl Heads {
    fn insert(&mut self, tokens: &[Token], rule: usize) {
        if self.rules.is_empty() {
            self.rules.push(Vec::new());
        }
        let mut node = 0;
        for b in head(tokens) {
            let fresh = self.rules.len();
            node = *self.edges.entry((node, b)).or_insert(fresh);
            if node == fresh {
                self.rules.push(Vec::new());
            }
        }
        if let Some(here) = self.rules.get_mut(node) {
            if here.last() != Some(&rule) {
                here.push(rule);
            }
        }
    }

    /// The rules that may cover `tokens`, in configuration order.
    fn candidates(&self, tokens: &[Token]) -> Vec<usize> {
        let mut out: Vec<usize> = self.rules.first().cloned().unwrap_or_default();
        let mut node = Some(0);
        for b in head(tokens) {
            let Some(at) = node else {
                break;
            };
            node = self.edges.get(&(at, b)).copied();
            out.extend(node.and_then(|n| self.rules.get(n)).into_iter().flatten());
        }
        let run = match tokens.get(head(tokens).count()) {
            Some(Token::Repeat(c)) => c.members(1).and_then(|m| m.first().copied()),
            _ => None,
        };
        if let (Some(at), Some(b)) = (node, run) {
            let next = self.edges.get(&(at, b)).copied();
            out.extend(next.and_then(|n| self.rules.get(n)).into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The literal bytes a token sequence starts with.
fn head(tokens: &[Token]) -> impl Iterator<Item = u8> + '_ {
    tokens.iter().map_while(|t| match t {
        Token::Byte(b) => Some(*b),
        _ => None,
    })
}

/// What a later rule's pattern is known to match.
enum Later<'a> {
    /// Exactly the paths with a prefix matching one of these.
    Variants(&'a [Vec<Token>]),
    /// (A regex) only paths that start with these bytes.
    Prefix(Vec<Token>),
}

impl Later<'_> {
    /// The token sequence the candidates are looked up by (every earlier rule that covers
    /// this must cover it).
    fn first(&self) -> &[Token] {
        match self {
            Later::Variants(v) => v.first().map(Vec::as_slice).unwrap_or_default(),
            Later::Prefix(p) => p,
        }
    }

    fn len(&self) -> usize {
        match self {
            Later::Variants(v) => v.iter().map(Vec::len).sum(),
            Later::Prefix(p) => p.len(),
        }
    }

    /// Whether every path this matches has a prefix matching one of `earlier`.
    fn covered_by(&self, earlier: &[Vec<Token>]) -> bool {
        match self {
            Later::Variants(variants) => {
                !variants.is_empty()
                    && variants
                        .iter()
                        .all(|v| earlier.iter().any(|e| covers(e, v, true)))
            }
            Later::Prefix(prefix) => earlier.iter().any(|e| covers(e, prefix, false)),
        }
    }
}

/// The bytes one token may consume (one byte, or each byte of a run).
fn class_of(token: Token) -> Option<ByteClass> {
    match token {
        Token::Byte(b) => Some(ByteClass::EMPTY.with(b)),
        Token::Class(c) | Token::Repeat(c) => Some(c),
        Token::End => None,
    }
}

/// Whether every string matching `later` (all of it when `exact`, else some string starting
/// with it) has a prefix matching `earlier`, by aligning them token by token. Conservative: a
/// `false` only means no alignment was found.
fn covers(earlier: &[Token], later: &[Token], exact: bool) -> bool {
    if earlier.len() > later.len() {
        return false;
    }
    let last = earlier.len().checked_sub(1);
    earlier.iter().zip(later).enumerate().all(|(k, (&e, &l))| {
        match (e, l) {
            (Token::End, Token::End) => exact,
            (Token::End, _) | (_, Token::End) => false,
            // A run of `later` against one byte of `earlier`: only as the last token, where
            // one byte of the run is enough.
            (Token::Byte(_) | Token::Class(_), Token::Repeat(_)) if Some(k) != last => false,
            _ => match (class_of(e), class_of(l)) {
                (Some(outer), Some(inner)) => inner.is_subset(&outer),
                _ => false,
            },
        }
    })
}

#[cfg(test)]
mod tests;
