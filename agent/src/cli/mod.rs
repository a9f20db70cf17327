//! The `rhizome` command line: one binary for the agent and every operator command.

/// Prints a line on standard output; a closed pipe (`rhizome members | head -1`) ends the
/// process quietly with [`EXIT_PIPE`] instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod ca;
mod ca_rotate;
mod gossip;
pub(crate) mod graph;
pub(crate) mod intention;
mod reload;
mod run_agent;
mod services;
mod status;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// rhizome: a service mesh with no central controller.
///
/// One `rhizome agent` runs on every host (VM or Kubernetes node). Agents gossip membership,
/// the service catalog and access rules ("intentions") to each other, issue mTLS certificates
/// for their local workloads, and proxy TCP between services over QUIC with mutual TLS.
/// The other commands talk to the local agent's HTTP API (127.0.0.1:7948 by default).
#[derive(Parser, Debug)]
#[command(
    name = "rhizome",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Address of the agent's HTTP API, for commands that talk to an agent.
    #[arg(long, global = true, env = crate::env::HTTP_ADDR, default_value = "127.0.0.1:7948")]
    pub http_addr: String,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list
    /// (default: $RHIZOME_LOG_LEVEL, then $RUST_LOG, then info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Write logs as one JSON object per line.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent in the foreground (until SIGINT/SIGTERM; SIGHUP reloads the config).
    Agent(run_agent::AgentArgs),
    /// Make the local agent re-read its config directory and apply what changed: services,
    /// their checks, upstream listeners, intentions_dir/operator_dir, log_level. Settings
    /// that need a restart (node_name, data_dir, addresses, ports, keys...) are refused;
    /// an invalid or refused config changes nothing. Same as SIGHUP to the agent.
    Reload,
    /// Show the local agent: node name, version, addresses, uptime.
    Info(status::FormatArgs),
    /// The services of the local agent: list them, or register and deregister services
    /// through its API (`rhizome services register FILE`, `rhizome services deregister
    /// ID`); API registrations are kept across restarts, config-file services stay owned
    /// by the files.
    Services(services::ServicesArgs),
    /// Intentions: who may connect to whom (validate, check, match, apply, list, delete).
    Intention {
        /// The intention command.
        #[command(subcommand)]
        command: intention::IntentionCommand,
    },
    /// Print the service access graph (services and the intentions between them).
    Graph(graph::GraphArgs),
    /// List the members of the mesh: node, gossip address, status, incarnation.
    Members(status::FormatArgs),
    /// Query the service catalog of the mesh.
    #[command(subcommand)]
    Catalog(gossip::CatalogCommand),
    /// Ask the local agent to join the mesh through a member's gossip address.
    Join(gossip::JoinArgs),
    /// Ask the local agent to leave the mesh gracefully.
    Leave,
    /// Manage the gossip encryption keys of the whole mesh.
    #[command(subcommand)]
    Keyring(gossip::KeyringCommand),
    /// Certificate authority: create roots, issue agent/operator/workload certificates,
    /// verify chains, join tokens, root rotation (offline, on files), and `ca status`.
    Ca(ca::CaArgs),
}

/// Exit code of a command that failed (agent unreachable, bad file, refused request).
pub const EXIT_ERROR: u8 = 1;
/// Exit code of a usage error (unknown flag, missing argument): `EX_USAGE` from sysexits.h,
/// so it never collides with a verdict (`intention check` exits 2 for "Denied").
pub const EXIT_USAGE: u8 = 64;
/// Exit code when standard output is a closed pipe: what a shell reports for a process
/// ended by SIGPIPE (128 + 13), as `yes | head -1` would.
pub const EXIT_PIPE: u8 = 141;

/// Writes to standard output; on a closed pipe the process exits with [`EXIT_PIPE`] (there
/// is no one left to read the rest), on any other error with [`EXIT_ERROR`].
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_PIPE));
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(i32::from(EXIT_ERROR));
    }
}

/// Parses the command line; on a usage error prints it and returns [`EXIT_USAGE`] (`--help`
/// and `--version` print and return success).
pub fn parse() -> Result<Cli, ExitCode> {
    use clap::Parser as _;
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Agent(args) => run_agent::run(args, cli.log_level.as_deref(), cli.log_json),
        Command::Reload => reload::run(&cli.http_addr),
        Command::Info(f) => status::info(&cli.http_addr, &f),
        Command::Services(args) => services::run(&cli.http_addr, args),
        Command::Intention { command } => intention::run(&cli.http_addr, command),
        Command::Graph(args) => graph::run(&cli.http_addr, &args),
        Command::Members(f) => gossip::members(&cli.http_addr, &f),
        Command::Catalog(c) => gossip::catalog(&cli.http_addr, &c),
        Command::Join(a) => gossip::join(&cli.http_addr, &a),
        Command::Leave => gossip::leave(&cli.http_addr),
        Command::Keyring(c) => gossip::keyring(&cli.http_addr, &c),
        Command::Ca(args) => ca::run(args, &cli.http_addr),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
