//! The join protocol: how an agent obtains (and later renews) its intermediate CA from a
//! signer agent, over TLS 1.3 on the signer's TCP data port with ALPN `rhizome-join/1`.
//!
//! Wire: each side sends one frame, a 4-byte big-endian length then a JSON [`Request`] or
//! [`Response`] (at most 64 KiB). The signer presents its agent leaf chain followed by the
//! root; a joiner pins that root by the fingerprint in its token (it has no bundle yet) and
//! sends no client certificate; a renewing agent verifies the signer against its bundle and
//! proves itself with its agent leaf as TLS client certificate.
//!
//! Where signers are: `ca { signer_addrs = ["host:port"] }` (their data ports) when set;
//! otherwise each `retry_join` gossip address with the port shifted by this agent's own
//! `ports.data - ports.gossip` (1 with the defaults 7946/7947), i.e. signers are assumed to
//! lay out their ports like this agent.

use crate::ca::identity::Identity;
use crate::config::AgentConfig;
use crate::store::{Store, TreeName};
use crate::tcp_port::TcpService;
use anyhow::Context as _;
use rhizome_ca::{
    AgentCa, CertInfo, CertKind, Fingerprint, NodeName, RootCa, TokenError, TrustBundle,
};
use rustls::time_provider::DefaultTimeProvider;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// ALPN protocol id of join and renewal requests on the data port.
pub const JOIN_ALPN: &[u8] = b"rhizome-join/1";
/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// How long one exchange (connect, handshake, request, answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a joiner keeps retrying unreachable signers before giving up.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// What a client asks a signer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A new agent: a join token, its node name and a CSR for its intermediate's key.
    Join {
        /// Node name to bind the intermediate to.
        node: String,
        /// Token from `rhizome ca token create`.
        token: String,
        /// PEM CSR (only its key is used).
        csr: String,
    },
    /// An agent renewing its intermediate; authenticated by its TLS client certificate.
    Renew {
        /// PEM CSR for the new intermediate's key.
        csr: String,
    },
}

/// A signer's answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The new intermediate chain (intermediate, then any cross certificate) and the trust
    /// bundle, both PEM.
    Issued {
        /// `agent.pem` contents.
        chain: String,
        /// `bundle.pem` contents.
        bundle: String,
    },
    /// Refused, with the reason the client prints.
    Refused {
        /// Why, for the person reading the joiner's log.
        reason: String,
    },
}

/// Why a signer refused a request. All but `Internal` are the requester's fault; a refusal
/// changes no state except a consumed token use (counted before signing).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The token is malformed, altered, expired, for another root or another node.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token's use limit is reached.
    #[error("join token {id} is used up ({max} use(s) allowed)")]
    UsedUp {
        /// Token id.
        id: String,
        /// Its limit.
        max: u32,
    },
    /// The node name is not a valid name.
    #[error("invalid node name: {0}")]
    Node(#[from] rhizome_ca::IdError),
    /// A renewal without a valid agent client certificate.
    #[error("renewal needs the agent's current certificate as TLS client certificate")]
    NotAnAgent,
    /// The CSR is unusable.
    #[error(transparent)]
    Issue(#[from] rhizome_ca::IssueError),
    /// The signer's store failed (the signer's fault).
    #[error("signer store error: {0}")]
    Internal(String),
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(msg)?;
    anyhow::ensure!(body.len() <= MAX_FRAME, "frame too large");
    w.write_all(&u32::try_from(body.len())?.to_be_bytes())
        .await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one length-prefixed JSON frame (refusing frames above [`MAX_FRAME`]).
pub async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    r: &mut R,
) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len))?;
    anyhow::ensure!(len <= MAX_FRAME, "frame of {len} bytes exceeds {MAX_FRAME}");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

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
        let chain = match req {
            Request::Join { node, token, csr } => {
                let node: NodeName = node.parse()?;
                let claims = rhizome_ca::verify_token(&token, self.root.cert(), now, &node)?;
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

    /// The TLS config of the join service: this agent's leaf chain plus the root (so
    /// joiners can pin it), client certificates optional (renewals send theirs).
    fn tls_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let leaf = self.identity.agent_leaf();
        let mut chain = leaf.chain().to_vec();
        chain.push(self.root.cert().clone());
        let verifier = Arc::new(OptionalAgentAuth(
            self.identity.verifier(&[CertKind::Agent]),
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
        mut stream: TlsStream<crate::tcp_port::DataStream>,
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

/// The signers' data-port addresses this agent contacts (see the module docs).
pub fn signer_targets(config: &AgentConfig) -> Vec<String> {
    if !config.ca.signer_addrs.is_empty() {
        return config.ca.signer_addrs.clone();
    }
    let offset = i32::from(config.ports.data) - i32::from(config.ports.gossip);
    config
        .retry_join
        .iter()
        .filter_map(|entry| {
            let (host, port) = entry.rsplit_once(':')?;
            let port = u16::try_from(i32::from(port.parse::<u16>().ok()?) + offset).ok()?;
            Some(format!("{host}:{port}"))
        })
        .collect()
}

/// The outcome of one attempt against one signer.
enum Attempt {
    /// Worth trying again later (unreachable, timed out).
    Retry(anyhow::Error),
    /// Will not change by retrying (refused, wrong root).
    Fatal(anyhow::Error),
}

fn classify(e: anyhow::Error) -> Attempt {
    let tls_cert_error = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)))
    });
    if tls_cert_error {
        Attempt::Fatal(e.context("the signer does not prove the root pinned by the token (wrong token or not a signer of this mesh)"))
    } else {
        Attempt::Retry(e)
    }
}

