//! SPIFFE identities of the mesh: trust domains, names and [`SpiffeId`].
//!
//! Everything is parsed once here, at the boundary, into types; the rest of the crate never
//! handles identity strings.

use std::fmt;
use std::str::FromStr;

/// Why an identity string was refused. Always the fault of whoever wrote the string
/// (configuration, CLI argument or a peer's certificate); nothing changes state. The
/// messages name the rule of the SPIFFE-ID standard (`SPIFFE-ID 2.1` ...) that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The URI does not start with `spiffe://` (caller's or peer's input).
    #[error("SPIFFE-ID 2: a SPIFFE ID must use the spiffe scheme (spiffe://...): {0:?}")]
    NotSpiffe(String),
    /// The whole URI is longer than [`MAX_ID_LEN`] bytes.
    #[error("SPIFFE-ID 2.3: a SPIFFE ID must not be longer than 2048 bytes (this one has {0})")]
    TooLong(usize),
    /// The URI has a query (`?`) or a fragment (`#`).
    #[error("SPIFFE-ID 2: a SPIFFE ID must not include a query or fragment: {0:?}")]
    QueryOrFragment(String),
    /// The trust domain breaks a rule of SPIFFE-ID 2.1 (empty, userinfo, port, uppercase,
    /// percent-encoding, characters outside `[a-z0-9._-]`, longer than 255 bytes).
    #[error("SPIFFE-ID 2.1: invalid trust domain {value:?}: {rule}")]
    TrustDomain {
        /// The offending authority.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The path breaks a rule of SPIFFE-ID 2.2 (percent-encoding, empty, `.` or `..`
    /// segments, trailing `/`, characters outside `[a-zA-Z0-9._-]`).
    #[error("SPIFFE-ID 2.2: invalid path {path:?}: {rule}")]
    PathSyntax {
        /// The offending path.
        path: String,
        /// The rule it broke.
        rule: &'static str,
    },
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
    /// A trust domain's own id (`spiffe://<td>`, what signing certificates carry) has a path.
    #[error(
        "X509-SVID 3.2: the SPIFFE ID of a signing certificate must not have a path \
         (spiffe://<td> only), found {0:?}"
    )]
    UnexpectedPath(String),
}

/// Longest SPIFFE ID accepted or produced, in bytes (SPIFFE-ID 2.3).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name, in bytes (SPIFFE-ID 2.3, the URI host limit of RFC 3986).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Checks `uri` against the generic syntax of SPIFFE-ID section 2 (scheme, length, no query
/// or fragment, trust domain rules of 2.1, path rules of 2.2) and splits it into its trust
/// domain and its path (empty, or starting with `/`). The mesh's own path layouts are
/// checked afterwards by [`SpiffeId`]'s `FromStr`.
pub fn split_spiffe_id(uri: &str) -> Result<(TrustDomain, &str), IdError> {
    if uri.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(uri.len()));
    }
    let rest = uri
        .strip_prefix("spiffe://")
        .ok_or_else(|| IdError::NotSpiffe(uri.to_owned()))?;
    if rest.contains(['?', '#']) {
        return Err(IdError::QueryOrFragment(uri.to_owned()));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let td: TrustDomain = authority.parse()?;
    check_path(path)?;
    Ok((td, path))
}

/// SPIFFE-ID 2.2 on a path that is empty or starts with `/`.
fn check_path(path: &str) -> Result<(), IdError> {
    let Some(body) = path.strip_prefix('/') else {
        return Ok(());
    };
    let bad = |rule| {
        Err(IdError::PathSyntax {
            path: path.to_owned(),
            rule,
        })
    };
    if path.contains('%') {
        return bad("must not contain percent-encoded characters");
    }
    let segments: Vec<&str> = body.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i + 1 == segments.len() {
            return bad("must not end with '/'");
        }
        if seg.is_empty() {
            return bad("must not contain empty segments");
        }
        if *seg == "." || *seg == ".." {
            return bad("must not contain '.' or '..' segments");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad("segments may contain only letters, digits, '.', '-' and '_'");
        }
    }
    Ok(())
}

