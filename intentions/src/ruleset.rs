//! The rule set: every loaded entry, flattened into rules sorted by precedence, indexed
//! for evaluation, and identified by a content hash.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entry::{Action, Entry, Mode, Origin};
use crate::hclsrc::SourceError;
use crate::index::PatternIndex;
use crate::pattern::ServicePattern;
use crate::precedence::Precedence;

/// One source of one entry, ready for evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The connecting services this rule selects.
    pub source: ServicePattern,
    /// The services connected to.
    pub destination: ServicePattern,
    /// Allow or deny.
    pub action: Action,
    /// Enforce or audit (from the entry's `Mode`).
    pub mode: Mode,
    /// Computed from the two patterns when the set was built.
    pub precedence: Precedence,
    /// The source's `Description`.
    pub description: Option<String>,
    /// Where the source was written.
    pub origin: Origin,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} => {} ({}, precedence {}, {})",
            self.source, self.destination, self.action, self.precedence, self.origin
        )
    }
}

/// A content hash identifying a rule set: equal contents give equal versions on every
/// agent, whatever the file names or the order of loading (not cryptographic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a rule set could not be built. Always the fault of the entries (files or operator);
/// nothing was replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A file did not parse or validate.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Two entries for one destination (Consul keeps one entry per destination).
    #[error("{second}: destination {destination} already has an entry at {first}")]
    DuplicateDestination {
        /// The destination both entries name.
        destination: ServicePattern,
        /// The entry seen first.
        first: Origin,
        /// The entry seen second.
        second: Origin,
    },
    /// The same source listed twice for one destination.
    #[error(
        "{second}: rule {source_pattern} => {destination} ({second_action}) conflicts with {first} ({first_action})"
    )]
    Conflict {
        /// The source pattern.
        source_pattern: ServicePattern,
        /// The destination pattern.
        destination: ServicePattern,
        /// The rule seen first.
        first: Origin,
        /// Its action.
        first_action: Action,
        /// The rule seen second.
        second: Origin,
        /// Its action.
        second_action: Action,
    },
}

/// Every error found while building a rule set, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BuildErrors(pub Vec<BuildError>);

