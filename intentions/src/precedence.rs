//! Rule precedence: Consul's nine levels, extended with prefix wildcards.
//!
//! The full table and the reasoning are in the crate documentation (`lib.rs`).

use std::fmt;

use serde::Serialize;

use crate::pattern::{NamePattern, NamespacePattern, ServicePattern};

/// How specific one side of a rule is, from least to most specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Specificity {
    /// `*/*`.
    AnyNamespace,
    /// `ns/*`.
    AnyName,
    /// `ns/web-*`.
    Prefix,
    /// `ns/web`.
    Exact,
}

impl Specificity {
    fn of(p: &ServicePattern) -> Self {
        match (p.namespace(), p.name()) {
            (NamespacePattern::Any, _) => Self::AnyNamespace,
            (_, NamePattern::Any) => Self::AnyName,
            (_, NamePattern::Prefix(_)) => Self::Prefix,
            (_, NamePattern::Exact(_)) => Self::Exact,
        }
    }

    /// Rank among Consul's three kinds (exact, `ns/*`, `*/*`), `None` for a prefix.
    fn consul_rank(self) -> Option<u8> {
        match self {
            Self::AnyNamespace => Some(0),
            Self::AnyName => Some(1),
            Self::Prefix => None,
            Self::Exact => Some(2),
        }
    }
}

/// The precedence of a rule, computed once from its source and destination patterns.
///
/// Higher wins. Rules compare by how specific the destination is (exact, then prefix
/// with longer prefixes first, then `ns/*`, then `*/*`), then the same for the source.
/// Two rules that compare equal and both match one request always have identical
/// patterns, which the rule set refuses as a conflict, so a decision never depends on
/// the order of rules or files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Precedence {
    destination: Specificity,
    destination_prefix: u16,
    source: Specificity,
    source_prefix: u16,
}

impl Precedence {
    /// Computes the precedence of a rule from `source` to `destination`.
    pub fn of(source: &ServicePattern, destination: &ServicePattern) -> Self {
        let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Self {
            destination: Specificity::of(destination),
            destination_prefix: clamp(destination.name().prefix_len()),
            source: Specificity::of(source),
            source_prefix: clamp(source.name().prefix_len()),
        }
    }

    /// The row of the extended table, 1 (`*/*` to `*/*`) to 16 (exact to exact).
    pub fn level(&self) -> u8 {
        self.destination as u8 * 4 + self.source as u8 + 1
    }

    /// Length of the destination name prefix (0 unless the destination is `ns/prefix*`).
    pub fn destination_prefix(&self) -> u16 {
        self.destination_prefix
    }

    /// Length of the source name prefix (0 unless the source is `ns/prefix*`).
    pub fn source_prefix(&self) -> u16 {
        self.source_prefix
    }

    /// Consul's precedence number (1 to 9) for a rule without prefix wildcards, the number
    /// Consul itself would show; `None` when either side is a prefix (Consul has none).
    pub fn consul(&self) -> Option<u8> {
        let dst = self.destination.consul_rank()?;
        let src = self.source.consul_rank()?;
        Some(dst * 3 + src + 1)
    }
}

/// Serialized as `{ level, consul, destination_prefix, source_prefix }`.
impl Serialize for Precedence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Precedence", 4)?;
        st.serialize_field("level", &self.level())?;
        st.serialize_field("consul", &self.consul())?;
        st.serialize_field("destination_prefix", &self.destination_prefix)?;
        st.serialize_field("source_prefix", &self.source_prefix)?;
        st.end()
    }
}

/// Displayed as the level, followed by `.DST_PREFIX_LEN.SRC_PREFIX_LEN` when either side
/// is a prefix (`15.0.4` for `ns/web-*` to an exact destination).
impl fmt::Display for Precedence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level())?;
        if self.destination_prefix > 0 || self.source_prefix > 0 {
            write!(f, ".{}.{}", self.destination_prefix, self.source_prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn prec(src: &str, dst: &str) -> Precedence {
        Precedence::of(&src.parse().unwrap(), &dst.parse().unwrap())
    }

    /// Consul's published table: (source, destination, precedence).
    const CONSUL_TABLE: [(&str, &str, u8); 9] = [
        ("a/web", "b/db", 9),
        ("a/*", "b/db", 8),
        ("*/*", "b/db", 7),
        ("a/web", "b/*", 6),
        ("a/*", "b/*", 5),
        ("*/*", "b/*", 4),
        ("a/web", "*/*", 3),
        ("a/*", "*/*", 2),
        ("*/*", "*/*", 1),
    ];

    #[test]
    fn every_consul_level_is_reproduced_and_ordered() {
        let precs: Vec<Precedence> = CONSUL_TABLE
            .iter()
            .map(|(s, d, want)| {
                let p = prec(s, d);
                assert_eq!(p.consul(), Some(*want), "{s} -> {d}");
                p
            })
            .collect();
        assert!(precs.windows(2).all(|w| w[0] > w[1]), "{precs:?}");
    }

    #[test]
    fn prefixes_sit_between_exact_and_star() {
        // Destination side: exact > prefix > ns/* whatever the source.
        assert!(prec("*/*", "b/db") > prec("a/web", "b/db-*"));
        assert!(prec("*/*", "b/db-*") > prec("a/web", "b/*"));
        // Source side.
        assert!(prec("a/web", "b/db") > prec("a/web-*", "b/db"));
        assert!(prec("a/w-*", "b/db") > prec("a/*", "b/db"));
        // Longer prefix beats shorter, on both sides; the destination's counts first.
        assert!(prec("a/*", "b/db-e*") > prec("a/web", "b/db-*"));
        assert!(prec("*/*", "b/db-e*") > prec("a/web", "b/db-*"));
        assert!(prec("a/web", "b/db-*") > prec("a/web-*", "b/db-*"));
        assert!(prec("a/web-e*", "b/db") > prec("a/web-*", "b/db"));
        assert_eq!(prec("a/web-*", "b/db").consul(), None);
        assert_eq!(prec("a/web-*", "b/db").level(), 15);
        assert_eq!(prec("a/web", "b/db").level(), 16);
        assert_eq!(prec("*/*", "*/*").level(), 1);
    }
}
