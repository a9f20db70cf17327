//! The per-connection decision as a handle: [`Authorizer`] (a reader of the rules in force,
//! the agent's policy and trust domain, and the decision counters), and [`RulesWriter`],
//! the one write end of the rules, owned by [`super::Intentions`] (in linkerd2-proxy's
//! style: a pure decision, a re-check on change, and `for_test` constructors).
//!
//! Nothing here touches a socket, a file or a clock, so the decision is unit-tested and
//! benchmarked without an agent.

use super::verdict::{DecisionCounters, Outcome, Verdict};
use rhizome_ca::TrustDomain;
use rhizome_intentions::{Action, Policy, RuleSet, ServiceRef};
use std::sync::Arc;
use tokio::sync::watch;

/// What the data plane (and the intentions API) asks whether a source may reach a local
/// destination. Cheap to clone; every clone reads the same rules and counts into the same
/// counters.
#[derive(Clone)]
pub struct Authorizer {
    rules: watch::Receiver<Arc<RuleSet>>,
    policy: Policy,
    trust_domain: TrustDomain,
    counters: DecisionCounters,
}

/// The only write end of the rules in force. One owner: the rebuild of
/// [`super::Intentions`] (and, in tests, whoever called [`Authorizer::for_test`]).
pub struct RulesWriter(watch::Sender<Arc<RuleSet>>);

impl RulesWriter {
    /// Puts `set` in force unless a set of the same content version already is; returns
    /// whether it changed (so a rebuild from unchanged entries wakes no one).
    pub fn replace_if_new(&self, set: RuleSet) -> bool {
        let version = set.version();
        self.0.send_if_modified(|cur| {
            if cur.version() == version {
                return false;
            }
            *cur = Arc::new(set);
            true
        })
    }

    /// Puts `set` in force unconditionally (tests that skip the signed path).
    #[cfg(any(test, feature = "testkit"))]
    pub fn replace(&self, set: RuleSet) {
        self.0.send_replace(Arc::new(set));
    }
}

impl Authorizer {
    /// A writer holding the empty rule set and an authorizer reading it, deciding with
    /// `policy` for sources of `trust_domain` and counting into `counters`.
    pub fn new(
        policy: Policy,
        trust_domain: TrustDomain,
        counters: DecisionCounters,
    ) -> (Authorizer, RulesWriter) {
        let (tx, rx) = watch::channel(Arc::new(RuleSet::empty()));
        let authz = Authorizer {
            rules: rx,
            policy,
            trust_domain,
            counters,
        };
        (authz, RulesWriter(tx))
    }

    /// An authorizer over `rules` with unregistered counters, and its writer (tests and
    /// benches: no agent, no metrics registry).
    #[cfg(any(test, feature = "testkit"))]
    pub fn for_test(
        rules: RuleSet,
        policy: Policy,
        trust_domain: TrustDomain,
    ) -> (Authorizer, RulesWriter) {
        let (authz, writer) = Authorizer::new(policy, trust_domain, DecisionCounters::default());
        writer.replace(rules);
        (authz, writer)
    }

    /// Decides whether the workload `src_spiffe` (the SPIFFE id read from the peer's
    /// verified client certificate, `spiffe://TD/ns/NS/svc/NAME`) may open a connection to
    /// the local service `dst`, with the rules in force and the agent's policy.
    ///
    /// Call it once for every inbound stream. It never blocks (a read of the current rule
    /// set), logs every deny and every audited deny with its rule (`src.service`,
    /// `dst.service`, `rule` fields), and counts every decision in
    /// `rhizome_intention_decisions_total{source,destination,rule,decision}`. A source that is
    /// not a workload SPIFFE id of this agent's trust domain is denied (counted as `deny`),
    /// whatever the policy.
    /// To re-check open connections when the rules change, use [`Authorizer::verdict`]
    /// (same decision, not counted again) and log what you close.
    pub fn authorize(&self, src_spiffe: &str, dst: &ServiceRef) -> Verdict {
        let verdict = self.verdict(src_spiffe, dst);
        self.counters.count(&verdict);
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

    /// The decision of [`Authorizer::authorize`] without counting or logging it (for
    /// re-checks of open connections after a rule change, and for queries).
    pub fn verdict(&self, src_spiffe: &str, dst: &ServiceRef) -> Verdict {
        let rules = self.rules.borrow();
        let refuse = |error: String| Verdict {
            allowed: false,
            action: Action::Deny,
            audit: false,
            outcome: Outcome::Deny,
            rule: None,
            version: rules.version(),
            error: Some(error),
        };
        let td = self.trust_domain.as_str();
        let same_domain = src_spiffe
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|d| d == td);
        if !same_domain {
            return refuse(format!("source {src_spiffe} is not of trust domain {td}"));
        }
        match rules.decide_spiffe(src_spiffe, dst, self.policy) {
            Ok(d) => Verdict::from_decision(&d, rules.version()),
            Err(e) => refuse(e.to_string()),
        }
    }

    /// The rule set in force now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.borrow().clone()
    }

    /// A receiver that wakes on every change of the rules (the data plane re-checks its open
    /// connections on each).
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuleSet>> {
        let mut rx = self.rules.clone();
        rx.mark_unchanged();
        rx
    }

    /// The default decision and audit mode.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// `rhizome_intention_decisions_total`, as counted so far.
    pub fn counters(&self) -> &DecisionCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests;
