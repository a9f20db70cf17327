//! The one place the data plane asks the intentions whether a source may reach a
//! destination: [`crate::intentions::authorize`] (which counts every decision and logs denies
//! and audited denies with their rule), reduced to what the proxy needs.

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

/// Decides a new inbound connection with the rules in force (counted and logged). A source
/// that is not a workload of our trust domain is denied (the verifier refuses those first).
pub fn authorize(shared: &Shared, source: &SpiffeId, destination: &ServiceRef) -> Verdict {
    let v = crate::intentions::authorize(shared, &source.to_string(), destination);
    Verdict {
        allowed: v.allowed,
        audit: v.audit,
    }
}

/// Whether an open connection is still allowed (re-check after a rule change; not counted).
pub fn is_allowed(shared: &Shared, source: &SpiffeId, destination: &ServiceRef) -> bool {
    crate::intentions::verdict(shared, &source.to_string(), destination).allowed
}
