//! This agent's credentials: the trust bundle, its intermediate CA, its own agent leaf, and
//! the leaves of its local workloads (issued locally, never over the network). Builds the
//! rustls configs of the data plane and signs/verifies replicated entries.
//!
//! Sources, in order: `--dev` (an in-memory root and intermediate), `ca { dir }` (files from
//! `rhizome ca issue-agent`: agent.pem, agent.key, bundle.pem), an intermediate obtained
//! earlier by a join and kept in the store, a signer's own root, a join token
//! ([`Identity::obtain`], in [`super::obtain`]).

use super::files;
use super::refusals::{Point, TrustRefusals};
use crate::config::AgentConfig;
use anyhow::Context as _;
use rhizome_ca::{
    AgentCa, CertKind, Credential, Namespace, NodeName, RootCa, ServiceName, SharedBundle,
    SniResolver, SpiffeId, SpiffeVerifier, TrustBundle, TrustDomain,
};
use rustls::time_provider::DefaultTimeProvider;
use rustls_pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;

/// Trust domain of `--dev` agents.
pub const DEV_TRUST_DOMAIN: &str = "rhizome.local";

/// A workload's credential as served: the leaf and its TLS client view.
#[derive(Clone)]
pub struct Workload {
    /// The leaf and its chain.
    pub credential: Arc<Credential>,
    /// The client-side presenter of this leaf (swapped in place on renewal).
    pub client: Arc<rhizome_ca::ClientCredential>,
}

/// Everything this agent proves and trusts.
pub struct Identity {
    trust_domain: TrustDomain,
    node: NodeName,
    bundle: SharedBundle,
    agent_ca: RwLock<Arc<AgentCa>>,
    agent_leaf: RwLock<Arc<Credential>>,
    workloads: RwLock<BTreeMap<(Namespace, ServiceName), Workload>>,
    resolver: Arc<SniResolver>,
    root: Option<Arc<RootCa>>,
    leaf_ttl: Duration,
    refusals: TrustRefusals,
    trust: Arc<tokio::sync::watch::Sender<u64>>,
}

