//! Service identities: names, namespaces, `NAMESPACE/NAME` references and SPIFFE ids.
//!
//! Everything here is parsed once at the boundary (config files, CLI arguments, peer
//! certificates) into types, so the evaluation code never handles raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace used when a reference or an entry does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest accepted service or namespace name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name, reference or SPIFFE id was refused. Always the fault of whoever wrote it
/// (a config file, a CLI argument, or a peer certificate); nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty (config or caller error).
    #[error("empty name")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] (config or caller error).
    #[error("name `{0}` is longer than {MAX_NAME_LEN} bytes")]
    TooLong(String),
    /// The name has a character outside `A-Z a-z 0-9 . _ -` or does not start with a
    /// letter or digit (config or caller error).
    #[error(
        "invalid name `{0}`: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"
    )]
    Invalid(String),
    /// A `NAMESPACE/NAME` reference with more than one `/` (caller error).
    #[error("invalid service reference `{0}`: expected NAME or NAMESPACE/NAME")]
    Reference(String),
    /// A SPIFFE id that is not `spiffe://TRUST_DOMAIN/ns/NAMESPACE/svc/NAME` (peer or
    /// caller error).
    #[error(
        "invalid workload SPIFFE id `{0}`: expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/svc/NAME"
    )]
    Spiffe(String),
}

/// Checks the shared syntax of service names, namespaces and trust domains.
pub(crate) fn validate_name(s: &str) -> Result<(), NameError> {
    let first = s.bytes().next().ok_or(NameError::Empty)?;
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(s.to_owned()));
    }
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !first.is_ascii_alphanumeric() || !s.bytes().all(ok_byte) {
        return Err(NameError::Invalid(s.to_owned()));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                validate_name(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
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

name_type!(
    /// A service name such as `web` (letters, digits, `.`, `_`, `-`).
    ServiceName
);
name_type!(
    /// A namespace such as `default` or `payments`; same syntax as a service name.
    Namespace
);

impl Default for Namespace {
    fn default() -> Self {
        Self(DEFAULT_NAMESPACE.to_owned())
    }
}

/// One service: a namespace and a name. Written `NAME` (namespace `default`) or
/// `NAMESPACE/NAME`; displayed always as `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRef {
    /// The namespace of the service.
    pub namespace: Namespace,
    /// The name of the service.
    pub name: ServiceName,
}

impl ServiceRef {
    /// Builds a reference from text parts, checking both.
    pub fn new(namespace: &str, name: &str) -> Result<Self, NameError> {
        Ok(Self {
            namespace: namespace.parse()?,
            name: name.parse()?,
        })
    }

    /// Parses a workload SPIFFE id `spiffe://TD/ns/NS/svc/NAME` (as found in a peer's
    /// certificate), returning the trust domain and the service. The trust domain is not
    /// checked against anything here: the TLS verifier has done that.
    pub fn from_spiffe(id: &str) -> Result<(String, Self), NameError> {
        let (td, ns, name) = spiffe_parts(id)?;
        Ok((
            td.to_owned(),
            Self {
                namespace: Namespace(ns.to_owned()),
                name: ServiceName(name.to_owned()),
            },
        ))
    }

    /// The SPIFFE id of this service's workloads in trust domain `td`.
    pub fn spiffe_id(&self, td: &str) -> String {
        format!("spiffe://{td}/ns/{}/svc/{}", self.namespace, self.name)
    }
}

/// Splits and checks a workload SPIFFE id into (trust domain, namespace, name) without
/// allocating, for the per-connection path.
pub(crate) fn spiffe_parts(id: &str) -> Result<(&str, &str, &str), NameError> {
    let bad = || NameError::Spiffe(id.to_owned());
    let rest = id.strip_prefix("spiffe://").ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(td), Some("ns"), Some(ns), Some("svc"), Some(name), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    for part in [td, ns, name] {
        validate_name(part).map_err(|_| bad())?;
    }
    Ok((td, ns, name))
}

impl FromStr for ServiceRef {
    type Err = NameError;

    /// Parses `NAME` (namespace `default`) or `NAMESPACE/NAME`.
    fn from_str(s: &str) -> Result<Self, NameError> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => Self::new(DEFAULT_NAMESPACE, name),
            (Some(ns), Some(name), None) => Self::new(ns, name),
            _ => Err(NameError::Reference(s.to_owned())),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_namespace_forms() {
        let r: ServiceRef = "web".parse().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("default", "web"));
        let r: ServiceRef = "pay/api-v2".parse().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("pay", "api-v2"));
        assert_eq!(r.to_string(), "pay/api-v2");
    }

    #[test]
    fn refuses_bad_references() {
        assert_eq!("".parse::<ServiceRef>(), Err(NameError::Empty));
        assert!(matches!(
            "a/b/c".parse::<ServiceRef>(),
            Err(NameError::Reference(_))
        ));
        assert!(matches!(
            "-web".parse::<ServiceRef>(),
            Err(NameError::Invalid(_))
        ));
        assert!(matches!(
            "we b".parse::<ServiceRef>(),
            Err(NameError::Invalid(_))
        ));
        assert!(matches!(
            "web*".parse::<ServiceRef>(),
            Err(NameError::Invalid(_))
        ));
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            long.parse::<ServiceName>(),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn parses_spiffe_ids() {
        let (td, r) = ServiceRef::from_spiffe("spiffe://rhizome.local/ns/pay/svc/api").unwrap();
        assert_eq!(td, "rhizome.local");
        assert_eq!(r.to_string(), "pay/api");
        assert_eq!(
            r.spiffe_id("rhizome.local"),
            "spiffe://rhizome.local/ns/pay/svc/api"
        );
        for bad in [
            "http://td/ns/a/svc/b",
            "spiffe://td/ns/a/svc/b/extra",
            "spiffe://td/agent/node-1",
            "spiffe://td/ns/a/svc/",
            "spiffe:///ns/a/svc/b",
            "spiffe://td/ns/a/service/b",
        ] {
            assert_eq!(
                ServiceRef::from_spiffe(bad),
                Err(NameError::Spiffe(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
