//! Intentions in the agent: the signed entries this agent accepted, the rule set built from
//! them (written only through the [`RulesWriter`] that [`Intentions`] owns), the
//! `intentions_dir` loader, the HTTP API and the per-connection decision the data plane
//! calls ([`Authorizer`]).
//!
//! Flow: an entry arrives signed (HTTP API from `rhizome intention apply`, or a file of
//! `intentions_dir` signed with the operator of `operator_dir`), is checked
//! ([`signed::verify`]: operator signature, HCL, destination = key) and merged into the
//! replicated state through the [`ledger::Ledger`], which spreads it to every agent by
//! gossip; every change of the intention entries (local or received) triggers
//! [`Intentions::rebuild`], which swaps the rules in force only when the whole set builds, so a bad entry
//! never replaces the rules in force. `--dev` agents also accept unsigned entries (they
//! sign them with their own agent certificate, which other agents refuse).

pub(crate) mod api;
pub(crate) mod authorizer;
pub(crate) mod dir;
pub(crate) mod ledger;
pub mod signed;
pub(crate) mod verdict;
pub(crate) mod view;

pub use authorizer::{Authorizer, RulesWriter};
pub use verdict::{DecisionCounters, Outcome, Verdict};

use crate::ca::identity::Identity;
use crate::runtime::{Shutdown, lock_unpoisoned};
use crate::store::{Store, StoreError, TreeName};
use ledger::Ledger;
use prometheus_client::metrics::gauge::Gauge;
use rhizome_ca::SpiffeId;
use rhizome_gossip::hlc::Hlc;
use rhizome_gossip::state::{Applied, Entry as SignedEntry, Key};
use rhizome_intentions::{BuildError, Entry, Policy, RuleSet};
use signed::{Author, SignedError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// Prefix of the records marking keys written from `intentions_dir` (`dir/<key>` -> file).
const DIR_MARK_PREFIX: &str = "dir/";

/// Why a submitted entry was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The entry was refused (the sender's fault; see [`SignedError`]).
    #[error(transparent)]
    Refused(#[from] SignedError),
    /// The store failed (this agent's fault; nothing changed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The replicated state refused the entry (the sender's fault: signer, owner, clock).
    #[error("refused by the replicated state: {0}")]
    Rejected(#[from] rhizome_gossip::state::Rejection),
}

/// The latest problems, shown by `GET /v1/intentions`.
#[derive(Clone, Debug, Default)]
pub struct Problems {
    /// Errors of the last `intentions_dir` load that failed (`file:line:column: ...`).
    pub dir: Vec<String>,
    /// Errors of the last rule-set rebuild that failed.
    pub rules: Vec<String>,
}

/// The agent's intentions state: the accepted entries, the one [`RulesWriter`] and the
/// [`Authorizer`] reading what it writes. Shared as `Arc<Intentions>` by the intentions
/// tasks and API.
pub struct Intentions {
    ledger: Ledger,
    store: Store,
    /// Verifies entries, and signs them on `--dev` agents.
    identity: Arc<Identity>,
    /// `--dev`: unsigned entries are accepted (signed with this agent's certificate).
    dev: bool,
    /// The only write end of the rules in force.
    rules: RulesWriter,
    /// Reads the rules in force; `rhizome_intention_decisions_total`.
    authorizer: Authorizer,
    /// `rhizome_intention_rules`: rules in force.
    rules_gauge: Gauge,
    /// `rhizome_intention_problems`: errors keeping the rules from changing.
    problems_gauge: Gauge,
    problems: Mutex<Problems>,
}

impl Intentions {
    /// The intentions of `replica` (`intentions_dir` marks kept in `store`), with their
    /// metrics; entries are verified against `identity`'s bundle and decided with `policy`.
    /// No rule is in force until the first [`Intentions::rebuild`].
    pub fn open(
        store: &Store,
        replica: Arc<crate::gossip::replica::Replica>,
        identity: Arc<Identity>,
        dev: bool,
        policy: Policy,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Intentions, StoreError> {
        let ledger = Ledger::new(replica);
        let rules_gauge = Gauge::default();
        metrics.register(
            "intention_rules",
            "Intention rules (sources of entries) in force",
            rules_gauge.clone(),
        );
        let problems_gauge = Gauge::default();
        metrics.register(
            "intention_problems",
            "Errors of the last intentions_dir load or rule rebuild that kept the rules in force",
            problems_gauge.clone(),
        );
        let (authorizer, rules) = Authorizer::new(
            policy,
            identity.trust_domain().clone(),
            DecisionCounters::register(metrics),
        );
        Ok(Intentions {
            ledger,
            store: store.clone(),
            identity,
            dev,
            rules,
            authorizer,
            rules_gauge,
            problems_gauge,
            problems: Mutex::new(Problems::default()),
        })
    }

    /// The accepted entries.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The per-connection decision over the rules in force (clone it for the data plane).
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Puts `set` in force at once, skipping the signed path (tests of the data plane).
    #[cfg(any(test, feature = "testkit"))]
    pub fn replace_rules_for_test(&self, set: RuleSet) {
        self.rules.replace(set);
    }

    /// The latest load and build problems.
    pub fn problems(&self) -> Problems {
        lock_unpoisoned(&self.problems).clone()
    }

    fn set_problems(&self, f: impl FnOnce(&mut Problems)) {
        let mut problems = lock_unpoisoned(&self.problems);
        f(&mut problems);
        let count = problems.dir.len() + problems.rules.len();
        self.problems_gauge
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Verifies a signed entry and merges it.
    pub fn submit(&self, entry: SignedEntry) -> Result<(SpiffeId, Applied), SubmitError> {
        let signer = signed::verify(&self.identity, self.dev, &entry)?;
        let applied = self.ledger.submit(entry)?;
        Ok((signer, applied))
    }

    /// Signs `text` (one entry, `file` names it in errors) with this `--dev` agent's own
    /// certificate and merges it; refused on other agents.
    pub fn submit_unsigned(
        &self,
        text: &str,
        file: &str,
        tombstone_of: Option<&Key>,
    ) -> Result<(SpiffeId, Applied), SubmitError> {
        if !self.dev {
            return Err(SignedError::Unsigned.into());
        }
        let author = Author::agent(&self.identity)?;
        let entry = match tombstone_of {
            Some(key) => author.sign(key.clone(), Vec::new(), true, self.next_hlc(key))?,
            None => {
                let parsed = Entry::parse(text, file).map_err(SignedError::from)?;
                let key = signed::key_for(&parsed.destination)?;
                let hlc = self.next_hlc(&key);
                author.sign(key, text.as_bytes().to_vec(), false, hlc)?
            }
        };
        self.submit(entry)
    }

    /// Rebuilds the rule set from `entries` (tombstones skipped): every value is parsed with
    /// its key as the file name; the rules in force are replaced only if the whole set built,
    /// and only if its content changed. On errors, each is logged and the old set stays in
    /// force.
    pub fn rebuild(&self, entries: &[SignedEntry]) -> Result<(), Vec<String>> {
        let mut parsed = Vec::new();
        let mut errors: Vec<BuildError> = Vec::new();
        for e in entries.iter().filter(|e| !e.tombstone) {
            match signed::parse_value(&e.key, &e.value) {
                Ok(entry) => parsed.push(entry),
                Err(SignedError::Invalid(src)) => errors.push(BuildError::Source(src)),
                Err(other) => tracing::warn!(key = %e.key, error = %other, "intention skipped"),
            }
        }
        let built = match RuleSet::build(parsed) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more.0);
                Err(errors)
            }
        };
        match built {
            Ok(set) => {
                let version = set.version();
                if self.rules.replace_if_new(set) {
                    let rules = self.authorizer.rules().rules().len();
                    self.rules_gauge
                        .set(i64::try_from(rules).unwrap_or(i64::MAX));
                    tracing::info!(%version, entries = entries.len(), rules, "intentions in force");
                }
                self.set_problems(|p| p.rules.clear());
                Ok(())
            }
            Err(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                for line in &lines {
                    tracing::error!(error = %line, "intentions not replaced: the rules in force stay");
                }
                self.set_problems(|p| p.rules.clone_from(&lines));
                Err(lines)
            }
        }
    }

    /// A clock for a new version of `key`: wall time, and always after the held version.
    pub fn next_hlc(&self, key: &Key) -> Hlc {
        let now = crate::runtime::now_unix_ms();
        next_hlc(now, self.ledger.version(key).map(|v| v.hlc))
    }

    /// Entries written from `intentions_dir`: key, file and the digest of the version
    /// written (an entry counts as the directory's only while that version is held).
    pub fn dir_marks(&self) -> Result<Vec<DirMark>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self
            .store
            .scan(TreeName::Intentions, DIR_MARK_PREFIX.as_bytes())?
        {
            let key_text = String::from_utf8_lossy(&k[DIR_MARK_PREFIX.len()..]).into_owned();
            let value = String::from_utf8_lossy(&v);
            let Some((digest, file)) = value.split_once(' ') else {
                continue;
            };
            if let (Ok(key), Some(digest)) = (key_text.parse::<Key>(), unhex(digest)) {
                out.push(DirMark {
                    key,
                    file: file.to_owned(),
                    digest,
                });
            }
        }
        Ok(out)
    }

    /// The file of `key` when the held version is the one written from `intentions_dir`.
    pub fn dir_file(&self, key: &Key) -> Option<String> {
        let held = self.ledger.get(key)?.content_digest();
        let marks = self.dir_marks().ok()?;
        marks
            .into_iter()
            .find(|m| &m.key == key && m.digest == held)
            .map(|m| m.file)
    }

    fn mark_dir(&self, key: &Key, file: &str, entry: &SignedEntry) -> Result<(), StoreError> {
        let record = format!("{DIR_MARK_PREFIX}{key}");
        let value = format!("{} {file}", hex(&entry.content_digest()));
        self.store
            .put(TreeName::Intentions, record.as_bytes(), value.as_bytes())
    }

    fn unmark_dir(&self, key: &Key) -> Result<(), StoreError> {
        let record = format!("{DIR_MARK_PREFIX}{key}");
        self.store.remove(TreeName::Intentions, record.as_bytes())
    }
}

