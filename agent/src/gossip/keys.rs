//! The gossip keyring of this agent and its replication.
//!
//! The first key comes from `encrypt` in the config. Changes travel as replicated entries, so
//! the whole mesh rotates without a restart: `keyring/<id>` holds an installed key (base64;
//! a tombstone removes it), `keyring/primary` holds the key every agent seals with. They are
//! operator-signed (agent-signed on a `--dev` agent). Each agent recomputes its key set from
//! those entries whenever the state changes ([`follow`]); the primary is never removed.
//!
//! UDP packets are opened and sealed with one shared [`Keyring`] (replay windows per sender
//! epoch). Each anti-entropy connection seals with its own keyring holding only the primary
//! and a fresh epoch, so its in-order frames never disturb the UDP replay windows; frames are
//! opened with the shared keyring, so a replayed frame is refused like a replayed packet.

use std::sync::{Arc, Mutex, MutexGuard};

use rhizome_gossip::keyring::{Key as GossipKey, KeyId, Keyring, OpenError, SealError};
use rhizome_gossip::state::{Entry, Key, Segment};

use super::replica::Replica;
use crate::api::types::{KeyOp, KeyView};

/// Segment of the entry naming the primary key.
pub const PRIMARY: &str = "primary";

/// The replicated key and value (or tombstone) of a keyring change.
pub fn change_entry(op: KeyOp, key: &GossipKey) -> (Key, Option<Vec<u8>>) {
    let text = key.to_base64().into_bytes();
    match op {
        KeyOp::Install => (Key::Keyring(id_segment(key.id())), Some(text)),
        KeyOp::Use => (Key::Keyring(primary_segment()), Some(text)),
        KeyOp::Remove => (Key::Keyring(id_segment(key.id())), None),
    }
}

/// Whether `entry` is exactly the replicated form of `op` on `key` (checked before an
/// operator-signed entry from the CLI is submitted).
pub fn entry_matches(entry: &Entry, op: KeyOp, key: &GossipKey) -> bool {
    let (k, value) = change_entry(op, key);
    entry.key == k
        && match value {
            Some(v) => !entry.tombstone && entry.value == v,
            None => entry.tombstone,
        }
}

fn id_segment(id: KeyId) -> Segment {
    // Eight lowercase hex digits are always a valid segment.
    Segment::try_from(id.to_string()).unwrap_or_else(|_| primary_segment())
}

fn primary_segment() -> Segment {
    Segment::try_from(PRIMARY.to_string()).unwrap_or_else(|_| unreachable!("valid literal"))
}

/// A fresh key from the system CSPRNG (`rhizome keyring generate`).
pub fn generate_key() -> anyhow::Result<GossipKey> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; rhizome_gossip::keyring::KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(GossipKey::generate(bytes))
}

struct Inner {
    ring: Keyring,
    installed: Vec<GossipKey>,
}

/// The agent's keys (see the module docs).
pub struct Keys {
    inner: Mutex<Inner>,
    config_key: Option<GossipKey>,
}

impl Keys {
    /// The keyring of `encrypt` (cleartext without it). `epoch` must be random per process.
    pub fn new(config_key: Option<GossipKey>, epoch: u64) -> Keys {
        let ring = match &config_key {
            Some(k) => Keyring::new(k.clone(), epoch),
            None => Keyring::cleartext(epoch),
        };
        Keys {
            inner: Mutex::new(Inner {
                ring,
                installed: config_key.iter().cloned().collect(),
            }),
            config_key,
        }
    }

    /// Seals one UDP payload with the primary key.
    pub fn seal(&self, now_ms: u64, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut inner = self.lock();
        match inner.ring.seal(now_ms, payload) {
            Err(SealError::CounterExhausted) => {
                inner.ring.reseed(rand::random());
                inner.ring.seal(now_ms, payload)
            }
            other => other,
        }
    }

    /// Opens one received packet or anti-entropy frame.
    pub fn open(&self, now_ms: u64, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.lock().ring.open(now_ms, packet)
    }

