//! The one verification core: chain to the bundle, validity, the X509-SVID and SPIFFE-ID
//! rules ([`crate::svid`], [`crate::id`]), the mesh's issuance rules that X.509 alone
//! cannot express, and the bundle's revocations ([`crate::revocation`]). The rustls verifiers, the CLI's `ca verify` and gossip signature checks
//! all call [`verify_chain`]. Errors that break a rule of the SPIFFE standards name it
//! ([`VerifyError::rule`]).

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::id::{CertKind, IdError, NodeName, ServiceName, SpiffeId, TrustDomain};
use crate::revocation::Revoked;
use crate::svid::{self, BindingError, SvidRule};

/// Our PKI is ECDSA P-256 only; nothing else is accepted in a chain.
static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[webpki::ring::ECDSA_P256_SHA256];

/// Why a peer's certificate chain was refused. Always the presenter's fault (or an
/// attacker's); verification never changes state. The CLI prints these as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A certificate is not parsable DER X.509.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// A certificate of the chain has expired.
    #[error("certificate expired")]
    Expired,
    /// A certificate of the chain is not valid yet (or the clocks disagree by more than the
    /// 60 s backdating).
    #[error("certificate not valid yet")]
    NotYetValid,
    /// The chain does not lead to any root of the trust bundle.
    #[error("chain does not end at a trusted root (unknown issuer)")]
    UnknownIssuer,
    /// A CA appears below a CA whose pathLen forbids it (e.g. a rogue sub-CA under an agent).
    #[error("path length constraint violated: a CA was issued by an agent intermediate")]
    PathLenViolated,
    /// A signature in the chain does not verify.
    #[error("bad signature in the chain")]
    BadSignature,
    /// A CA certificate was presented as the end entity (X509-SVID 4.1 and 5.2).
    #[error(
        "X509-SVID 4.1: a leaf SVID must set cA to false (a CA certificate was presented as \
         the end entity)"
    )]
    CaAsEndEntity,
    /// The leaf's extended key usage does not allow this TLS role (X509-SVID 4.4).
    #[error(
        "X509-SVID 4.4: the leaf's extended key usage lacks this TLS role (id-kp-serverAuth \
         and id-kp-clientAuth must both be set)"
    )]
    WrongUsage,
    /// Another chain-building failure reported by webpki.
    #[error("chain rejected: {0}")]
    Chain(String),
    /// The leaf carries no `spiffe://` URI SAN (X509-SVID 2 and 5.2).
    #[error("X509-SVID 2: the leaf has no SPIFFE ID (a spiffe:// URI SAN)")]
    NoSpiffeId,
    /// The leaf carries several `spiffe://` URI SANs (X509-SVID 2 and 5.2).
    #[error("X509-SVID 2: the leaf has {0} SPIFFE IDs, exactly one URI SAN is allowed")]
    MultipleSpiffeIds(usize),
    /// A SPIFFE URI in the chain does not parse (its message names the SPIFFE-ID rule).
    #[error("bad SPIFFE id: {0}")]
    BadSpiffeId(#[from] IdError),
    /// A certificate breaks a rule of X509-SVID that path validation does not check.
    #[error(transparent)]
    Svid(#[from] SvidRule),
    /// A certificate names another trust domain than the bundle's.
    #[error("foreign trust domain {found} (expected {expected})")]
    ForeignTrustDomain {
        /// The bundle's trust domain.
        expected: TrustDomain,
        /// The certificate's trust domain.
        found: TrustDomain,
    },
    /// The leaf is of a kind the caller does not accept (e.g. an agent cert as a workload).
    #[error("{found} certificate where {expected} was expected")]
    WrongKind {
        /// What the caller accepts (first of its list).
        expected: CertKind,
        /// What the leaf is.
        found: CertKind,
    },
    /// The leaf's issuer is not an agent intermediate (workload and agent leaves must be).
    #[error("leaf was not issued by an agent intermediate")]
    IssuerNotAgent,
    /// A CA certificate in the chain has no (single) SPIFFE id.
    #[error("CA certificate in the chain has no SPIFFE id")]
    IssuerMissingId,
    /// An agent leaf was issued by another node's intermediate.
    #[error("agent leaf for node {leaf} issued by the intermediate of node {issuer}")]
    NodeMismatch {
        /// Node named in the leaf.
        leaf: NodeName,
        /// Node of the issuing intermediate.
        issuer: NodeName,
    },
    /// The issuing intermediate's allowed-services list does not include the service.
    #[error("service {service} is outside the allowed services of agent {node}")]
    ServiceNotAllowed {
        /// The leaf's service.
        service: ServiceName,
        /// The issuing agent's node.
        node: NodeName,
    },
    /// The issuing intermediate's allowed-services extension is unreadable.
    #[error("malformed allowed-services extension in the issuing intermediate")]
    MalformedAllowedServices,
    /// An intermediate's agent-node extension is not one node name.
    #[error("malformed agent-node extension in an intermediate")]
    MalformedAgentNode,
    /// An operator certificate was not issued by a root (agents must not mint operators).
    #[error("operator certificate not issued by a root")]
    OperatorNotRootIssued,
    /// A CA above the issuing agent is not a root or cross-signed root of the trust domain.
    #[error("unexpected CA certificate in the chain")]
    UnexpectedCa,
    /// During a join, the signer's chain does not include the root pinned by the token's
    /// fingerprint (or that certificate is not a usable root).
    #[error("signer's chain does not contain the pinned root")]
    PinnedRootMissing,
    /// An operator revoked a certificate of the chain, or the node it belongs to.
    #[error("revoked: {0}")]
    Revoked(#[from] Revoked),
    /// The server is a valid mesh identity but not the one dialled (SNI name).
    #[error("connected to {found}, expected {expected}")]
    UnexpectedPeer {
        /// Identity derived from the server name dialled.
        expected: Box<SpiffeId>,
        /// Identity the server proved.
        found: Box<SpiffeId>,
    },
}

impl VerifyError {
    /// The section of the SPIFFE standards this refusal enforces (`"X509-SVID 4.3"`,
    /// `"SPIFFE-ID 2.2"`), or `None` for the mesh's own rules and plain X.509 failures.
    pub fn rule(&self) -> Option<&'static str> {
        use SvidRule as R;
        Some(match self {
            Self::CaAsEndEntity => "X509-SVID 4.1",
            Self::WrongUsage => "X509-SVID 4.4",
            Self::NoSpiffeId | Self::MultipleSpiffeIds(_) => "X509-SVID 2",
            Self::Svid(R::UriSanCount(_)) => "X509-SVID 2",
            Self::Svid(R::LeafIdWithoutPath | R::SanNotCritical) => "X509-SVID 3.1",
            Self::Svid(R::SigningIdWithPath) | Self::BadSpiffeId(IdError::UnexpectedPath(_)) => {
                "X509-SVID 3.2"
            }
            Self::Svid(R::LeafIsCa | R::SigningNotCa) => "X509-SVID 4.1",
            Self::Svid(
                R::KeyUsageMissing
                | R::KeyUsageNotCritical
                | R::SigningWithoutKeyCertSign
                | R::LeafWithoutDigitalSignature
                | R::LeafKeyCertSign
                | R::LeafCrlSign,
            ) => "X509-SVID 4.3",
            Self::Svid(R::LeafEkuIncomplete) => "X509-SVID 4.4",
            Self::BadSpiffeId(IdError::NotSpiffe(_) | IdError::QueryOrFragment(_)) => "SPIFFE-ID 2",
            Self::BadSpiffeId(IdError::TrustDomain { .. }) => "SPIFFE-ID 2.1",
            Self::BadSpiffeId(IdError::PathSyntax { .. }) => "SPIFFE-ID 2.2",
            Self::BadSpiffeId(IdError::TooLong(_)) => "SPIFFE-ID 2.3",
            _ => return None,
        })
    }
}

/// Which TLS role the leaf is checked for (our leaves carry both EKUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The peer is a TLS server.
    Server,
    /// The peer is a TLS client.
    Client,
}

