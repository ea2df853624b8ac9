//! `herald config check|print`, and the configuration loading shared with `herald serve`.

use std::path::PathBuf;

use herald_server::config::{Config, ConfigError, Overrides, Sources};
use tracing_subscriber::EnvFilter;

use crate::cli::{ConfigArgs, ConfigCommand};

/// Loads the configuration: defaults, the file, `HERALD_<SECTION>__<KEY>` variables, then the
/// flags in `overrides`. Also checks `log.level`, which only the binary interprets.
///
/// # Errors
/// A [`ConfigError`] naming the first bad or unknown key.
pub(crate) fn load(file: Option<PathBuf>, overrides: Overrides) -> Result<Config, ConfigError> {
    let config = Config::load(&Sources {
        file,
        env: true,
        overrides,
    })?;
    level_filter(&config.raw.log.level)?;
    Ok(config)
}

/// The tracing filter for `log.level` (e.g. `info` or `info,herald_server=debug`).
///
/// # Errors
/// A [`ConfigError`] naming `log.level` when it is not a valid filter.
pub(crate) fn level_filter(level: &str) -> Result<EnvFilter, ConfigError> {
    EnvFilter::try_new(level).map_err(|e| {
        ConfigError(format!(
            "invalid configuration key `log.level`: {level:?} ({e}; use e.g. \"info\" or \"warn,herald_server=debug\")"
        ))
    })
}

/// Runs `herald config check` or `herald config print`.
///
/// # Errors
/// A [`ConfigError`] (exit 2) when the configuration is invalid; an I/O error when stdout is
/// closed.
pub(crate) fn run(args: ConfigArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match args.command {
        ConfigCommand::Check(file) => {
            load(file.file, Overrides::default())?;
            writeln!(out, "configuration OK")?;
        }
        ConfigCommand::Print(file) => {
            let config = load(file.file, Overrides::default())?;
            write!(out, "{}", config.to_toml())?;
        }
    }
    out.flush()?;
    Ok(())
}
