//! Every JSON type of the HTTP API, in one file: the agent serializes them, the CLI (and
//! tests) deserialize them. Field names are part of the interface and documented in the
//! README: add fields, never rename them. This module depends on nothing but `serde` and
//! `std`, so it can become the `rhizome-api` crate when a second client appears.
//!
//! Not here, because they borrow the agent's own types: `/v1/agent/services`
//! (`api::ServiceView`, over the config's services), `/v1/catalog/service/{name}`
//! (`catalog::Instance`) and `/v1/kubernetes/pods` (`kube::PodView`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

// ---- /v1/agent/reload

/// How a reload ended (`rhizome_config_reloads_total{result}` counts them).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// The new configuration is in force.
    Ok,
    /// The configuration does not load (syntax, unknown key, bad value, port in use):
    /// nothing changed.
    Invalid,
    /// The configuration changes settings that need a restart: nothing changed.
    Refused,
}

impl ReloadResult {
    /// The label value: `ok`, `invalid` or `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Refused => "refused",
        }
    }
}

/// `PUT /v1/agent/reload` (200 when applied, 422 invalid, 409 refused; `rhizome reload`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReloadAnswer {
    /// How it ended.
    pub result: ReloadResult,
    /// Why nothing changed: `file:line:column: ...` for an invalid file, the settings that
    /// need a restart for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What changed, one line each (`service added: web`, `upstream removed: ...`).
    #[serde(default)]
    pub changes: Vec<String>,
}

// ---- /v1/agent/service/register, /v1/agent/service/deregister/{id}

/// The answer of `PUT /v1/agent/service/register` and
/// `PUT /v1/agent/service/deregister/{id}` (200; errors are `{"error": ...}` with 400
/// invalid, 404 unknown id, 409 owned by the config files).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegisterAnswer {
    /// The service's instance id.
    pub id: String,
    /// What changed, one line each, as a reload says it (`service added: web (default/web)`,
    /// `upstream added: ...`); empty when the registration was already in force.
    #[serde(default)]
    pub changes: Vec<String>,
}

// ---- /v1/agent/self

/// `GET /v1/agent/self`.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct AgentSelf {
    /// Node name.
    pub node_name: String,
    /// rhizome version.
    pub version: String,
    /// Where this agent listens and is reached.
    pub addresses: Addresses,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Unix time of the start.
    pub started_at: u64,
    /// Starts on this data_dir, this one included.
    pub boot_count: u64,
    /// Data directory.
    pub data_dir: String,
    /// Whether the agent runs with `--dev`.
    pub dev: bool,
}

/// Addresses in `GET /v1/agent/self`.
#[derive(Serialize, serde::Deserialize, Debug)]
pub struct Addresses {
    /// Bind address of gossip and data listeners.
    pub bind: String,
    /// Address peers use.
    pub advertise: String,
    /// Gossip `host:port`.
    pub gossip: String,
    /// Data-plane `host:port`.
    pub data: String,
    /// HTTP API `host:port`.
    pub http: String,
}

// ---- /v1/members

/// A member's status as `rhizome members` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answering probes.
    Alive,
    /// Failed a probe; declared failed unless it refutes in time.
    Suspect,
    /// Declared down.
    Failed,
    /// Left gracefully.
    Left,
}

/// One row of `GET /v1/members` and `rhizome members --format json`: exactly these fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Node name.
    pub node: String,
    /// Gossip address.
    pub address: SocketAddr,
    /// `alive`, `suspect`, `failed` or `left`.
    pub status: Status,
    /// Process generation: higher after each restart or rejoin.
    pub incarnation: u64,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Failed => "failed",
            Status::Left => "left",
        })
    }
}

// ---- /v1/catalog, /v1/join

/// One row of `GET /v1/catalog/services`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// Known instances.
    pub instances: usize,
    /// Instances that may receive connections.
    pub passing: usize,
}

/// Query of `GET /v1/catalog/service/<name>`.
#[derive(Deserialize, Debug)]
pub struct NsQuery {
    /// Namespace (`default` when absent).
    pub ns: Option<String>,
}