/// Converts a `time` instant to the form webpki and rustls use (clamped at the epoch).
pub fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

/// Verifies a chain presented by a peer for one expected kind; returns its SPIFFE id.
/// `intermediates` is everything the peer sent after its leaf (agent intermediate, cross
/// certificates). Checked as a TLS client certificate.
pub fn verify_chain(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    expected: CertKind,
) -> Result<SpiffeId, VerifyError> {
    verify_chain_with(
        bundle,
        end_entity,
        intermediates,
        now,
        &[expected],
        Usage::Client,
    )
}

/// [`verify_chain`] accepting any of several kinds, for a given TLS role.
pub fn verify_chain_with(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    accept: &[CertKind],
    usage: Usage,
) -> Result<SpiffeId, VerifyError> {
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(from_webpki)?;
    let key_usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let path = ee
        .verify_for_usage(
            ALGS,
            bundle.anchors(),
            intermediates,
            now,
            key_usage,
            None,
            None,
        )
        .map_err(from_webpki)?;
    let td = bundle.trust_domain();
    let (_, leaf) = x509_parser::parse_x509_certificate(end_entity)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let uris = svid::uri_sans(&leaf);
    let spiffe: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    let uri = match spiffe.as_slice() {
        [] => return Err(VerifyError::NoSpiffeId),
        [one] => *one,
        many => return Err(VerifyError::MultipleSpiffeIds(many.len())),
    };
    svid::check_leaf(&leaf)?;
    let id: SpiffeId = uri.parse()?;
    check_td(td, id.trust_domain())?;
    if !accept.contains(&id.kind()) {
        let expected = accept.first().copied().unwrap_or(CertKind::Workload);
        return Err(VerifyError::WrongKind {
            expected,
            found: id.kind(),
        });
    }
    let cas = path
        .intermediate_certificates()
        .map(|c| ca_role(&c.der(), td))
        .collect::<Result<Vec<_>, _>>()?;
    check_issuance(&id, &cas)?;
    let revoked = bundle.revocations();
    if !revoked.is_empty() {
        revoked.check_cert(end_entity)?;
        for ca in path.intermediate_certificates() {
            revoked.check_cert(&ca.der())?;
        }
    }
    Ok(id)
}

