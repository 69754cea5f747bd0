//! Problems found in a configuration, each with the JSON path where it was found.
//!
//! Every loader collects all problems before failing, so a provider fixes a config in one pass.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: where (a JSON path such as `services[1].proxy.proxy_rules[4].pattern`) and what.
/// The path is empty for problems with the document as a whole (malformed JSON, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    /// The message without the document's values it quotes (a mistyped token, say), for
    /// logs; `None` when it quotes none.
    #[serde(skip)]
    pub redacted_message: Option<String>,
}

impl Diagnostic {
    /// The diagnostic as a log line may show it: without any value from the document.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, message: &str) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.path.is_empty() {
            write!(f, "{level}: {message}")
        } else {
            write!(f, "{level}: {}: {message}", self.path)
        }
    }
}

/// See [`Diagnostic::redacted`].
pub struct Redacted<'a>(&'a Diagnostic);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        d.write(f, d.redacted_message.as_deref().unwrap_or(&d.message))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, &self.message)
    }
}

/// Collects diagnostics in the order they are found.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path.into(), message.into());
    }

    pub fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path.into(), message.into());
    }

    /// An error whose message quotes the document; `redacted` is the message without it.
    pub fn error_quoting(&mut self, path: impl Into<String>, message: String, redacted: String) {
        self.items.push(Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message,
            redacted_message: Some(redacted),
        });
    }

    fn push(&mut self, severity: Severity, path: String, message: String) {
        self.items.push(Diagnostic {
            severity,
            path,
            message,
            redacted_message: None,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

/// Appends `.key` or `[index]` to a JSON path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// serde_json appends " at line L column C" to its errors; a JSON path (or our own wording of
/// the position) says it better.
pub fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}

/// Describes a JSON syntax error with its line and column.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    format!(
        "malformed JSON at line {}, column {}: {}",
        e.line(),
        e.column(),
        without_position(&e.to_string())
    )
}
/// Damerau-Levenshtein distance (optimal string alignment): inserting, deleting or replacing a
/// character, or swapping two adjacent ones, each cost 1. Case counts. For "did you mean"
/// suggestions (field names, HTTP methods).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows of the table: `two` for a[..i-1], `one` for a[..i], `row` for a[..=i].
    let mut two: Vec<usize> = Vec::new();
    let mut one: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let at = |r: &[usize], k: usize| r.get(k).copied().unwrap_or(usize::MAX - 1);
            let mut best = (at(&one, j + 1) + 1)
                .min(at(&row, j) + 1)
                .min(at(&one, j) + usize::from(ca != cb));
            let swapped = i > 0 && j > 0 && a.get(i - 1) == Some(&cb) && b.get(j - 1) == Some(&ca);
            if swapped {
                best = best.min(at(&two, j - 1) + 1);
            }
            row.push(best);
        }
        two = std::mem::replace(&mut one, row);
    }
    one.last().copied().unwrap_or(0)
}
