//! One entry point for configuration bytes, used by the CLI and the filter alike: tells a
//! FilterConfig from a 3scale document, translates, validates and compiles, and collects
//! every diagnostic on the way.

use std::fmt;

use serde_json::Value;

use crate::config::{FilterConfig, FilterConfigPaths};
use crate::diagnostics::{describe_json_error, Diagnostics};
use crate::model::{compile, Compiled};
use crate::threescale::translate;

/// The largest configuration accepted. 3scale configurations with thousands of rules weigh a
/// few MiB; beyond this, something is wrong with the input.
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// tollgate's own FilterConfig (it has a `kind`).
    FilterConfig,
    /// A 3scale proxy configuration.
    ThreeScale,
}

/// The outcome of loading: the config and its compiled form when there were no errors, and
/// every diagnostic either way.
#[derive(Debug)]
pub struct Loaded {
    pub format: Option<SourceFormat>,
    pub config: Option<FilterConfig>,
    pub compiled: Option<Compiled>,
    pub diagnostics: Diagnostics,
}

/// The error for a configuration over [`MAX_CONFIG_BYTES`]; `size` is how large it is
/// ("17825792 bytes", or "more than 16777216 bytes" when only that much was read).
pub fn too_large(size: impl fmt::Display) -> String {
    format!("the configuration is {size}; the limit is {MAX_CONFIG_BYTES} bytes")
}

/// How a 3scale document is imported (a FilterConfig has nothing to choose).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Policies of the services' chains the caller accepts the gateway will not run (by name,
    /// with or without APIcast's `apicast.policy.` prefix). Without this, a policy tollgate
    /// does not implement is an error when skipping it makes the gateway do less. A 3scale
    /// document can also name them itself: `"tollgate": {"accept_skipped_policies": […]}`.
    pub accept_skipped_policies: Vec<String>,
}

/// Loads with the default [`LoadOptions`].
pub fn load(bytes: &[u8]) -> Loaded {
    load_with(bytes, &LoadOptions::default())
}

pub fn load_with(bytes: &[u8], options: &LoadOptions) -> Loaded {
    let mut diagnostics = Diagnostics::new();
    let loaded = |format, config, compiled, diagnostics| Loaded {
        format,
        config,
        compiled,
        diagnostics,
    };
    if bytes.len() > MAX_CONFIG_BYTES {
        diagnostics.error("", too_large(format_args!("{} bytes", bytes.len())));
        return loaded(None, None, None, diagnostics);
    }
    // Editors on Windows save UTF-8 with a byte order mark; JSON parsers that APIcast uses
    // skip it too.
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Some(message) = not_json(bytes) {
        diagnostics.error("", message);
        return loaded(None, None, None, diagnostics);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        diagnostics.error("", "the configuration is empty");
        return loaded(None, None, None, diagnostics);
    }
    let root: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            diagnostics.error("", describe_json_error(&e));
            return loaded(None, None, None, diagnostics);
        }
    };
    let is_filter_config = matches!(&root, Value::Object(o) if o.contains_key("kind"));
    if is_filter_config {
        let config = FilterConfig::from_value(&root, &mut diagnostics);
        let compiled = config
            .as_ref()
            .and_then(|c| compile(c, &FilterConfigPaths, &mut diagnostics));
        let config = config.filter(|_| compiled.is_some());
        return loaded(
            Some(SourceFormat::FilterConfig),
            config,
            compiled,
            diagnostics,
        );
    }
    if let Some((path, message)) = not_a_proxy_configuration(&root) {
        diagnostics.error(path, message);
        return loaded(Some(SourceFormat::ThreeScale), None, None, diagnostics);
    }
    let Some(translation) = translate(&root, &options.accept_skipped_policies, &mut diagnostics)
    else {
        return loaded(Some(SourceFormat::ThreeScale), None, None, diagnostics);
    };
    if !translation.complete && translation.config.services.is_empty() {
        return loaded(Some(SourceFormat::ThreeScale), None, None, diagnostics);
    }
    // Even with structural errors, check what could be read, so every problem is reported.
    let compiled = compile(&translation.config, &translation.paths, &mut diagnostics)
        .filter(|_| translation.complete);
    let config = compiled.is_some().then_some(translation.config);
    loaded(
        Some(SourceFormat::ThreeScale),
        config,
        compiled,
        diagnostics,
    )
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where to fetch a proxy configuration from 3scale's Admin API, for messages about inputs
/// that are something else.
const FETCH_INSTEAD: &str = "fetch a proxy configuration instead: \
    /admin/api/services/{id}/proxy/configs/{env}/latest.json (one service), \
    /admin/api/account/proxy_configs/{env}.json (every service) or /admin/api/nginx/spec.json, \
    where {env} is sandbox or production";

