//! JSON shapes of the intentions API, shared by the agent (which writes them) and the CLI
//! (which reads them). Field names are part of the interface: add fields, never rename.

use rhizome_intentions::Rule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

impl RuleView {
    /// The view of a rule.
    pub fn of(rule: &Rule) -> RuleView {
        RuleView {
            source: rule.source.to_string(),
            destination: rule.destination.to_string(),
            action: rule.action.to_string(),
            mode: Self::mode_name(rule.mode).into(),
            precedence: rule.precedence.level(),
            precedence_detail: rule.precedence.to_string(),
            consul_precedence: rule.precedence.consul(),
            description: rule.description.clone(),
            origin: rule.origin.to_string(),
        }
    }

    /// `enforce` or `audit`.
    pub fn mode_name(mode: rhizome_intentions::Mode) -> &'static str {
        match mode {
            rhizome_intentions::Mode::Enforce => "enforce",
            rhizome_intentions::Mode::Audit => "audit",
        }
    }

    /// One line: `SRC => DST (action, precedence P, origin)`.
    pub fn line(&self) -> String {
        let audit = if self.mode == "audit" { ", audit" } else { "" };
        format!(
            "{} => {} ({}{audit}, precedence {}, {})",
            self.source, self.destination, self.action, self.precedence_detail, self.origin
        )
    }
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

impl CheckView {
    /// The deciding rule as one line, or `default (no intention matches)`.
    pub fn rule_line(&self) -> String {
        self.rule.as_ref().map_or_else(
            || format!("default {} (no intention matches)", self.action),
            RuleView::line,
        )
    }
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
