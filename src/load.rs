//! One entry point for configuration bytes, used by the CLI and the filter alike: tells a
//! FilterConfig from a 3scale document, translates, validates and compiles, and collects
//! every diagnostic on the way.

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
        diagnostics.error(
            "",
            format!(
                "the configuration is {} bytes; the limit is {MAX_CONFIG_BYTES} bytes",
                bytes.len()
            ),
        );
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
