//! `intentions_dir`: every `*.hcl` file (or `*.json`, as `consul config read` prints) in it is one
//! entry, signed with the operator of `operator_dir` (or, on a `--dev` agent without one, with the
//! agent's own certificate) and submitted like an entry from the API. The directory is polled every
//! [`POLL_INTERVAL`]; when a file's name, size or modification time changes, all files are read and
//! checked together first: if any fails (syntax, unknown key, conflict...), each error is logged
//! with its file:line:column and nothing is submitted, so the rules in force stay. Entries whose
//! file disappeared are deleted (signed tombstones), but only if the version held is still the one
//! written from the directory (recorded by its content digest): an entry applied through the API,
//! or received from elsewhere, for the same destination is left alone.

use super::Intentions;
use super::signed::{self, Author};
use crate::runtime::Shutdown;
use rhizome_gossip::state::Key;
use rhizome_intentions::{Entry, RuleSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Time between two looks at the directory.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What was seen of the directory: each `*.hcl` file with its modification time and size.
type Snapshot = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// `(file name, text)` of every file, in name order.
type Files = Vec<(String, String)>;

/// Polls `intentions_dir` and submits what changed.
pub struct Watcher {
    dir: Option<PathBuf>,
    operator_dir: Option<PathBuf>,
    last: Option<Snapshot>,
}

impl Watcher {
    /// A watcher of `dir` (does nothing when `None`) whose files are signed with the
    /// operator of `operator_dir`.
    pub fn new(dir: Option<PathBuf>, operator_dir: Option<PathBuf>) -> Watcher {
        Watcher {
            dir,
            operator_dir,
            last: None,
        }
    }

    /// Looks at the directory once; on a change, loads and submits every file.
    pub async fn poll(&mut self, intentions: &Intentions) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let last = self.last.clone();
        let read = tokio::task::spawn_blocking(move || read_if_changed(&dir, last.as_ref())).await;
        let (snapshot, files) = match read {
            Ok(Ok(Some(changed))) => changed,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                let message = format!("intentions_dir: {e}");
                if intentions.problems().dir != [message.clone()] {
                    tracing::error!(error = %message, "cannot read intentions_dir; rules unchanged");
                    intentions.set_problems(|p| p.dir = vec![message]);
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "intentions_dir reader failed");
                return;
            }
        };
        self.last = Some(snapshot);
        match sync(intentions, self.operator_dir.as_deref(), &files) {
            Ok(changed) => {
                tracing::info!(files = files.len(), changed, "intentions_dir loaded");
                intentions.set_problems(|p| p.dir.clear());
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "intentions_dir not applied: the rules in force stay");
                }
                intentions.set_problems(|p| p.dir = errors);
            }
        }
    }
}

/// Polls until shutdown.
pub async fn run(
    intentions: Arc<Intentions>,
    mut watcher: Watcher,
    stop: Shutdown,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => watcher.poll(&intentions).await,
            () = stop.wait() => return Ok(()),
        }
    }
}

/// The snapshot and the files when the directory differs from `last`.
fn read_if_changed(
    dir: &Path,
    last: Option<&Snapshot>,
) -> std::io::Result<Option<(Snapshot, Files)>> {
    let mut snapshot: Snapshot = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "hcl" || x == "json") && path.is_file() {
            let meta = std::fs::metadata(&path)?;
            snapshot.push((path, meta.modified().ok(), meta.len()));
        }
    }
    snapshot.sort();
    if last == Some(&snapshot) {
        return Ok(None);
    }
    let mut files = Vec::with_capacity(snapshot.len());
    for (path, _, _) in &snapshot {
        files.push((path.display().to_string(), std::fs::read_to_string(path)?));
    }
    Ok(Some((snapshot, files)))
}

/// Deletes every entry still held as written from a directory (`intentions_dir` removed
/// by a reload), as if all its files were removed; the errors are logged and kept as load
/// problems.
pub fn withdraw_all(intentions: &Intentions, operator_dir: Option<&Path>) {
    if intentions.dir_marks().is_ok_and(|m| m.is_empty()) {
        return;
    }
    match sync(intentions, operator_dir, &Vec::new()) {
        Ok(changed) => {
            tracing::info!(
                deleted = changed,
                "intentions_dir removed: its entries are deleted"
            );
            intentions.set_problems(|p| p.dir.clear());
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(error = %e, "intentions_dir removed, but its entries cannot all be deleted");
            }
            intentions.set_problems(|p| p.dir = errors);
        }
    }
}

/// Who signs the directory's entries.
fn author(intentions: &Intentions, operator_dir: Option<&Path>) -> Result<Author, String> {
    match (operator_dir, intentions.dev) {
        (Some(dir), _) => Author::from_operator_dir(dir).map_err(|e| e.to_string()),
        (None, true) => Author::agent(&intentions.identity).map_err(|e| e.to_string()),
        (None, false) => Err(
            "intentions_dir is set but operator_dir is not: its files cannot be signed \
             (use the directory written by `rhizome ca issue-operator`)"
                .into(),
        ),
    }
}

/// Checks all files together, then submits the new and changed ones and deletes the
/// entries of removed files. Returns how many entries changed, or every error.
fn sync(
    intentions: &Intentions,
    operator_dir: Option<&Path>,
    files: &Files,
) -> Result<usize, Vec<String>> {
    RuleSet::load(files.iter().map(|(f, t)| (f.as_str(), t.as_str())))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let author = author(intentions, operator_dir).map_err(|e| vec![e])?;
    let mut wanted: BTreeMap<Key, (&str, &str)> = BTreeMap::new();
    for (file, text) in files {
        let entry = Entry::parse(text, file).map_err(|e| vec![e.to_string()])?;
        let key = signed::key_for(&entry.destination).map_err(|e| vec![format!("{file}: {e}")])?;
        wanted.insert(key, (file, text));
    }
    let mut errors = Vec::new();
    let mut changed = 0;
    for (key, (file, text)) in &wanted {
        let held = intentions.ledger().get(key);
        let written = match held {
            Some(h) if !h.tombstone && h.value == text.as_bytes() => h,
            _ => {
                let submitted = author
                    .sign(
                        key.clone(),
                        text.as_bytes().to_vec(),
                        false,
                        intentions.next_hlc(key),
                    )
                    .map_err(super::SubmitError::from)
                    .and_then(|e| intentions.submit(e.clone()).map(|_| e));
                match submitted {
                    Ok(e) => {
                        changed += 1;
                        e
                    }
                    Err(e) => {
                        errors.push(format!("{file}: {e}"));
                        continue;
                    }
                }
            }
        };
        if let Err(e) = intentions.mark_dir(key, file, &written) {
            errors.push(format!("{file}: {e}"));
        }
    }
    let marks = intentions.dir_marks().map_err(|e| vec![e.to_string()])?;
    for mark in marks.into_iter().filter(|m| !wanted.contains_key(&m.key)) {
        let ours = intentions
            .ledger()
            .get(&mark.key)
            .is_some_and(|h| !h.tombstone && h.content_digest() == mark.digest);
        if ours {
            let deleted = author
                .sign(
                    mark.key.clone(),
                    Vec::new(),
                    true,
                    intentions.next_hlc(&mark.key),
                )
                .map_err(super::SubmitError::from)
                .and_then(|e| intentions.submit(e));
            match deleted {
                Ok(_) => changed += 1,
                Err(e) => errors.push(format!("{} (removed): {e}", mark.file)),
            }
        }
        if let Err(e) = intentions.unmark_dir(&mark.key) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        Ok(changed)
    } else {
        Err(errors)
    }
}