/// Body of `PUT /v1/join`.
#[derive(Deserialize, Serialize, Debug)]
pub struct JoinRequest {
    /// A member's gossip `host:port`.
    pub address: String,
}

// ---- /v1/keyring

/// `GET /v1/keyring`.
#[derive(Serialize, Deserialize, Debug)]
pub struct KeyringView {
    /// Whether gossip is sealed.
    pub encrypted: bool,
    /// Installed keys.
    pub keys: Vec<KeyView>,
}

/// Body of `POST /v1/keyring`.
#[derive(Deserialize, Serialize, Debug)]
pub struct KeyringChange {
    /// What to do.
    pub op: KeyOp,
    /// The key (base64 of 32 bytes).
    pub key: String,
    /// The operator-signed entry for this change (base64 of its encoding); required unless
    /// the agent runs with `--dev`.
    #[serde(default)]
    pub entry: Option<String>,
}

// ---- /v1/ca/revocations

/// Body of `POST /v1/ca/revocations`: an operator-signed `revoked/<name>` entry (base64 of
/// its encoding), a revocation or, as a tombstone, its withdrawal.
#[derive(Deserialize, Serialize, Debug)]
pub struct RevocationRequest {
    /// The signed entry.
    pub entry: String,
}

/// One revocation in force (`GET /v1/ca/revocations`, and the answer to a `POST`).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RevocationView {
    /// The replicated key (`revoked/<node>` or `revoked/sha256:<hex>`).
    pub key: String,
    /// The revoked node (its intermediate, agent leaf and workload leaves), if any.
    pub node: Option<String>,
    /// The SHA-256 fingerprint (hex) of the revoked certificate, if any.
    pub fingerprint: Option<String>,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// When the operator decided it (unix seconds).
    pub revoked_at: u64,
    /// The operator who signed it.
    pub revoked_by: String,
}

/// Answer of `POST /v1/ca/revocations`.
#[derive(Deserialize, Serialize, Debug)]
pub struct RevocationAnswer {
    /// The key written.
    pub key: String,
    /// Whether the entry withdrew a revocation (a tombstone).
    pub withdrawn: bool,
    /// Whether the agent already held this entry (or a newer one).
    pub stale: bool,
    /// Every revocation in force after it.
    pub revocations: Vec<RevocationView>,
}

/// A keyring change requested through the API or the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOp {
    /// Accept packets sealed with the key.
    Install,
    /// Seal with the key (it is installed too).
    Use,
    /// Stop accepting the key (refused for the primary).
    Remove,
}

/// One row of `rhizome keyring list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// The key's public fingerprint (first 4 bytes of its SHA-256, hex).
    pub id: String,
    /// Whether outgoing packets are sealed with it.
    pub primary: bool,
}

// ---- /v1/ca/status

/// One certificate held by the agent, as `GET /v1/ca/status` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CertStatus {
    /// `root`, `cross`, `intermediate`, `agent` or `workload`.
    pub kind: String,
    /// The SPIFFE id (`spiffe://<td>` for roots).
    pub spiffe_id: String,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number (colon-separated hex).
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Seconds until `not_after` (negative once expired).
    pub seconds_to_expiry: i64,
    /// Fraction of the lifetime used (0 at not_before, 1 at not_after).
    pub fraction_used: f64,
}

// ---- /v1/intentions, /v1/graph

/// One rule (one source of one entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    /// Source pattern, `NAMESPACE/NAME` (`*` and `prefix*` allowed).
    pub source: String,
    /// Destination pattern.
    pub destination: String,
    /// `allow` or `deny`.
    pub action: String,
    /// `enforce` or `audit` (the entry's `Mode`).
    pub mode: String,
    /// Level in rhizome's precedence table, 1 (lowest) to 16.
    pub precedence: u8,
    /// The full precedence (`level` or `level.DST_PREFIX.SRC_PREFIX`), higher wins.
    pub precedence_detail: String,
    /// Consul's precedence (1-9) for rules without prefix wildcards.
    pub consul_precedence: Option<u8>,
    /// The source's `Description`.
    pub description: Option<String>,
    /// Where the source was written (`file:line:column`; the file is the key for entries
    /// that arrived signed).
    pub origin: String,
}

