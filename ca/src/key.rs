//! ECDSA P-256 private keys and the signing helpers other crates use (gossip entries are
//! signed by agent and operator keys).
//!
//! Keys are generated and signatures made with randomness from ring's `SystemRandom` (the
//! operating system), which ECDSA needs for its nonces; no policy decision depends on it.

use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Key and signature failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file is not a PKCS#8 PEM ECDSA P-256 key (the configuration's fault).
    #[error("not a PKCS#8 ECDSA P-256 private key: {0}")]
    Malformed(String),
    /// The operating system's random generator failed (the host's fault; nothing changed).
    #[error("system random generator failed")]
    Random,
    /// The signature does not match the message and key (the signer's or an attacker's fault).
    #[error("signature does not verify")]
    BadSignature,
    /// The certificate could not be parsed or holds no P-256 key (the sender's fault).
    #[error("certificate unusable for signature checks: {0}")]
    BadCertificate(String),
}

/// An ECDSA P-256 private key (PKCS#8). Cheap to clone; never printed.
#[derive(Clone)]
pub struct PrivateKey {
    pkcs8: Arc<[u8]>,
    pair: Arc<EcdsaKeyPair>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(P-256, redacted)")
    }
}

impl PrivateKey {
    /// Generates a new P-256 key from the system random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::Random)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Loads a key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Self {
            pkcs8: der.into(),
            pair: Arc::new(pair),
        })
    }

    /// Loads a key from a `-----BEGIN PRIVATE KEY-----` PEM block.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), for `*.key` files (mode 0600).
    pub fn to_pem(&self) -> String {
        crate::pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The key in the form rustls wants.
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.to_vec()))
    }

    /// The uncompressed public point (65 bytes).
    pub fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `msg` (ECDSA P-256 SHA-256, ASN.1 DER signature).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let sig = self.pair.sign(&rng, msg).map_err(|_| KeyError::Random)?;
        Ok(sig.as_ref().to_vec())
    }
}

impl rcgen::PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.public_key_raw()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        PrivateKey::sign(self, msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// Signs `msg` with `key` (ECDSA P-256 SHA-256, DER signature): for gossip entries.
pub fn sign(key: &PrivateKey, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
    key.sign(msg)
}

/// Checks that `sig` is `cert_der`'s key signing `msg`. It does NOT check the certificate
/// itself: verify its chain with [`crate::verify_chain`] first.
pub fn verify_signature(
    cert_der: &CertificateDer<'_>,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), KeyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| KeyError::BadCertificate(e.to_string()))?;
    let point = cert.public_key().subject_public_key.data.as_ref();
    verify_with_point(point, msg, sig)
}

/// Checks `sig` over `msg` with a raw uncompressed P-256 public point.
pub(crate) fn verify_with_point(point: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(msg, sig)
        .map_err(|_| KeyError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let k = PrivateKey::generate().unwrap();
        let back = PrivateKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(k.public_key_raw(), back.public_key_raw());
        let sig = back.sign(b"m").unwrap();
        assert!(verify_with_point(k.public_key_raw(), b"m", &sig).is_ok());
        assert_eq!(
            verify_with_point(k.public_key_raw(), b"n", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn garbage_key_is_malformed() {
        assert!(matches!(
            PrivateKey::from_pem("nope"),
            Err(KeyError::Malformed(_))
        ));
    }
}