/// An entry written from `intentions_dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMark {
    /// Its key.
    pub key: Key,
    /// The file it came from.
    pub file: String,
    /// `content_digest` of the version written.
    pub digest: [u8; 32],
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The clock of a new version: `now_ms`, or just after `held` when that is not older.
pub fn next_hlc(now_ms: u64, held: Option<Hlc>) -> Hlc {
    match held {
        Some(h) if h.physical_ms() >= now_ms => match h.logical().checked_add(1) {
            Some(logical) => Hlc::new(h.physical_ms(), logical),
            None => Hlc::new(h.physical_ms().saturating_add(1), 0),
        },
        _ => Hlc::new(now_ms, 0),
    }
}

/// What the intentions tasks are given by the agent.
pub struct Inputs {
    /// The entries, the rules writer and the authorizer.
    pub intentions: Arc<Intentions>,
    /// `intentions_dir`: HCL files loaded and submitted on change (`None`: none).
    pub dir: Option<PathBuf>,
    /// `operator_dir`: who signs the directory's entries (`None`: only `--dev` agents,
    /// with their own certificate).
    pub operator_dir: Option<PathBuf>,
    /// Ends both tasks.
    pub shutdown: Shutdown,
}

/// Builds the rules from the stored entries and loads `intentions_dir` once (so a
/// restarted agent enforces its last rules at once), then spawns the tasks that rebuild on
/// every change and poll the directory. Both end on `inputs.shutdown`; the directory's
/// watcher also ends alone when the returned [`DirWatch`] is replaced by a reload.
pub async fn start(inputs: Inputs, tasks: &mut JoinSet<anyhow::Result<()>>) -> DirWatch {
    let Inputs {
        intentions,
        dir,
        operator_dir,
        shutdown,
    } = inputs;
    let changes = intentions.ledger.subscribe();
    let (stop_dir, dir_stopped) = shutdown.child();
    let mut watcher = dir::Watcher::new(dir.clone(), operator_dir.clone());
    watcher.poll(&intentions).await;
    let entries = intentions.ledger.entries();
    let _ = intentions.rebuild(&entries);
    tasks.spawn(rebuild_on_change(
        intentions.clone(),
        changes,
        digests(&entries),
        shutdown.clone(),
    ));
    tasks.spawn(dir::run(intentions, watcher, dir_stopped));
    DirWatch {
        dir,
        operator_dir,
        stop: stop_dir,
    }
}

