//! `rhizome info` and `rhizome services`: read-only views of the local agent.

use crate::api::types::AgentSelf;
use crate::client::Client;
use std::process::ExitCode;

/// Output format of read-only commands.
#[derive(clap::Args, Debug)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How a command prints its result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned, human-readable text.
    Table,
    /// JSON, with the field names of the HTTP API.
    Json,
}

pub fn info(addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(addr);
    if f.format == Format::Json {
        let v: serde_json::Value = client.get("/v1/agent/self")?;
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: AgentSelf = client.get("/v1/agent/self")?;
    outln!("node_name:  {}", s.node_name);
    outln!("version:    {}", s.version);
    outln!("gossip:     {}", s.addresses.gossip);
    outln!("data:       {}", s.addresses.data);
    outln!("http:       {}", s.addresses.http);
    outln!("uptime:     {}s", s.uptime_seconds);
    outln!("boot_count: {}", s.boot_count);
    outln!("data_dir:   {}", s.data_dir);
    outln!("dev:        {}", s.dev);
    Ok(ExitCode::SUCCESS)
}

pub fn services(addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let v: Vec<serde_json::Value> = Client::new(addr).get("/v1/agent/services")?;
    if f.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            let text = |k: &str| {
                s.get(k)
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .unwrap_or_default()
            };
            vec![
                text("id"),
                text("namespace"),
                text("name"),
                format!("{}:{}", text("address"), text("port")),
                text("source"),
            ]
        })
        .collect();
    print_table(&["ID", "NAMESPACE", "NAME", "ADDRESS", "SOURCE"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows under a header with columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
