//! A mapping rule's `querystring_parameters` (reference §1.4).

use crate::args::{ArgValue, RequestArgs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The expected value contains a `{name}`: the argument only has to be present
    /// (an empty value or a bare `?name` counts).
    Present,
    /// Otherwise the argument's last value, decoded, must equal this exactly
    /// (the expected value itself is not decoded).
    Equals(Box<[u8]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryCondition {
    pub name: Box<[u8]>,
    pub expect: Expect,
    /// Where the request's value for `name` is kept while rules are evaluated (set when the
    /// rules are compiled).
    pub slot: u32,
}

impl QueryCondition {
    pub fn new(name: &str, value: &str) -> Self {
        let expect = if has_variable(value.as_bytes()) {
            Expect::Present
        } else {
            Expect::Equals(value.as_bytes().into())
        };
        Self {
            name: name.as_bytes().into(),
            expect,
            slot: 0,
        }
    }

    /// Whether the condition holds, reading the arguments directly (the compiled rules read
    /// them once per request instead; both agree).
    pub fn holds(&self, args: &RequestArgs<'_>) -> bool {
        self.holds_for(args.get(&self.name))
    }

    /// Whether the condition holds for `value`, the request's value for [`Self::name`].
    pub fn holds_for(&self, value: Option<ArgValue<'_>>) -> bool {
        match (&self.expect, value) {
            (_, None) => false,
            (Expect::Present, Some(_)) => true,
            (Expect::Equals(want), Some(ArgValue::Raw(raw))) => crate::args::decoded_eq(raw, want),
            (Expect::Equals(_), Some(ArgValue::Flag)) => false,
        }
    }
}

/// APIcast's unanchored `\{[-\w_]+\}`.
fn has_variable(value: &[u8]) -> bool {
    value.iter().enumerate().any(|(i, &b)| {
        if b != b'{' {
            return false;
        }
        let rest = value.get(i + 1..).unwrap_or_default();
        let run = rest
            .iter()
            .take_while(|&&c| c == b'-' || c == b'_' || c.is_ascii_alphanumeric())
            .count();
        run > 0 && rest.get(run) == Some(&b'}')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn holds(name: &str, value: &str, query: &str) -> bool {
        QueryCondition::new(name, value).holds(&RequestArgs {
            query: query.as_bytes(),
            body: None,
        })
    }

    #[test]
    fn literal_values_compare_the_last_value() {
        assert!(holds("a_param", "1", "a_param=1"));
        assert!(!holds("a_param", "1", "a_param=2"));
        assert!(holds("speed", "2x", "speed=3x&user_key=foo&speed=2x"));
        assert!(!holds("speed", "3x", "speed=3x&user_key=foo&speed=2x"));
        assert!(!holds("bar", "baz", "bar"));
        assert!(!holds("bar", "baz", ""));
        // args are decoded once, expected values never
        assert!(holds("x", "a b", "x=a+b"));
        assert!(holds("x", "a%20b", "x=a%2520b"));
        assert!(!holds("x", "a%20b", "x=a%20b"));
        // names are case-sensitive
        assert!(!holds("bar", "baz", "BAR=baz"));
    }

    #[test]
    fn variables_only_need_presence() {
        assert!(holds("bar", "{baz}", "bar={foo}"));
        assert!(holds("bar", "{baz}", "bar="));
        assert!(holds("bar", "{baz}", "bar"));
        assert!(holds("code", "{code}t", "code=1"));
        assert!(!holds("bar", "{baz}", "other=1"));
        // `{}` is not a variable: literal comparison
        assert!(!holds("bar", "{}", "bar=1"));
        assert!(holds("bar", "{}", "bar=%7B%7D"));
    }
}
