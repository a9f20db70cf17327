//! The `rhizome` command line, built as a binary of the integration package so that
//! `cargo test` builds it, fresh, before the namespace tests start it in their hosts.
//! Same entry point as `agent/src/main.rs`: keep the two in step.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // One crypto provider for the whole process, as in the real binary.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = rhizome_agent::cli::Cli::parse();
    rhizome_agent::cli::run(cli)
}