pub(super) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A std duration as the CA's signed duration (saturating: TTLs are hours, not eons).
fn ttl(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

impl Identity {
    /// Loads or creates the agent's credentials as the config says (see the module docs),
    /// without the network or the store: `--dev` and `ca { dir }` only.
    pub fn load(config: &AgentConfig) -> anyhow::Result<Identity> {
        let node: NodeName = config
            .node_name
            .parse()
            .context("node_name as a SPIFFE path segment")?;
        if config.dev && config.ca.dir.is_none() {
            let td: TrustDomain = DEV_TRUST_DOMAIN.parse()?;
            let root = RootCa::generate(td, now(), rhizome_ca::DEFAULT_ROOT_TTL)?;
            let agent = root.issue_agent(&node, None, now(), rhizome_ca::DEFAULT_AGENT_TTL)?;
            let bundle = TrustBundle::new(vec![root.cert().clone()])?;
            return Self::assemble(node, bundle, agent, Some(Arc::new(root)), config);
        }
        let (agent, bundle) = load_dir(config, &node)?;
        Self::assemble(node, bundle, agent, None, config)
    }

    /// Builds the identity from an intermediate and bundle obtained elsewhere (tests, tools),
    /// issuing the agent leaf and the configured services' leaves.
    pub fn from_credentials(
        config: &AgentConfig,
        agent: AgentCa,
        bundle: TrustBundle,
    ) -> anyhow::Result<Identity> {
        let node: NodeName = config.node_name.parse()?;
        anyhow::ensure!(
            agent.node() == &node,
            "intermediate issued for node {} but node_name is {node}",
            agent.node()
        );
        Self::assemble(node, bundle, agent, None, config)
    }

    pub(super) fn assemble(
        node: NodeName,
        bundle: TrustBundle,
        agent: AgentCa,
        root: Option<Arc<RootCa>>,
        config: &AgentConfig,
    ) -> anyhow::Result<Identity> {
        let trust_domain = bundle.trust_domain().clone();
        if agent.id().trust_domain() != &trust_domain {
            anyhow::bail!(
                "the agent intermediate belongs to trust domain {} but the bundle to {}",
                agent.id().trust_domain(),
                trust_domain
            );
        }
        let agent_leaf = agent.issue_agent_leaf(now(), ttl(config.ca.leaf_ttl.0))?;
        let bundle = SharedBundle::new(bundle);
        let trust = Arc::new(tokio::sync::watch::channel(bundle.generation()).0);
        let notify = trust.clone();
        bundle.on_change(Arc::new(move |generation| {
            notify.send_replace(generation);
        }));
        let identity = Identity {
            trust_domain,
            node,
            bundle,
            agent_ca: RwLock::new(Arc::new(agent)),
            agent_leaf: RwLock::new(Arc::new(agent_leaf)),
            workloads: RwLock::new(BTreeMap::new()),
            resolver: SniResolver::new(),
            root,
            leaf_ttl: config.ca.leaf_ttl.0,
            refusals: TrustRefusals::default(),
            trust,
        };
        for svc in &config.services {
            identity.ensure_workload(&svc.namespace, &svc.name)?;
        }
        Ok(identity)
    }

    /// The mesh's trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// This node's name.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The trust bundle cell every verifier reads (replace it to rotate roots).
    pub fn bundle(&self) -> &SharedBundle {
        &self.bundle
    }

    /// The in-memory root of `--dev` agents (signs unsigned local operations there).
    pub fn dev_root(&self) -> Option<&Arc<RootCa>> {
        self.root.as_ref()
    }

    /// Installs a new intermediate (renewed, or re-read from `ca { dir }`). Leaves issued by
    /// the previous one stay valid until their own renewal.
    pub fn replace_agent_ca(&self, agent: AgentCa) {
        write(&self.agent_ca, Arc::new(agent));
    }

    /// Installs a renewed agent leaf (`Identity::sign` and new handshakes use it at once).
    pub fn replace_agent_leaf(&self, cred: Credential) {
        write(&self.agent_leaf, Arc::new(cred));
    }

    /// The agent intermediate currently in use.
    pub fn agent_ca(&self) -> Arc<AgentCa> {
        read(&self.agent_ca)
    }

    /// The agent's own leaf (`spiffe://<td>/agent/<node>`).
    pub fn agent_leaf(&self) -> Arc<Credential> {
        read(&self.agent_leaf)
    }

    /// The SNI resolver serving local workloads' leaves to inbound connections.
    pub fn resolver(&self) -> Arc<SniResolver> {
        self.resolver.clone()
    }

    /// Lifetime given to new leaves.
    pub fn leaf_ttl(&self) -> Duration {
        self.leaf_ttl
    }

    /// The credential of a local workload, issuing it on first use.
    pub fn ensure_workload(&self, ns: &str, svc: &str) -> anyhow::Result<Workload> {
        let key = (ns.parse::<Namespace>()?, svc.parse::<ServiceName>()?);
        if let Some(w) = self
            .workloads
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(w);
        }
        let cred = self
            .agent_ca()
            .issue_workload(&key.0, &key.1, now(), ttl(self.leaf_ttl))?;
        self.install_workload(key, cred)
    }

    /// Installs a renewed (or first) leaf for a workload: new handshakes use it at once,
    /// open connections are untouched.
    pub fn install_workload(
        &self,
        key: (Namespace, ServiceName),
        cred: Credential,
    ) -> anyhow::Result<Workload> {
        self.resolver.insert(&cred)?;
        let mut map = self
            .workloads
            .write()
            .map_err(|_| anyhow::anyhow!("identity lock poisoned"))?;
        let workload = match map.get(&key) {
            Some(old) => {
                old.client.replace(&cred)?;
                Workload {
                    credential: Arc::new(cred),
                    client: old.client.clone(),
                }
            }
            None => Workload {
                client: rhizome_ca::ClientCredential::new(&cred)?,
                credential: Arc::new(cred),
            },
        };
        map.insert(key, workload.clone());
        Ok(workload)
    }

    /// Every local workload credential, by (namespace, service).
    pub fn workloads(&self) -> Vec<((Namespace, ServiceName), Workload)> {
        self.workloads
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// The trust generation (roots and revocations), changed whenever either changes: live
    /// sessions verified before are checked again then.
    pub fn trust_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.trust.subscribe()
    }

    /// Whether a peer's chain (leaf first), verified at its handshake in `usage`'s role as a
    /// workload, still verifies against the trust in force now.
    pub fn still_trusts(
        &self,
        chain: &[CertificateDer<'_>],
        usage: rhizome_ca::Usage,
    ) -> Result<SpiffeId, rhizome_ca::VerifyError> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or(rhizome_ca::VerifyError::NoSpiffeId)?;
        rhizome_ca::verify_chain_with(
            &self.bundle.load(),
            leaf,
            rest,
            rhizome_ca::unix_time(now()),
            &[CertKind::Workload],
            usage,
        )
    }

    /// Refusals on trust grounds, counted by every verifier this identity builds.
    pub fn refusals(&self) -> &TrustRefusals {
        &self.refusals
    }

    /// A verifier of peers of the given kinds against the live bundle (roots and
    /// revocations), counting its refusals under `point`.
    pub fn verifier(&self, point: Point, accept: &[CertKind]) -> Arc<SpiffeVerifier> {
        SpiffeVerifier::observed(self.bundle.clone(), accept, Some(self.refusals.hook(point)))
    }

    /// Server config of the data plane: serves the leaf named by SNI, requires a workload
    /// client certificate of this trust domain.
    pub fn server_config(&self, alpn: Vec<Vec<u8>>) -> anyhow::Result<rustls::ServerConfig> {
        Ok(rhizome_ca::server_config(
            self.verifier(Point::ProxyInbound, &[CertKind::Workload]),
            self.resolver(),
            alpn,
            Arc::new(DefaultTimeProvider),
        )?)
    }

    /// Client config presenting the leaf of local workload `ns/svc`, verifying that the
    /// server is a workload (and, when dialled by its mesh DNS name, the right one).
    pub fn client_config(
        &self,
        ns: &str,
        svc: &str,
        alpn: Vec<Vec<u8>>,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let w = self.ensure_workload(ns, svc)?;
        Ok(rhizome_ca::client_config(
            self.verifier(Point::ProxyOutbound, &[CertKind::Workload]),
            w.client,
            alpn,
            Arc::new(DefaultTimeProvider),
        )?)
    }

    /// Signs `msg` with the agent leaf; returns the signer chain (leaf first) and signature.
    pub fn sign(&self, msg: &[u8]) -> anyhow::Result<(Vec<CertificateDer<'static>>, Vec<u8>)> {
        let leaf = self.agent_leaf();
        let sig = leaf.key().sign(msg)?;
        Ok((leaf.chain().to_vec(), sig))
    }

    /// Checks a signature made by [`Identity::sign`] (or an operator): the chain must verify
    /// against the bundle as one of `accept`, and the leaf's key must have signed `msg`.
    pub fn verify_signed(
        &self,
        chain: &[CertificateDer<'_>],
        msg: &[u8],
        sig: &[u8],
        accept: &[CertKind],
    ) -> anyhow::Result<SpiffeId> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("empty signer chain"))?;
        let id = rhizome_ca::verify_chain_with(
            &self.bundle.load(),
            leaf,
            rest,
            rhizome_ca::unix_time(now()),
            accept,
            rhizome_ca::Usage::Client,
        )?;
        rhizome_ca::verify_signature(leaf, msg, sig)?;
        Ok(id)
    }
}

