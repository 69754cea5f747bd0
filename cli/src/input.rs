//! Reading and loading a configuration for any command.

use std::io::Read;
use std::path::Path;

use tollgate::load::{too_large, MAX_CONFIG_BYTES};
use tollgate::{Compiled, Diagnostics, FilterConfig, Loaded};

use crate::{ConfigArg, Failure};

/// An input file's bytes (`-` is standard input), at most `limit` of them: `Err(size)` when
/// there are more, where `size` says how many ("17825792 bytes", or "more than …" when that is
/// all that is known: standard input, a pipe).
fn read_at_most(path: &Path, limit: u64) -> Result<Result<Vec<u8>, String>, Failure> {
    let cannot =
        |e: std::io::Error| Failure::unreadable(format!("cannot read {}: {e}", path.display()));
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
    } else {
        let file = std::fs::File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if meta.is_dir() {
            return Err(Failure::unreadable(format!(
                "cannot read {}: it is a directory",
                path.display()
            )));
        }
        if meta.is_file() && meta.len() > limit {
            return Ok(Err(format!("{} bytes", meta.len())));
        }
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
    }
    if bytes.len() as u64 > limit {
        return Ok(Err(format!("more than {limit} bytes")));
    }
    Ok(Ok(bytes))
}

/// A whole input file (`-` is standard input), such as explain's `-d @FILE`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    read_at_most(path, u64::MAX)?
        .map_err(|size| Failure::unreadable(format!("{} is {size}", path.display())))
}

/// Reads and loads the configuration; only an unreadable file is a failure here, an invalid
/// configuration is in the diagnostics.
pub fn read_and_load(arg: &ConfigArg) -> Result<Loaded, Failure> {
    match read_at_most(&arg.config, MAX_CONFIG_BYTES as u64)? {
        Ok(bytes) => Ok(tollgate::load_with(&bytes, &arg.load_options())),
        Err(size) => {
            let mut diagnostics = Diagnostics::new();
            diagnostics.error("", too_large(size));
            Ok(Loaded {
                format: None,
                config: None,
                compiled: None,
                diagnostics,
            })
        }
    }
}

pub struct LoadedConfig {
    pub config: FilterConfig,
    pub compiled: Compiled,
    pub diagnostics: Diagnostics,
}

/// Loads and compiles; a configuration with errors is a failure carrying every diagnostic.
pub fn load(arg: &ConfigArg) -> Result<LoadedConfig, Failure> {
    let loaded = read_and_load(arg)?;
    match (loaded.config, loaded.compiled) {
        (Some(config), Some(compiled)) => Ok(LoadedConfig {
            config,
            compiled,
            diagnostics: loaded.diagnostics,
        }),
        _ => {
            let errors = loaded.diagnostics.errors().count();
            Err(Failure::invalid_configuration(
                format!(
                    "{} is not a valid configuration ({errors} error{})",
                    arg.config.display(),
                    plural(errors)
                ),
                loaded.diagnostics.into_vec(),
            ))
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
