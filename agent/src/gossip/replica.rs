//! [`Replica`]: the agent's handle on the replicated state. One `State<AgentAuthority>`
//! behind a mutex, loaded from the store at start (every record verified again), every change
//! persisted, every local write broadcast through membership when it fits (anti-entropy
//! carries everything else), and a version counter that subscribers watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rhizome_ca::Fingerprint;
use rhizome_gossip::BroadcastKey;
use rhizome_gossip::hlc::Hlc;
use rhizome_gossip::state::{
    Applied, Change, Counters, Entry, Key, Rejection, Segment, Signer, State, StateConfig,
    WriteError, broadcast_key,
};
use tokio::sync::{mpsc, watch};

use super::authority::{AgentAuthority, CredentialSigner};
use super::now_ms;
use crate::ca::identity::Identity;
use crate::store::{Store, TreeName};

/// Prefix of the reaped floors in the store's `Meta` tree.
const REAPED_PREFIX: &[u8] = b"reaped/";

/// A state item for membership to broadcast.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Identifies the entry version (newer versions replace older ones in foca's backlog).
    pub key: BroadcastKey,
    /// The encoded entry.
    pub item: Vec<u8>,
}

/// Why a local write failed. The local agent is at fault (identity or key); nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Signing or the local authority refused the entry.
    #[error("local write refused: {0}")]
    Write(#[from] WriteError),
}

struct Inner {
    state: State<AgentAuthority>,
    /// Fingerprint of the agent leaf whose chain is published under `certs/<node>`.
    published_leaf: Option<[u8; 32]>,
}

/// The replicated state of this agent (see the module docs).
pub struct Replica {
    inner: Mutex<Inner>,
    store: Store,
    identity: Arc<Identity>,
    origin: Segment,
    version: watch::Sender<u64>,
    outbox: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("origin", &self.origin)
            .field("version", &*self.version.borrow())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Loads the state stored in `store` (re-verifying every record and dropping the ones
    /// refused now), restores the reaped floors, and publishes this agent's `certs/<node>`.
    /// The receiver yields the items to broadcast; the membership driver drains it.
    pub fn open(
        store: Store,
        identity: Arc<Identity>,
        node: &str,
        dev: bool,
    ) -> anyhow::Result<(Arc<Replica>, mpsc::UnboundedReceiver<Outgoing>)> {
        let origin: Segment = node.parse()?;
        let records = store.scan(TreeName::State, b"")?;
        let authority = AgentAuthority::new(identity.bundle().clone(), node, dev)
            .with_refusals(identity.refusals().clone());
        let (mut state, report) = State::load(
            authority,
            StateConfig::default(),
            records.iter().map(|(_, v)| v.as_slice()),
            now_ms(),
        );
        for (key, value) in store.scan(TreeName::Meta, REAPED_PREFIX)? {
            let name = key.strip_prefix(REAPED_PREFIX).unwrap_or_default();
            let (Ok(name), Ok(packed)) = (
                String::from_utf8_lossy(name).parse::<Segment>(),
                <[u8; 8]>::try_from(value.as_slice()),
            ) else {
                continue;
            };
            state.restore_reaped_floor(name, Hlc::from_u64(u64::from_be_bytes(packed)));
        }
        // Records refused now (expired signer, revoked, undecodable) leave the store too.
        for (key, _) in &records {
            let kept = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.parse::<Key>().ok())
                .is_some_and(|k| state.entry(&k).is_some());
            if !kept {
                store.remove(TreeName::State, key)?;
            }
        }
        tracing::info!(
            loaded = report.loaded,
            skipped = report.skipped,
            "replicated state loaded from the store"
        );
        let (version, _) = watch::channel(0);
        let (outbox, outgoing) = mpsc::unbounded_channel();
        let replica = Arc::new(Replica {
            inner: Mutex::new(Inner {
                state,
                published_leaf: None,
            }),
            store,
            identity,
            origin,
            version,
            outbox,
        });
        replica.ensure_certs()?;
        Ok((replica, outgoing))
    }

    /// This agent's name as the origin of its entries.
    pub fn origin(&self) -> &Segment {
        &self.origin
    }

