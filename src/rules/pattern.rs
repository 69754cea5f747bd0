//! A 3scale mapping-rule pattern, read as APIcast's `regexpify` reads it (reference §1.2):
//! 1. runs of `/` become one `/`;
//! 2. everything from the first `?` is dropped;
//! 3. each `{…}` (lazy, at least one character, no newline) becomes a placeholder: one
//!    non-empty run of `[A-Za-z0-9_\-.~%!$&'()*+,;=@:]`;
//! 4. `.` is literal; the match is anchored at the start only; a trailing `$` anchors the end.
//!
//! Every other regex metacharacter keeps its regex meaning in APIcast (`+` is a quantifier).
//! Literal bytes, placeholders, `$` at the end, and the common regex constructs (character
//! classes, `\d`-style escapes, `+` and `*` on one atom or on a group of one-byte
//! alternatives, groups of alternatives, a `|` outside any group) are expanded into trie
//! tokens; a placeholder is just one kind of class repeat. Whatever else a pattern uses (a
//! quantified group of longer alternatives, back-references, anchors in the middle…) keeps
//! APIcast's regex. A pattern nesting groups deeper than PCRE accepts is refused.

/// A set of bytes, for a repeat edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteClass([u64; 4]);

impl ByteClass {
    pub const EMPTY: ByteClass = ByteClass([0; 4]);
    pub const ALL: ByteClass = ByteClass([u64::MAX; 4]);

    /// A placeholder's bytes: `[\w\-.~%!$&'()*+,;=@:]`.
    pub const PLACEHOLDER: ByteClass = ByteClass::EMPTY
        .with_range(b'a', b'z')
        .with_range(b'A', b'Z')
        .with_range(b'0', b'9')
        .with_all(b"_-.~%!$&'()*+,;=@:");

    pub const fn with(self, b: u8) -> Self {
        let mut words = self.0;
        let (word, bit) = ((b >> 6) as usize, b & 63);
        // `word` is 0..=3 for any u8; the match keeps the indexing provably in bounds.
        match word {
            0 => words[0] |= 1 << bit,
            1 => words[1] |= 1 << bit,
            2 => words[2] |= 1 << bit,
            _ => words[3] |= 1 << bit,
        }
        ByteClass(words)
    }

    pub const fn with_range(self, lo: u8, hi: u8) -> Self {
        let mut class = self;
        let mut b = lo as u16;
        while b <= hi as u16 {
            class = class.with(b as u8);
            b += 1;
        }
        class
    }

    pub const fn with_all(self, bytes: &[u8]) -> Self {
        let mut class = self;
        let mut rest = bytes;
        while let [b, tail @ ..] = rest {
            class = class.with(*b);
            rest = tail;
        }
        class
    }

    pub fn contains(&self, b: u8) -> bool {
        let [w0, w1, w2, w3] = self.0;
        let word = match b >> 6 {
            0 => w0,
            1 => w1,
            2 => w2,
            _ => w3,
        };
        word >> (b & 63) & 1 == 1
    }

    pub fn union(self, other: Self) -> Self {
        let [a0, a1, a2, a3] = self.0;
        let [b0, b1, b2, b3] = other.0;
        ByteClass([a0 | b0, a1 | b1, a2 | b2, a3 | b3])
    }

    pub fn complement(self) -> Self {
        let [a0, a1, a2, a3] = self.0;
        ByteClass([!a0, !a1, !a2, !a3])
    }

    /// Whether every byte of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & !b == 0)
    }

    /// How many bytes the class holds.
    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The bytes in the class, if there are at most `limit`.
    pub(super) fn members(&self, limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for b in 0..=255u8 {
            if self.contains(b) {
                if out.len() == limit {
                    return None;
                }
                out.push(b);
            }
        }
        Some(out)
    }
}

