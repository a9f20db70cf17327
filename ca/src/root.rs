//! Root CAs: generation, PEM files, fingerprints, issuance of agent intermediates and
//! operator certificates, and cross-signing for rotation.
//!
//! Rotation: `old.cross_sign(&new)` makes a certificate for the NEW root's key signed by the
//! OLD root; `new.set_cross_signed(cross)` makes every chain the new root issues carry it,
//! so peers that still trust only the old root accept them. Then the bundle gets both roots,
//! then the old root is removed.

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateSigningRequestParams, Issuer};
use ring::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::agent::AgentCa;
use crate::extension::{agent_node_extension, allowed_services_extension};
use crate::id::{NodeName, OperatorName, ServiceName, SpiffeId, TrustDomain};
use crate::info::CertInfo;
use crate::issue::{self, Credential, IssueError};
use crate::key::PrivateKey;
use crate::pem;

/// SHA-256 of a certificate's DER: how join tokens and operators pin a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, cert).as_ref());
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A fingerprint string that is not 64 hex digits (the caller's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fingerprint must be 64 hex digits")]
pub struct FingerprintError;

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, FingerprintError> {
        decode_hex(s.trim()).map(Self).ok_or(FingerprintError)
    }
}

/// Decodes exactly `N` bytes of hex; `None` on any other input.
pub(crate) fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A root CA of a trust domain: self-signed ECDSA P-256 certificate and its key.
#[derive(Debug)]
pub struct RootCa {
    td: TrustDomain,
    cn: String,
    cert: CertificateDer<'static>,
    key: PrivateKey,
    issuer: Issuer<'static, PrivateKey>,
    not_after: OffsetDateTime,
    cross: Vec<CertificateDer<'static>>,
}

impl RootCa {
    /// Generates a new root for `td`, valid from `now - BACKDATE` for `ttl`.
    pub fn generate(
        td: TrustDomain,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Self, IssueError> {
        let key = PrivateKey::generate()?;
        let spki_hash = digest(&SHA256, key.public_key_raw());
        let tag: String = spki_hash.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cn = format!("rhizome root {td} {tag}");
        let params = root_params(&td, &cn, issue::window(now, ttl, None)?)?;
        let cert = params.self_signed(&key)?;
        Self::from_parts(cert.der().clone(), key)
    }

    /// Loads `root.pem` and `root.key`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IssueError> {
        let cert = pem::certs_from_pem(cert_pem)?
            .into_iter()
            .next()
            .ok_or(IssueError::Unusable("no root certificate"))?;
        Self::from_parts(cert, PrivateKey::from_pem(key_pem)?)
    }

