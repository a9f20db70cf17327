//! This agent's credentials: the trust bundle, its intermediate CA, its own agent leaf, and
//! the leaves of its local workloads (issued locally, never over the network). Builds the
//! rustls configs of the data plane and signs/verifies replicated entries.
//!
//! Sources, in order: `--dev` (an in-memory root and intermediate), `ca { dir }` (files from
//! `rhizome ca issue-agent`: agent.pem, agent.key, bundle.pem), an intermediate obtained
//! earlier by a join and kept in the store, a signer's own root, a join token
//! ([`Identity::obtain`]).

use crate::config::AgentConfig;
use crate::store::{Store, TreeName};
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

/// File names written by `rhizome ca issue-agent` and read from `ca { dir }`.
pub mod files {
    /// The agent intermediate (followed by any cross certificate).
    pub const AGENT_CERT: &str = "agent.pem";
    /// The intermediate's private key.
    pub const AGENT_KEY: &str = "agent.key";
    /// The trust bundle (one or more roots).
    pub const BUNDLE: &str = "bundle.pem";
}

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
}

fn now() -> OffsetDateTime {
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

    /// Loads or obtains the agent's credentials, in order: `--dev` (in-memory root),
    /// `ca { dir }` (files; a later intermediate renewed into the store wins if it chains to
    /// the files' bundle; with `join_token` too and no agent.pem there yet, joins first and
    /// writes the files), a signer's own root (`ca { signer, root_dir }`: keeps its stored
    /// intermediate if the current root issued it, else issues itself one), an
    /// intermediate kept in the store from an earlier join, a join with `ca { join_token }`
    /// (network). Obtained ones are stored.
    pub async fn obtain(config: &AgentConfig, store: &Store) -> anyhow::Result<Identity> {
        if config.dev && config.ca.dir.is_none() {
            return Self::load(config);
        }
        let node: NodeName = config
            .node_name
            .parse()
            .context("node_name as a SPIFFE path segment")?;
        let stored = stored_credentials(store, &node)?;
        if let Some(dir) = &config.ca.dir {
            if let Some(token) = &config.ca.join_token
                && !dir.join(files::AGENT_CERT).exists()
            {
                let (agent, bundle) = match stored {
                    Some(kept) => kept,
                    None => {
                        crate::join::join_mesh(config, token, crate::join::JOIN_PATIENCE).await?
                    }
                };
                save_credentials(store, &agent, &bundle)?;
                write_agent_dir(dir, &agent, &bundle)?;
                let (agent, bundle) = load_dir(config, &node)?;
                return Self::assemble(node, bundle, agent, None, config);
            }
            let (mut agent, bundle) = load_dir(config, &node)?;
            if let Some((renewed, _)) = stored
                && renewed.not_after() > agent.not_after()
                && crate::join::check_issued(&renewed, &bundle, &node, None).is_ok()
            {
                tracing::info!(not_after = %renewed.not_after(), "using the renewed intermediate from the store");
                agent = renewed;
            }
            return Self::assemble(node, bundle, agent, None, config);
        }
        if let (true, Some(dir)) = (config.ca.signer, &config.ca.root_dir) {
            let (agent, bundle) = signer_credentials(dir, &node, stored)?;
            save_credentials(store, &agent, &bundle)?;
            return Self::assemble(node, bundle, agent, None, config);
        }
        if let Some((agent, bundle)) = stored {
            return Self::assemble(node, bundle, agent, None, config);
        }
        let (agent, bundle) = match &config.ca.join_token {
            Some(token) => {
                crate::join::join_mesh(config, token, crate::join::JOIN_PATIENCE).await?
            }
            None => return Self::load(config),
        };
        save_credentials(store, &agent, &bundle)?;
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

    fn assemble(
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
        let identity = Identity {
            trust_domain,
            node,
            bundle: SharedBundle::new(bundle),
            agent_ca: RwLock::new(Arc::new(agent)),
            agent_leaf: RwLock::new(Arc::new(agent_leaf)),
            workloads: RwLock::new(BTreeMap::new()),
            resolver: SniResolver::new(),
            root,
            leaf_ttl: config.ca.leaf_ttl.0,
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

    /// A verifier of peers of the given kinds against the live bundle.
    pub fn verifier(&self, accept: &[CertKind]) -> Arc<SpiffeVerifier> {
        SpiffeVerifier::new(self.bundle.clone(), accept)
    }

    /// Server config of the data plane: serves the leaf named by SNI, requires a workload
    /// client certificate of this trust domain.
    pub fn server_config(&self, alpn: Vec<Vec<u8>>) -> anyhow::Result<rustls::ServerConfig> {
        Ok(rhizome_ca::server_config(
            self.verifier(&[CertKind::Workload]),
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
            self.verifier(&[CertKind::Workload]),
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
    match lock.write() {
        Ok(mut g) => *g = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// Reads `agent.pem`, `agent.key` and `bundle.pem` of `ca { dir }`.
fn load_dir(config: &AgentConfig, node: &NodeName) -> anyhow::Result<(AgentCa, TrustBundle)> {
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

/// Writes a joined intermediate into `ca { dir }` (agent.pem, agent.key with mode 0600, and
/// bundle.pem unless the operator provided one, which must then trust the intermediate).
fn write_agent_dir(
    dir: &std::path::Path,
    agent: &AgentCa,
    bundle: &TrustBundle,
) -> anyhow::Result<()> {
    use crate::certfiles::OutFile;
    let mut out = vec![
        OutFile::public(files::AGENT_CERT, agent.chain_pem()),
        OutFile::secret(files::AGENT_KEY, agent.key_pem()),
    ];
    let provided = dir.join(files::BUNDLE);
    if provided.exists() {
        let theirs = TrustBundle::from_pem(&crate::certfiles::read(&provided)?)
            .with_context(|| format!("parsing {}", provided.display()))?;
        crate::join::check_issued(agent, &theirs, agent.node(), None).with_context(|| {
            format!(
                "the joined intermediate does not chain to {}",
                provided.display()
            )
        })?;
    } else {
        out.push(OutFile::public(files::BUNDLE, bundle.to_pem()));
    }
    crate::certfiles::write_new(dir, &out)?;
    tracing::info!(dir = %dir.display(), "joined credentials written to the CA directory");
    Ok(())
}

/// A signer's own credentials: the stored intermediate if the root of `dir` issued it (a
/// root switched during a rotation makes it issue a new one), and the root directory's bundle.
fn signer_credentials(
    dir: &std::path::Path,
    node: &NodeName,
    stored: Option<(AgentCa, TrustBundle)>,
) -> anyhow::Result<(AgentCa, TrustBundle)> {
    let root = crate::certfiles::load_root(dir)?;
    let bundle = crate::certfiles::root_dir_bundle(dir, &root)?;
    let own = TrustBundle::new(vec![root.cert().clone()])?;
    if let Some((agent, _)) = stored
        && crate::join::check_issued(&agent, &own, node, None).is_ok()
    {
        return Ok((agent, bundle));
    }
    let agent = root.issue_agent(node, None, now(), rhizome_ca::DEFAULT_AGENT_TTL)?;
    tracing::info!(root = %root.fingerprint(), "signer: issued its own intermediate");
    Ok((agent, bundle))
}

/// Keeps an intermediate obtained at runtime (join, renewal, self-issue) and its bundle in
/// the store's `Certs` tree, under the file names of `ca { dir }`.
pub fn save_credentials(
    store: &Store,
    agent: &AgentCa,
    bundle: &TrustBundle,
) -> anyhow::Result<()> {
    store.put(
        TreeName::Certs,
        files::AGENT_CERT.as_bytes(),
        agent.chain_pem().as_bytes(),
    )?;
    store.put(
        TreeName::Certs,
        files::AGENT_KEY.as_bytes(),
        agent.key_pem().as_bytes(),
    )?;
    store.put(
        TreeName::Certs,
        files::BUNDLE.as_bytes(),
        bundle.to_pem().as_bytes(),
    )?;
    store.flush()?;
    Ok(())
}

/// The intermediate and bundle kept by [`save_credentials`], if any, for this node.
pub fn stored_credentials(
    store: &Store,
    node: &NodeName,
) -> anyhow::Result<Option<(AgentCa, TrustBundle)>> {
    let get = |name: &str| -> anyhow::Result<Option<String>> {
        Ok(store
            .get(TreeName::Certs, name.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    };
    let (Some(chain), Some(key), Some(bundle)) = (
        get(files::AGENT_CERT)?,
        get(files::AGENT_KEY)?,
        get(files::BUNDLE)?,
    ) else {
        return Ok(None);
    };
    let agent = match AgentCa::from_pem(&chain, &key) {
        Ok(agent) => agent,
        // Issued before signing certificates lost their path (X509-SVID 3.2): peers refuse
        // it, so obtain a new one as if none were kept (signers issue themselves one, joiners
        // join again with their token).
        Err(e @ rhizome_ca::IssueError::LegacyIntermediate(_)) => {
            tracing::error!(error = %e, "ignoring the intermediate kept in the store");
            return Ok(None);
        }
        Err(e) => return Err(e).context("the intermediate kept in the store"),
    };
    if agent.node() != node {
        tracing::warn!(stored = %agent.node(), node = %node, "ignoring the stored intermediate of another node name");
        return Ok(None);
    }
    let bundle = TrustBundle::from_pem(&bundle).context("the bundle kept in the store")?;
    Ok(Some((agent, bundle)))
}

fn read<T>(lock: &RwLock<Arc<T>>) -> Arc<T> {
    match lock.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
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