/// Where an entry came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginView {
    /// `dir` (a file of this agent's `intentions_dir`) or `applied` (a signed entry
    /// applied through the API or received from another agent).
    pub kind: String,
    /// The file, for `dir` entries.
    pub file: Option<String>,
    /// SPIFFE id of the signer.
    pub signer: Option<String>,
    /// Name of the writer (operator name, or node name in `--dev`).
    pub writer: String,
    /// Wall-clock milliseconds of the write (from the entry's hybrid logical clock).
    pub written_ms: u64,
}

/// One entry in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Replication key, `intentions/<ns>/<name>`.
    pub key: String,
    /// Destination pattern.
    pub destination: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// The entry's `Meta`.
    pub meta: BTreeMap<String, String>,
    /// The sources, in file order, each with its computed precedence.
    pub sources: Vec<RuleView>,
    /// Where the entry came from.
    pub origin: Option<OriginView>,
}

/// Problems that kept the rules in force from changing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemsView {
    /// Errors of the last failed `intentions_dir` load (`file:line:column: message`).
    pub dir: Vec<String>,
    /// Errors of the last failed rebuild from signed entries.
    pub rules: Vec<String>,
}

/// `GET /v1/intentions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListView {
    /// Version (content hash) of the rule set in force.
    pub version: String,
    /// Action when no rule matches.
    pub default: String,
    /// Agent-wide audit mode.
    pub audit: bool,
    /// The entries, by destination.
    pub entries: Vec<EntryView>,
    /// What kept the rules from changing, if anything.
    pub problems: ProblemsView,
}

/// `GET /v1/intentions/match?dst=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchView {
    /// The destination asked about, `NAMESPACE/NAME`.
    pub destination: String,
    /// Rules whose destination matches, highest precedence first.
    pub rules: Vec<RuleView>,
}

/// `GET /v1/intentions/check?src=&dst=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    /// The source, `NAMESPACE/NAME`.
    pub source: String,
    /// The destination, `NAMESPACE/NAME`.
    pub destination: String,
    /// Whether a connection would go through (true for an audited deny).
    pub allowed: bool,
    /// `allow` or `deny`: the deciding action.
    pub action: String,
    /// A deny let through by audit mode.
    pub audit: bool,
    /// `allow`, `deny` or `audit_deny` (the metric's label).
    pub decision: String,
    /// The deciding rule; absent when the default decided.
    pub rule: Option<RuleView>,
    /// Version of the rule set that decided.
    pub version: String,
}

/// `POST /v1/intentions` and `DELETE /v1/intentions/<ns>/<name>` bodies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Base64 of a signed entry (`Entry::to_bytes` of rhizome-gossip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Unsigned HCL text (`--dev` agents only; POST only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hcl: Option<String>,
    /// File name used in errors about `hcl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The answer to a submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitView {
    /// The entry's key.
    pub key: String,
    /// `new` (applied) or `stale` (an equal or newer version was already held).
    pub applied: String,
    /// SPIFFE id of the verified signer.
    pub signer: String,
}

impl RuleView {
    /// One line: `SRC => DST (action, precedence P, origin)`.
    pub fn line(&self) -> String {
        let audit = if self.mode == "audit" { ", audit" } else { "" };
        format!(
            "{} => {} ({}{audit}, precedence {}, {})",
            self.source, self.destination, self.action, self.precedence_detail, self.origin
        )
    }
}

impl CheckView {
    /// The deciding rule as one line, or `default (no intention matches)`.
    pub fn rule_line(&self) -> String {
        self.rule.as_ref().map_or_else(
            || format!("default {} (no intention matches)", self.action),
            RuleView::line,
        )
    }
}