async fn connect(
    target: &str,
    config: rustls::ClientConfig,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to signer {target}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("signer.mesh.invalid")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with signer {target}"))?;
    Ok(tls)
}

/// Sends `req` and turns the answer into a checked intermediate + bundle.
async fn exchange(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    req: &Request,
    key: rhizome_ca::PrivateKey,
    node: &NodeName,
    must_trust: Option<Fingerprint>,
) -> Result<(AgentCa, TrustBundle), Attempt> {
    write_frame(tls, req).await.map_err(Attempt::Retry)?;
    let answer: Response = read_frame(tls).await.map_err(Attempt::Retry)?;
    let (chain, bundle) = match answer {
        Response::Issued { chain, bundle } => (chain, bundle),
        Response::Refused { reason } => {
            return Err(Attempt::Fatal(anyhow::anyhow!(
                "refused by the signer: {reason}"
            )));
        }
    };
    let fatal = |e: anyhow::Error| Attempt::Fatal(e.context("the signer's answer is unusable"));
    let agent = rhizome_ca::certs_from_pem(&chain)
        .map_err(rhizome_ca::IssueError::from)
        .and_then(|certs| AgentCa::from_chain(certs, key))
        .map_err(|e| fatal(e.into()))?;
    let bundle = TrustBundle::from_pem(&bundle).map_err(|e| fatal(e.into()))?;
    check_issued(&agent, &bundle, node, must_trust).map_err(fatal)?;
    Ok((agent, bundle))
}

/// Checks an intermediate received from a signer: right node, bundle holding the pinned
/// root, and an agent leaf issued from it verifies against the bundle.
pub fn check_issued(
    agent: &AgentCa,
    bundle: &TrustBundle,
    node: &NodeName,
    must_trust: Option<Fingerprint>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        agent.node() == node,
        "intermediate issued for node {} not {node}",
        agent.node()
    );
    if let Some(fp) = must_trust {
        anyhow::ensure!(
            bundle.fingerprints().contains(&fp),
            "bundle lacks the pinned root {fp}"
        );
    }
    let now = OffsetDateTime::now_utc();
    let probe = agent.issue_agent_leaf(now, time::Duration::minutes(5))?;
    let (leaf, rest) = probe
        .chain()
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    rhizome_ca::verify_chain_with(
        bundle,
        leaf,
        rest,
        rhizome_ca::unix_time(now),
        &[CertKind::Agent],
        rhizome_ca::Usage::Client,
    )?;
    Ok(())
}