/// The trust domain of a mesh (e.g. `rhizome.local`): the authority part of every SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE id of the trust domain itself (`spiffe://<td>`), the only id a signing
    /// certificate (root, cross-signed root, agent intermediate) may carry (X509-SVID 3.2).
    pub fn id_uri(&self) -> String {
        format!("spiffe://{}", self.0)
    }

    /// Parses `spiffe://<td>` (no path, X509-SVID 3.2), the URI a signing certificate carries.
    pub fn from_id_uri(uri: &str) -> Result<Self, IdError> {
        let (td, path) = split_spiffe_id(uri)?;
        if path.is_empty() {
            Ok(td)
        } else {
            Err(IdError::UnexpectedPath(uri.to_owned()))
        }
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let rule = if s.is_empty() {
            Some("must not be empty")
        } else if s.contains('@') {
            Some("must not carry userinfo")
        } else if s.contains(':') {
            Some("must not carry a port (no ':')")
        } else if s.contains('%') {
            Some("must not contain percent-encoded characters")
        } else if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Some("must be lowercase")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            Some("may contain only lowercase letters, digits, '.', '-' and '_'")
        } else if s.len() > MAX_TRUST_DOMAIN_LEN {
            Some("must not be longer than 255 bytes")
        } else {
            None
        };
        match rule {
            None => Ok(Self(s.to_owned())),
            Some(rule) => Err(IdError::TrustDomain {
                value: s.to_owned(),
                rule,
            }),
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
        let (td, path) = split_spiffe_id(s)?;
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or("").split('/').collect();
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
            _ => Err(IdError::Path(path.to_owned())),
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
            Err(IdError::TrustDomain { .. })
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

    /// One case per rule of SPIFFE-ID sections 2 to 2.3, each refused with that rule.
    #[test]
    fn spiffe_id_syntax_rules_each_refused_by_name() {
        let long_path = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        let long_td = format!("spiffe://{}/agent/a", "a".repeat(256));
        let cases: &[(&str, &str)] = &[
            (
                "https://td/agent/a",
                "SPIFFE-ID 2: a SPIFFE ID must use the spiffe scheme",
            ),
            (
                "spiffe:/td/agent/a",
                "SPIFFE-ID 2: a SPIFFE ID must use the spiffe scheme",
            ),
            (
                "spiffe://td/agent/a?x=1",
                "must not include a query or fragment",
            ),
            (
                "spiffe://td/agent/a#frag",
                "must not include a query or fragment",
            ),
            (
                &long_path,
                "SPIFFE-ID 2.3: a SPIFFE ID must not be longer than 2048 bytes",
            ),
            (
                "spiffe:///agent/a",
                "SPIFFE-ID 2.1: invalid trust domain \"\": must not be empty",
            ),
            ("spiffe://user@td/agent/a", "must not carry userinfo"),
            ("spiffe://td:8443/agent/a", "must not carry a port"),
            (
                "spiffe://t%64/agent/a",
                "SPIFFE-ID 2.1: invalid trust domain \"t%64\": must not contain percent-encoded",
            ),
            (
                "spiffe://Td/agent/a",
                "SPIFFE-ID 2.1: invalid trust domain \"Td\": must be lowercase",
            ),
            (
                "spiffe://t*d/agent/a",
                "may contain only lowercase letters, digits",
            ),
            ("spiffe://[::1]/agent/a", "SPIFFE-ID 2.1"),
            (&long_td, "must not be longer than 255 bytes"),
            (
                "spiffe://td/agent/%61",
                "SPIFFE-ID 2.2: invalid path \"/agent/%61\": must not contain percent-encoded",
            ),
            ("spiffe://td/agent//a", "must not contain empty segments"),
            ("spiffe://td/agent/a/", "must not end with '/'"),
            ("spiffe://td/", "must not end with '/'"),
            (
                "spiffe://td/agent/./a",
                "must not contain '.' or '..' segments",
            ),
            (
                "spiffe://td/ns/../agent/a",
                "must not contain '.' or '..' segments",
            ),
            (
                "spiffe://td/agent/a b",
                "segments may contain only letters, digits",
            ),
            (
                "spiffe://td/agent/é",
                "segments may contain only letters, digits",
            ),
        ];
        for (uri, rule) in cases {
            let err = uri.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(rule), "{uri}: {err} (expected: {rule})");
            assert!(split_spiffe_id(uri).is_err(), "{uri}");
        }
        // Valid generic SPIFFE IDs that are not mesh identities are refused as such.
        let (td, path) = split_spiffe_id("spiffe://td/Some/Path_1.x-y").unwrap();
        assert_eq!((td.as_str(), path), ("td", "/Some/Path_1.x-y"));
        assert!(matches!(
            "spiffe://td/Some/Path_1.x-y".parse::<SpiffeId>(),
            Err(IdError::Path(_))
        ));
        // Exactly 2048 bytes is supported (SPIFFE-ID 2.3: MUST support up to 2048).
        let max = format!(
            "spiffe://td/{}",
            "a".repeat(MAX_ID_LEN - "spiffe://td/".len())
        );
        assert_eq!(max.len(), MAX_ID_LEN);
        assert!(split_spiffe_id(&max).is_ok());
    }

    #[test]
    fn trust_domain_ids_have_no_path() {
        assert_eq!(
            TrustDomain::from_id_uri("spiffe://td").unwrap().as_str(),
            "td"
        );
        assert!(matches!(
            TrustDomain::from_id_uri("spiffe://td/agent/n1"),
            Err(IdError::UnexpectedPath(_))
        ));
        assert!(TrustDomain::from_id_uri("spiffe://td/").is_err());
        assert!(TrustDomain::from_id_uri("spiffe://TD").is_err());
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
