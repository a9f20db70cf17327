//! The one place the data plane asks the intentions whether a source may reach a
//! destination (so switching to the agent-wide `crate::intentions::authorize`, with its
//! decision counters and audit log, is a one-line change).

use crate::agent::Shared;
use rhizome_ca::SpiffeId;
use rhizome_intentions::ServiceRef;

/// The data plane's view of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the connection may proceed (true for an audited deny).
    pub allowed: bool,
    /// True when a deny was only audited ("would deny").
    pub audit: bool,
    /// The deciding rule (or `default`), given only for denies and audited denies.
    pub rule: Option<String>,
}

impl Verdict {
    /// `allow`, `deny` or `audit_deny` for the access log.
    pub fn label(&self) -> &'static str {
        match (self.allowed, self.audit) {
            (true, false) => "allow",
            (true, true) => "audit_deny",
            (false, _) => "deny",
        }
    }
}

/// Decides with the rules in force. A source that is not a workload of our trust domain
/// (the verifier already enforces both) is denied.
pub fn authorize(shared: &Shared, source: &SpiffeId, destination: &ServiceRef) -> Verdict {
    if source.trust_domain() != shared.identity.trust_domain() {
        return Verdict {
            allowed: false,
            audit: false,
            rule: Some("foreign trust domain".into()),
        };
    }
    let rules = shared.rules.borrow();
    match rules.decide_spiffe(&source.to_string(), destination, shared.policy) {
        Ok(d) => Verdict {
            allowed: d.allowed,
            audit: d.audit,
            rule: (!d.allowed || d.audit).then(|| {
                d.rule()
                    .map_or_else(|| "default".to_string(), |r| r.to_string())
            }),
        },
        Err(e) => Verdict {
            allowed: false,
            audit: false,
            rule: Some(format!("source is not a workload: {e}")),
        },
    }
}

/// Only whether it is allowed (for re-checks of open connections).
pub fn is_allowed(shared: &Shared, source: &SpiffeId, destination: &ServiceRef) -> bool {
    authorize(shared, source, destination).allowed
}
