//! "Did you mean": the known field a misspelt one was probably meant to be.
//!
//! 3scale adds fields all the time, so an unknown field is not an error; but a field one or two
//! keystrokes away from one tollgate reads (`hostss`, `credentails_location`) is almost always a
//! typo that silently drops configuration, and gets a warning naming the field it resembles.

use crate::diagnostics::edit_distance as distance;

/// The fields an object of a 3scale document may carry: those tollgate reads, and those 3scale
/// writes that tollgate knowingly ignores (they are not typos of anything).
#[derive(Debug)]
pub(super) struct Fields {
    pub(super) read: &'static [&'static str],
    pub(super) ignored: &'static [&'static str],
}

impl Fields {
    pub(super) fn is_known(&self, key: &str) -> bool {
        self.read.contains(&key) || self.ignored.contains(&key)
    }

    /// The field tollgate reads that `key` (unknown) is probably a misspelling of.
    pub(super) fn suggestion(&self, key: &str) -> Option<&'static str> {
        if self.is_known(key) {
            return None;
        }
        self.read
            .iter()
            .map(|&known| (distance(key, known), known))
            .filter(|&(d, known)| d <= allowed_distance(known))
            .min_by_key(|&(d, _)| d)
            .map(|(_, known)| known)
    }
}

/// How far a name may be from `known` to count as its misspelling: one edit for short names
/// (`id`, `name`: two edits would reach too many unrelated words), two otherwise.
fn allowed_distance(known: &str) -> usize {
    if known.chars().count() <= 4 {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn distances() {
        assert_eq!(distance("hosts", "hosts"), 0);
        assert_eq!(distance("hostss", "hosts"), 1);
        assert_eq!(distance("credentails_location", "credentials_location"), 1);
        assert_eq!(distance("http_methd", "http_method"), 1);
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("Hosts", "hosts"), 1);
    }

    #[test]
    fn suggestions_only_for_near_misses_of_read_fields() {
        const F: Fields = Fields {
            read: &["id", "hosts", "proxy_rules", "name"],
            ignored: &["ids_seen", "state"],
        };
        assert_eq!(F.suggestion("hostss"), Some("hosts"));
        assert_eq!(F.suggestion("proxy_rule"), Some("proxy_rules"));
        assert_eq!(F.suggestion("hosts"), None, "known");
        assert_eq!(F.suggestion("state"), None, "known, ignored");
        assert_eq!(F.suggestion("ix"), Some("id"));
        // Two edits from a short name is another word.
        assert_eq!(F.suggestion("xy"), None);
        assert_eq!(F.suggestion("game"), Some("name"));
        assert_eq!(F.suggestion("deployment_option"), None);
    }
}
