//! Typed fields out of the JSON objects of a 3scale document, read the way APIcast's Lua reads
//! them.

use serde_json::{Map, Value};

use crate::diagnostics::{join, Diagnostics};

use super::suggest::Fields;

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why a field APIcast compares with `==` takes only strings.
pub(super) const COMPARED: &str =
    " (APIcast compares this field with text, which nothing else ever equals)";

/// Numbers Lua prints as their integer digits (it prints with `%.14g`): beyond this it switches
/// to an exponent (`1e+14`), which no provider means as an id or a name.
const LUA_INTEGER_TEXT_LIMIT: f64 = 1e14;

/// The integer a JSON number stands for, if it has no fraction (`2` and `2.0` alike: cjson
/// gives Lua the same number for both).
fn integral(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// What Lua's `tonumber` makes of a string, when it is an integer: surrounding whitespace is
/// allowed, and so are a sign, a decimal fraction of zeros or an exponent (`"404"`, `" 404 "`,
/// `"4.04e2"`) and hexadecimal (`"0x194"`).
fn lua_tonumber_integer(s: &str) -> Option<i64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let hex = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"));
    let magnitude = match hex {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            i64::from_str_radix(h, 16).ok()?
        }
        Some(_) => return None,
        // Rust's float syntax is Lua's, but for `inf`/`nan`, which Lua does not read.
        None if !digits.is_empty()
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && digits.bytes().any(|b| b.is_ascii_digit()) =>
        {
            let f: f64 = digits.parse().ok()?;
            if f.fract() != 0.0 || f.abs() >= 9.0e15 {
                return None;
            }
            f as i64
        }
        None => return None,
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Reads typed fields out of a JSON object of a 3scale document, reporting every value it
/// refuses at its path, and warning about field names that look like typos of the fields it
/// reads ([`Fields`]).
///
/// # The one rule for values
///
/// A value is accepted when APIcast's Lua, reading that field the way it does, gets what the
/// value says; tollgate then reads it the same way. Everything else is refused, with its path.
/// By how APIcast uses a field, that makes five kinds:
///
/// | kind | APIcast | accepted | refused |
/// |---|---|---|---|
/// | [text](Self::text) | passes it to `tostring`, `string.lower`, `..`, `ngx.print` or a header | a string; an integer number (`42`, `42.0`), as its digits | booleans (`lower` fails on them, `tostring` makes them `"true"`), arrays, objects, fractions and numbers of 10^14 or more (Lua prints those as `1e+14`) |
/// | [compared](Self::compared) | compares it with `==` to a string it knows | a string | anything else: it never equals (`http_method: 1` never matches a request) |
/// | [integer](Self::integer) | reads it through `tonumber` (error statuses) | an integer number, or a string `tonumber` reads as one (`"404"`, `" 404"`, `"0x194"`) | fractions, other strings, other types |
/// | [count](Self::count) | does arithmetic and comparisons with it (`delta`) | an integer number | strings: Lua compares `"1" <= 0` and fails, so the request is never authorized |
/// | [flag](Self::flag) | tests it for truth (`if rule.last`) | any value: only `false` is false, so `"false"`, `0` and `""` are **true** (with a warning when it is not a boolean) | nothing |
///
/// One tolerance goes beyond Lua: JSON `null` is read as an absent field everywhere (cjson gives
/// Lua a `null` that counts as true and that most of APIcast fails on; Porta writes `null` for
/// "not set").
pub(super) struct Reader<'a, 'd> {
    obj: &'a Map<String, Value>,
    path: String,
    fields: &'static Fields,
    pub(super) diags: &'d mut Diagnostics,
    /// A value was refused.
    pub(super) failed: bool,
}

impl<'a, 'd> Reader<'a, 'd> {
    /// A reader over `obj` at `path`; warns at once about field names close to those in
    /// `fields.read`.
    pub(super) fn new(
        obj: &'a Map<String, Value>,
        path: String,
        fields: &'static Fields,
        diags: &'d mut Diagnostics,
    ) -> Self {
        for key in obj.keys() {
            if let Some(known) = fields.suggestion(key) {
                diags.warning(
                    join(&path, key),
                    format!(
                        "unknown field '{key}': did you mean '{known}'? (tollgate ignores \
                         fields it does not know, so this one has no effect)"
                    ),
                );
            }
        }
        Self {
            obj,
            path,
            fields,
            diags,
            failed: false,
        }
    }

    pub(super) fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, `None` when missing or null.
    pub(super) fn value(&self, key: &str) -> Option<&'a Value> {
        debug_assert!(
            self.fields.read.contains(&key),
            "'{key}' is read but not listed as read at {}",
            self.path
        );
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        let at = self.at(key);
        self.diags.error(at, message);
        self.failed = true;
    }

    pub(super) fn warning(&mut self, key: &str, message: impl Into<String>) {
        let at = self.at(key);
        self.diags.warning(at, message);
    }

    /// Reports a refused value without quoting it (values may be secrets).
    fn refuse(&mut self, key: &str, expected: &str, found: &Value, why: &str) {
        self.error(
            key,
            format!("expected {expected}, found {}{why}", kind_of(found)),
        );
    }

    /// A text field: a string, or an integer number as its digits (see the rule above).
    pub(super) fn text(&mut self, key: &str) -> Option<String> {
        let v = self.value(key)?;
        let text = lua_text(v);
        if text.is_none() {
            let why = match v {
                Value::Number(_) => {
                    " that Lua would not print as its digits (write it as a string)"
                }
                _ => "",
            };
            self.refuse(key, "a string", v, why);
        }
        text
    }

    /// A field APIcast compares with strings: only a string can ever equal one.
    pub(super) fn compared(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.refuse(key, "a string", other, COMPARED);
                None
            }
        }
    }

    /// An integer through Lua's `tonumber`: a number without a fraction, or a string of one.
    pub(super) fn integer(&mut self, key: &str) -> Option<i64> {
        let v = self.value(key)?;
        let parsed = match v {
            Value::Number(n) => integral(n),
            Value::String(s) => lua_tonumber_integer(s),
            _ => None,
        };
        if parsed.is_none() {
            let at = self.at(key);
            match v {
                Value::String(s) => self.diags.error_quoting(
                    at,
                    format!("expected an integer, found \"{s}\""),
                    "expected an integer, found \"…\"".into(),
                ),
                Value::Number(n) => self.diags.error_quoting(
                    at,
                    format!("expected an integer, found {n}"),
                    "expected an integer, found a number".into(),
                ),
                other => self
                    .diags
                    .error(at, format!("expected an integer, found {}", kind_of(other))),
            }
            self.failed = true;
        }
        parsed
    }

    /// A count APIcast does arithmetic with: an integer number, never a string.
    pub(super) fn count(&mut self, key: &str) -> Option<i64> {
        let v = self.value(key)?;
        match v {
            Value::Number(n) => match integral(n) {
                Some(i) => Some(i),
                None => {
                    let at = self.at(key);
                    self.diags.error_quoting(
                        at,
                        format!("expected an integer, found {n}"),
                        "expected an integer, found a number".into(),
                    );
                    self.failed = true;
                    None
                }
            },
            Value::String(s) => {
                const WHY: &str = "APIcast fails counting usage with a string, and the request \
                                   is never authorized: write the number without quotes";
                let at = self.at(key);
                self.diags.error_quoting(
                    at,
                    format!("expected a number, found \"{s}\" ({WHY})"),
                    format!("expected a number, found \"…\" ({WHY})"),
                );
                self.failed = true;
                None
            }
            other => {
                self.refuse(key, "a number", other, "");
                None
            }
        }
    }

    /// A flag APIcast tests for truth: `false` is false, any other value true.
    pub(super) fn flag(&mut self, key: &str) -> Option<bool> {
        match self.value(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                let shown = match other {
                    Value::String(s) if s.len() <= 8 => format!("\"{s}\""),
                    other => kind_of(other).to_owned(),
                };
                self.warning(
                    key,
                    format!(
                        "{shown} is not true or false; APIcast treats every value but false \
                         as true, and so does tollgate"
                    ),
                );
                Some(true)
            }
        }
    }

    pub(super) fn object(&mut self, key: &str) -> Option<&'a Map<String, Value>> {
        match self.value(key)? {
            Value::Object(o) => Some(o),
            other => {
                self.refuse(key, "an object", other, "");
                None
            }
        }
    }

    pub(super) fn array(&mut self, key: &str) -> Option<&'a Vec<Value>> {
        match self.value(key)? {
            Value::Array(a) => Some(a),
            other => {
                self.refuse(key, "an array", other, "");
                None
            }
        }
    }
}

/// A value by the text rule ([`Reader::text`]): a string, or an integer number as its digits.
pub(super) fn lua_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => integral(n)
            .filter(|&i| (i as f64).abs() < LUA_INTEGER_TEXT_LIMIT)
            .map(|i| i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::lua_tonumber_integer;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn tonumber_reads_what_lua_reads() {
        for (s, n) in [
            ("404", Some(404)),
            (" 404\n", Some(404)),
            ("+404", Some(404)),
            ("-1", Some(-1)),
            ("404.0", Some(404)),
            ("4.04e2", Some(404)),
            ("0x194", Some(404)),
            ("0X194", Some(404)),
            ("404.5", None),
            ("", None),
            ("0x", None),
            ("inf", None),
            ("nan", None),
            ("4 04", None),
            ("four", None),
            ("1e400", None),
        ] {
            assert_eq!(lua_tonumber_integer(s), n, "{s:?}");
        }
    }
}