fn write<T>(lock: &RwLock<Arc<T>>, value: Arc<T>) {
    *crate::runtime::write_unpoisoned(lock) = value;
}

/// Reads `agent.pem`, `agent.key` and `bundle.pem` of `ca { dir }`.
pub(super) fn load_dir(
    config: &AgentConfig,
    node: &NodeName,
) -> anyhow::Result<(AgentCa, TrustBundle)> {
    let dir = config.ca.dir.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no agent credentials: set ca {{ dir = \"...\" }} (from `rhizome ca issue-agent`), \
             ca {{ join_token = \"...\" }}, ca {{ signer = true, root_dir = \"...\" }}, or run with --dev"
        )
    })?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let agent = AgentCa::from_pem(&read(files::AGENT_CERT)?, &read(files::AGENT_KEY)?)
        .with_context(|| format!("loading the agent intermediate from {}", dir.display()))?;
    let bundle = TrustBundle::from_pem(&read(files::BUNDLE)?)
        .with_context(|| format!("loading {}", dir.join(files::BUNDLE).display()))?;
    if agent.node() != node {
        anyhow::bail!(
            "{} was issued for node {:?} but node_name is {:?}",
            dir.join(files::AGENT_CERT).display(),
            agent.node().as_str(),
            node.as_str()
        );
    }
    Ok((agent, bundle))
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    crate::runtime::read_unpoisoned(lock).clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_issues_leaves_and_verifies_its_own_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AgentConfig::dev("n1", dir.path().to_path_buf());
        cfg.services = crate::config::AgentConfig::from_str(
            "node_name = \"n1\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\nservice {\n name = \"web\"\n port = 80\n}\n",
            "t.hcl",
        )
        .unwrap()
        .services;
        let id = Identity::load(&cfg).unwrap();
        assert_eq!(id.trust_domain().as_str(), DEV_TRUST_DOMAIN);
        assert_eq!(
            id.workloads().len(),
            1,
            "local services get leaves at start"
        );
        let (chain, sig) = id.sign(b"hello").unwrap();
        let who = id
            .verify_signed(&chain, b"hello", &sig, &[CertKind::Agent])
            .unwrap();
        assert_eq!(who.to_string(), "spiffe://rhizome.local/agent/n1");
        assert!(
            id.verify_signed(&chain, b"hellO", &sig, &[CertKind::Agent])
                .is_err(),
            "altered message"
        );
        assert!(
            id.verify_signed(&chain, b"hello", &sig, &[CertKind::Operator])
                .is_err(),
            "wrong kind"
        );
        let other = Identity::load(&AgentConfig::dev("n2", dir.path().to_path_buf())).unwrap();
        assert!(
            other
                .verify_signed(&chain, b"hello", &sig, &[CertKind::Agent])
                .is_err(),
            "other dev roots are not trusted"
        );
    }

    #[test]
    fn missing_credentials_are_explained() {
        let mut cfg = AgentConfig::dev("n1", "/tmp/x".into());
        cfg.dev = false;
        let err = Identity::load(&cfg).err().unwrap().to_string();
        assert!(err.contains("ca { dir"), "{err}");
    }
}