/// The running `intentions_dir` watcher: which directory and operator it uses, and the
/// trigger that stops it alone.
pub struct DirWatch {
    dir: Option<PathBuf>,
    operator_dir: Option<PathBuf>,
    stop: crate::runtime::ShutdownTrigger,
}

impl DirWatch {
    /// Whether this watcher reads `dir` and signs with `operator_dir`.
    pub fn watches(
        &self,
        dir: Option<&std::path::Path>,
        operator_dir: Option<&std::path::Path>,
    ) -> bool {
        self.dir.as_deref() == dir && self.operator_dir.as_deref() == operator_dir
    }

    /// Stops this watcher and starts one of `dir` signed with `operator_dir` (a reload
    /// that changed them); the new directory is loaded once before this returns. With a
    /// new directory, entries written from the old one whose files it does not hold are
    /// deleted, as when a file is removed; with none (`intentions_dir` removed from the
    /// config), every entry written from the old one is deleted (signed by the old
    /// operator, or the new one if only that is left). Entries applied through the API
    /// stay. The new watcher ends with `shutdown`.
    pub async fn replace(
        self,
        intentions: Arc<Intentions>,
        dir: Option<PathBuf>,
        operator_dir: Option<PathBuf>,
        shutdown: &Shutdown,
    ) -> DirWatch {
        self.stop.trigger();
        if dir.is_none() && self.dir.is_some() {
            let signer = self.operator_dir.as_deref().or(operator_dir.as_deref());
            dir::withdraw_all(&intentions, signer);
        }
        let (stop, stopped) = shutdown.child();
        let mut watcher = dir::Watcher::new(dir.clone(), operator_dir.clone());
        watcher.poll(&intentions).await;
        tokio::spawn(dir::run(intentions, watcher, stopped));
        DirWatch {
            dir,
            operator_dir,
            stop,
        }
    }
}

