//! Log setup: `tracing` with a filter from `--log-level`, `RHIZOME_LOG_LEVEL` or `RUST_LOG`
//! (default `info`), as text or as one JSON object per line.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` wins over the environment. Safe to call once.
pub fn init(level: Option<&str>, json: bool) -> anyhow::Result<()> {
    let text = level
        .map(str::to_string)
        .or_else(|| std::env::var(crate::env::LOG_LEVEL).ok())
        .or_else(|| std::env::var(crate::env::RUST_LOG).ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&text)
        .map_err(|e| anyhow::anyhow!("invalid log level {text:?}: {e}"))?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))
}
