//! Environment variables the `rhizome` binary reads, all in one place.

/// `host:port` of the agent's HTTP API, for CLI commands (same as `--http-addr`).
pub const HTTP_ADDR: &str = "RHIZOME_HTTP_ADDR";
/// Log filter when `--log-level` is not given (falls back to `RUST_LOG`).
pub const LOG_LEVEL: &str = "RHIZOME_LOG_LEVEL";
/// Standard tracing filter variable, honoured as well.
pub const RUST_LOG: &str = "RUST_LOG";
/// `off` runs quinn with its default transport settings instead of the data plane's tuning
/// (for before/after measurements only).
pub const QUIC_TUNING: &str = "RHIZOME_QUIC_TUNING";
/// Operator credentials directory for `rhizome intention apply|delete` (same as `--operator-dir`).
pub const OPERATOR_DIR: &str = "RHIZOME_OPERATOR_DIR";
