//! Shared fixtures: a mesh (root, bundle, agent intermediates), certificate forging with
//! rcgen for chains that are wrong on purpose, and an in-memory mTLS handshake.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, SanType,
};
use rhizome_ca::{
    AgentCa, CertKind, ClientCredential, Credential, PrivateKey, RootCa, SharedBundle, SniResolver,
    SpiffeId, SpiffeVerifier, TrustBundle, peer_spiffe_id,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

pub fn at(t: OffsetDateTime) -> UnixTime {
    rhizome_ca::unix_time(t)
}

pub fn now() -> UnixTime {
    at(t0())
}

pub struct Mesh {
    pub root: RootCa,
    pub bundle: TrustBundle,
}

impl Mesh {
    pub fn new(td: &str) -> Self {
        let root = RootCa::generate(td.parse().unwrap(), t0(), Duration::days(365)).unwrap();
        let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
        Self { root, bundle }
    }

    pub fn agent(&self, node: &str, services: Option<&[&str]>) -> AgentCa {
        let services: Option<Vec<_>> =
            services.map(|s| s.iter().map(|x| x.parse().unwrap()).collect());
        self.root
            .issue_agent(
                &node.parse().unwrap(),
                services.as_deref(),
                t0(),
                Duration::days(30),
            )
            .unwrap()
    }

    pub fn operator(&self, name: &str) -> Credential {
        self.root
            .issue_operator(&name.parse().unwrap(), t0(), Duration::days(1))
            .unwrap()
    }
}

pub fn workload(agent: &AgentCa, ns: &str, svc: &str) -> Credential {
    agent
        .issue_workload(
            &ns.parse().unwrap(),
            &svc.parse().unwrap(),
            t0(),
            rhizome_ca::DEFAULT_LEAF_TTL,
        )
        .unwrap()
}

/// Checks `cred`'s chain against `bundle` at t0 for `kind`.
pub fn check(
    bundle: &TrustBundle,
    cred: &Credential,
    kind: CertKind,
) -> Result<SpiffeId, rhizome_ca::VerifyError> {
    rhizome_ca::verify_chain(bundle, cred.leaf(), &cred.chain()[1..], now(), kind)
}

/// What a forged certificate should look like. By default a leaf is a well-formed X509-SVID
/// (cA false, critical key usage digitalSignature, both TLS EKUs) and a CA has keyCertSign;
/// the knobs below break one rule at a time.
pub struct Forge<'a> {
    pub uris: Vec<&'a str>,
    pub ca: Option<u8>,
    pub cn: Option<&'a str>,
    pub extensions: Vec<rcgen::CustomExtension>,
    /// Replaces the default key usages (empty: no key usage extension from rcgen).
    pub key_usages: Option<Vec<KeyUsagePurpose>>,
    /// Replaces the default extended key usages of a leaf (empty: none).
    pub ekus: Option<Vec<ExtendedKeyUsagePurpose>>,
    /// Marks a "leaf" (no `ca`) as a CA anyway.
    pub leaf_is_ca: bool,
}

