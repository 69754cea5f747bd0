//! `tollgate check`: every problem in a configuration, each with its JSON path.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use tollgate::{Diagnostic, SourceFormat};

use crate::input::{plural, read_and_load};
use crate::{Cause, ConfigArg, Failure, Format};

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Output format: one line per problem, or one JSON object (failures too).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl CheckArgs {
    pub fn format(&self) -> Format {
        self.format
    }
}

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    format: Option<&'static str>,
    services: usize,
    mapping_rules: usize,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<&'a Diagnostic>,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, Failure> {
    let loaded = read_and_load(&args.config)?;
    let errors = loaded.diagnostics.errors().count();
    let warnings = loaded.diagnostics.warnings().count();
    let (services, rules) = loaded.config.as_ref().map_or((0, 0), |c| {
        (
            c.services.len(),
            c.services.iter().map(|s| s.mapping_rules.len()).sum(),
        )
    });
    let valid = loaded.compiled.is_some();
    match args.format {
        Format::Json => {
            let report = Report {
                valid,
                format: loaded.format.map(|f| match f {
                    SourceFormat::FilterConfig => "filter_config",
                    SourceFormat::ThreeScale => "3scale",
                }),
                services,
                mapping_rules: rules,
                errors,
                warnings,
                diagnostics: loaded.diagnostics.iter().collect(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Format::Text => {
            for d in loaded.diagnostics.iter() {
                println!("{d}");
            }
            if valid {
                println!(
                    "{}: valid, {services} service{}, {rules} mapping rule{}, {warnings} warning{}",
                    args.config.config.display(),
                    plural(services),
                    plural(rules),
                    plural(warnings)
                );
            } else {
                println!(
                    "{}: invalid, {errors} error{}, {warnings} warning{}",
                    args.config.config.display(),
                    plural(errors),
                    plural(warnings)
                );
            }
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Cause::InvalidConfiguration.exit_code())
    })
}
