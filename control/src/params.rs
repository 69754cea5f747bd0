//! Query strings and form bodies, parsed into nested parameters the way Rack (apisonator's
//! parser) does: keys and values are `application/x-www-form-urlencoded` (`+` is a space), keys
//! are decoded before they are split into `name[a][b]` nesting, a later plain key wins over an
//! earlier one, `name[]` appends to a list.
//!
//! Bad `%` escapes are an error (apisonator: 400 `bad_request`); invalid UTF-8 is recorded in
//! [`Params::invalid_utf8`] so each endpoint can decide when to refuse it (422 `not_valid_data`),
//! and strings are then decoded lossily.

use std::collections::BTreeMap;

/// Rack 3's limits (`RACK_QUERY_PARSER_PARAMS_LIMIT`, nesting depth).
pub const MAX_PARAMS: usize = 4096;
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A key without `=`: Rack's nil.
    Null,
    Str(String),
    Map(BTreeMap<String, Value>),
    List(Vec<Value>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub root: BTreeMap<String, Value>,
    pub invalid_utf8: bool,
    count: usize,
}

/// Why a query string cannot be parsed (both are apisonator's 400 `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// `%zz`, `%4`: "Invalid query parameters: invalid %-encoding".
    BadEscape,
    /// Conflicting nesting (`usage[]=1&usage[hits]=1`), too deep or too many parameters.
    Syntax(String),
}

impl ParamError {
    pub fn message(&self) -> String {
        match self {
            ParamError::BadEscape => "Invalid query parameters: invalid %-encoding".to_owned(),
            ParamError::Syntax(m) => m.clone(),
        }
    }
}

const SYNTAX: &str = "request contains syntax errors, should not be repeated without modification";

