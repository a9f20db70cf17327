//! Log setup: `tracing` with a filter from `--log-level`, `RHIZOME_LOG_LEVEL` or `RUST_LOG`
//! (default `info`), as text or as one JSON object per line. The filter can be replaced
//! while the agent runs ([`set_level`], on a reload), unless `--log-level` pinned it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry, reload};

/// The filter's handle, once [`init`] installed the subscriber.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The level used when the config sets none (from the environment, or `info`).
static FALLBACK: OnceLock<String> = OnceLock::new();
/// `--log-level` was given: a reload does not change the level.
static PINNED: AtomicBool = AtomicBool::new(false);

/// A log filter that does not parse (the config's fault; the level in force stays).
#[derive(Debug, thiserror::Error)]
#[error("invalid log level {text:?}: {message}")]
pub struct LevelError {
    /// The filter as written.
    pub text: String,
    /// What the parser said.
    pub message: String,
}

/// Parses a log filter (`info`, `rhizome_agent=debug,warn`...).
pub fn parse(text: &str) -> Result<EnvFilter, LevelError> {
    EnvFilter::try_new(text).map_err(|e| LevelError {
        text: text.to_string(),
        message: e.to_string(),
    })
}

fn fallback() -> String {
    std::env::var(crate::env::LOG_LEVEL)
        .ok()
        .or_else(|| std::env::var(crate::env::RUST_LOG).ok())
        .unwrap_or_else(|| "info".to_string())
}

/// Installs the global subscriber. `level` wins over the environment. Safe to call once.
pub fn init(level: Option<&str>, json: bool) -> anyhow::Result<()> {
    let text = level.map_or_else(fallback, str::to_string);
    let (filter, handle) = reload::Layer::new(parse(&text)?);
    use std::io::IsTerminal as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging already initialised: {e}"))?;
    let _ = FILTER.set(handle);
    let _ = FALLBACK.set(fallback());
    Ok(())
}

/// Marks the level as given on the command line: [`set_level`] leaves it alone.
pub fn pin() {
    PINNED.store(true, Ordering::Release);
}

/// Replaces the filter in force by `level` (`None`: the environment's, else `info`).
/// Returns whether the filter changed: `false` when logging was not set up by [`init`]
/// (tests, library use) or `--log-level` pinned it.
pub fn set_level(level: Option<&str>) -> Result<bool, LevelError> {
    let text = level.map_or_else(
        || FALLBACK.get().cloned().unwrap_or_else(fallback),
        str::to_string,
    );
    let filter = parse(&text)?;
    let Some(handle) = FILTER.get() else {
        return Ok(false);
    };
    if PINNED.load(Ordering::Acquire) {
        return Ok(false);
    }
    handle.reload(filter).map_err(|e| LevelError {
        text,
        message: e.to_string(),
    })?;
    Ok(true)
}