    fn from_parts(cert: CertificateDer<'static>, key: PrivateKey) -> Result<Self, IssueError> {
        issue::check_key_matches(&cert, &key)?;
        let info = CertInfo::from_der(&cert)?;
        if !info.is_ca || info.spiffe_id.is_some() || info.agent_node.is_some() {
            return Err(IssueError::Unusable("not a root CA certificate"));
        }
        let td = info
            .trust_domain
            .ok_or(IssueError::Unusable("root has no spiffe://<td> URI"))?;
        let cn = common_name(&cert).ok_or(IssueError::Unusable("root has no common name"))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key.clone())?;
        Ok(Self {
            td,
            cn,
            cert,
            key,
            issuer,
            not_after: info.not_after,
            cross: Vec::new(),
        })
    }

    /// `root.pem`: the self-signed certificate (also the trust bundle of a fresh mesh).
    pub fn cert_pem(&self) -> String {
        pem::certs_to_pem(std::slice::from_ref(&self.cert))
    }

    /// `root.key`: the PKCS#8 private key (write it with mode 0600).
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// The self-signed certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The root key (signs join tokens).
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// The trust domain this root serves.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// SHA-256 of the root certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// Cross certificates above this root that its issued chains carry (empty unless rotating).
    pub fn cross_certs(&self) -> &[CertificateDer<'static>] {
        &self.cross
    }

    /// Makes chains issued from now on carry `cross` (from [`RootCa::cross_sign`]), so that
    /// peers trusting only the old root accept them.
    pub fn set_cross_signed(&mut self, cross: Vec<CertificateDer<'static>>) {
        self.cross = cross;
    }

    /// Signs `new_root`'s key and name with this (old) root: the rotation cross certificate.
    pub fn cross_sign(
        &self,
        new_root: &RootCa,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<CertificateDer<'static>, IssueError> {
        let window = issue::window(now, ttl, Some(self.not_after.min(new_root.not_after)))?;
        let mut params = root_params(&new_root.td, &new_root.cn, window)?;
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(&new_root.key, &self.issuer)?.der().clone())
    }

    /// Issues an agent intermediate with a fresh key (CLI `issue-agent`): pathLen 0,
    /// `spiffe://<td>` (no path, X509-SVID 3.2), bound to `node` by the agent-node extension,
    /// optionally limited to `services`.
    pub fn issue_agent(
        &self,
        node: &NodeName,
        services: Option<&[ServiceName]>,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<AgentCa, IssueError> {
        let key = PrivateKey::generate()?;
        let cert = self.sign_agent_key(node, services, &key, now, ttl)?;
        let mut chain = vec![cert];
        chain.extend(self.cross.iter().cloned());
        AgentCa::from_chain(chain, key)
    }

    /// Signs a joiner's CSR as the agent intermediate of `node` (already authorised, e.g. by
    /// a join token). Only the CSR's key is used: names, limits and validity come from the
    /// arguments. Returns the agent chain (intermediate, then any cross certificate) to send
    /// back; the joiner builds its [`AgentCa`] with [`AgentCa::from_chain`].
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        node: &NodeName,
        services: Option<&[ServiceName]>,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Vec<CertificateDer<'static>>, IssueError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::Csr(e.to_string()))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(IssueError::Csr("key is not ECDSA P-256".to_owned()));
        }
        let params = self.agent_params(node, services, now, ttl)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)?
            .der()
            .clone();
        let mut chain = vec![cert];
        chain.extend(self.cross.iter().cloned());
        Ok(chain)
    }

    fn sign_agent_key(
        &self,
        node: &NodeName,
        services: Option<&[ServiceName]>,
        key: &PrivateKey,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<CertificateDer<'static>, IssueError> {
        let params = self.agent_params(node, services, now, ttl)?;
        Ok(params.signed_by(key, &self.issuer)?.der().clone())
    }

    fn agent_params(
        &self,
        node: &NodeName,
        services: Option<&[ServiceName]>,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<rcgen::CertificateParams, IssueError> {
        let cn = format!("rhizome agent {node}");
        let window = issue::window(now, ttl, Some(self.not_after))?;
        let mut params = issue::base_params(Some(&cn), self.td.id_uri(), window)?;
        issue::make_ca(&mut params, Some(0));
        params.custom_extensions.push(agent_node_extension(node));
        if let Some(services) = services {
            params
                .custom_extensions
                .push(allowed_services_extension(services));
        }
        Ok(params)
    }

    /// Issues an operator certificate `spiffe://<td>/operator/<name>` with a fresh key.
    pub fn issue_operator(
        &self,
        name: &OperatorName,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Credential, IssueError> {
        let id = SpiffeId::Operator {
            td: self.td.clone(),
            name: name.clone(),
        };
        let key = PrivateKey::generate()?;
        let params = issue::leaf_params(&id, issue::window(now, ttl, Some(self.not_after))?)?;
        let leaf = params.signed_by(&key, &self.issuer)?.der().clone();
        let mut chain = vec![leaf];
        chain.extend(self.cross.iter().cloned());
        Credential::from_chain(chain, key)
    }
}

/// Parameters of a root (and of its cross certificates): same name, URI and constraints.
fn root_params(
    td: &TrustDomain,
    cn: &str,
    window: (OffsetDateTime, OffsetDateTime),
) -> Result<rcgen::CertificateParams, IssueError> {
    let mut params = issue::base_params(Some(cn), td.id_uri(), window)?;
    params.use_authority_key_identifier_extension = false;
    // Unconstrained: during rotation a chain is leaf, agent, cross certificate(s), old root,
    // and verifiers (openssl included) count the cross certificates against the root's
    // pathLen. What matters, pathLen 0 on agent intermediates, is set there.
    issue::make_ca(&mut params, None);
    Ok(params)
}

/// The subject common name of a certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