/// Names text that is not JSON at all but something a provider fetches by mistake: XML (the
/// Admin API's answer without `.json`), an HTML page (a login or error page), UTF-16.
fn not_json(bytes: &[u8]) -> Option<String> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Some(
            "the configuration is UTF-16 text (it begins with a UTF-16 byte order mark): \
             save it as UTF-8"
                .to_owned(),
        );
    }
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let text = bytes.get(start..)?;
    if text.first() != Some(&b'<') {
        return None;
    }
    let head: Vec<u8> = text.iter().take(64).map(u8::to_ascii_lowercase).collect();
    let html = head.starts_with(b"<!doctype html") || head.starts_with(b"<html");
    Some(if html {
        format!(
            "this is an HTML page, not a proxy configuration (a sign-in or error page: check \
             the URL and the access token); {FETCH_INSTEAD}"
        )
    } else {
        format!(
            "this is XML, not a proxy configuration: the Admin API answers in XML unless the \
             path ends in .json; {FETCH_INSTEAD}"
        )
    })
}

/// Names the Admin API's other JSON answers, which hold no proxy configuration: where (a JSON
/// path) and what to fetch instead.
fn not_a_proxy_configuration(root: &Value) -> Option<(String, String)> {
    let obj = root.as_object()?;
    if ["services", "proxy_config", "proxy_configs"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        let services = obj.get("services").and_then(Value::as_array)?;
        let wrapped = |s: &Value| {
            s.as_object()
                .is_some_and(|o| o.contains_key("service") && !o.contains_key("proxy"))
        };
        if services.is_empty() || !services.iter().all(wrapped) {
            return None;
        }
        return Some((
            "services[0].service".to_owned(),
            format!(
                "this is the Admin API's services list (/admin/api/services.json): it names \
                 the services but holds no proxy configuration; {FETCH_INSTEAD}"
            ),
        ));
    }
    const OTHER_ANSWERS: [(&str, &str); 3] = [
        (
            "service",
            "one service's settings (/admin/api/services/{id}.json)",
        ),
        (
            "proxy",
            "one service's proxy settings (/admin/api/services/{id}/proxy.json)",
        ),
        (
            "mapping_rules",
            "one service's mapping rules (/admin/api/services/{id}/proxy/mapping_rules.json)",
        ),
    ];
    let (key, what) = OTHER_ANSWERS
        .iter()
        .find(|(key, _)| obj.contains_key(*key))?;
    Some((
        (*key).to_owned(),
        format!("this is {what}, not a proxy configuration; {FETCH_INSTEAD}"),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const TWITTER: &[u8] = include_bytes!("../examples/twitter.json");

    /// The only diagnostic of a refused input, as `path: message`.
    fn refusal(bytes: &[u8]) -> String {
        let loaded = load(bytes);
        assert!(loaded.compiled.is_none());
        let all: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    }

    #[test]
    fn a_utf8_byte_order_mark_is_skipped() {
        let mut with_bom = UTF8_BOM.to_vec();
        with_bom.extend_from_slice(TWITTER);
        let loaded = load(&with_bom);
        assert!(loaded.compiled.is_some(), "{:?}", loaded.diagnostics);
        assert_eq!(loaded.config, load(TWITTER).config);
        assert_eq!(refusal(UTF8_BOM), "error: the configuration is empty");
    }

    #[test]
    fn what_is_not_a_proxy_configuration_is_named_with_what_to_fetch() {
        let fetch = "/admin/api/services/{id}/proxy/configs/{env}/latest.json (one service), \
                     /admin/api/account/proxy_configs/{env}.json (every service) or \
                     /admin/api/nginx/spec.json";
        let cases: [(&[u8], &str); 6] = [
            (
                b"\n<?xml version=\"1.0\" encoding=\"UTF-8\"?><services><service>",
                "error: this is XML, not a proxy configuration",
            ),
            (
                b"<!DOCTYPE html><html><body>Sign in",
                "error: this is an HTML page",
            ),
            (
                br#"{"services":[{"service":{"id":2,"name":"api","state":"incomplete"}}]}"#,
                "error: services[0].service: this is the Admin API's services list \
                 (/admin/api/services.json)",
            ),
            (
                br#"{"service":{"id":2,"name":"api"}}"#,
                "error: service: this is one service's settings (/admin/api/services/{id}.json)",
            ),
            (
                br#"{"proxy":{"service_id":2,"api_backend":"http://h"}}"#,
                "error: proxy: this is one service's proxy settings",
            ),
            (
                br#"{"mapping_rules":[{"mapping_rule":{"pattern":"/"}}]}"#,
                "error: mapping_rules: this is one service's mapping rules",
            ),
        ];
        for (input, start) in cases {
            let message = refusal(input);
            assert!(message.starts_with(start), "{message}");
            assert!(message.contains(fetch), "{message}");
        }
        assert!(refusal(b"\xFF\xFE{\x00").contains("UTF-16"));
    }

    #[test]
    fn the_size_limit_names_the_size() {
        let huge = vec![b' '; MAX_CONFIG_BYTES + 10];
        assert_eq!(
            refusal(&huge),
            format!(
                "error: the configuration is {} bytes; the limit is {MAX_CONFIG_BYTES} bytes",
                MAX_CONFIG_BYTES + 10
            )
        );
    }
}
