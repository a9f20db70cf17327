//! TLS for the join protocol, before the joiner has any certificate or trust bundle.
//!
//! The joiner knows only its token, whose claims carry the root's fingerprint
//! ([`crate::peek_claims`]). The signer presents its agent leaf chain followed by the root
//! itself; the joiner accepts the connection only if one of those certificates has the
//! pinned fingerprint and the chain verifies against it as an AGENT identity (as kubeadm
//! pins its CA). The joiner authenticates inside the protocol with the token, so neither
//! side uses TLS client authentication here.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::TrustBundle;
use crate::id::{CertKind, SpiffeId};
use crate::issue::Credential;
use crate::root::Fingerprint;
use crate::verify::{Usage, VerifyError, verify_chain_with};

/// Verifies a signer agent against the root pinned by fingerprint.
#[derive(Debug)]
pub struct PinnedRootVerifier {
    root: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedRootVerifier {
    /// A verifier trusting only the root whose certificate hashes to `root`.
    pub fn new(root: Fingerprint) -> Arc<Self> {
        Arc::new(Self {
            root,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Checks a signer's chain (leaf, then intermediates ending with the root).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let root = pinned_root(intermediates, &self.root).ok_or(VerifyError::PinnedRootMissing)?;
        let bundle = TrustBundle::new(vec![root]).map_err(|_| VerifyError::PinnedRootMissing)?;
        verify_chain_with(
            &bundle,
            end_entity,
            intermediates,
            now,
            &[CertKind::Agent],
            Usage::Server,
        )
    }
}

impl ServerCertVerifier for PinnedRootVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(crate::tls::to_rustls)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate among `certs` whose fingerprint is `fp`: after the handshake, the
/// joiner takes its first trust bundle from the signer's `peer_certificates()` with this.
pub fn pinned_root(
    certs: &[CertificateDer<'_>],
    fp: &Fingerprint,
) -> Option<CertificateDer<'static>> {
    certs
        .iter()
        .find(|c| Fingerprint::of(c) == *fp)
        .map(|c| c.clone().into_owned())
}

/// The joiner's TLS 1.3 client config: no client certificate, signer pinned by `root`.
pub fn join_client_config(
    root: Fingerprint,
    alpn: Vec<Vec<u8>>,
    clock: Arc<dyn TimeProvider>,
) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PinnedRootVerifier::new(root))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn;
    Ok(cfg)
}

/// The signer's TLS 1.3 server config for join requests: presents `signer` (its agent leaf
/// from [`crate::AgentCa::issue_agent_leaf`]) followed by `root`, asks no client certificate.
pub fn join_server_config(
    signer: &Credential,
    root: &CertificateDer<'static>,
    alpn: Vec<Vec<u8>>,
    clock: Arc<dyn TimeProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut chain = signer.chain().to_vec();
    chain.push(root.clone());
    let mut cfg = ServerConfig::builder_with_details(provider, clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, signer.key().to_rustls())?;
    cfg.alpn_protocols = alpn;
    Ok(cfg)
}