/// What a CA certificate of a verified path is. Every one carries `spiffe://<td>` (a
/// signing certificate's id has no path, X509-SVID 3.2); agent intermediates are told apart
/// by their agent-node extension.
enum CaRole {
    /// A root or a cross-signed root.
    Root,
    /// An agent intermediate: its node and allowed services.
    Agent {
        node: NodeName,
        allowed: Option<Vec<ServiceName>>,
    },
}

fn ca_role(der: &CertificateDer<'_>, td: &TrustDomain) -> Result<CaRole, VerifyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    svid::check_signing(&cert)?;
    let uris = svid::uri_sans(&cert);
    let Some(uri) = uris.iter().find(|u| u.starts_with("spiffe://")) else {
        return Err(VerifyError::IssuerMissingId);
    };
    if uris.len() > 1 {
        return Err(SvidRule::UriSanCount(uris.len()).into());
    }
    let found = TrustDomain::from_id_uri(uri).map_err(|e| match e {
        IdError::UnexpectedPath(_) => VerifyError::Svid(SvidRule::SigningIdWithPath),
        other => VerifyError::BadSpiffeId(other),
    })?;
    check_td(td, &found)?;
    match svid::agent_binding(&cert) {
        Ok(None) => Ok(CaRole::Root),
        Ok(Some(b)) => Ok(CaRole::Agent {
            node: b.node,
            allowed: b.allowed,
        }),
        Err(BindingError::MalformedNode) => Err(VerifyError::MalformedAgentNode),
        Err(BindingError::MalformedServices) => Err(VerifyError::MalformedAllowedServices),
    }
}

