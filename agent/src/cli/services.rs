//! `rhizome services [list|register FILE|deregister ID]`: the services of the local agent,
//! and registering services through its API (kept by the agent across restarts).

use super::status::{self, FormatArgs};
use crate::api::types::RegisterAnswer;
use crate::client::Client;
use crate::config::definition::ServiceDefinition;
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rhizome services`: a subcommand, or none to list.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServicesArgs {
    /// What to do (lists the services when absent).
    #[command(subcommand)]
    pub command: Option<ServicesCommand>,
    /// Output format of the list.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// `rhizome services` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ServicesCommand {
    /// List the services of the local agent: those of its config files and those
    /// registered through the API (the default).
    List(FormatArgs),
    /// Register the services of FILE on the local agent (PUT /v1/agent/service/register).
    ///
    /// FILE holds `service` blocks in the config files' HCL syntax (a Consul service file's
    /// `checks` and `connect { sidecar_service { proxy { upstreams } } }` are taken too), or
    /// JSON: {"service":
    /// {...}}, {"services": [...]} or one service object, with Consul's field spellings
    /// (Name, ID, Port, Address, Tags, Meta, Check, Checks,
    /// Connect.SidecarService.Proxy.Upstreams) or the config's. The agent validates each
    /// as a config `service` block, keeps it across restarts, and replaces an earlier
    /// registration with the same id. Services defined in the agent's config files
    /// cannot be overwritten. Exit code 0 registered, 1 refused or error, 64 usage error.
    Register(RegisterArgs),
    /// Deregister a service registered through the API, by id
    /// (PUT /v1/agent/service/deregister/ID). Services defined in the config files are
    /// removed by editing the files and reloading. Exit code 0 deregistered, 1 refused,
    /// unknown id or error, 64 usage error.
    Deregister(DeregisterArgs),
}

/// Arguments of `rhizome services register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// A file of service definitions: HCL (`service { ... }` blocks) or JSON (`*.json`, or
    /// text starting with `{`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `rhizome services deregister`.
#[derive(clap::Args, Debug)]
pub struct DeregisterArgs {
    /// The instance id of the service (its name unless the definition gave an id).
    #[arg(value_name = "ID")]
    pub id: String,
}

/// Runs `rhizome services ...`.
pub fn run(addr: &str, args: ServicesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => status::services(addr, &args.format),
        Some(ServicesCommand::List(f)) => status::services(addr, &f),
        Some(ServicesCommand::Register(a)) => register(addr, &a),
        Some(ServicesCommand::Deregister(a)) => deregister(addr, &a),
    }
}

fn print_changes(verb: &str, answer: &RegisterAnswer) {
    if answer.changes.is_empty() {
        outln!("{verb} {}: nothing changed", answer.id);
    } else {
        outln!("{verb} {}:", answer.id);
        for c in &answer.changes {
            outln!("  {c}");
        }
    }
}

fn register(addr: &str, args: &RegisterArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {file}"))?;
    // Read here first, so a mistake in the file is reported at its line before anything
    // is sent.
    let definitions = ServiceDefinition::from_file(&text, &file)?;
    let client = Client::new(addr);
    for d in &definitions {
        let answer: RegisterAnswer = client
            .send("PUT", "/v1/agent/service/register", &d.to_json())
            .with_context(|| format!("registering a service of {file}"))?;
        print_changes("registered", &answer);
    }
    Ok(ExitCode::SUCCESS)
}

fn deregister(addr: &str, args: &DeregisterArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/agent/service/deregister/{}",
        percent_encoding::utf8_percent_encode(&args.id, percent_encoding::NON_ALPHANUMERIC)
    );
    let answer: RegisterAnswer = Client::new(addr)
        .send("PUT", &path, &serde_json::json!({}))
        .with_context(|| format!("deregistering {:?}", args.id))?;
    print_changes("deregistered", &answer);
    Ok(ExitCode::SUCCESS)
}
