//! Where the agent's credentials come from at start ([`Identity::obtain`]): `--dev`,
//! `ca { dir }`, an intermediate kept in the store, a signer's own root, or a join token
//! (network, through [`super::join`]); and how obtained credentials are kept in the store.

use super::files;
use super::identity::{Identity, load_dir, now};
use super::join;
use crate::config::AgentConfig;
use crate::store::{Store, TreeName};
use anyhow::Context as _;
use rhizome_ca::{AgentCa, NodeName, TrustBundle};

impl Identity {
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
                    None => join::join_mesh(config, token, join::JOIN_PATIENCE).await?,
                };
                save_credentials(store, &agent, &bundle)?;
                write_agent_dir(dir, &agent, &bundle)?;
                let (agent, bundle) = load_dir(config, &node)?;
                return Self::assemble(node, bundle, agent, None, config);
            }
            let (mut agent, bundle) = load_dir(config, &node)?;
            if let Some((renewed, _)) = stored
                && renewed.not_after() > agent.not_after()
                && join::check_issued(&renewed, &bundle, &node, None).is_ok()
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
            Some(token) => join::join_mesh(config, token, join::JOIN_PATIENCE).await?,
            None => return Self::load(config),
        };
        save_credentials(store, &agent, &bundle)?;
        Self::assemble(node, bundle, agent, None, config)
    }
}

/// Writes a joined intermediate into `ca { dir }` (agent.pem, agent.key with mode 0600, and
/// bundle.pem unless the operator provided one, which must then trust the intermediate).
fn write_agent_dir(
    dir: &std::path::Path,
    agent: &AgentCa,
    bundle: &TrustBundle,
) -> anyhow::Result<()> {
    use super::files::OutFile;
    let mut out = vec![
        OutFile::public(files::AGENT_CERT, agent.chain_pem()),
        OutFile::secret(files::AGENT_KEY, agent.key_pem()),
    ];
    let provided = dir.join(files::BUNDLE);
    if provided.exists() {
        let theirs = TrustBundle::from_pem(&files::read(&provided)?)
            .with_context(|| format!("parsing {}", provided.display()))?;
        join::check_issued(agent, &theirs, agent.node(), None).with_context(|| {
            format!(
                "the joined intermediate does not chain to {}",
                provided.display()
            )
        })?;
    } else {
        out.push(OutFile::public(files::BUNDLE, bundle.to_pem()));
    }
    files::write_new(dir, &out)?;
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
    let root = files::load_root(dir)?;
    let bundle = files::root_dir_bundle(dir, &root)?;
    let own = TrustBundle::new(vec![root.cert().clone()])?;
    if let Some((agent, _)) = stored
        && join::check_issued(&agent, &own, node, None).is_ok()
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
