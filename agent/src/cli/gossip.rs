//! `rhizome members`, `catalog`, `join`, `leave` and `keyring`: the gossip commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;

use super::status::{Format, FormatArgs, print_table};
use crate::api::types::KeyOp;
use crate::api::types::MemberRow;
use crate::api::types::{JoinRequest, KeyringChange, KeyringView, ServiceSummary};
use crate::client::Client;

/// `rhizome catalog ...`.
#[derive(clap::Subcommand, Debug)]
pub enum CatalogCommand {
    /// List the services of the mesh with their instance counts.
    Services(FormatArgs),
    /// List the instances of one service: node, address, port, health.
    Service {
        /// Service name.
        name: String,
        /// Namespace.
        #[arg(long, short = 'n', default_value = crate::config::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Output format.
        #[command(flatten)]
        format: FormatArgs,
    },
}

/// `rhizome join ADDR`.
#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// Gossip address (`host:port`) of any member of the mesh.
    pub address: String,
}

/// `rhizome keyring ...`: Serf-style gossip key management.
#[derive(clap::Subcommand, Debug)]
pub enum KeyringCommand {
    /// Print a fresh random key (base64 of 32 bytes) on the last line.
    Generate,
    /// List the keys installed on the local agent.
    List(FormatArgs),
    /// Install a key on every agent (accepted for opening packets).
    Install(KeyArgs),
    /// Make an installed key the one every agent seals with.
    Use(KeyArgs),
    /// Remove a key from every agent (the primary key cannot be removed).
    Remove(KeyArgs),
}

/// A key and the operator credentials that sign the change.
#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// The key, base64 of 32 bytes (from `rhizome keyring generate`).
    pub key: String,
    /// Operator credentials (`rhizome ca issue-operator`: key.pem and chain.pem or cert.pem).
    /// Needed unless the agent runs with --dev.
    #[arg(long, env = "RHIZOME_OPERATOR_DIR")]
    pub operator_dir: Option<PathBuf>,
}

/// `rhizome members`.
pub fn members(addr: &str, f: &FormatArgs) -> anyhow::Result<ExitCode> {
    let rows: Vec<MemberRow> = Client::new(addr).get("/v1/members")?;
    if f.format == Format::Json {
        outln!("{}", serde_json::to_string(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.node.clone(),
                m.address.to_string(),
                m.status.to_string(),
                m.incarnation.to_string(),
            ]
        })
        .collect();
    print_table(&["NODE", "ADDRESS", "STATUS", "INCARNATION"], &cells);
    Ok(ExitCode::SUCCESS)
}

/// `rhizome catalog services|service NAME`.
pub fn catalog(addr: &str, cmd: &CatalogCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(addr);
    match cmd {
        CatalogCommand::Services(f) => {
            let rows: Vec<ServiceSummary> = client.get("/v1/catalog/services")?;
            if f.format == Format::Json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|s| {
                    vec![
                        s.namespace.clone(),
                        s.name.clone(),
                        s.instances.to_string(),
                        s.passing.to_string(),
                    ]
                })
                .collect();
            print_table(&["NAMESPACE", "NAME", "INSTANCES", "PASSING"], &cells);
        }
        CatalogCommand::Service {
            name,
            namespace,
            format,
        } => {
            let path = format!("/v1/catalog/service/{name}?ns={namespace}");
            let rows: Vec<serde_json::Value> = client.get(&path)?;
            if format.format == Format::Json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            let text = |v: &serde_json::Value, k: &str| {
                v.get(k)
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .unwrap_or_default()
            };
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|i| {
                    vec![
                        text(i, "node"),
                        text(i, "id"),
                        format!("{}:{}", text(i, "address"), text(i, "port")),
                        text(i, "health"),
                    ]
                })
                .collect();
            print_table(&["NODE", "ID", "ADDRESS", "HEALTH"], &cells);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rhizome join ADDR`.
pub fn join(addr: &str, args: &JoinArgs) -> anyhow::Result<ExitCode> {
    let req = JoinRequest {
        address: args.address.clone(),
    };
    let answer: serde_json::Value = Client::new(addr).send("PUT", "/v1/join", &req)?;
    outln!(
        "joined {} ({} members known)",
        args.address,
        answer.get("members").and_then(|m| m.as_u64()).unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}

/// `rhizome leave`.
pub fn leave(addr: &str) -> anyhow::Result<ExitCode> {
    let _: serde_json::Value =
        Client::new(addr).send("PUT", "/v1/leave", &serde_json::json!({}))?;
    outln!("left the mesh gracefully");
    Ok(ExitCode::SUCCESS)
}

/// `rhizome keyring ...`.
pub fn keyring(addr: &str, cmd: &KeyringCommand) -> anyhow::Result<ExitCode> {
    let (op, args) = match cmd {
        KeyringCommand::Generate => {
            outln!("{}", crate::gossip::keys::generate_key()?.to_base64());
            return Ok(ExitCode::SUCCESS);
        }
        KeyringCommand::List(f) => {
            let view: KeyringView = Client::new(addr).get("/v1/keyring")?;
            print_keyring(&view, f.format)?;
            return Ok(ExitCode::SUCCESS);
        }
        KeyringCommand::Install(a) => (KeyOp::Install, a),
        KeyringCommand::Use(a) => (KeyOp::Use, a),
        KeyringCommand::Remove(a) => (KeyOp::Remove, a),
    };
    let change = keyring_change(op, &args.key, args.operator_dir.as_deref())?;
    let view: KeyringView = Client::new(addr).send("POST", "/v1/keyring", &change)?;
    print_keyring(&view, Format::Table)?;
    Ok(ExitCode::SUCCESS)
}

/// The request body of a keyring change, signed with the operator credentials in `dir`.
pub fn keyring_change(
    op: KeyOp,
    key: &str,
    operator_dir: Option<&Path>,
) -> anyhow::Result<KeyringChange> {
    let parsed: rhizome_gossip::keyring::Key = key.parse().context("key")?;
    let entry = match operator_dir {
        Some(dir) => {
            let cred = load_operator(dir)?;
            let (k, value) = crate::gossip::keys::change_entry(op, &parsed);
            let entry = crate::gossip::authority::operator_entry(
                &cred,
                k,
                value.clone().unwrap_or_default(),
                value.is_none(),
                crate::gossip::now_ms(),
            )?;
            Some(base64::engine::general_purpose::STANDARD.encode(entry.to_bytes()))
        }
        None => None,
    };
    Ok(KeyringChange {
        op,
        key: key.trim().to_string(),
        entry,
    })
}

/// Loads operator credentials: `key.pem` with `chain.pem` (or `cert.pem`).
pub fn load_operator(dir: &Path) -> anyhow::Result<rhizome_ca::Credential> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let chain = read("chain.pem")
        .or_else(|_| read("cert.pem"))
        .with_context(|| format!("reading chain.pem or cert.pem in {}", dir.display()))?;
    let key = read("key.pem").with_context(|| format!("reading key.pem in {}", dir.display()))?;
    Ok(rhizome_ca::Credential::from_pem(&chain, &key)?)
}

fn print_keyring(view: &KeyringView, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    if !view.encrypted {
        outln!("gossip is not encrypted (no key installed)");
    }
    let cells: Vec<Vec<String>> = view
        .keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                if k.primary {
                    "primary".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    print_table(&["KEY", "ROLE"], &cells);
    Ok(())
}
