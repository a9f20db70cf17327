//! Helpers for tests and benchmarks: a throwaway mesh CA that writes the same files as
//! `rhizome ca init` / `rhizome ca issue-agent`, so test agents load real credentials.

use crate::ca::files;
use rhizome_ca::{NodeName, RootCa, TrustDomain};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// A root CA for one test mesh.
pub struct TestCa {
    /// The root (its key stays in memory).
    pub root: RootCa,
}

impl TestCa {
    /// A new root for `trust_domain`.
    pub fn new(trust_domain: &str) -> anyhow::Result<TestCa> {
        let td: TrustDomain = trust_domain.parse()?;
        let root = RootCa::generate(td, OffsetDateTime::now_utc(), rhizome_ca::DEFAULT_ROOT_TTL)?;
        Ok(TestCa { root })
    }

    /// Writes `agent.pem`, `agent.key` and `bundle.pem` for `node` under `dir/<node>-ca` and
    /// returns that directory (for `ca { dir = ... }`).
    pub fn agent_dir(&self, dir: &Path, node: &str) -> anyhow::Result<PathBuf> {
        let node_name: NodeName = node.parse()?;
        let agent = self.root.issue_agent(
            &node_name,
            None,
            OffsetDateTime::now_utc(),
            rhizome_ca::DEFAULT_AGENT_TTL,
        )?;
        let out = dir.join(format!("{node}-ca"));
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join(files::AGENT_CERT), agent.chain_pem())?;
        std::fs::write(out.join(files::AGENT_KEY), agent.key_pem())?;
        std::fs::write(out.join(files::BUNDLE), self.root.cert_pem())?;
        Ok(out)
    }

    /// Writes an operator credential `spiffe://<td>/operator/<name>` (as `rhizome ca
    /// issue-operator` does: cert.pem, key.pem, chain.pem) under `dir/operator-<name>` and
    /// returns that directory (for `operator_dir` / `--operator-dir`).
    pub fn operator_dir(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let op = self.root.issue_operator(
            &name.parse()?,
            OffsetDateTime::now_utc(),
            time::Duration::hours(24),
        )?;
        let out = dir.join(format!("operator-{name}"));
        std::fs::create_dir_all(&out)?;
        std::fs::write(out.join("cert.pem"), op.cert_pem())?;
        std::fs::write(out.join("chain.pem"), op.chain_pem())?;
        std::fs::write(out.join("key.pem"), op.key_pem())?;
        Ok(out)
    }
}

/// `observer`'s member row of `node`: (status, generation), `None` while it does not know it.
pub fn member(
    observer: &crate::app::Agent,
    node: &str,
) -> Option<(crate::api::types::Status, u64)> {
    observer
        .handles()
        .gossip
        .members()
        .iter()
        .find(|m| m.node == node)
        .map(|m| (m.status, m.incarnation))
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` once `limit` has passed.
/// Tests wait on conditions (bounded), never on a fixed sleep.
pub async fn wait_until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    wait_until_async(what, limit, || std::future::ready(cond())).await;
}

/// [`wait_until`] for a condition that must itself await (an HTTP call, a lock).
pub async fn wait_until_async<F, Fut>(what: &str, limit: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