/// One step of a trie-expressible pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Token {
    Byte(u8),
    /// Exactly one byte of the class (`[0-9]`, `\d`).
    Class(ByteClass),
    /// One or more bytes of the class (a placeholder is `Repeat(ByteClass::PLACEHOLDER)`).
    Repeat(ByteClass),
    /// `$`: the path must end here.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternKind {
    /// One or more token sequences (regex alternatives expand into several); the pattern
    /// matches when any of them does. [`Token::End`] only ever comes last.
    Trie(Vec<Vec<Token>>),
    /// What the trie cannot express: the anchored regex APIcast would build, in `regex-lite`
    /// syntax.
    Regex(String),
    /// Not accepted at all (the reason): the configuration is refused.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub kind: PatternKind,
    /// Something the provider should know about the pattern's shape (it is empty, it needs a
    /// regex engine, a `|` lets it match anywhere); what can never match is [`super::lint`]'s.
    pub note: Option<String>,
}

/// The placeholder's character class, as APIcast writes it (after the `.` escape).
pub const PLACEHOLDER_REGEX: &str = r"([\w\-\.~%!$&'()*+,;=@:]+)";

/// At most this many token sequences per pattern; beyond, the regex is kept.
const MAX_VARIANTS: usize = 16;
/// A bare character class (no `+` or `*`) is expanded into one sequence per byte (literal
/// trie edges) up to this, and is one class edge beyond.
const MAX_CLASS_EXPANSION: usize = 8;
/// Groups nested deeper than this are refused: PCRE (APIcast's regex engine) refuses them too,
/// and analysis recurses once per level.
pub const MAX_GROUP_NESTING: usize = 250;
/// The nesting `regex-lite` accepts: it counts a group and its quantifier as one level each.
pub const REGEX_NEST_LIMIT: u32 = 2 * MAX_GROUP_NESTING as u32 + 20;

/// Characters that are regex syntax in PCRE outside a class (after APIcast's own rewriting:
/// `.` is escaped, `?` cannot remain and a leftover `{`/`}` is literal).
fn is_regex_syntax(b: u8) -> bool {
    matches!(
        b,
        b'\\' | b'^' | b'$' | b'|' | b'*' | b'+' | b'(' | b')' | b'[' | b']'
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece {
    Byte(u8),
    Placeholder,
}

/// Steps 1–3 of `regexpify`: merge slashes, cut the query, find placeholders.
pub(super) fn pieces(pattern: &str) -> Vec<Piece> {
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
    let nesting = group_nesting(&pieces);
    if nesting > MAX_GROUP_NESTING {
        return Analysis {
            kind: PatternKind::Refused(format!(
                "nests groups {nesting} deep; the limit is {MAX_GROUP_NESTING} (as in PCRE, \
                 APIcast's regex engine)"
            )),
            note: None,
        };
    }
    let syntax = pieces.iter().find_map(|p| match *p {
        Piece::Byte(b) if is_regex_syntax(b) && b != b'$' => Some(b),
        _ => None,
    });
    // A `$` anywhere but at the end is regex syntax too.
    let trailing_dollars = pieces
        .iter()
        .rev()
        .take_while(|p| **p == Piece::Byte(b'$'))
        .count();
    let inner_dollar = pieces
        .iter()
        .take(pieces.len() - trailing_dollars)
        .any(|p| *p == Piece::Byte(b'$'));
    let syntax = syntax.or(inner_dollar.then_some(b'$'));

    let Some(variants) = Expander::new(&pieces).expand() else {
        let note = format!(
            "uses regular-expression syntax ('{}') that tollgate evaluates with a regex engine, \
             as APIcast does; such rules cost more per request than the others",
            char::from(syntax.unwrap_or(b'\\'))
        );
        return Analysis {
            kind: PatternKind::Regex(regex_source(&pieces)),
            note: Some(note),
        };
    };
    let note = if syntax.is_some() && has_top_level_bar(&pieces) {
        Some(
            "has a '|' outside any group: APIcast anchors only the first alternative at the \
             start of the path, so the others match anywhere in it; tollgate matches it the \
             same way"
                .to_owned(),
        )
    } else {
        structural_note(variants.first().map(Vec::as_slice).unwrap_or_default())
    };
    Analysis {
        kind: PatternKind::Trie(variants),
        note,
    }
}

/// A note for an empty pattern (what can never match is [`super::lint`]'s business).
fn structural_note(tokens: &[Token]) -> Option<String> {
    tokens
        .is_empty()
        .then(|| "is empty, so it matches every path".to_owned())
}

type Variants = Vec<Vec<Token>>;

/// How PCRE reads a piece, given what comes before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    /// Outside any bracket expression, not escaped: regex syntax keeps its meaning (a `\`
    /// here escapes the next piece; a `[` opens a bracket expression).
    Outside,
    /// Right after an unescaped `\` outside a bracket expression.
    Escaped,
    /// Inside a bracket expression, its closing `]` included.
    InClass,
}

/// The [`Context`] of each piece, from a left-to-right scan as PCRE reads the pattern (a `]`
/// right after `[` or `[^` is a member, not the end).
pub(super) fn contexts(pieces: &[Piece]) -> Vec<Context> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut escaped = false;
    // Inside a bracket expression: how many of its members were read (0 right after `[`).
    let mut class: Option<usize> = None;
    for piece in pieces {
        if let Some(n) = class {
            out.push(Context::InClass);
            match *piece {
                _ if escaped => escaped = false,
                Piece::Byte(b'\\') => escaped = true,
                Piece::Byte(b'^') if n == 0 => continue,
                Piece::Byte(b']') if n > 0 => {
                    class = None;
                    continue;
                }
                _ => {}
            }
            class = Some(n + 1);
            continue;
        }
        if escaped {
            escaped = false;
            out.push(Context::Escaped);
            continue;
        }
        out.push(Context::Outside);
        match *piece {
            Piece::Byte(b'\\') => escaped = true,
            Piece::Byte(b'[') => class = Some(0),
            _ => {}
        }
    }
    out
}