impl fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A validated, immutable set of intentions with its evaluation index.
///
/// Build it with [`RuleSet::load`] (HCL files) or [`RuleSet::build`] (entries); derive a
/// changed set with [`RuleSet::with_entry`] / [`RuleSet::without`]. A failed build returns
/// errors and no set, so the caller keeps the old one. Serializes as its entries; the
/// index is rebuilt (and the version checked) on deserialization.
#[derive(Debug, Clone)]
pub struct RuleSet {
    entries: BTreeMap<ServicePattern, Entry>,
    /// All rules, highest precedence first.
    rules: Vec<Rule>,
    /// Destination pattern -> source pattern -> index into `rules`.
    pub(crate) index: PatternIndex<PatternIndex<u32>>,
    version: Version,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl RuleSet {
    /// The set with no rules (every decision is the default).
    pub fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
            rules: Vec::new(),
            index: PatternIndex::default(),
            version: content_version(&BTreeMap::new()),
        }
    }

    /// Parses `(file name, HCL text)` pairs, one entry per file, and builds the set.
    /// Reports every error of every file, not just the first.
    pub fn load<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, BuildErrors> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for (file, src) in files {
            match Entry::parse(src, file) {
                Ok(e) => entries.push(e),
                Err(e) => errors.push(BuildError::Source(e)),
            }
        }
        match Self::build(entries) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(BuildErrors(errors)),
            Err(BuildErrors(more)) => {
                errors.extend(more);
                Err(BuildErrors(errors))
            }
        }
    }

    /// Builds the set from validated entries, refusing duplicate destinations and
    /// duplicate sources.
    pub fn build(entries: impl IntoIterator<Item = Entry>) -> Result<Self, BuildErrors> {
        let mut map: BTreeMap<ServicePattern, Entry> = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in entries {
            if let Some(first) = map.get(&entry.destination) {
                errors.push(BuildError::DuplicateDestination {
                    destination: entry.destination.clone(),
                    first: first.origin.clone(),
                    second: entry.origin.clone(),
                });
                continue;
            }
            if let Some((a, b)) = entry.duplicate_source() {
                errors.push(BuildError::Conflict {
                    source_pattern: a.pattern.clone(),
                    destination: entry.destination.clone(),
                    first: a.origin.clone(),
                    first_action: a.action,
                    second: b.origin.clone(),
                    second_action: b.action,
                });
            }
            map.insert(entry.destination.clone(), entry);
        }
        if errors.is_empty() {
            Ok(Self::from_map(map))
        } else {
            Err(BuildErrors(errors))
        }
    }

    /// Assumes `map` is free of conflicts.
    fn from_map(entries: BTreeMap<ServicePattern, Entry>) -> Self {
        let mut rules: Vec<Rule> = entries
            .values()
            .flat_map(|e| {
                e.sources.iter().map(|s| Rule {
                    source: s.pattern.clone(),
                    destination: e.destination.clone(),
                    action: s.action,
                    mode: e.mode,
                    precedence: Precedence::of(&s.pattern, &e.destination),
                    description: s.description.clone(),
                    origin: s.origin.clone(),
                })
            })
            .collect();
        rules.sort_by(|a, b| {
            (b.precedence, &a.destination, &a.source).cmp(&(
                a.precedence,
                &b.destination,
                &b.source,
            ))
        });
        let mut index: PatternIndex<PatternIndex<u32>> = PatternIndex::default();
        for (i, rule) in rules.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            *index
                .slot(&rule.destination, PatternIndex::default)
                .slot(&rule.source, || id) = id;
        }
        let version = content_version(&entries);
        Self {
            entries,
            rules,
            index,
            version,
        }
    }

    /// A new set with `entry` added, replacing any entry for the same destination.
    pub fn with_entry(&self, entry: Entry) -> Result<Self, BuildErrors> {
        let mut entries = self.entries.clone();
        entries.remove(&entry.destination);
        Self::build(entries.into_values().chain([entry]))
    }

    /// A new set without the entry for `destination` (unchanged if there is none).
    pub fn without(&self, destination: &ServicePattern) -> Self {
        let mut entries = self.entries.clone();
        entries.remove(destination);
        Self::from_map(entries)
    }

    /// The entries, ordered by destination.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The entry for exactly this destination pattern.
    pub fn entry(&self, destination: &ServicePattern) -> Option<&Entry> {
        self.entries.get(destination)
    }

    /// Every rule, highest precedence first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule at `index` in [`RuleSet::rules`].
    pub(crate) fn rule(&self, index: u32) -> Option<&Rule> {
        self.rules.get(usize::try_from(index).ok()?)
    }

    /// The content hash of this set.
    pub fn version(&self) -> Version {
        self.version
    }
}

/// The semantic content of an entry (no file positions), hashed for [`Version`].
#[derive(Serialize)]
struct HashedEntry<'a> {
    destination: &'a ServicePattern,
    mode: Mode,
    meta: &'a BTreeMap<String, String>,
    sources: Vec<HashedSource<'a>>,
}

/// The semantic content of a source.
#[derive(Serialize)]
struct HashedSource<'a> {
    pattern: &'a ServicePattern,
    action: Action,
    description: &'a Option<String>,
    meta: &'a BTreeMap<String, String>,
}

fn content_version(entries: &BTreeMap<ServicePattern, Entry>) -> Version {
    let view: Vec<HashedEntry<'_>> = entries
        .values()
        .map(|e| HashedEntry {
            destination: &e.destination,
            mode: e.mode,
            meta: &e.meta,
            sources: e
                .sources
                .iter()
                .map(|s| HashedSource {
                    pattern: &s.pattern,
                    action: s.action,
                    description: &s.description,
                    meta: &s.meta,
                })
                .collect(),
        })
        .collect();
    // Serializing plain structs, strings and maps to JSON cannot fail.
    let bytes = serde_json::to_vec(&view).unwrap_or_default();
    Version(fnv1a(&bytes))
}

/// 64-bit FNV-1a: stable across platforms and releases, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The serialized form: the entries and the version they hash to.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: Version,
    entries: Vec<Entry>,
}

impl Serialize for RuleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            version: self.version,
            entries: self.entries.values().cloned().collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RuleSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let set = Self::build(wire.entries).map_err(serde::de::Error::custom)?;
        if set.version != wire.version {
            return Err(serde::de::Error::custom(format!(
                "rule set version mismatch: declared {}, content hashes to {}",
                wire.version, set.version
            )));
        }
        Ok(set)
    }
}
