//! The joining side of the join protocol: where signers are, one exchange with a signer,
//! [`join_mesh`] (first intermediate, retried) and [`renew_intermediate`].

use super::{EXCHANGE_TIMEOUT, JOIN_ALPN, Request, Response, read_frame, write_frame};
use crate::ca::identity::Identity;
use crate::config::AgentConfig;
use anyhow::Context as _;
use rhizome_ca::{AgentCa, CertInfo, CertKind, Fingerprint, NodeName, TrustBundle};
use rustls::time_provider::DefaultTimeProvider;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::net::TcpStream;

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
            identity.verifier(crate::ca::refusals::Point::Signer, &[CertKind::Agent]),
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
