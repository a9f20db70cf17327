//! rustls glue: one verifier type for both TLS roles built on [`crate::verify_chain_with`],
//! an SNI resolver serving each local service's leaf, a swappable client credential, and
//! TLS 1.3 config builders using the ring provider.
//!
//! Session resumption skips certificate verification (the peer's chain is remembered from
//! the first handshake), so the configs built here keep their session caches per trust
//! generation ([`SharedBundle::generation`]): once the roots or the revocations change, every
//! remembered session is forgotten and the next connection is a full handshake against the
//! new trust.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
    Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, NamedGroup,
    OtherError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::SharedBundle;
use crate::id::{CertKind, SpiffeId};
use crate::issue::Credential;
use crate::key::KeyError;
use crate::verify::{Usage, VerifyError, verify_chain_with};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn to_rustls(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Verifies peers against the shared trust bundle (swappable at runtime) and the mesh's
/// rules, accepting the listed kinds. As a server-cert verifier it also checks that a
/// server dialled by a mesh DNS name (`<svc>.<ns>.svc.<td>`, `<node>.agent.<td>`) proves
/// exactly that identity; any other server name (e.g. `x.mesh.invalid`) is not checked.
pub struct SpiffeVerifier {
    bundle: SharedBundle,
    accept: Vec<CertKind>,
    provider: Arc<CryptoProvider>,
    on_refusal: Option<RefusalHook>,
}

/// Told of every chain a [`SpiffeVerifier`] refuses (the agent counts them by reason).
pub type RefusalHook = Arc<dyn Fn(&VerifyError) + Send + Sync>;

impl std::fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("accept", &self.accept)
            .field("on_refusal", &self.on_refusal.is_some())
            .finish_non_exhaustive()
    }
}

impl SpiffeVerifier {
    /// A verifier accepting peers of the given kinds.
    pub fn new(bundle: SharedBundle, accept: &[CertKind]) -> Arc<Self> {
        Self::observed(bundle, accept, None)
    }

    /// [`SpiffeVerifier::new`] that also calls `on_refusal` with each refusal.
    pub fn observed(
        bundle: SharedBundle,
        accept: &[CertKind],
        on_refusal: Option<RefusalHook>,
    ) -> Arc<Self> {
        Arc::new(Self {
            bundle,
            accept: accept.to_vec(),
            provider: provider(),
            on_refusal,
        })
    }

    fn refused(&self, e: VerifyError) -> rustls::Error {
        if let Some(hook) = &self.on_refusal {
            hook(&e);
        }
        to_rustls(e)
    }

    /// The bundle cell this verifier reads on every handshake.
    pub fn bundle(&self) -> &SharedBundle {
        &self.bundle
    }

