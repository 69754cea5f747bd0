//! Reading and loading a configuration for any command.

use std::io::Read;

use tollgate::{Compiled, Diagnostics, FilterConfig};

use crate::{ConfigArg, Failure};

/// Reads the configuration bytes (a file, or stdin for `-`), refusing anything larger than the
/// loader accepts before reading all of it.
pub fn read_config(arg: &ConfigArg) -> Result<Vec<u8>, Failure> {
    let limit = tollgate::load::MAX_CONFIG_BYTES as u64 + 1;
    let path = &arg.config;
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    result.map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

pub struct LoadedConfig {
    pub config: FilterConfig,
    pub compiled: Compiled,
    pub diagnostics: Diagnostics,
}

/// Loads and compiles; on errors prints every diagnostic to stderr and fails with 64.
pub fn load(arg: &ConfigArg) -> Result<LoadedConfig, Failure> {
    let bytes = read_config(arg)?;
    let loaded = tollgate::load_with(&bytes, &arg.load_options());
    match (loaded.config, loaded.compiled) {
        (Some(config), Some(compiled)) => Ok(LoadedConfig {
            config,
            compiled,
            diagnostics: loaded.diagnostics,
        }),
        _ => {
            for d in loaded.diagnostics.errors() {
                eprintln!("{d}");
            }
            Err(Failure::usage(format!(
                "{} is not a valid configuration ({} error{})",
                arg.config.display(),
                loaded.diagnostics.errors().count(),
                plural(loaded.diagnostics.errors().count())
            )))
        }
    }
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