/// What a scan of the pieces finds about groups: the deepest nesting, and whether a `|` stands
/// outside any group.
struct Structure {
    nesting: usize,
    top_level_bar: bool,
}

fn structure(pieces: &[Piece]) -> Structure {
    let mut out = Structure {
        nesting: 0,
        top_level_bar: false,
    };
    let mut depth = 0usize;
    for (piece, context) in pieces.iter().zip(contexts(pieces)) {
        if context != Context::Outside {
            continue;
        }
        match *piece {
            Piece::Byte(b'(') => {
                depth += 1;
                out.nesting = out.nesting.max(depth);
            }
            Piece::Byte(b')') => depth = depth.saturating_sub(1),
            Piece::Byte(b'|') if depth == 0 => out.top_level_bar = true,
            _ => {}
        }
    }
    out
}

fn group_nesting(pieces: &[Piece]) -> usize {
    structure(pieces).nesting
}

fn has_top_level_bar(pieces: &[Piece]) -> bool {
    structure(pieces).top_level_bar
}

enum Atom {
    Byte(u8),
    Class(ByteClass),
    Group(Variants),
}

/// `c*`: nothing, or a run of `c`.
fn star(c: ByteClass) -> Variants {
    vec![Vec::new(), vec![Token::Repeat(c)]]
}

/// Expands the regex subset into token sequences; `None` for anything outside it.
struct Expander<'p> {
    pieces: &'p [Piece],
    pos: usize,
}

impl<'p> Expander<'p> {
    fn new(pieces: &'p [Piece]) -> Self {
        Self { pieces, pos: 0 }
    }

    fn peek(&self) -> Option<Piece> {
        self.pieces.get(self.pos).copied()
    }

    fn peek_byte(&self) -> Option<u8> {
        match self.peek()? {
            Piece::Byte(b) => Some(b),
            Piece::Placeholder => None,
        }
    }

    fn bump(&mut self) -> Option<Piece> {
        let p = self.peek()?;
        self.pos += 1;
        Some(p)
    }

    fn bump_byte(&mut self) -> Option<u8> {
        match self.bump()? {
            Piece::Byte(b) => Some(b),
            Piece::Placeholder => None,
        }
    }

