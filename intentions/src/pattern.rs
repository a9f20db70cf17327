//! Patterns that select services: exact names, prefix wildcards (`web-*`) and `*`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::service::{NameError, Namespace, ServiceName, ServiceRef, validate_name};

/// Why a pattern was refused: always the fault of the file that holds it; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is neither `*`, a valid name, nor a valid name followed by one `*`.
    #[error("invalid name pattern `{text}`: {source}")]
    Name {
        /// The refused text.
        text: String,
        /// What is wrong with the name part.
        source: NameError,
    },
    /// A `*` somewhere other than the end, or more than one.
    #[error("invalid name pattern `{0}`: `*` may only appear once, at the end (`web-*`)")]
    Star(String),
    /// A namespace given as a prefix (`team-*`): only exact namespaces and `*` are supported.
    #[error("invalid namespace `{0}`: a namespace is either exact or `*` (no prefix wildcards)")]
    NamespacePrefix(String),
    /// `Namespace = "*"` with a name that is not `*`, which Consul refuses too: a name
    /// without its namespace is ambiguous.
    #[error("namespace `*` requires name `*` (got `{0}`)")]
    WildcardNamespace(String),
}

/// How a name is selected. Ordered from least to most specific for a given field:
/// `Any` < `Prefix` (shorter < longer) < `Exact`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    /// `*`: every name.
    Any,
    /// `web-*`: every name starting with the stored prefix (which is never empty).
    Prefix(String),
    /// One exact name.
    Exact(ServiceName),
}

impl NamePattern {
    /// Whether `name` is selected by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(p) => name.starts_with(p.as_str()),
            Self::Exact(n) => n.as_str() == name,
        }
    }

    /// Length of the prefix for `Prefix`, else 0 (used as a precedence tie-breaker).
    pub fn prefix_len(&self) -> usize {
        match self {
            Self::Prefix(p) => p.len(),
            _ => 0,
        }
    }
}

impl FromStr for NamePattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, PatternError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let name_err = |source| PatternError::Name {
            text: s.to_owned(),
            source,
        };
        match s.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(PatternError::Star(s.to_owned())),
            Some(prefix) => {
                validate_name(prefix).map_err(name_err)?;
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None if s.contains('*') => Err(PatternError::Star(s.to_owned())),
            None => Ok(Self::Exact(s.parse().map_err(name_err)?)),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Prefix(p) => write!(f, "{p}*"),
            Self::Exact(n) => f.write_str(n.as_str()),
        }
    }
}

/// How a namespace is selected: exact or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespacePattern {
    /// `*`: every namespace.
    Any,
    /// One exact namespace.
    Exact(Namespace),
}

impl NamespacePattern {
    /// Whether `namespace` is selected by this pattern.
    pub fn matches(&self, namespace: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(n) => n.as_str() == namespace,
        }
    }
}

impl FromStr for NamespacePattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, PatternError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.contains('*') {
            return Err(PatternError::NamespacePrefix(s.to_owned()));
        }
        s.parse()
            .map(Self::Exact)
            .map_err(|source| PatternError::Name {
                text: s.to_owned(),
                source,
            })
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(n) => f.write_str(n.as_str()),
        }
    }
}

macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(NamePattern);
serde_via_str!(NamespacePattern);
serde_via_str!(ServicePattern);

/// A namespace pattern and a name pattern: one side (source or destination) of a rule.
/// Displayed and parsed as `NAMESPACE/NAME` (e.g. `default/web-*`, `*/*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePattern {
    namespace: NamespacePattern,
    name: NamePattern,
}

impl ServicePattern {
    /// Combines the two patterns, refusing `*` namespaces with a name other than `*`.
    pub fn new(namespace: NamespacePattern, name: NamePattern) -> Result<Self, PatternError> {
        if namespace == NamespacePattern::Any && name != NamePattern::Any {
            return Err(PatternError::WildcardNamespace(name.to_string()));
        }
        Ok(Self { namespace, name })
    }

    /// The pattern that selects exactly one service.
    pub fn exact(service: &ServiceRef) -> Self {
        Self {
            namespace: NamespacePattern::Exact(service.namespace.clone()),
            name: NamePattern::Exact(service.name.clone()),
        }
    }

    /// The namespace part.
    pub fn namespace(&self) -> &NamespacePattern {
        &self.namespace
    }

    /// The name part.
    pub fn name(&self) -> &NamePattern {
        &self.name
    }

    /// Whether the service `namespace/name` is selected.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.namespace.matches(namespace) && self.name.matches(name)
    }

    /// The service this pattern names, if it is exact in both parts.
    pub fn as_exact(&self) -> Option<ServiceRef> {
        match (&self.namespace, &self.name) {
            (NamespacePattern::Exact(ns), NamePattern::Exact(n)) => Some(ServiceRef {
                namespace: ns.clone(),
                name: n.clone(),
            }),
            _ => None,
        }
    }
}

impl FromStr for ServicePattern {
    type Err = PatternError;

    /// Parses `NAME` (namespace `default`) or `NAMESPACE/NAME`, each part a pattern.
    fn from_str(s: &str) -> Result<Self, PatternError> {
        let (ns, name) = s.split_once('/').unwrap_or(("default", s));
        Self::new(ns.parse()?, name.parse()?)
    }
}

impl fmt::Display for ServicePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_patterns() {
        assert_eq!("*".parse::<NamePattern>().unwrap(), NamePattern::Any);
        assert_eq!(
            "web-*".parse::<NamePattern>().unwrap(),
            NamePattern::Prefix("web-".into())
        );
        assert!(matches!(
            "web".parse::<NamePattern>().unwrap(),
            NamePattern::Exact(_)
        ));
        for bad in ["*web", "w*b", "web**", "-*"] {
            assert!(bad.parse::<NamePattern>().is_err(), "{bad}");
        }
        assert!(matches!(
            "team-*".parse::<NamespacePattern>(),
            Err(PatternError::NamespacePrefix(_))
        ));
        assert!(matches!(
            "*/web".parse::<ServicePattern>(),
            Err(PatternError::WildcardNamespace(_))
        ));
        assert_eq!(
            "web-*".parse::<ServicePattern>().unwrap().to_string(),
            "default/web-*"
        );
        assert_eq!("*/*".parse::<ServicePattern>().unwrap().to_string(), "*/*");
    }

    #[test]
    fn matches_names() {
        let p: ServicePattern = "pay/api-*".parse().unwrap();
        assert!(p.matches("pay", "api-v1"));
        assert!(p.matches("pay", "api-"));
        assert!(!p.matches("pay", "api"));
        assert!(!p.matches("default", "api-v1"));
        let any: ServicePattern = "pay/*".parse().unwrap();
        assert!(any.matches("pay", "x") && !any.matches("other", "x"));
    }
}
