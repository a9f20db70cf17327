//! SPIFFE identities of the mesh: trust domains, names and [`SpiffeId`].
//!
//! Everything is parsed once here, at the boundary, into types; the rest of the crate never
//! handles identity strings.

use std::fmt;
use std::str::FromStr;

/// Why an identity string was refused. Always the fault of whoever wrote the string
/// (configuration, CLI argument or a peer's certificate); nothing changes state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The URI does not start with `spiffe://` (caller's or peer's input).
    #[error("not a SPIFFE URI (must start with spiffe://): {0:?}")]
    NotSpiffe(String),
    /// The trust domain is empty, too long, or uses characters outside `[a-z0-9._-]`.
    #[error("invalid trust domain {0:?}: lowercase letters, digits, '.', '-', '_' only")]
    TrustDomain(String),
    /// A name (service, namespace, node, operator) breaks its syntax rule.
    #[error("invalid {what} name {value:?}: {rule}")]
    Name {
        /// Which kind of name was being parsed.
        what: &'static str,
        /// The offending value.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The path is none of `/ns/<ns>/svc/<svc>`, `/agent/<node>`, `/operator/<name>`.
    #[error(
        "unknown SPIFFE path {0:?}: expected /ns/<ns>/svc/<svc>, /agent/<node> or /operator/<name>"
    )]
    Path(String),
}

/// The trust domain of a mesh (e.g. `rhizome.local`): the authority part of every SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE id of the trust domain itself (`spiffe://<td>`), carried by root CAs.
    pub fn id_uri(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    /// Parses `spiffe://<td>` (no path), the URI a root or cross-signed root carries.
    pub fn from_id_uri(uri: &str) -> Result<Self, IdError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdError::NotSpiffe(uri.to_owned()))?;
        rest.parse()
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::TrustDomain(s.to_owned()))
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a DNS label: 1..=63 of `[a-z0-9-]`, not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const LABEL_RULE: &str = "1-63 of [a-z0-9-], not starting or ending with '-'";

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $rule:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::Name { what: $what, value: s.to_owned(), rule: $rule })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A service name (`web`, `db`): one DNS label, so it can appear in SNI names.
    ServiceName, "service", LABEL_RULE, is_dns_label
);
name_type!(
    /// A namespace (`default`): one DNS label.
    Namespace, "namespace", LABEL_RULE, is_dns_label
);
name_type!(
    /// A node (host) name: DNS labels separated by dots, at most 253 characters, as in
    /// Kubernetes node names.
    NodeName,
    "node",
    "dot-separated DNS labels of [a-z0-9-], at most 253 characters",
    |s| s.len() <= 253 && s.split('.').all(is_dns_label)
);
name_type!(
    /// An operator name (a person or automation allowed to sign intentions and keyrings).
    OperatorName,
    "operator",
    "1-128 of [a-z0-9._-], starting with a letter or digit",
    |s| {
        s.len() <= 128
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    }
);

impl Namespace {
    /// The namespace used when none is given: `default`.
    pub fn default_ns() -> Self {
        Self("default".to_owned())
    }
}

/// What a certificate is for; each kind has its own SPIFFE path and issuance rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// A service instance, issued by the agent intermediate of its node.
    Workload,
    /// An agent's own identity, issued by its own intermediate.
    Agent,
    /// An operator, issued by the root directly.
    Operator,
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Workload => "workload",
            Self::Agent => "agent",
            Self::Operator => "operator",
        })
    }
}

/// A SPIFFE id of the mesh, one variant per [`CertKind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpiffeId {
    /// `spiffe://<td>/ns/<ns>/svc/<svc>`
    Workload {
        /// Trust domain.
        td: TrustDomain,
        /// Namespace of the service.
        ns: Namespace,
        /// Service name.
        svc: ServiceName,
    },
    /// `spiffe://<td>/agent/<node>`
    Agent {
        /// Trust domain.
        td: TrustDomain,
        /// The node the agent runs on.
        node: NodeName,
    },
    /// `spiffe://<td>/operator/<name>`
    Operator {
        /// Trust domain.
        td: TrustDomain,
        /// Operator name.
        name: OperatorName,
    },
}