    /// The whole pattern: top-level alternatives. APIcast's `^` anchors only the first; the
    /// others match anywhere (PCRE reads `^a|b` as `(^a)|b`), unless they start with `^`.
    /// Each may end with `$`.
    fn expand(mut self) -> Option<Variants> {
        let mut all: Variants = Vec::new();
        let mut first = true;
        loop {
            let anchored = first || self.peek_byte() == Some(b'^');
            while self.peek_byte() == Some(b'^') {
                self.pos += 1;
            }
            let mut alternative = self.sequence(0)?;
            if self.peek_byte() == Some(b'$') {
                while self.peek_byte() == Some(b'$') {
                    self.pos += 1;
                }
                for v in &mut alternative {
                    v.push(Token::End);
                }
            }
            if !anchored {
                alternative = cross(star(ByteClass::ALL), alternative)?;
            }
            all.extend(alternative);
            if all.len() > MAX_VARIANTS {
                return None;
            }
            match self.bump() {
                None => break,
                Some(Piece::Byte(b'|')) => first = false,
                // An unbalanced ')', or a '$' with something after it.
                Some(_) => return None,
            }
        }
        Some(dedup(all))
    }

    /// Items up to a `|`, a `)`, a `$` or the end (the caller deals with those).
    fn sequence(&mut self, depth: usize) -> Option<Variants> {
        let mut acc: Variants = vec![Vec::new()];
        loop {
            match self.peek() {
                None | Some(Piece::Byte(b'|' | b')')) => return Some(acc),
                // Only at the end of a top-level alternative.
                Some(Piece::Byte(b'$')) if depth == 0 => return Some(acc),
                Some(_) => {
                    let item = self.item(depth)?;
                    acc = cross(acc, item)?;
                }
            }
        }
    }

    fn item(&mut self, depth: usize) -> Option<Variants> {
        let atom = self.atom(depth)?;
        let quantifier = match self.peek_byte() {
            Some(q @ (b'+' | b'*')) => {
                self.pos += 1;
                // `a++`, `a*+`: possessive or invalid in PCRE.
                if matches!(self.peek_byte(), Some(b'+' | b'*')) {
                    return None;
                }
                Some(q)
            }
            _ => None,
        };
        let Some(quantifier) = quantifier else {
            return Some(match atom {
                Atom::Byte(b) => vec![vec![Token::Byte(b)]],
                Atom::Class(c) => match c.members(MAX_CLASS_EXPANSION) {
                    Some(bytes) => bytes.into_iter().map(|b| vec![Token::Byte(b)]).collect(),
                    None => vec![vec![Token::Class(c)]],
                },
                Atom::Group(g) => g,
            });
        };
        // A repeated atom is a run of one class; a repeated group is too when each of its
        // alternatives is one byte or one run (`(a|[0-9]|b+)+` is `[ab0-9]+`), or nothing
        // (then `+` allows nothing as well).
        let (class, optional) = match atom {
            Atom::Byte(b) => (ByteClass::EMPTY.with(b), false),
            Atom::Class(c) => (c, false),
            Atom::Group(g) => {
                let mut class = ByteClass::EMPTY;
                let mut optional = false;
                for alternative in &g {
                    match alternative.as_slice() {
                        [] => optional = true,
                        [Token::Byte(b)] => class = class.with(*b),
                        [Token::Class(c) | Token::Repeat(c)] => class = class.union(*c),
                        _ => return None,
                    }
                }
                (class, optional)
            }
        };
        if class.is_empty() {
            // `()+`: matches nothing, any number of times.
            return Some(vec![Vec::new()]);
        }
        Some(if quantifier == b'*' || optional {
            star(class)
        } else {
            vec![vec![Token::Repeat(class)]]
        })
    }

    fn atom(&mut self, depth: usize) -> Option<Atom> {
        match self.bump()? {
            Piece::Placeholder => Some(Atom::Group(vec![vec![Token::Repeat(
                ByteClass::PLACEHOLDER,
            )]])),
            Piece::Byte(b'(') => {
                // `analyze` refuses deeper patterns before expanding; this bounds the
                // recursion again for any other caller.
                if depth >= MAX_GROUP_NESTING {
                    return None;
                }
                let mut alternatives = Vec::new();
                loop {
                    alternatives.extend(self.sequence(depth + 1)?);
                    if alternatives.len() > MAX_VARIANTS {
                        return None;
                    }
                    match self.bump_byte()? {
                        b'|' => continue,
                        b')' => return Some(Atom::Group(alternatives)),
                        _ => return None,
                    }
                }
            }
            Piece::Byte(b'[') => self.class().map(Atom::Class),
            Piece::Byte(b'\\') => match self.escape()? {
                Escaped::Byte(b) => Some(Atom::Byte(b)),
                Escaped::Class(c) => Some(Atom::Class(c)),
            },
            // Anchors in the middle, quantifiers with nothing to repeat.
            Piece::Byte(b'^' | b'$' | b'+' | b'*') => None,
            Piece::Byte(b) => Some(Atom::Byte(b)),
        }
    }