    /// A keyring for one anti-entropy connection: the primary only, a fresh epoch.
    pub fn connection_sealer(&self) -> Keyring {
        let inner = self.lock();
        let primary = inner
            .ring
            .list()
            .into_iter()
            .find(|k| k.is_primary)
            .and_then(|info| inner.installed.iter().find(|k| k.id() == info.id).cloned());
        match primary {
            Some(k) => Keyring::new(k, rand::random()),
            None => Keyring::cleartext(rand::random()),
        }
    }

    /// Whether packets are sealed.
    pub fn is_encrypted(&self) -> bool {
        self.lock().ring.is_encrypted()
    }

    /// The installed keys, primary flagged.
    pub fn list(&self) -> Vec<KeyView> {
        self.lock()
            .ring
            .list()
            .into_iter()
            .map(|k| KeyView {
                id: k.id.to_string(),
                primary: k.is_primary,
            })
            .collect()
    }

    /// The id of the primary key, if any.
    pub fn primary(&self) -> Option<KeyId> {
        self.lock()
            .ring
            .list()
            .into_iter()
            .find(|k| k.is_primary)
            .map(|k| k.id)
    }

    /// Brings the keyring in line with the replicated `keyring/...` entries.
    pub fn apply(&self, entries: &[Entry]) {
        let (wanted, primary) = self.desired(entries);
        let mut inner = self.lock();
        for key in &wanted {
            if !inner.installed.contains(key) {
                inner.ring.install(key.clone());
                inner.installed.push(key.clone());
                tracing::info!(key = %key.id(), "gossip key installed");
            }
        }
        if let Some(p) = primary
            && inner.ring.list().iter().any(|k| k.id == p && !k.is_primary)
            && inner.ring.use_key(p).is_ok()
        {
            tracing::info!(key = %p, "gossip primary key changed");
        }
        let current = inner
            .ring
            .list()
            .into_iter()
            .find(|k| k.is_primary)
            .map(|k| k.id);
        let stale: Vec<GossipKey> = inner
            .installed
            .iter()
            .filter(|k| !wanted.contains(k) && Some(k.id()) != current)
            .cloned()
            .collect();
        for key in stale {
            if inner.ring.remove(key.id()).is_ok() {
                inner.installed.retain(|k| *k != key);
                tracing::info!(key = %key.id(), "gossip key removed");
            }
        }
    }

    /// The keys and primary the entries call for.
    fn desired(&self, entries: &[Entry]) -> (Vec<GossipKey>, Option<KeyId>) {
        let mut wanted = Vec::new();
        let mut primary = self.config_key.as_ref().map(GossipKey::id);
        let parse = |e: &Entry| {
            std::str::from_utf8(&e.value)
                .ok()?
                .parse::<GossipKey>()
                .ok()
        };
        let mut config_removed = false;
        for e in entries {
            let Key::Keyring(name) = &e.key else { continue };
            if name.as_str() == PRIMARY {
                if let Some(k) = parse(e).filter(|_| !e.tombstone) {
                    primary = Some(k.id());
                    wanted.push(k);
                }
            } else if e.tombstone {
                config_removed |= self
                    .config_key
                    .as_ref()
                    .is_some_and(|k| k.id().to_string() == name.as_str());
            } else if let Some(k) = parse(e) {
                wanted.push(k);
            }
        }
        if let Some(k) = &self.config_key
            && !config_removed
        {
            wanted.push(k.clone());
        }
        wanted.dedup();
        (wanted, primary)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::runtime::lock_unpoisoned(&self.inner)
    }
}

/// Re-applies the replicated keyring entries on every state change until shutdown.
pub async fn follow(keys: Arc<Keys>, replica: Arc<Replica>, shutdown: crate::runtime::Shutdown) {
    let mut version = replica.subscribe();
    loop {
        keys.apply(&replica.entries_with_tombstones("keyring/"));
        tokio::select! {
            changed = version.changed() => if changed.is_err() { return },
            () = shutdown.wait() => return,
        }
    }
}