/// What identifies a set of entries (the change counter may also move for other keys of
/// the replicated state: rebuild only when the intention entries themselves changed).
fn digests(entries: &[SignedEntry]) -> Vec<[u8; 32]> {
    entries.iter().map(SignedEntry::content_digest).collect()
}

async fn rebuild_on_change(
    intentions: Arc<Intentions>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    mut last: Vec<[u8; 32]>,
    stop: Shutdown,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let entries = intentions.ledger.entries();
                let now = digests(&entries);
                if now != last {
                    let _ = intentions.rebuild(&entries);
                    last = now;
                }
            }
            () = stop.wait() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        assert_eq!(unhex(&hex(&d)), Some(d));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn new_versions_are_after_the_held_one_even_with_a_slow_clock() {
        assert_eq!(next_hlc(100, None), Hlc::new(100, 0));
        assert_eq!(next_hlc(100, Some(Hlc::new(50, 9))), Hlc::new(100, 0));
        assert_eq!(next_hlc(100, Some(Hlc::new(100, 0))), Hlc::new(100, 1));
        assert_eq!(next_hlc(90, Some(Hlc::new(100, 3))), Hlc::new(100, 4));
        assert_eq!(
            next_hlc(90, Some(Hlc::new(100, u16::MAX))),
            Hlc::new(101, 0)
        );
    }
}