    fn escape(&mut self) -> Option<Escaped> {
        let b = self.bump_byte()?;
        if b == b'.' {
            // APIcast turns every '.' into '\.' after the provider's own backslashes, so
            // `\.` becomes the regex `\\.`: a backslash, then any character. Left to the regex.
            return None;
        }
        let digit = ByteClass::EMPTY.with_range(b'0', b'9');
        let word = digit
            .with_range(b'a', b'z')
            .with_range(b'A', b'Z')
            .with(b'_');
        let space = ByteClass::EMPTY.with_all(b" \t\n\x0b\x0c\r");
        Some(match b {
            b'd' => Escaped::Class(digit),
            b'D' => Escaped::Class(digit.complement()),
            b'w' => Escaped::Class(word),
            b'W' => Escaped::Class(word.complement()),
            b's' => Escaped::Class(space),
            b'S' => Escaped::Class(space.complement()),
            // Other letter and digit escapes mean something else (anchors, back-references,
            // code points): not expanded.
            b if b.is_ascii_alphanumeric() => return None,
            b => Escaped::Byte(b),
        })
    }

    /// After `[`: a bracket expression up to its `]`.
    fn class(&mut self) -> Option<ByteClass> {
        let negate = self.peek_byte() == Some(b'^');
        if negate {
            self.pos += 1;
        }
        let mut class = ByteClass::EMPTY;
        let mut first = true;
        loop {
            let b = self.bump_byte()?;
            let item = match b {
                b']' if !first => break,
                b'[' if self.peek_byte() == Some(b':') => return None,
                b'\\' => self.escape()?,
                b => Escaped::Byte(b),
            };
            first = false;
            match item {
                Escaped::Class(c) => class = class.union(c),
                Escaped::Byte(lo) => {
                    let is_range = self.peek_byte() == Some(b'-')
                        && !matches!(self.pieces.get(self.pos + 1), Some(Piece::Byte(b']')));
                    if is_range {
                        self.pos += 1;
                        let hi = match self.bump_byte()? {
                            b'\\' => match self.escape()? {
                                Escaped::Byte(h) => h,
                                Escaped::Class(_) => return None,
                            },
                            h => h,
                        };
                        if hi < lo {
                            return None;
                        }
                        class = class.union(ByteClass::EMPTY.with_range(lo, hi));
                    } else {
                        class = class.with(lo);
                    }
                }
            }
        }
        Some(if negate { class.complement() } else { class })
    }
}

enum Escaped {
    Byte(u8),
    Class(ByteClass),
}

fn cross(acc: Variants, item: Variants) -> Option<Variants> {
    let mut acc = acc;
    if let [only] = item.as_slice() {
        // The common case (a literal byte, a placeholder): extend in place.
        for v in &mut acc {
            v.extend_from_slice(only);
        }
        return Some(acc);
    }
    // `u c+` followed by `d*` with `d` within `c` is `u c+` again: keep one sequence, so
    // `(a|b)*(a|b)*…` stays two sequences however long it is.
    let star_of = match item.as_slice() {
        [empty, run] if empty.is_empty() => match run.as_slice() {
            [Token::Repeat(d)] => Some(*d),
            _ => None,
        },
        _ => None,
    };
    let mut out = Vec::with_capacity(acc.len() * item.len());
    for a in &acc {
        if let (Some(d), Some(Token::Repeat(c))) = (star_of, a.last()) {
            if d.is_subset(c) {
                out.push(a.clone());
                continue;
            }
        }
        for i in &item {
            let mut v = a.clone();
            v.extend_from_slice(i);
            out.push(v);
        }
        if out.len() > MAX_VARIANTS {
            return None;
        }
    }
    Some(dedup(out))
}