async fn join_once(
    target: &str,
    token: &str,
    node: &NodeName,
    fp: Fingerprint,
) -> Result<(AgentCa, TrustBundle), Attempt> {
    let config =
        rhizome_ca::join_client_config(fp, vec![JOIN_ALPN.to_vec()], Arc::new(DefaultTimeProvider))
            .map_err(|e| Attempt::Fatal(e.into()))?;
    let mut tls = connect(target, config).await.map_err(classify)?;
    let peer = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let root = rhizome_ca::pinned_root(peer, &fp).ok_or_else(|| {
        Attempt::Fatal(anyhow::anyhow!(
            "signer {target} did not send the pinned root"
        ))
    })?;
    let td = CertInfo::from_der(&root)
        .ok()
        .and_then(|i| i.trust_domain)
        .ok_or_else(|| Attempt::Fatal(anyhow::anyhow!("the pinned root has no trust domain")))?;
    let (csr, key) = AgentCa::new_csr(&td, node).map_err(|e| Attempt::Fatal(e.into()))?;
    let req = Request::Join {
        node: node.to_string(),
        token: token.to_string(),
        csr: csr.0,
    };
    exchange(&mut tls, &req, key, node, Some(fp)).await
}

/// Joins the mesh with `token`: tries every signer of [`signer_targets`] until one issues
/// an intermediate, retrying unreachable ones for up to `patience`. A refusal (bad token)
/// or a signer that cannot prove the pinned root ends the attempt with the reason.
pub async fn join_mesh(
    config: &AgentConfig,
    token: &str,
    patience: Duration,
) -> anyhow::Result<(AgentCa, TrustBundle)> {
    let claims = rhizome_ca::peek_claims(token).context("ca { join_token }")?;
    let node: NodeName = config.node_name.parse()?;
    let targets = signer_targets(config);
    anyhow::ensure!(
        !targets.is_empty(),
        "ca {{ join_token }} needs signers: set ca {{ signer_addrs = [\"host:data-port\"] }} or retry_join"
    );
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut last = None;
        for target in &targets {
            let attempt = tokio::time::timeout(
                EXCHANGE_TIMEOUT,
                join_once(target, token, &node, claims.root),
            )
            .await;
            match attempt {
                Ok(Ok(done)) => {
                    tracing::info!(signer = %target, node = %node, "joined the mesh: intermediate received");
                    return Ok(done);
                }
                Ok(Err(Attempt::Fatal(e))) => {
                    return Err(e.context(format!("joining via signer {target}")));
                }
                Ok(Err(Attempt::Retry(e))) => {
                    tracing::warn!(signer = %target, error = %format!("{e:#}"), "join attempt failed; will retry");
                    last = Some(e);
                }
                Err(_) => last = Some(anyhow::anyhow!("signer {target} timed out")),
            }
        }
        if tokio::time::Instant::now() + backoff > deadline {
            let e = last.unwrap_or_else(|| anyhow::anyhow!("no signer answered"));
            return Err(e.context(format!(
                "could not reach any signer of {targets:?} within {patience:?}"
            )));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Renews this agent's intermediate with a signer (authenticated by the agent leaf); the
/// new chain keeps the allowed-services list of the current one.
pub async fn renew_intermediate(
    identity: &Identity,
    targets: &[String],
) -> anyhow::Result<(AgentCa, TrustBundle)> {
    let node = identity.node().clone();
    let mut errors = Vec::new();
    for target in targets {
        let cred = rhizome_ca::ClientCredential::new(&identity.agent_leaf())?;
        let config = rhizome_ca::client_config(
            identity.verifier(&[CertKind::Agent]),
            cred,
            vec![JOIN_ALPN.to_vec()],
            Arc::new(DefaultTimeProvider),
        )?;
        let (csr, key) = AgentCa::new_csr(identity.trust_domain(), &node)?;
        let attempt = async {
            let mut tls = connect(target, config).await.map_err(Attempt::Retry)?;
            exchange(&mut tls, &Request::Renew { csr: csr.0 }, key, &node, None).await
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, attempt).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(Attempt::Retry(e) | Attempt::Fatal(e))) => {
                errors.push(format!("{target}: {e:#}"))
            }
            Err(_) => errors.push(format!("{target}: timed out")),
        }
    }
    anyhow::bail!("no signer renewed the intermediate: {}", errors.join("; "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signer_targets_follow_the_port_layout() {
        let mut cfg = AgentConfig::dev("n1", "/tmp/x".into());
        cfg.retry_join = vec!["10.0.0.1:7946".into(), "h:28000".into(), "bad".into()];
        cfg.ports.gossip = 7946;
        cfg.ports.data = 7947;
        assert_eq!(signer_targets(&cfg), ["10.0.0.1:7947", "h:28001"]);
        cfg.ports.gossip = 28001;
        cfg.ports.data = 29001;
        assert_eq!(signer_targets(&cfg), ["10.0.0.1:8946", "h:29000"]);
        cfg.ca.signer_addrs = vec!["s:1".into()];
        assert_eq!(signer_targets(&cfg), ["s:1"]);
    }

    #[test]
    fn signer_refuses_anonymous_renewals_and_other_roots_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let td: rhizome_ca::TrustDomain = "s.test".parse().unwrap();
        let root = RootCa::generate(td.clone(), now, time::Duration::days(1)).unwrap();
        let node: NodeName = "signer".parse().unwrap();
        let agent = root
            .issue_agent(&node, None, now, time::Duration::days(1))
            .unwrap();
        let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
        let cfg = AgentConfig::dev("signer", dir.path().to_path_buf());
        let identity = Arc::new(Identity::from_credentials(&cfg, agent, bundle).unwrap());
        let other = RootCa::generate(td.clone(), now, time::Duration::days(1)).unwrap();
        let signer = Signer::new(root, identity, store, time::Duration::days(1));
        let (csr, _) = AgentCa::new_csr(&td, &"j".parse().unwrap()).unwrap();

        let anonymous = signer.decide(Request::Renew { csr: csr.0.clone() }, None, now);
        assert!(
            matches!(anonymous, Err(Refusal::NotAnAgent)),
            "{anonymous:?}"
        );

        let claims = rhizome_ca::Claims {
            id: rhizome_ca::TokenId::random().unwrap(),
            expires: now + time::Duration::hours(1),
            node_pattern: "*".parse().unwrap(),
            services: None,
            root: other.fingerprint(),
            max_uses: None,
        };
        let token = claims.sign(&other).unwrap();
        let join = Request::Join {
            node: "j".into(),
            token,
            csr: csr.0,
        };
        let refused = signer.decide(join, None, now).unwrap_err();
        assert!(
            matches!(refused, Refusal::Token(TokenError::WrongRoot { .. })),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn unreachable_signers_are_retried_then_reported() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let now = OffsetDateTime::now_utc();
        let root =
            RootCa::generate("u.test".parse().unwrap(), now, time::Duration::days(1)).unwrap();
        let token = rhizome_ca::Claims {
            id: rhizome_ca::TokenId::random().unwrap(),
            expires: now + time::Duration::hours(1),
            node_pattern: "*".parse().unwrap(),
            services: None,
            root: root.fingerprint(),
            max_uses: None,
        }
        .sign(&root)
        .unwrap();
        let mut cfg = AgentConfig::dev("n1", "/tmp/x".into());
        cfg.ca.signer_addrs = vec![addr.to_string()];
        let err = join_mesh(&cfg, &token, Duration::from_millis(500))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("could not reach any signer"), "{text}");
        assert!(
            text.contains(&format!("connecting to signer {addr}")),
            "{text}"
        );
    }

    #[test]
    fn requests_are_parsed_strictly() {
        let ok: Request = serde_json::from_str(r#"{"op":"renew","csr":"c"}"#).unwrap();
        assert_eq!(ok, Request::Renew { csr: "c".into() });
        for bad in [
            r#"{"op":"renew","csr":"c","extra":1}"#,
            r#"{"op":"steal","csr":"c"}"#,
            r#"{"op":"join","node":"n","csr":"c"}"#,
            r#"{"csr":"c"}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let answer: Response =
            serde_json::from_str(r#"{"refused":{"reason":"join token expired"}}"#).unwrap();
        assert_eq!(
            answer,
            Response::Refused {
                reason: "join token expired".into()
            }
        );
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let req = Request::Renew { csr: "x".into() };
        write_frame(&mut a, &req).await.unwrap();
        let back: Request = read_frame(&mut b).await.unwrap();
        assert_eq!(back, req);
        a.write_all(&(u32::try_from(MAX_FRAME).unwrap() + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame::<_, Request>(&mut b).await.unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
