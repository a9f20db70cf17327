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

/// Labels of the decisions counter: the deciding rule (its source and destination patterns
/// and where it was written, `entry:line:column`) and the outcome. A decision left to the
/// default has `rule="default"` and empty patterns; a source that could not be evaluated
/// (not a workload of this trust domain) has `rule="invalid_source"`. So the label sets are
/// bounded by the rules loaded since the agent started, times three outcomes, plus six.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The rule's source pattern (`default/web`, `*/*`), empty for the default.
    pub source: String,
    /// The rule's destination pattern, empty for the default.
    pub destination: String,
    /// Where the rule was written (`intentions/default/db:4:3`), or `default`.
    pub rule: String,
    /// allow, deny or audit_deny.
    pub decision: Outcome,
}

impl DecisionLabels {
    /// The labels of `verdict`.
    pub fn of(verdict: &Verdict) -> DecisionLabels {
        let (source, destination, rule) = match (&verdict.rule, &verdict.error) {
            (Some(r), _) => (
                r.source.to_string(),
                r.destination.to_string(),
                r.origin.to_string(),
            ),
            (None, Some(_)) => (String::new(), String::new(), "invalid_source".to_owned()),
            (None, None) => (String::new(), String::new(), "default".to_owned()),
        };
        DecisionLabels {
            source,
            destination,
            rule,
            decision: verdict.outcome,
        }
    }
}

/// The counter family `rhizome_intention_decisions_total{source,destination,rule,decision}`,
/// with running totals per outcome (the family has no sum).
#[derive(Clone, Default)]
pub struct DecisionCounters {
    family: Family<DecisionLabels, Counter>,
    totals: std::sync::Arc<[std::sync::atomic::AtomicU64; 3]>,
}

impl DecisionCounters {
    /// A new family registered in `metrics`.
    pub fn register(metrics: &crate::metrics::Metrics) -> DecisionCounters {
        let counters = DecisionCounters::default();
        metrics.register(
            "intention_decisions",
            "Connections decided by intentions, by deciding rule (source and destination \
             patterns, entry:line:column, or default) and outcome (audit_deny: let through by \
             audit mode)",
            counters.family.clone(),
        );
        counters
    }

    /// Counts one decision under its rule.
    pub fn count(&self, verdict: &Verdict) {
        self.family
            .get_or_create(&DecisionLabels::of(verdict))
            .inc();
        self.totals[slot(verdict.outcome)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many decisions had `outcome`, whatever the rule (for tests and the API).
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.totals[slot(outcome)].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many decisions `labels` counted.
    pub fn get_labeled(&self, labels: &DecisionLabels) -> u64 {
        self.family.get_or_create(labels).get()
    }
}

fn slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Allow => 0,
        Outcome::Deny => 1,
        Outcome::AuditDeny => 2,
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