/// Drops repeated sequences, keeping the first of each (there are at most [`MAX_VARIANTS`]).
fn dedup(variants: Variants) -> Variants {
    let mut out: Variants = Vec::with_capacity(variants.len());
    for v in variants {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The literal bytes every path matching a regex pattern starts with (used to gate the regex:
/// it only runs when the path starts with them). Empty when nothing is certain, e.g. when the
/// pattern has a `|` outside any group (APIcast's `^a|b` matches `b` anywhere).
pub fn literal_prefix(pattern: &str) -> Vec<u8> {
    let pieces = pieces(pattern);
    if has_top_level_bar(&pieces) {
        return Vec::new();
    }
    let mut prefix = Vec::new();
    for piece in &pieces {
        match *piece {
            Piece::Byte(b) if !is_regex_syntax(b) => prefix.push(b),
            Piece::Byte(b'*' | b'+') => {
                // The last literal is repeated (or, with '*', optional): not certain.
                prefix.pop();
                break;
            }
            _ => break,
        }
    }
    prefix
}

/// The regex APIcast builds for a pattern (`^` + pattern with placeholders and `.` rewritten),
/// spelled for `regex-lite`. Used for the patterns the trie cannot express, and by tests and
/// benchmarks as the reference.
pub fn apicast_regex(pattern: &str) -> String {
    regex_source(&pieces(pattern))
}

/// A leftover brace is a literal in PCRE, so it is escaped for `regex-lite`.
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

    const PH: Token = Token::Repeat(ByteClass::PLACEHOLDER);

    /// The pattern's token sequences, sorted (their order does not matter).
    fn trie(s: &str) -> Vec<Vec<Token>> {
        match analyze(s).kind {
            PatternKind::Trie(mut t) => {
                t.sort();
                t
            }
            other => panic!("{s}: {other:?}"),
        }
    }

    fn plain(s: &str) -> Vec<Token> {
        let mut v = trie(s);
        assert_eq!(v.len(), 1, "{s}");
        v.remove(0)
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
    fn the_placeholder_class_is_apicasts() {
        for b in b"azAZ09_-.~%!$&'()*+,;=@:" {
            assert!(ByteClass::PLACEHOLDER.contains(*b), "{}", char::from(*b));
        }
        for b in b"/?#[] \"<>\\^`{|}" {
            assert!(!ByteClass::PLACEHOLDER.contains(*b), "{}", char::from(*b));
        }
        assert!(!ByteClass::PLACEHOLDER.contains(0x80));
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
        assert_eq!(
            plain("/foo/{wildcard}/bar"),
            [lit("/foo/"), vec![PH], lit("/bar")].concat()
        );
        assert_eq!(
            plain("/w/{id}.json"),
            [lit("/w/"), vec![PH], lit(".json")].concat()
        );
        // `{}` is not a placeholder (needs one character); `{}}` is.
        assert_eq!(plain("/a{}"), lit("/a{}"));
        assert_eq!(plain("/a{}}"), [lit("/a"), vec![PH]].concat());
        // A brace pair may span a '/' (PCRE's '.' matches it).
        assert_eq!(plain("/a{b/c}d"), [lit("/a"), vec![PH], lit("d")].concat());
        // An unclosed brace is a literal.
        assert_eq!(plain("/a{b"), lit("/a{b"));
    }

    #[test]
    fn only_a_trailing_dollar_is_the_end_anchor() {
        assert_eq!(plain("/abc$"), [lit("/abc"), vec![Token::End]].concat());
        assert_eq!(plain("/abc$$"), [lit("/abc"), vec![Token::End]].concat());
        assert_eq!(regex("/a$b"), "^/a$b");
        assert_eq!(regex("/(a$)"), "^/(a$)");
    }

    #[test]
    fn common_regex_constructs_become_trie_tokens() {
        let a = Token::Repeat(ByteClass::EMPTY.with(b'a'));
        assert_eq!(plain("/a+b"), vec![Token::Byte(b'/'), a, Token::Byte(b'b')]);
        assert_eq!(trie("/ba*"), vec![lit("/b"), [lit("/b"), vec![a]].concat()]);
        let digits = Token::Repeat(ByteClass::EMPTY.with_range(b'0', b'9'));
        assert_eq!(
            plain("/v1/[0-9]+$"),
            [lit("/v1/"), vec![digits, Token::End]].concat()
        );
        assert_eq!(plain(r"/v1/\d+"), [lit("/v1/"), vec![digits]].concat());
        assert_eq!(
            trie("/r/(daily|weekly)/x"),
            vec![lit("/r/daily/x"), lit("/r/weekly/x")]
        );
        assert_eq!(trie("/[xy]"), vec![lit("/x"), lit("/y")]);
        assert_eq!(trie("/(a|b)(c|d)").len(), 4);
        assert_eq!(plain(r"/a\+b"), lit("/a+b"));
        assert_eq!(plain("/({id})+"), [lit("/"), vec![PH]].concat());
        assert_eq!(plain("/]"), lit("/]"));
        let not_slash = Token::Repeat(ByteClass::EMPTY.with(b'/').complement());
        assert_eq!(
            plain("/[^/]+/x"),
            [lit("/"), vec![not_slash], lit("/x")].concat()
        );
        // A leading '^' is the anchor APIcast adds anyway.
        assert_eq!(plain("^/a"), lit("/a"));
    }

    #[test]
    fn what_the_trie_cannot_express_keeps_apicasts_regex() {
        assert_eq!(
            regex("/v1/(xy|z)+/{id}.json"),
            format!(r"^/v1/(xy|z)+/{PLACEHOLDER_REGEX}\.json")
        );
        assert_eq!(regex("/([0-9]+,)+[0-9]+$"), "^/([0-9]+,)+[0-9]+$");
        assert_eq!(regex(r"/abc\{d\}"), format!(r"^/abc\{PLACEHOLDER_REGEX}"));
        assert_eq!(regex(r"/a\bc"), r"^/a\bc");
        assert_eq!(regex(r"/a\.b"), r"^/a\\.b");
        assert_eq!(regex("/a$b|/c"), "^/a$b|/c");
        assert_eq!(regex("/(^a)"), "^/(^a)");
        assert_eq!(regex("/a)"), "^/a)");
        assert_eq!(regex("/(a"), "^/(a");
        assert_eq!(regex("/[a"), "^/[a");
        assert_eq!(regex("/a**"), "^/a**");
        assert_eq!(
            plain("/+x"),
            vec![
                Token::Repeat(ByteClass::EMPTY.with(b'/')),
                Token::Byte(b'x')
            ]
        );
        assert!(analyze("/a*(b|c)(d|e)(f|g)(h|i)(j|k)")
            .note
            .unwrap()
            .contains("regex engine"));
    }

    #[test]
    fn a_bar_outside_groups_anchors_only_the_first_alternative() {
        // PCRE reads APIcast's `^/a|/b` as `(^/a)|(/b)`: the second alternative anywhere.
        let anywhere = Token::Repeat(ByteClass::ALL);
        let mut want = vec![lit("/a"), lit("/b"), [vec![anywhere], lit("/b")].concat()];
        want.sort();
        assert_eq!(trie("/a|/b"), want);
        let mut want = vec![[lit("/a"), vec![Token::End]].concat(), lit("/b")];
        want.sort();
        assert_eq!(trie("/a$|^/b"), want);
        // An empty alternative matches every path.
        assert!(trie("/a|").contains(&vec![]));
        assert!(analyze("/a|/b").note.unwrap().contains("anywhere"));
    }

    #[test]
    fn repeated_classes_collapse_instead_of_multiplying() {
        let ab = ByteClass::EMPTY.with(b'a').with(b'b');
        // `(a|b)*` a hundred times is still "a run of a or b, or nothing".
        let long = format!("/{}$", "(a|b)*".repeat(100));
        let mut want = vec![
            vec![Token::Byte(b'/'), Token::End],
            vec![Token::Byte(b'/'), Token::Repeat(ab), Token::End],
        ];
        want.sort();
        assert_eq!(trie(&long), want);
        assert_eq!(plain("/(a|b)+"), vec![Token::Byte(b'/'), Token::Repeat(ab)]);
        assert_eq!(
            plain("/(a|b+)+"),
            vec![Token::Byte(b'/'), Token::Repeat(ab)]
        );
        assert_eq!(trie("/(a|)+"), trie("/a*"));
        let a = ByteClass::EMPTY.with(b'a');
        assert_eq!(plain("/a+a*"), vec![Token::Byte(b'/'), Token::Repeat(a)]);
        assert_eq!(
            plain("/[ab]+a*"),
            vec![Token::Byte(b'/'), Token::Repeat(ab)]
        );
        // Not the other way round: `a+` then `[ab]*` also matches `/ab`.
        assert_eq!(trie("/a+[ab]*").len(), 2);
    }

    #[test]
    fn wide_classes_are_one_byte_edges() {
        let digit = ByteClass::EMPTY.with_range(b'0', b'9');
        assert_eq!(
            plain("/[0-9]"),
            vec![Token::Byte(b'/'), Token::Class(digit)]
        );
        assert_eq!(
            plain(r"/[a-z]+/\d{2}"),
            vec![
                Token::Byte(b'/'),
                Token::Repeat(ByteClass::EMPTY.with_range(b'a', b'z')),
                Token::Byte(b'/'),
                Token::Class(digit),
                PH
            ]
        );
    }

    #[test]
    fn groups_nested_deeper_than_pcre_allows_are_refused() {
        let deep = |n: usize| format!("/{}a{}", "(".repeat(n), ")".repeat(n));
        assert!(matches!(
            analyze(&deep(MAX_GROUP_NESTING)).kind,
            PatternKind::Trie(_)
        ));
        match analyze(&deep(MAX_GROUP_NESTING + 1)).kind {
            PatternKind::Refused(why) => assert!(why.contains("251 deep"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Parentheses inside a class or escaped do not nest.
        let flat = format!("/[{}]{}", "(".repeat(300), r"\(".repeat(300));
        assert!(!matches!(analyze(&flat).kind, PatternKind::Refused(_)));
    }

    #[test]
    fn regex_gates_are_the_certain_literal_prefix() {
        let gate = |p: &str| String::from_utf8(literal_prefix(p)).unwrap();
        assert_eq!(gate("/v1/(x|y)/{id}"), "/v1/");
        assert_eq!(gate("/v1/groups/[0-9]+$"), "/v1/groups/");
        assert_eq!(gate("/a+b"), "/");
        assert_eq!(gate("/ab*c"), "/a");
        assert_eq!(gate("/a|/b"), "");
        assert_eq!(gate("/a(b|c)|d"), "");
        assert_eq!(gate("/a[|](x)"), "/a");
        assert_eq!(gate(r"/a\|b(c)"), "/a");
        assert_eq!(gate("/x.json(y)"), "/x.json");
        assert_eq!(gate("/{id}(x)"), "/");
    }

    #[test]
    fn notes_for_odd_patterns() {
        assert!(analyze("").note.unwrap().contains("every path"));
        assert_eq!(analyze("/foo").note, None);
        // Regex syntax matched the same way by the trie is not worth a note.
        assert_eq!(analyze("/a+").note, None);
        assert_eq!(analyze("/v1/[0-9]+$").note, None);
        // What a pattern can never match is the lints' (see `lint`).
        assert_eq!(analyze("/a b").note, None);
    }

    #[test]
    fn contexts_follow_escapes_and_bracket_expressions() {
        use Context::{Escaped, InClass, Outside};
        let of = |s: &str| contexts(&pieces(s));
        assert_eq!(
            of(r"/\.[a]]"),
            [Outside, Outside, Escaped, Outside, InClass, InClass, Outside]
        );
        // A ']' first in a class (after an optional '^') is a member.
        assert_eq!(of("[]a]b"), [Outside, InClass, InClass, InClass, Outside]);
        assert_eq!(of("[^]]|"), [Outside, InClass, InClass, InClass, Outside]);
        assert_eq!(of(r"[\]]|"), [Outside, InClass, InClass, InClass, Outside]);
    }
}
