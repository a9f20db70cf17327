//! The signer side of the join protocol: [`Signer::decide`] (who gets an intermediate) and
//! [`JoinService`], its TLS service on the data port.

use super::{EXCHANGE_TIMEOUT, JOIN_ALPN, Refusal, Request, Response, read_frame, write_frame};
use crate::ca::identity::Identity;
use crate::dataport::TcpService;
use crate::store::{Store, TreeName};
use rhizome_ca::{CertInfo, CertKind, NodeName, RootCa};
use rustls::time_provider::DefaultTimeProvider;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;
use tokio_rustls::server::TlsStream;

/// A signer: the root key, the store counting token uses, and this agent's identity (what
/// it presents, and the bundle it hands out).
pub struct Signer {
    root: RootCa,
    identity: Arc<Identity>,
    store: Store,
    agent_ttl: time::Duration,
}

impl Signer {
    /// A signer issuing intermediates valid for `agent_ttl`.
    pub fn new(
        root: RootCa,
        identity: Arc<Identity>,
        store: Store,
        agent_ttl: time::Duration,
    ) -> Signer {
        Signer {
            root,
            identity,
            store,
            agent_ttl,
        }
    }

    /// The root this signer issues from.
    pub fn root(&self) -> &RootCa {
        &self.root
    }

    /// Decides one request: `peer` is the TLS client's verified chain, if it sent one.
    pub fn decide(
        &self,
        req: Request,
        peer: Option<&[CertificateDer<'static>]>,
        now: OffsetDateTime,
    ) -> Result<Response, Refusal> {
        let revoked = self.identity.bundle().load().revocations().clone();
        let chain = match req {
            Request::Join { node, token, csr } => {
                let node: NodeName = node.parse()?;
                let claims = rhizome_ca::verify_token(&token, self.root.cert(), now, &node)?;
                if revoked.is_node_revoked(&node) {
                    return Err(self.refuse(rhizome_ca::Revoked::Node(node)));
                }
                if let Some(max) = claims.max_uses {
                    let key = format!("token/{}", claims.id);
                    let used = self
                        .store
                        .increment(TreeName::Tokens, key.as_bytes(), 1)
                        .and_then(|n| self.store.flush().map(|()| n))
                        .map_err(|e| Refusal::Internal(e.to_string()))?;
                    if used > u64::from(max) {
                        return Err(Refusal::UsedUp {
                            id: claims.id.to_string(),
                            max,
                        });
                    }
                }
                self.root.sign_agent_csr(
                    &csr,
                    &node,
                    claims.services.as_deref(),
                    now,
                    self.agent_ttl,
                )?
            }
            Request::Renew { csr } => {
                let peer = peer.ok_or(Refusal::NotAnAgent)?;
                // Checked again here: the TLS session may predate the revocation.
                revoked.check_chain(peer).map_err(|r| self.refuse(r))?;
                let node = match rhizome_ca::peer_spiffe_id(peer) {
                    Some(rhizome_ca::SpiffeId::Agent { node, .. }) => node,
                    _ => return Err(Refusal::NotAnAgent),
                };
                let services = peer
                    .get(1)
                    .and_then(|c| CertInfo::from_der(c).ok())
                    .and_then(|i| i.allowed_services);
                self.root
                    .sign_agent_csr(&csr, &node, services.as_deref(), now, self.agent_ttl)?
            }
        };
        Ok(Response::Issued {
            chain: rhizome_ca::certs_to_pem(&chain),
            bundle: self.identity.bundle().load().to_pem(),
        })
    }

    fn refuse(&self, revoked: rhizome_ca::Revoked) -> Refusal {
        self.identity
            .refusals()
            .count(crate::ca::refusals::Point::Signer, "revoked");
        Refusal::Revoked(revoked)
    }

    /// The TLS config of the join service: this agent's leaf chain plus the root (so
    /// joiners can pin it), client certificates optional (renewals send theirs).
    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let leaf = self.identity.agent_leaf();
        let mut chain = leaf.chain().to_vec();
        chain.push(self.root.cert().clone());
        let verifier = Arc::new(OptionalAgentAuth(
            self.identity
                .verifier(crate::ca::refusals::Point::Signer, &[CertKind::Agent]),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg =
            rustls::ServerConfig::builder_with_details(provider, Arc::new(DefaultTimeProvider))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, leaf.key().to_rustls())?;
        cfg.alpn_protocols = vec![JOIN_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Client authentication that is offered but optional: joiners have no certificate yet,
/// renewing agents present their agent leaf, verified against the bundle.
#[derive(Debug)]
struct OptionalAgentAuth(Arc<rhizome_ca::SpiffeVerifier>);

impl rustls::server::danger::ClientCertVerifier for OptionalAgentAuth {
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::server::danger::ClientCertVerifier::verify_tls12_signature(
            &*self.0, message, cert, dss,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::server::danger::ClientCertVerifier::verify_tls13_signature(
            &*self.0, message, cert, dss,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::server::danger::ClientCertVerifier::supported_verify_schemes(&*self.0)
    }
}

/// The join service registered on the TCP data port of signer agents.
pub struct JoinService(pub Arc<Signer>);

impl TcpService for JoinService {
    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.0.tls_config()
    }

    fn handle(
        &self,
        mut stream: TlsStream<crate::dataport::DataStream>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let signer = self.0.clone();
        Box::pin(async move {
            let exchange = async {
                let req: Request = read_frame(&mut stream).await?;
                let certs = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                let (op, node) = match &req {
                    Request::Join { node, .. } => ("join", node.clone()),
                    Request::Renew { .. } => (
                        "renew",
                        certs
                            .as_deref()
                            .and_then(rhizome_ca::peer_spiffe_id)
                            .map(|id| id.to_string())
                            .unwrap_or_default(),
                    ),
                };
                let answer = match signer.decide(req, certs.as_deref(), OffsetDateTime::now_utc()) {
                    Ok(issued) => {
                        tracing::info!(peer.addr = %peer, peer.node = %node, op, "signer: intermediate issued");
                        issued
                    }
                    Err(refusal) => {
                        tracing::warn!(peer.addr = %peer, peer.node = %node, op, reason = %refusal, "signer: request refused");
                        Response::Refused {
                            reason: refusal.to_string(),
                        }
                    }
                };
                write_frame(&mut stream, &answer).await?;
                stream.shutdown().await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer.addr = %peer, error = %e, "join exchange failed")
                }
                Err(_) => tracing::debug!(peer.addr = %peer, "join exchange timed out"),
            }
        })
    }
}
