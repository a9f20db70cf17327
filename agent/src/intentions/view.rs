//! The server side of the intentions API's wire types ([`crate::api::types`]): views built
//! from the library's rules (the agent's API and the CLI's offline `intention check` both
//! build them).

use crate::api::types::RuleView;
use rhizome_intentions::Rule;

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
}
