//! Issuance building blocks shared by roots and agent intermediates, and [`Credential`], the
//! certificate chain + key a workload, agent or operator presents.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::id::{CertKind, IdError, SpiffeId};
use crate::info::{self, InfoError};
use crate::key::{KeyError, PrivateKey};
use crate::pem::{self, PemError};

/// Default lifetime of workload leaves: 72 hours.
pub const DEFAULT_LEAF_TTL: Duration = Duration::hours(72);
/// Default lifetime of agent intermediates: 30 days.
pub const DEFAULT_AGENT_TTL: Duration = Duration::days(30);
/// Default lifetime of roots: 10 years.
pub const DEFAULT_ROOT_TTL: Duration = Duration::days(3650);
/// NotBefore is set this far before `now`, to tolerate clock skew between hosts.
pub const BACKDATE: Duration = Duration::seconds(60);

/// Why a certificate could not be issued or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// A key could not be generated, loaded or used (see [`KeyError`]).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A PEM file could not be read (the file's fault).
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate being loaded is malformed (the file's fault).
    #[error(transparent)]
    Info(#[from] InfoError),
    /// An identity is malformed (the caller's or the file's fault).
    #[error(transparent)]
    Id(#[from] IdError),
    /// A certificate being loaded lacks what its role needs (the file's fault).
    #[error("unusable certificate: {0}")]
    Unusable(&'static str),
    /// An agent intermediate of the format used before rhizome followed X509-SVID 3.2: its
    /// SPIFFE id `spiffe://<td>/agent/<node>` has a path, which signing certificates must
    /// not have, so every up-to-date verifier refuses the chains it issues. The file's (or
    /// store's) fault; nothing changed. Fix: issue a new one.
    #[error(
        "agent intermediate for node {0} is in the old format (its SPIFFE id has a path, which \
         X509-SVID 3.2 forbids on signing certificates, so peers refuse it): issue a new one \
         with `rhizome ca issue-agent`, or join again with a token"
    )]
    LegacyIntermediate(String),
    /// The private key does not belong to the certificate (the files' fault).
    #[error("private key does not match the certificate")]
    KeyMismatch,
    /// The CSR is malformed, badly signed or not P-256 (the joiner's fault).
    #[error("bad certificate signing request: {0}")]
    Csr(String),
    /// This intermediate's allowed-services list forbids the service (the caller's fault).
    #[error("service {0:?} is not in this agent's allowed services")]
    ServiceNotAllowed(String),
    /// The TTL is zero or negative (the caller's fault).
    #[error("lifetime must be positive")]
    BadTtl,
    /// rcgen refused the parameters (a bug in this crate, or an unusable name).
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e.to_string())
    }
}

/// A random positive 128-bit serial number from the system random generator.
pub(crate) fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // keep 16 bytes so the length never varies
    Ok(SerialNumber::from_slice(&bytes))
}

/// Validity window `[now - BACKDATE, min(now + ttl, cap)]`.
pub(crate) fn window(
    now: OffsetDateTime,
    ttl: Duration,
    cap: Option<OffsetDateTime>,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    if !ttl.is_positive() {
        return Err(IssueError::BadTtl);
    }
    let end = now + ttl;
    let end = cap.map_or(end, |c| end.min(c));
    Ok((now - BACKDATE, end))
}

/// Parameters common to every certificate we issue.
pub(crate) fn base_params(
    common_name: Option<&str>,
    uri: String,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Result<CertificateParams, IssueError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rhizome");
    if let Some(cn) = common_name {
        dn.push(DnType::CommonName, cn);
    }
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(random_serial()?);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Makes `p` a CA that may have `path_len` CAs below it (`None`: unconstrained).
pub(crate) fn make_ca(p: &mut CertificateParams, path_len: Option<u8>) {
    p.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    // X509-SVID 4.3 and its Appendix A: keyCertSign (and cRLSign) on signing certificates,
    // digitalSignature only on leaves.
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
}

/// Parameters of an end-entity certificate for `id`: one URI SAN (critical, since the subject
/// is empty), DNS SAN, cA false, critical key usage `digitalSignature` only, both TLS EKUs
/// (X509-SVID 2, 3.1, 4.1, 4.3, 4.4).
pub(crate) fn leaf_params(
    id: &SpiffeId,
    validity: (OffsetDateTime, OffsetDateTime),
) -> Result<CertificateParams, IssueError> {
    let mut p = base_params(None, id.to_string(), validity)?;
    p.distinguished_name = DistinguishedName::new();
    if let Some(dns) = id.dns_name() {
        p.subject_alt_names.push(SanType::DnsName(dns.try_into()?));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(p)
}

/// Checks that `key` is the private half of the certificate's public key.
pub(crate) fn check_key_matches(
    cert: &CertificateDer<'_>,
    key: &PrivateKey,
) -> Result<(), IssueError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| InfoError::Malformed(e.to_string()))?;
    if parsed.public_key().subject_public_key.data.as_ref() == key.public_key_raw() {
        Ok(())
    } else {
        Err(IssueError::KeyMismatch)
    }
}

/// An end-entity certificate, the CA certificates above it (never the root) and its key:
/// what a workload, an agent or an operator presents in TLS and signs with.
#[derive(Debug, Clone)]
pub struct Credential {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Credential {
    /// Assembles a credential from its chain (leaf first) and key, reading the SPIFFE id
    /// from the leaf and checking the key belongs to it.
    pub fn from_chain(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKey,
    ) -> Result<Self, IssueError> {
        let leaf = chain.first().ok_or(IssueError::Unusable("empty chain"))?;
        check_key_matches(leaf, &key)?;
        let info = info::CertInfo::from_der(leaf)?;
        let id = info
            .spiffe_id
            .ok_or(IssueError::Unusable("leaf has no SPIFFE id"))?;
        Ok(Self {
            id,
            chain,
            key,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Loads `chain.pem` (leaf then intermediates) and `key.pem`.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        Self::from_chain(
            pem::certs_from_pem(chain_pem)?,
            PrivateKey::from_pem(key_pem)?,
        )
    }

    /// The SPIFFE id in the leaf.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The kind of identity.
    pub fn kind(&self) -> CertKind {
        self.id.kind()
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Leaf followed by its CA certificates, root excluded.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Start of the leaf's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the leaf's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// `cert.pem`: the leaf alone.
    pub fn cert_pem(&self) -> String {
        pem::certs_to_pem(&self.chain[..1])
    }

    /// `chain.pem`: the leaf followed by its issuing chain, without the root.
    pub fn chain_pem(&self) -> String {
        pem::certs_to_pem(&self.chain)
    }

    /// `key.pem`: the PKCS#8 private key.
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// The chain and key in the form rustls resolvers serve.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, KeyError> {
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&self.key.to_rustls())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), signer)))
    }
}
