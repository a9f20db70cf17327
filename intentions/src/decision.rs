//! Evaluation: which rule decides a connection, and what the decision is.

use serde::Serialize;

use crate::entry::{Action, Mode};
use crate::ruleset::{Rule, RuleSet};
use crate::service::{NameError, ServiceRef, spiffe_parts};

/// Agent-wide evaluation settings, passed with every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The action when no rule matches (`deny` unless the operator says otherwise).
    pub default: Action,
    /// Agent-wide audit mode: every deny (including the default) is only counted.
    pub audit: bool,
}

impl Policy {
    /// Default deny, enforced: the production setting.
    pub const DENY: Self = Self {
        default: Action::Deny,
        audit: false,
    };
    /// Default allow, enforced: the `--dev` setting.
    pub const ALLOW: Self = Self {
        default: Action::Allow,
        audit: false,
    };
}

impl Default for Policy {
    fn default() -> Self {
        Self::DENY
    }
}

/// What decided a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matched<'a> {
    /// This rule, the matching one with the highest precedence.
    Rule(&'a Rule),
    /// No rule matched: the policy's default action.
    Default,
}

/// The outcome of evaluating one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision<'a> {
    /// Whether the connection may proceed (true for an audited deny).
    pub allowed: bool,
    /// The action of the deciding rule or of the default.
    pub action: Action,
    /// The deciding rule, or the default.
    pub matched: Matched<'a>,
    /// True when `action` is deny but audit mode let the connection through
    /// ("would deny": log it and count it).
    pub audit: bool,
}

impl<'a> Decision<'a> {
    fn new(action: Action, matched: Matched<'a>, is_audit: bool) -> Self {
        let audit = action == Action::Deny && is_audit;
        Self {
            allowed: action == Action::Allow || audit,
            action,
            matched,
            audit,
        }
    }

    /// The deciding rule, if any.
    pub fn rule(&self) -> Option<&'a Rule> {
        match self.matched {
            Matched::Rule(r) => Some(r),
            Matched::Default => None,
        }
    }
}

impl RuleSet {
    /// Decides whether `src` may connect to `dst`: the matching rule with the highest
    /// precedence, else `policy.default`. A deny becomes "allowed, audit" when the
    /// policy or the rule's entry is in audit mode. Pure and allocation-free.
    pub fn decide(&self, src: &ServiceRef, dst: &ServiceRef, policy: Policy) -> Decision<'_> {
        self.decide_str(src.namespace.as_str(), src.name.as_str(), dst, policy)
    }

    /// [`RuleSet::decide`] on an already validated source namespace and name.
    fn decide_str(
        &self,
        src_ns: &str,
        src: &str,
        dst: &ServiceRef,
        policy: Policy,
    ) -> Decision<'_> {
        let found = self
            .index
            .find_map(dst.namespace.as_str(), dst.name.as_str(), |sources| {
                sources.find_map(src_ns, src, |&i| self.rule(i))
            });
        match found {
            Some(rule) => Decision::new(
                rule.action,
                Matched::Rule(rule),
                policy.audit || rule.mode == Mode::Audit,
            ),
            None => Decision::new(policy.default, Matched::Default, policy.audit),
        }
    }

    /// [`RuleSet::decide`] with the source given as its workload SPIFFE id
    /// (`spiffe://TD/ns/NS/svc/NAME`, as read from the peer certificate).
    pub fn decide_spiffe(
        &self,
        src: &str,
        dst: &ServiceRef,
        policy: Policy,
    ) -> Result<Decision<'_>, NameError> {
        let (_, ns, name) = spiffe_parts(src)?;
        Ok(self.decide_str(ns, name, dst, policy))
    }

    /// [`RuleSet::decide`] with both services written `NAME` or `NAMESPACE/NAME`, as on
    /// the command line (`rhizome intention check SRC DST`).
    pub fn check(&self, src: &str, dst: &str, policy: Policy) -> Result<Decision<'_>, NameError> {
        Ok(self.decide(&src.parse()?, &dst.parse()?, policy))
    }

    /// Every rule whose destination matches `dst`, highest precedence first
    /// (`rhizome intention match DST`). The first one whose source matches a connecting
    /// service is the one [`RuleSet::decide`] uses.
    pub fn matching(&self, dst: &ServiceRef) -> Vec<&Rule> {
        let (ns, name) = (dst.namespace.as_str(), dst.name.as_str());
        self.rules()
            .iter()
            .filter(|r| r.destination.matches(ns, name))
            .collect()
    }
}
