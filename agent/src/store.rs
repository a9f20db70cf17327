//! The agent's persistent state, in sled under `data_dir`. Everything sled-specific stays in
//! this module so the engine could be swapped (redb was verified as the alternative).
//!
//! One process at a time: a lock file (`data_dir/agent.lock`, holding the owner's PID) is
//! taken with an exclusive OS lock before sled opens, so a second agent on the same data_dir
//! fails with a clear message instead of sled's generic I/O error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Failure to open or use the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another live agent holds the data directory (operator error: two agents, one dir).
    #[error(
        "data_dir {dir} is in use by another rhizome agent{pid}; stop it or choose another data_dir"
    )]
    InUse {
        /// The contested directory.
        dir: String,
        /// `" (pid N)"` when the lock file names its owner.
        pid: String,
    },
    /// The directory or lock file could not be created or read.
    #[error("data_dir {dir}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// The cause.
        source: std::io::Error,
    },
    /// sled failed (corruption, disk full...).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
}

/// Named trees of the store; each concern owns one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeName {
    /// Node identity and counters (boot count, incarnation).
    Meta,
    /// Replicated gossip entries, by key.
    State,
    /// Credentials obtained at runtime (intermediate from a join, leaves).
    Certs,
    /// Join-token use counts on signers.
    Tokens,
    /// Which intention entries were written from `intentions_dir` (file and version).
    Intentions,
    /// Services registered through the API (`PUT /v1/agent/service/register`), by id.
    Services,
}

impl TreeName {
    fn as_str(self) -> &'static str {
        match self {
            TreeName::Meta => "meta",
            TreeName::State => "state",
            TreeName::Certs => "certs",
            TreeName::Tokens => "tokens",
            TreeName::Intentions => "intentions",
            TreeName::Services => "services",
        }
    }
}

/// Key/value pairs returned by [`Store::scan`].
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Handle to the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    _lock: std::sync::Arc<File>,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, failing if another agent uses it.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let dir_text = data_dir.display().to_string();
        let io = |source| StoreError::Io {
            dir: dir_text.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join("agent.lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = lock.read_to_string(&mut owner);
                let owner = owner.trim();
                let pid = if owner.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {owner})")
                };
                return Err(StoreError::InUse { dir: dir_text, pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        write!(lock, "{}", std::process::id()).map_err(io)?;
        lock.flush().map_err(io)?;
        let db = sled::Config::new().path(data_dir.join("store")).open()?;
        Ok(Store {
            db,
            dir: data_dir.to_path_buf(),
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tree(&self, name: TreeName) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name.as_str())?)
    }

    /// Reads one value.
    pub fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes one value (durable after [`Store::flush`] or sled's periodic flush).
    pub fn put(&self, tree: TreeName, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.insert(key, value)?;
        Ok(())
    }

    /// Removes one value; absent keys are fine.
    pub fn remove(&self, tree: TreeName, key: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.remove(key)?;
        Ok(())
    }

    /// All pairs whose key starts with `prefix`, in key order.
    pub fn scan(&self, tree: TreeName, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Atomically adds `delta` to a counter and returns the new value.
    pub fn increment(&self, tree: TreeName, key: &[u8], delta: u64) -> Result<u64, StoreError> {
        let updated = self.tree(tree)?.update_and_fetch(key, |old| {
            let current = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            Some(current.saturating_add(delta).to_be_bytes().to_vec())
        })?;
        Ok(updated
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Writes everything to disk; called at shutdown and after important changes.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reopen_sees_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(TreeName::Meta, b"k", b"v1").unwrap();
            assert_eq!(s.increment(TreeName::Meta, b"boots", 1).unwrap(), 1);
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get(TreeName::Meta, b"k").unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(s.increment(TreeName::Meta, b"boots", 1).unwrap(), 2);
        assert_eq!(
            s.get(TreeName::State, b"k").unwrap(),
            None,
            "trees are separate"
        );
    }

    #[test]
    fn second_open_while_held_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, StoreError::InUse { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }

    #[test]
    fn scan_returns_prefix_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for k in ["b/2", "a/1", "b/1", "c"] {
            s.put(TreeName::State, k.as_bytes(), b"x").unwrap();
        }
        let keys: Vec<_> = s
            .scan(TreeName::State, b"b/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"b/1".to_vec(), b"b/2".to_vec()]);
        s.remove(TreeName::State, b"b/1").unwrap();
        assert_eq!(s.scan(TreeName::State, b"b/").unwrap().len(), 1);
    }
}
