//! Reads a FilterConfig out of parsed JSON with an error type of our own, so a wrong value in
//! the document (a token where a number belongs, say) is kept apart from the message about
//! it: the CLI shows it, logs get the message without it.

use std::fmt;

use serde::de::{self, Deserializer, Expected, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// What went wrong reading one value: the message with the offending value, and without.
#[derive(Debug)]
pub struct ReadError {
    pub message: String,
    /// Set when `message` quotes the document.
    pub redacted: Option<String>,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReadError {}

/// `what: <kind> <value>, expected <exp>`, with the value kept apart.
fn quoting(what: &str, unexpected: Unexpected<'_>, expected: &dyn fmt::Display) -> ReadError {
    let (kind, value) = match unexpected {
        Unexpected::Str(s) => ("string", format!("\"{s}\"")),
        Unexpected::Unsigned(n) => ("integer", format!("`{n}`")),
        Unexpected::Signed(n) => ("integer", format!("`{n}`")),
        Unexpected::Float(n) => ("floating point", format!("`{n}`")),
        Unexpected::Char(c) => ("character", format!("`{c}`")),
        other => {
            // The rest (a boolean, null, a map...) say nothing secret.
            return ReadError {
                message: format!("{what}: {other}, expected {expected}"),
                redacted: None,
            };
        }
    };
    let quote = if value.starts_with('"') { "\"" } else { "`" };
    ReadError {
        message: format!("{what}: {kind} {value}, expected {expected}"),
        redacted: Some(format!(
            "{what}: {kind} {quote}…{quote}, expected {expected}"
        )),
    }
}

struct ExpectedText<'a>(&'a dyn Expected);

impl fmt::Display for ExpectedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

struct OneOf(&'static [&'static str]);

impl fmt::Display for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("no variants"),
            [only] => write!(f, "`{only}`"),
            names => {
                f.write_str("one of ")?;
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "`{n}`")?;
                }
                Ok(())
            }
        }
    }
}

impl de::Error for ReadError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ReadError {
            message: msg.to_string(),
            redacted: None,
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        quoting("invalid type", unexp, &ExpectedText(exp))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        quoting("invalid value", unexp, &ExpectedText(exp))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        ReadError {
            message: format!("unknown variant `{variant}`, expected {}", OneOf(expected)),
            redacted: Some(format!("unknown variant `…`, expected {}", OneOf(expected))),
        }
    }
}

/// A JSON value as a serde deserializer with [`ReadError`].
pub struct ValueReader<'v>(pub &'v Value);

impl<'de> IntoDeserializer<'de, ReadError> for ValueReader<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueReader<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.iter().map(ValueReader));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => {
                let mut entries = de::value::MapDeserializer::new(
                    map.iter().map(|(k, v)| (k.as_str(), ValueReader(v))),
                );
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ReadError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        match self.0 {
            // Our enums are all unit variants, written as strings.
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(de::Error::invalid_type(unexpected(other), &"a string")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ReadError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use crate::load;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn first_error(doc: &str) -> (String, String) {
        let loaded = load(doc.as_bytes());
        let d = loaded.diagnostics.errors().next().unwrap().clone();
        (d.to_string(), d.redacted().to_string())
    }

    #[test]
    fn values_from_the_document_stay_out_of_redacted_messages() {
        let base = r#"{"kind":"tollgate.FilterConfig","version":1,"services":[],"#;
        let (shown, redacted) = first_error(&format!(
            r#"{base}"request_body_max_bytes":"s3cret-token"}}"#
        ));
        assert_eq!(
            shown,
            r#"error: request_body_max_bytes: invalid type: string "s3cret-token", expected u32"#
        );
        assert_eq!(
            redacted,
            r#"error: request_body_max_bytes: invalid type: string "…", expected u32"#
        );
        let e = <super::ReadError as serde::de::Error>::unknown_variant("s3cret", &["a", "b"]);
        assert_eq!(
            e.message,
            "unknown variant `s3cret`, expected one of `a`, `b`"
        );
        assert_eq!(
            e.redacted.as_deref(),
            Some("unknown variant `…`, expected one of `a`, `b`")
        );
        let (shown, redacted) = first_error(&format!(r#"{base}"request_line_max_bytes":-12345}}"#));
        assert!(shown.contains("-12345"), "{shown}");
        assert!(!redacted.contains("12345"), "{redacted}");
        // Field names are the schema's, not secrets.
        let (_, redacted) = first_error(&format!(r#"{base}"surprise":1}}"#));
        assert!(redacted.contains("unknown field `surprise`"), "{redacted}");
    }
}