    fn check_server(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let bundle = self.bundle.load();
        let found = verify_chain_with(
            &bundle,
            end_entity,
            intermediates,
            now,
            &self.accept,
            Usage::Server,
        )?;
        if let ServerName::DnsName(name) = server_name
            && let Some(expected) = SpiffeId::from_dns_name(name.as_ref(), bundle.trust_domain())
            && expected != found
        {
            return Err(VerifyError::UnexpectedPeer {
                expected: Box::new(expected),
                found: Box::new(found),
            });
        }
        Ok(found)
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_server(end_entity, intermediates, server_name, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(|e| self.refused(e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.bundle.load();
        verify_chain_with(
            &bundle,
            end_entity,
            intermediates,
            now,
            &self.accept,
            Usage::Client,
        )
        .map(|_| ClientCertVerified::assertion())
        .map_err(|e| self.refused(e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A credential could not be served (the caller's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolverError {
    /// Operators have no DNS name, so they cannot be served by SNI.
    #[error("{0} has no DNS name to serve by SNI")]
    NoDnsName(SpiffeId),
    /// The key cannot be used by rustls.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T>(lock: &RwLock<T>, f: impl FnOnce(&mut T)) {
    match lock.write() {
        Ok(mut g) => f(&mut g),
        Err(p) => f(&mut p.into_inner()),
    }
}

/// Serves the leaf of the local service named by SNI (`<svc>.<ns>.svc.<td>`, or
/// `<node>.agent.<td>`), falling back to an optional default. Entries are replaced at runtime
/// (renewal): new handshakes get the new leaf, open connections are untouched.
#[derive(Debug, Default)]
pub struct SniResolver {
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    default: RwLock<Option<Arc<CertifiedKey>>>,
}

impl SniResolver {
    /// An empty resolver.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `cred` for its identity's DNS name, replacing any previous leaf.
    pub fn insert(&self, cred: &Credential) -> Result<(), ResolverError> {
        let name = cred
            .id()
            .dns_name()
            .ok_or_else(|| ResolverError::NoDnsName(cred.id().clone()))?;
        let key = cred.certified_key()?;
        write(&self.by_name, |m| {
            m.insert(name, key);
        });
        Ok(())
    }

    /// Stops serving `id`.
    pub fn remove(&self, id: &SpiffeId) {
        if let Some(name) = id.dns_name() {
            write(&self.by_name, |m| {
                m.remove(&name);
            });
        }
    }

    /// Sets (or clears) the leaf served when SNI is absent or unknown, e.g. the agent's own.
    pub fn set_default(&self, cred: Option<&Credential>) -> Result<(), ResolverError> {
        let key = cred.map(Credential::certified_key).transpose()?;
        write(&self.default, |d| *d = key);
        Ok(())
    }

    /// The DNS names currently served.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.by_name).into_keys().collect();
        names.sort();
        names
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_sni = hello.server_name().and_then(|name| {
            let map = self.by_name.read().ok()?;
            map.get(&name.to_ascii_lowercase()).cloned()
        });
        by_sni.or_else(|| read(&self.default))
    }
}

/// The leaf a TLS client presents (one source workload, or the agent), swappable on renewal.
#[derive(Debug)]
pub struct ClientCredential {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ClientCredential {
    /// Presents `cred`.
    pub fn new(cred: &Credential) -> Result<Arc<Self>, KeyError> {
        Ok(Arc::new(Self {
            current: RwLock::new(cred.certified_key()?),
        }))
    }

    /// Presents `cred` from the next handshake on.
    pub fn replace(&self, cred: &Credential) -> Result<(), KeyError> {
        let key = cred.certified_key()?;
        write(&self.current, |c| *c = key);
        Ok(())
    }
}

impl ResolvesClientCert for ClientCredential {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(read(&self.current))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A clock stuck at one instant, for deterministic tests and simulations; production passes
/// `Arc::new(rustls::time_provider::DefaultTimeProvider)` (the system clock) instead.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub UnixTime);

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// Sessions remembered per TLS server or client, in each cache.
const SESSION_CACHE_SIZE: usize = 256;

/// A cache that starts empty again whenever the trust generation of `bundle` changes.
#[derive(Debug)]
struct PerGeneration<T> {
    bundle: SharedBundle,
    current: RwLock<(u64, Arc<T>)>,
    fresh: fn() -> Arc<T>,
}

impl<T> PerGeneration<T> {
    fn new(bundle: SharedBundle, fresh: fn() -> Arc<T>) -> Self {
        let generation = bundle.generation();
        Self {
            bundle,
            current: RwLock::new((generation, fresh())),
            fresh,
        }
    }

    /// The cache of the generation in force (a new, empty one after a trust change).
    fn get(&self) -> Arc<T> {
        let generation = self.bundle.generation();
        let (held, cache) = read(&self.current);
        if held == generation {
            return cache;
        }
        let fresh = (self.fresh)();
        write(&self.current, |c| *c = (generation, fresh.clone()));
        fresh
    }
}

/// Server-side session cache forgotten on every trust change.
#[derive(Debug)]
struct TrustBoundServerSessions(PerGeneration<ServerSessionMemoryCache>);

impl StoresServerSessions for TrustBoundServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.get().put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get().get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get().take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

/// Client-side session cache forgotten on every trust change.
#[derive(Debug)]
struct TrustBoundClientSessions(PerGeneration<ClientSessionMemoryCache>);

impl ClientSessionStore for TrustBoundClientSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.0.get().set_kx_hint(server_name, group);
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.0.get().kx_hint(server_name)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.0.get().set_tls12_session(server_name, value);
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.0.get().tls12_session(server_name)
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.0.get().remove_tls12_session(server_name);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.0.get().insert_tls13_ticket(server_name, value);
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.0.get().take_tls13_ticket(server_name)
    }
}

/// A TLS 1.3 server config requiring a client certificate verified by `verifier`; `clock`
/// is the time rustls passes to the verifier. Resumed sessions never outlive a change of
/// the verifier's trust (see the module docs).
pub fn server_config(
    verifier: Arc<SpiffeVerifier>,
    resolver: Arc<SniResolver>,
    alpn: Vec<Vec<u8>>,
    clock: Arc<dyn TimeProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_details(provider(), clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn;
    cfg.session_storage = Arc::new(TrustBoundServerSessions(PerGeneration::new(
        verifier.bundle.clone(),
        || ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
    )));
    Ok(cfg)
}

/// A TLS 1.3 client config presenting `cred` and verifying servers with `verifier`;
/// `clock` and resumption as for [`server_config`].
pub fn client_config(
    verifier: Arc<SpiffeVerifier>,
    cred: Arc<ClientCredential>,
    alpn: Vec<Vec<u8>>,
    clock: Arc<dyn TimeProvider>,
) -> Result<ClientConfig, rustls::Error> {
    let mut cfg = ClientConfig::builder_with_details(provider(), clock)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(cred);
    cfg.alpn_protocols = alpn;
    cfg.resumption = Resumption::store(Arc::new(TrustBoundClientSessions(PerGeneration::new(
        verifier.bundle.clone(),
        || Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE_SIZE)),
    ))));
    Ok(cfg)
}

/// The SPIFFE id of a peer after a handshake our verifier accepted (`peer_certificates()`).
pub fn peer_spiffe_id(peer_certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = webpki::EndEntityCert::try_from(peer_certs.first()?).ok()?;
    let mut uris = leaf
        .valid_uri_names()
        .filter(|u| u.starts_with("spiffe://"));
    let id = uris.next()?.parse().ok()?;
    uris.next().is_none().then_some(id)
}