impl SpiffeId {
    /// The trust domain of this id.
    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            Self::Workload { td, .. } | Self::Agent { td, .. } | Self::Operator { td, .. } => td,
        }
    }

    /// Which kind of certificate carries this id.
    pub fn kind(&self) -> CertKind {
        match self {
            Self::Workload { .. } => CertKind::Workload,
            Self::Agent { .. } => CertKind::Agent,
            Self::Operator { .. } => CertKind::Operator,
        }
    }

    /// The DNS name used for SNI and the DNS SAN: `<svc>.<ns>.svc.<td>` for a workload,
    /// `<node>.agent.<td>` for an agent; operators have none.
    pub fn dns_name(&self) -> Option<String> {
        match self {
            Self::Workload { td, ns, svc } => Some(format!("{svc}.{ns}.svc.{td}")),
            Self::Agent { td, node } => Some(format!("{node}.agent.{td}")),
            Self::Operator { .. } => None,
        }
    }

    /// Inverse of [`SpiffeId::dns_name`] for a known trust domain; `None` if `name` is not
    /// a mesh name of `td`.
    pub fn from_dns_name(name: &str, td: &TrustDomain) -> Option<Self> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let host = name.strip_suffix(td.as_str())?.strip_suffix('.')?;
        if let Some(node) = host.strip_suffix(".agent") {
            let node = node.parse().ok()?;
            return Some(Self::Agent {
                td: td.clone(),
                node,
            });
        }
        let (svc, ns) = host.strip_suffix(".svc")?.split_once('.')?;
        Some(Self::Workload {
            td: td.clone(),
            ns: ns.parse().ok()?,
            svc: svc.parse().ok()?,
        })
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdError::NotSpiffe(s.to_owned()))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| IdError::Path(String::new()))?;
        let td: TrustDomain = td.parse()?;
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["ns", ns, "svc", svc] => Ok(Self::Workload {
                td,
                ns: ns.parse()?,
                svc: svc.parse()?,
            }),
            ["agent", node] => Ok(Self::Agent {
                td,
                node: node.parse()?,
            }),
            ["operator", name] => Ok(Self::Operator {
                td,
                name: name.parse()?,
            }),
            _ => Err(IdError::Path(format!("/{path}"))),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload { td, ns, svc } => write!(f, "spiffe://{td}/ns/{ns}/svc/{svc}"),
            Self::Agent { td, node } => write!(f, "spiffe://{td}/agent/{node}"),
            Self::Operator { td, name } => write!(f, "spiffe://{td}/operator/{name}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        for s in [
            "spiffe://rhizome.local/ns/default/svc/web",
            "spiffe://rhizome.local/agent/node-1.eu.example",
            "spiffe://rhizome.local/operator/alice",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_ids_with_specific_errors() {
        assert!(matches!(
            "http://td/agent/a".parse::<SpiffeId>(),
            Err(IdError::NotSpiffe(_))
        ));
        assert!(matches!(
            "spiffe://TD/agent/a".parse::<SpiffeId>(),
            Err(IdError::TrustDomain(_))
        ));
        assert!(matches!(
            "spiffe://td/agent/a/b".parse::<SpiffeId>(),
            Err(IdError::Path(_))
        ));
        assert!(matches!(
            "spiffe://td".parse::<SpiffeId>(),
            Err(IdError::Path(_))
        ));
        assert!(matches!(
            "spiffe://td/ns/default/svc/-web".parse::<SpiffeId>(),
            Err(IdError::Name {
                what: "service",
                ..
            })
        ));
        assert!(matches!(
            "spiffe://td/agent/a..b".parse::<SpiffeId>(),
            Err(IdError::Name { what: "node", .. })
        ));
    }

    #[test]
    fn dns_names_round_trip() {
        let td: TrustDomain = "rhizome.local".parse().unwrap();
        let w: SpiffeId = "spiffe://rhizome.local/ns/prod/svc/db".parse().unwrap();
        let a: SpiffeId = "spiffe://rhizome.local/agent/n1.rack2".parse().unwrap();
        assert_eq!(w.dns_name().unwrap(), "db.prod.svc.rhizome.local");
        for id in [w, a] {
            let dns = id.dns_name().unwrap();
            assert_eq!(SpiffeId::from_dns_name(&dns, &td), Some(id));
        }
        assert_eq!(SpiffeId::from_dns_name("db.prod.svc.other.td", &td), None);
        assert_eq!(SpiffeId::from_dns_name("db.mesh.invalid", &td), None);
    }
}
