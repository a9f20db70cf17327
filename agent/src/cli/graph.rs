//! `rhizome graph`: the service access graph of the local agent (catalog services as
//! nodes, intentions as allow/deny edges), as graphviz DOT or JSON.

use crate::client::Client;
use std::process::ExitCode;

/// Output format of `rhizome graph`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT (`rhizome graph | dot -Tsvg > mesh.svg`).
    Dot,
    /// JSON: nodes, edges, default action, rule-set version.
    Json,
}

/// Arguments of `rhizome graph`.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

/// Prints the agent's access graph.
pub fn run(addr: &str, args: &GraphArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        GraphFormat::Dot => "dot",
        GraphFormat::Json => "json",
    };
    let body = Client::new(addr).get_raw(&format!("/v1/graph?format={format}"))?;
    let text = String::from_utf8_lossy(&body);
    crate::cli::write_out(format_args!("{text}"));
    if !text.ends_with('\n') {
        outln!("");
    }
    Ok(ExitCode::SUCCESS)
}