fn escapes_ok(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let hex = |j: usize| raw.get(j).is_some_and(|c| c.is_ascii_hexdigit());
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

impl Params {
    pub fn parse(raw: &str) -> Result<Params, ParamError> {
        let mut p = Params::default();
        p.add(raw)?;
        Ok(p)
    }

    pub fn parse_bytes(raw: &[u8]) -> Result<Params, ParamError> {
        let mut p = Params::default();
        p.add_bytes(raw)?;
        Ok(p)
    }

    /// Adds the pairs of another query string or form body (Rack merges query and body).
    pub fn add(&mut self, raw: &str) -> Result<(), ParamError> {
        self.add_bytes(raw.as_bytes())
    }

    pub fn add_bytes(&mut self, raw: &[u8]) -> Result<(), ParamError> {
        if !escapes_ok(raw) {
            return Err(ParamError::BadEscape);
        }
        // Splitting valid UTF-8 at ASCII separators keeps every piece valid, so checking the
        // whole decoded input tells whether any key or value is invalid.
        let decoded: Vec<u8> = percent_encoding::percent_decode(raw).collect();
        if std::str::from_utf8(&decoded).is_err() {
            self.invalid_utf8 = true;
        }
        for piece in raw.split(|&b| b == b'&') {
            if piece.is_empty() {
                continue;
            }
            let has_value = piece.contains(&b'=');
            // One pair at a time so that `a` (no `=`) can be told from `a=`.
            let Some((key, value)) = form_urlencoded::parse(piece).next() else {
                continue;
            };
            if key.is_empty() {
                continue;
            }
            self.count += 1;
            if self.count > MAX_PARAMS {
                return Err(ParamError::Syntax(format!(
                    "total number of query parameters ({}) exceeds limit ({MAX_PARAMS})",
                    self.count
                )));
            }
            let value = if has_value {
                Value::Str(value.into_owned())
            } else {
                Value::Null
            };
            let segments = split_key(&key);
            if segments.len() > MAX_DEPTH {
                return Err(ParamError::Syntax(SYNTAX.to_owned()));
            }
            insert(&mut self.root, &segments, value)?;
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.root.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.root.get(key).and_then(Value::as_str)
    }
}

/// `a[b][c]` → `["a", "b", "c"]`; `a[]` → `["a", ""]` (append); text after the last well-formed
/// `[..]` is one literal segment, as Rack 3 does (`t[0]usage[hits]` → `t`, `0`, `usage[hits]`).
fn split_key(key: &str) -> Vec<&str> {
    let (name, mut rest) = match key.strip_prefix('[') {
        // A leading bracket is literal up to its closing bracket.
        Some(_) => match key.find(']') {
            Some(i) => key.split_at(i + 1),
            None => (key, ""),
        },
        None => match key.find('[') {
            Some(i) => key.split_at(i),
            None => (key, ""),
        },
    };
    let mut out = vec![name];
    while !rest.is_empty() {
        match rest
            .strip_prefix('[')
            .and_then(|r| r.find(']').map(|i| r.split_at(i)))
        {
            Some((inside, after)) => {
                out.push(inside);
                rest = after.get(1..).unwrap_or("");
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

fn insert(
    map: &mut BTreeMap<String, Value>,
    segments: &[&str],
    value: Value,
) -> Result<(), ParamError> {
    let syntax = || ParamError::Syntax(SYNTAX.to_owned());
    let Some((&first, rest)) = segments.split_first() else {
        return Ok(());
    };
    match rest.split_first() {
        None => {
            map.insert(first.to_owned(), value);
            Ok(())
        }
        Some((&"", tail)) => {
            if !tail.is_empty() {
                // Lists of hashes (`a[][b]=1`) are not needed by the Service Management API.
                return Err(syntax());
            }
            match map
                .entry(first.to_owned())
                .or_insert_with(|| Value::List(Vec::new()))
            {
                Value::List(items) => {
                    items.push(value);
                    Ok(())
                }
                _ => Err(syntax()),
            }
        }
        Some(_) => match map
            .entry(first.to_owned())
            .or_insert_with(|| Value::Map(BTreeMap::new()))
        {
            Value::Map(inner) => insert(inner, rest, value),
            _ => Err(syntax()),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    #[test]
    fn decodes_keys_and_values() {
        let p =
            Params::parse("app_key=a%2Bb&user_key=a+b&x=%26%3D&n=%C3%A9t%C3%A9&usage%5Bhits%5D=2")
                .unwrap();
        assert_eq!(p.get_str("app_key"), Some("a+b"));
        assert_eq!(p.get_str("user_key"), Some("a b"));
        assert_eq!(p.get_str("x"), Some("&="));
        assert_eq!(p.get_str("n"), Some("été"));
        assert_eq!(p.get("usage").unwrap().as_map().unwrap()["hits"], s("2"));
        assert!(!p.invalid_utf8);
    }

    #[test]
    fn nesting_repeats_and_nulls() {
        let p =
            Params::parse("a=1&a=2&t[0][usage][hits]=1&t[0][app_id]=x&l[]=1&l[]=2&k&e=").unwrap();
        assert_eq!(p.get_str("a"), Some("2"));
        let t0 = p.get("t").unwrap().as_map().unwrap()["0"].as_map().unwrap();
        assert_eq!(t0["app_id"], s("x"));
        assert_eq!(p.get("l"), Some(&Value::List(vec![s("1"), s("2")])));
        assert_eq!(p.get("k"), Some(&Value::Null));
        assert_eq!(p.get_str("e"), Some(""));
    }

    #[test]
    fn rack3_literal_keys() {
        assert_eq!(split_key("t[0]usage[hits]"), vec!["t", "0", "usage[hits]"]);
        assert_eq!(split_key("[usage][hits]"), vec!["[usage]", "hits"]);
        assert_eq!(split_key("a[b"), vec!["a", "[b"]);
    }

    #[test]
    fn errors() {
        assert_eq!(Params::parse("a=%zz"), Err(ParamError::BadEscape));
        assert_eq!(Params::parse("a=%4"), Err(ParamError::BadEscape));
        assert_eq!(Params::parse("%"), Err(ParamError::BadEscape));
        assert!(matches!(
            Params::parse("usage[]=1&usage[hits]=1"),
            Err(ParamError::Syntax(_))
        ));
        assert!(matches!(
            Params::parse("a=1&a[b]=1"),
            Err(ParamError::Syntax(_))
        ));
        assert!(Params::parse("a=%FF").unwrap().invalid_utf8);
        let many = "a=1&".repeat(MAX_PARAMS + 1);
        assert!(matches!(Params::parse(&many), Err(ParamError::Syntax(_))));
        let deep = format!("a{}=1", "[x]".repeat(40));
        assert!(Params::parse(&deep).is_err());
    }
}