impl<'a> Forge<'a> {
    pub fn leaf(uris: &[&'a str]) -> Self {
        Self {
            uris: uris.to_vec(),
            ca: None,
            cn: None,
            extensions: Vec::new(),
            key_usages: None,
            ekus: None,
            leaf_is_ca: false,
        }
    }

    pub fn ca(uris: &[&'a str], path_len: u8, cn: &'a str) -> Self {
        Self {
            uris: uris.to_vec(),
            ca: Some(path_len),
            cn: Some(cn),
            extensions: Vec::new(),
            key_usages: None,
            ekus: None,
            leaf_is_ca: false,
        }
    }

    /// An agent intermediate in the X509-SVID format: `td_uri` (`spiffe://<td>`), the
    /// agent-node extension naming `node`, pathLen `path_len`.
    pub fn agent(td_uri: &'a str, node: &str, path_len: u8, cn: &'a str) -> Self {
        let mut f = Self::ca(&[td_uri], path_len, cn);
        f.extensions.push(agent_node_ext(node));
        f
    }

    /// Signs the certificate with `issuer_cert`/`issuer_key`; returns it and its new key.
    pub fn sign(
        self,
        issuer_cert: &CertificateDer<'_>,
        issuer_key: &PrivateKey,
    ) -> (CertificateDer<'static>, PrivateKey) {
        let key = PrivateKey::generate().unwrap();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = self.cn {
            dn.push(DnType::CommonName, cn);
        }
        p.distinguished_name = dn;
        p.subject_alt_names = self
            .uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        p.not_before = t0() - Duration::minutes(1);
        p.not_after = t0() + Duration::days(1);
        p.serial_number = Some(rand_serial());
        p.use_authority_key_identifier_extension = true;
        p.custom_extensions = self.extensions;
        match self.ca {
            Some(n) => {
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(n));
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
            }
            None => {
                p.is_ca = if self.leaf_is_ca {
                    IsCa::Ca(BasicConstraints::Unconstrained)
                } else {
                    IsCa::ExplicitNoCa
                };
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
        }
        if let Some(ku) = self.key_usages {
            p.key_usages = ku;
        }
        if let Some(ekus) = self.ekus {
            p.extended_key_usages = ekus;
        }
        let issuer = Issuer::from_ca_cert_der(issuer_cert, issuer_key.clone()).unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap().der().clone();
        (cert, key)
    }
}

/// The agent-node extension (DER UTF8String) naming `node`, as our CA writes it.
pub fn agent_node_ext(node: &str) -> rcgen::CustomExtension {
    let mut der = vec![0x0c, node.len() as u8];
    der.extend_from_slice(node.as_bytes());
    rcgen::CustomExtension::from_oid_content(rhizome_ca::extension::AGENT_NODE_OID, der)
}

fn rand_serial() -> rcgen::SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1000);
    rcgen::SerialNumber::from(N.fetch_add(1, Ordering::Relaxed))
}

pub fn agent_key(agent: &AgentCa) -> PrivateKey {
    PrivateKey::from_pem(&agent.key_pem()).unwrap()
}

/// Identities each side saw after a successful in-memory mTLS handshake, plus a ping.
pub async fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    sni: &str,
) -> Result<(SpiffeId, SpiffeId), String> {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let connect = tokio_rustls::TlsConnector::from(client).connect(name, c_io);
    let accept = tokio_rustls::TlsAcceptor::from(server).accept(s_io);
    let (c, s) = tokio::join!(connect, accept);
    let (mut c, mut s) = (
        c.map_err(|e| format!("client: {e}"))?,
        s.map_err(|e| format!("server: {e}"))?,
    );
    let seen_by_client = peer_spiffe_id(c.get_ref().1.peer_certificates().unwrap()).unwrap();
    let seen_by_server = peer_spiffe_id(s.get_ref().1.peer_certificates().unwrap()).unwrap();
    c.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"ping");
    Ok((seen_by_client, seen_by_server))
}

pub fn server_cfg(
    bundle: &SharedBundle,
    accept: &[CertKind],
    resolver: Arc<SniResolver>,
) -> Arc<ServerConfig> {
    let v = SpiffeVerifier::new(bundle.clone(), accept);
    Arc::new(rhizome_ca::server_config(v, resolver, vec![b"rhizome/1".to_vec()], clock()).unwrap())
}

pub fn client_cfg(
    bundle: &SharedBundle,
    accept: &[CertKind],
    cred: &Credential,
) -> Arc<ClientConfig> {
    let v = SpiffeVerifier::new(bundle.clone(), accept);
    let c = ClientCredential::new(cred).unwrap();
    Arc::new(rhizome_ca::client_config(v, c, vec![b"rhizome/1".to_vec()], clock()).unwrap())
}

pub fn clock() -> Arc<rhizome_ca::FixedClock> {
    Arc::new(rhizome_ca::FixedClock(now()))
}

pub fn serving(creds: &[&Credential]) -> Arc<SniResolver> {
    let r = SniResolver::new();
    for c in creds {
        r.insert(c).unwrap();
    }
    r
}
