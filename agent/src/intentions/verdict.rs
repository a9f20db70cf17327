//! The per-connection decision the data plane asks for: [`authorize`], its owned
//! [`Verdict`], the deny/audit log lines and the `rhizome_intention_decisions_total` counter.

use crate::agent::Shared;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rhizome_intentions::{Action, Decision, Rule, ServiceRef, Version};
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

/// Decides whether the workload `src_spiffe` (the SPIFFE id read from the peer's verified
/// client certificate, `spiffe://TD/ns/NS/svc/NAME`) may open a connection to the local
/// service `dst`, with the rules in force and the agent's policy (default action, audit).
///
/// Call it once for every inbound stream. It never blocks (a read of the current rule
/// set), logs every deny and every audited deny with its rule (`src.service`,
/// `dst.service`, `rule` fields), and counts every decision in
/// `rhizome_intention_decisions_total{decision}`. A source that is not a workload SPIFFE
/// id of this agent's trust domain is denied (counted as `deny`), whatever the policy.
/// To re-check open connections when `shared.rules` changes, use [`verdict`] (same
/// decision, not counted again) and log what you close.
pub fn authorize(shared: &Shared, src_spiffe: &str, dst: &ServiceRef) -> Verdict {
    let verdict = verdict(shared, src_spiffe, dst);
    shared.intentions.decisions.count(verdict.outcome);
    match verdict.outcome {
        Outcome::Allow => tracing::debug!(
            src.service = src_spiffe, dst.service = %dst, rule = %verdict.rule_text(),
            "intention allows"
        ),
        Outcome::AuditDeny => tracing::warn!(
            src.service = src_spiffe, dst.service = %dst, rule = %verdict.rule_text(),
            version = %verdict.version, "intention would deny (audit mode): let through"
        ),
        Outcome::Deny => tracing::warn!(
            src.service = src_spiffe, dst.service = %dst, rule = %verdict.rule_text(),
            version = %verdict.version, error = verdict.error.as_deref().unwrap_or(""),
            "intention denies"
        ),
    }
    verdict
}

/// The decision of [`authorize`] without counting or logging it (for re-checks of open
/// connections after a rule change, and for queries).
pub fn verdict(shared: &Shared, src_spiffe: &str, dst: &ServiceRef) -> Verdict {
    let rules = shared.rules.borrow();
    let refuse = |error: String| Verdict {
        allowed: false,
        action: Action::Deny,
        audit: false,
        outcome: Outcome::Deny,
        rule: None,
        version: rules.version(),
        error: Some(error),
    };
    let td = shared.identity.trust_domain().as_str();
    let same_domain = src_spiffe
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|d| d == td);
    if !same_domain {
        return refuse(format!("source {src_spiffe} is not of trust domain {td}"));
    }
    match rules.decide_spiffe(src_spiffe, dst, shared.policy) {
        Ok(d) => Verdict::from_decision(&d, rules.version()),
        Err(e) => refuse(e.to_string()),
    }
}
