//! The owned outcome of a per-connection decision ([`Verdict`], [`Outcome`]) and the
//! `rhizome_intention_decisions_total` counter; the decision itself is
//! [`super::Authorizer`].

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rhizome_intentions::{Action, Decision, Rule, Version};
use serde::Serialize;

/// The outcome label of `rhizome_intention_decisions_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let through by an allow (rule or default).
    Allow,
    /// Refused by a deny (rule or default).
    Deny,
    /// A deny that audit mode let through ("would deny").
    AuditDeny,
}

impl Outcome {
    /// The label value: `allow`, `deny` or `audit_deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::AuditDeny => "audit_deny",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

/// Labels of the decisions counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow, deny or audit_deny.
    pub decision: Outcome,
}

/// The counter family `rhizome_intention_decisions_total{decision}`.
#[derive(Clone, Default)]
pub struct DecisionCounters(Family<DecisionLabels, Counter>);

impl DecisionCounters {
    /// A new family registered in `metrics`.
    pub fn register(metrics: &crate::metrics::Metrics) -> DecisionCounters {
        let family = Family::<DecisionLabels, Counter>::default();
        metrics.register(
            "intention_decisions",
            "Connections decided by intentions, by outcome (audit_deny: let through by audit mode)",
            family.clone(),
        );
        DecisionCounters(family)
    }

    /// Counts one decision.
    pub fn count(&self, outcome: Outcome) {
        self.0
            .get_or_create(&DecisionLabels { decision: outcome })
            .inc();
    }

    /// The current count of `outcome` (for tests and the API).
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.0
            .get_or_create(&DecisionLabels { decision: outcome })
            .get()
    }
}

/// An owned decision: whether a connection may proceed and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the connection may proceed (true for an audited deny).
    pub allowed: bool,
    /// The action of the deciding rule or of the default.
    pub action: Action,
    /// True when a deny was let through by audit mode ("would deny").
    pub audit: bool,
    /// allow, deny or audit_deny.
    pub outcome: Outcome,
    /// The deciding rule; `None` when the default decided (or the source id was invalid).
    pub rule: Option<Rule>,
    /// The version of the rule set that decided.
    pub version: Version,
    /// Why the source could not be evaluated (an invalid SPIFFE id: always denied).
    pub error: Option<String>,
}

impl Verdict {
    /// The owned form of a library decision.
    pub fn from_decision(d: &Decision<'_>, version: Version) -> Verdict {
        Verdict {
            allowed: d.allowed,
            action: d.action,
            audit: d.audit,
            outcome: outcome(d.allowed, d.audit),
            rule: d.rule().cloned(),
            version,
            error: None,
        }
    }

    /// The deciding rule as one line (`default/web => default/db (allow, precedence 16,
    /// file:3:5)`), or `default` when no rule matched.
    pub fn rule_text(&self) -> String {
        self.rule
            .as_ref()
            .map_or_else(|| "default".to_owned(), ToString::to_string)
    }
}

fn outcome(allowed: bool, audit: bool) -> Outcome {
    match (allowed, audit) {
        (true, true) => Outcome::AuditDeny,
        (true, false) => Outcome::Allow,
        (false, _) => Outcome::Deny,
    }
}