    /// Applies a pre-signed entry (an operator-signed intention or keyring change, sent by the
    /// CLI). A new entry is persisted and broadcast.
    pub fn submit(&self, entry: Entry) -> Result<Applied, Rejection> {
        let mut inner = self.lock();
        let outcome = inner.state.apply(entry.clone(), now_ms());
        if outcome == Ok(Applied::New) {
            self.broadcast(&inner.state, &entry);
        }
        self.persist(&mut inner);
        outcome
    }

    /// Writes `value` under `key`, signed by this agent (publishing its certificate first if
    /// the agent leaf changed), persists and broadcasts it.
    pub fn write_local(&self, key: Key, value: Vec<u8>) -> Result<Entry, ReplicaError> {
        self.ensure_certs()?;
        self.write(key, Some(value))
    }

    /// Deletes `key` with a tombstone signed by this agent.
    pub fn delete_local(&self, key: Key) -> Result<Entry, ReplicaError> {
        self.ensure_certs()?;
        self.write(key, None)
    }

    fn write(&self, key: Key, value: Option<Vec<u8>>) -> Result<Entry, ReplicaError> {
        let leaf = self.identity.agent_leaf();
        let signer = CredentialSigner::by_fingerprint(&leaf);
        let mut inner = self.lock();
        let now = now_ms();
        let result = match value {
            Some(v) => inner.state.write(&signer, &self.origin, key, v, now),
            None => inner.state.delete(&signer, &self.origin, key, now),
        };
        if let Ok(entry) = &result {
            self.broadcast(&inner.state, entry);
        }
        self.persist(&mut inner);
        Ok(result?)
    }

    /// Publishes `certs/<node>` (chain embedded) when the agent leaf is not the one published
    /// (called before each local write and periodically, as the leaf is renewed),
    /// then re-signs this agent's own catalog entries with the new leaf, so peers that restart
    /// and no longer know the old leaf still accept them.
    pub fn ensure_certs(&self) -> Result<(), ReplicaError> {
        let leaf = self.identity.agent_leaf();
        let fp = Fingerprint::of(leaf.leaf()).0;
        let mut inner = self.lock();
        if inner.published_leaf == Some(fp) {
            return Ok(());
        }
        let key = Key::Certs(self.origin.clone());
        let already = inner.state.get(&key).is_some_and(|e| match &e.signer {
            Signer::Chain(chain) => chain
                .first()
                .is_some_and(|c| c.as_slice() == leaf.leaf().as_ref()),
            Signer::Fingerprint(_) => false,
        });
        if !already {
            let signer = CredentialSigner::with_chain(&leaf);
            let entry = inner
                .state
                .write(&signer, &self.origin, key, Vec::new(), now_ms())?;
            self.broadcast(&inner.state, &entry);
            let own: Vec<Entry> = inner
                .state
                .iter()
                .filter(|e| matches!(&e.key, Key::Catalog { node, .. } if *node == self.origin))
                .cloned()
                .collect();
            let by_fp = CredentialSigner::by_fingerprint(&leaf);
            for old in own {
                let entry =
                    inner
                        .state
                        .write(&by_fp, &self.origin, old.key, old.value, now_ms())?;
                self.broadcast(&inner.state, &entry);
            }
            tracing::info!(fingerprint = %Fingerprint(fp), "published this agent's certificate");
        }
        inner.published_leaf = Some(fp);
        self.persist(&mut inner);
        Ok(())
    }

    /// Drops the agent-written entries (catalog, certificates) whose signer is refused now
    /// (after a revocation or a change of roots), from the state and the store; returns their
    /// keys. Operator-written entries are left alone: an operator certificate that merely
    /// expired must not take the intentions and revocations it signed with it at run time.
    pub fn drop_refused(&self) -> Vec<Key> {
        let mut inner = self.lock();
        let dropped = inner.state.drop_refused(|k| k.owner_node().is_some());
        self.persist(&mut inner);
        dropped
    }