fn check_td(expected: &TrustDomain, found: &TrustDomain) -> Result<(), VerifyError> {
    if expected == found {
        Ok(())
    } else {
        Err(VerifyError::ForeignTrustDomain {
            expected: expected.clone(),
            found: found.clone(),
        })
    }
}

/// The mesh's issuance rules: workload and agent leaves come from an agent intermediate
/// (the agent's own, for agent leaves; one allowing the service, for workloads); operator
/// leaves come from a root; everything above is a root or cross-signed root.
fn check_issuance(id: &SpiffeId, cas: &[CaRole]) -> Result<(), VerifyError> {
    let above_issuer = match (id, cas.first()) {
        (SpiffeId::Operator { .. }, None | Some(CaRole::Root)) => cas,
        (SpiffeId::Operator { .. }, Some(CaRole::Agent { .. })) => {
            return Err(VerifyError::OperatorNotRootIssued);
        }
        (SpiffeId::Workload { svc, .. }, Some(CaRole::Agent { node, allowed })) => {
            if let Some(allowed) = allowed
                && !allowed.contains(svc)
            {
                return Err(VerifyError::ServiceNotAllowed {
                    service: svc.clone(),
                    node: node.clone(),
                });
            }
            &cas[1..]
        }
        (SpiffeId::Agent { node, .. }, Some(CaRole::Agent { node: issuer, .. })) => {
            if node != issuer {
                return Err(VerifyError::NodeMismatch {
                    leaf: node.clone(),
                    issuer: issuer.clone(),
                });
            }
            &cas[1..]
        }
        (SpiffeId::Workload { .. } | SpiffeId::Agent { .. }, _) => {
            return Err(VerifyError::IssuerNotAgent);
        }
    };
    if above_issuer.iter().all(|ca| matches!(ca, CaRole::Root)) {
        Ok(())
    } else {
        Err(VerifyError::UnexpectedCa)
    }
}

fn from_webpki(e: webpki::Error) -> VerifyError {
    use webpki::Error as W;
    match e {
        W::CertExpired { .. } => VerifyError::Expired,
        W::CertNotValidYet { .. } => VerifyError::NotYetValid,
        W::UnknownIssuer => VerifyError::UnknownIssuer,
        W::PathLenConstraintViolated => VerifyError::PathLenViolated,
        W::InvalidSignatureForPublicKey => VerifyError::BadSignature,
        W::CaUsedAsEndEntity => VerifyError::CaAsEndEntity,
        W::EndEntityUsedAsCa => VerifyError::Svid(SvidRule::SigningNotCa),
        W::RequiredEkuNotFoundContext(_) => VerifyError::WrongUsage,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => VerifyError::Malformed(format!("{e:?}")),
        other => VerifyError::Chain(format!("{other:?}")),
    }
}

/// Why a signed message (a gossip entry) was refused; the sender's fault, nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// No certificate came with the message.
    #[error("no signer certificate")]
    NoCertificate,
    /// The signer's chain was refused.
    #[error("signer certificate refused: {0}")]
    Chain(#[from] VerifyError),
    /// The signature does not match the message and the signer's key.
    #[error("signature refused: {0}")]
    Signature(#[from] crate::key::KeyError),
}

/// Verifies `chain` (signer leaf first) as one of `accept` at `now`, then `sig` over `msg`
/// with the leaf's key; returns the signer's SPIFFE id. For operator- and agent-signed
/// gossip entries.
pub fn verify_signed(
    bundle: &TrustBundle,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    accept: &[CertKind],
    msg: &[u8],
    sig: &[u8],
) -> Result<SpiffeId, SignedError> {
    let (leaf, rest) = chain.split_first().ok_or(SignedError::NoCertificate)?;
    let id = verify_chain_with(bundle, leaf, rest, now, accept, Usage::Client)?;
    crate::key::verify_signature(leaf, msg, sig)?;
    Ok(id)
}
