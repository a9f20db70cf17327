//! `rhizome`: agent and CLI of the rhizome service mesh.

use std::process::ExitCode;

fn main() -> ExitCode {
    // One crypto provider for the whole process (kube and hyper-rustls use the default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match rhizome_agent::cli::parse() {
        Ok(cli) => rhizome_agent::cli::run(cli),
        Err(code) => code,
    }
}