    /// Drops the entries refused after each change of trust (roots or revocations), so a
    /// revoked agent's catalog entries leave at once instead of at the next restart.
    pub async fn follow_trust(self: Arc<Self>, stop: crate::runtime::Shutdown) {
        let mut trust = self.identity.trust_changes();
        loop {
            tokio::select! {
                () = stop.wait() => return,
                changed = trust.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let dropped = self.drop_refused();
                    if !dropped.is_empty() {
                        let keys: Vec<String> = dropped.iter().map(ToString::to_string).collect();
                        tracing::warn!(?keys, "trust changed: entries whose signer is no longer trusted were dropped");
                    }
                }
            }
        }
    }

    /// The revocations in force, as learned from `revoked/..` entries.
    pub fn revocations(&self) -> rhizome_ca::RevocationSet {
        self.lock().state.authority().revoked().clone()
    }

    /// Live entries whose key text starts with `prefix` (`""` for all), in key order.
    pub fn entries(&self, prefix: &str) -> Vec<Entry> {
        self.lock()
            .state
            .iter()
            .filter(|e| e.key.to_string().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Entries (tombstones included) whose key text starts with `prefix`, in key order.
    pub fn entries_with_tombstones(&self, prefix: &str) -> Vec<Entry> {
        self.lock()
            .state
            .iter_all()
            .filter(|e| e.key.to_string().starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The live entry of `key`.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.lock().state.get(key).cloned()
    }

    /// A receiver of the state's version, bumped on every change (local or remote).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Counters of incoming entries (accepted, stale, rejected by reason).
    pub fn counters(&self) -> Counters {
        self.lock().state.counters().clone()
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.lock().state.len()
    }

    /// Whether the state is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on the state (membership handing it broadcasts, anti-entropy), then persists
    /// what changed. The wall clock is set first.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut State<AgentAuthority>) -> R) -> R {
        let mut inner = self.lock();
        inner.state.set_wall_clock(now_ms());
        let out = f(&mut inner.state);
        self.persist(&mut inner);
        out
    }

    /// Periodic upkeep: wall clock, tombstone GC older than `tombstone_horizon_ms`, reaping of
    /// nodes down for `reap_after_ms` (floors persisted). Returns the reaped nodes.
    pub fn tick(
        &self,
        down_since: &BTreeMap<Segment, u64>,
        reap_after_ms: u64,
        tombstone_horizon_ms: u64,
    ) -> Vec<(Segment, usize)> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.state.set_wall_clock(now);
        inner
            .state
            .gc_tombstones(now.saturating_sub(tombstone_horizon_ms));
        let reaped = inner.state.reap_down_nodes(down_since, now, reap_after_ms);
        for (node, _) in &reaped {
            if let Some(floor) = inner.state.reaped_floors().get(node) {
                let mut key = REAPED_PREFIX.to_vec();
                key.extend_from_slice(node.as_str().as_bytes());
                if let Err(e) = self
                    .store
                    .put(TreeName::Meta, &key, &floor.as_u64().to_be_bytes())
                {
                    tracing::warn!(error = %e, "cannot persist a reaped floor");
                }
            }
        }
        self.persist(&mut inner);
        reaped
    }

    fn broadcast(&self, state: &State<AgentAuthority>, entry: &Entry) {
        if let Some(item) = state.broadcast_item(entry) {
            // The driver may be gone at shutdown; anti-entropy carries the entry anyway.
            let _ = self.outbox.send(Outgoing {
                key: broadcast_key(entry),
                item,
            });
        }
    }

    /// Writes the queued changes to the store and bumps the version if there were any.
    fn persist(&self, inner: &mut Inner) {
        let changes = inner.state.drain_changes();
        if changes.is_empty() {
            return;
        }
        for change in &changes {
            let res = match change {
                Change::Upserted(entry) => self.store.put(
                    TreeName::State,
                    entry.key.to_string().as_bytes(),
                    &entry.to_bytes(),
                ),
                Change::Removed(key) => self
                    .store
                    .remove(TreeName::State, key.to_string().as_bytes()),
            };
            if let Err(e) = res {
                tracing::warn!(error = %e, "cannot persist a replicated entry");
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::runtime::lock_unpoisoned(&self.inner)
    }
}
