//! Config entries: one `service-intentions` file, Consul-compatible, validated.
//!
//! An entry names one destination and lists its sources in order. Parsing checks every
//! field and every cross-field rule, and each error names `file:line:column`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::hclsrc::{self, Dialect, Document, SourceError, Step, one_or_many};
use crate::pattern::{NamePattern, NamespacePattern, ServicePattern};

/// What a rule does to a matching connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The connection is let through.
    Allow,
    /// The connection is refused (or, in audit mode, let through and counted as "would deny").
    Deny,
}

impl Action {
    /// `allow` or `deny`, as written in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an entry's denies are enforced or only audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denies refuse connections (the default).
    #[default]
    Enforce,
    /// Denies are logged and counted as "would deny", and the connection goes through.
    Audit,
}

/// Where something was written: file and 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// File name (or gossip key) the entry came from.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Origin {
    fn at(src: &str, file: &str, offset: usize) -> Self {
        let (line, column) = hclsrc::line_column(src, offset);
        Self {
            file: file.to_owned(),
            line,
            column,
        }
    }

    fn error(&self, message: String) -> SourceError {
        SourceError {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One source of an entry: who may (or may not) connect to the entry's destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The services this source selects.
    pub pattern: ServicePattern,
    /// What happens to their connections.
    pub action: Action,
    /// Free text from the file.
    pub description: Option<String>,
    /// Free key/value metadata from the file.
    pub meta: BTreeMap<String, String>,
    /// Where the source was written.
    pub origin: Origin,
}

/// A validated `service-intentions` config entry: one destination and its sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The services this entry protects.
    pub destination: ServicePattern,
    /// The sources, in file order.
    pub sources: Vec<Source>,
    /// Free key/value metadata from the file.
    pub meta: BTreeMap<String, String>,
    /// Enforce (default) or audit.
    pub mode: Mode,
    /// Where the entry's `Name` was written.
    pub origin: Origin,
}

/// The only `Kind` accepted (exactly this string, as in Consul).
#[derive(Debug, Deserialize)]
enum Kind {
    #[serde(rename = "service-intentions")]
    ServiceIntentions,
}

/// Consul's limits on an entry's `Meta` (`agent/structs`: 64 pairs, keys of at most 128 bytes,
/// values of at most 512 bytes) and on a source's `Description` (512 bytes).
pub const META_MAX_PAIRS: usize = 64;
/// Longest `Meta` key, in bytes (Consul's limit).
pub const META_KEY_MAX_LEN: usize = 128;
/// Longest `Meta` value, in bytes (Consul's limit).
pub const META_VALUE_MAX_LEN: usize = 512;
/// Longest source `Description`, in bytes (Consul's limit).
pub const DESCRIPTION_MAX_LEN: usize = 512;

/// Every field name of the entry, its sources and Consul's L7 permissions, as Consul spells
/// them. Keys in a file match these ignoring case and underscores, as Consul's decoder does
/// (`Sources`, `sources`; `SamenessGroup`, `sameness_group`).
const VOCABULARY: &[&str] = &[
    "Kind",
    "Name",
    "Namespace",
    "Partition",
    "Sources",
    "Meta",
    "Mode",
    "JWT",
    "CreateIndex",
    "ModifyIndex",
    "Peer",
    "SamenessGroup",
    "Action",
    "Permissions",
    "Precedence",
    "Type",
    "Description",
    "LegacyID",
    "LegacyMeta",
    "LegacyCreateTime",
    "LegacyUpdateTime",
    "HTTP",
    "PathExact",
    "PathPrefix",
    "PathRegex",
    "Header",
    "Methods",
    "Present",
    "Exact",
    "Prefix",
    "Suffix",
    "Regex",
    "Invert",
    "Contains",
    "IgnoreCase",
    "Providers",
    "VerifyClaims",
    "Path",
    "Value",
];

/// Keys whose values are free-form maps: their keys are user data, kept as written.
const OPAQUE: &[&str] = &["Meta", "LegacyMeta"];

/// The dialect Consul's `service-intentions` files are read in.
pub(crate) const CONSUL: Dialect<'static> = Dialect {
    vocabulary: VOCABULARY,
    opaque: OPAQUE,
};

/// A `Meta` value: Consul reads strings, numbers and booleans (as `"1"`/`"0"`) into strings.
#[derive(Debug)]
struct MetaValue(String);

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self(s)),
            serde_json::Value::Number(n) => Ok(Self(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Self(if b { "1" } else { "0" }.to_owned())),
            other => Err(serde::de::Error::custom(format!(
                "a Meta value must be a string, number or boolean, not {other}"
            ))),
        }
    }
}

type RawMeta = BTreeMap<String, MetaValue>;

/// The file as written. Field names follow Consul; the reader matches spellings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "Kind")]
    _kind: Kind,
    #[serde(rename = "Name")]
    name: NamePattern,
    #[serde(rename = "Namespace", default)]
    namespace: Option<NamespacePattern>,
    #[serde(rename = "Partition", default)]
    partition: Option<String>,
    #[serde(rename = "Sources", default, deserialize_with = "one_or_many")]
    sources: Vec<RawSource>,
    #[serde(rename = "Meta", default)]
    meta: RawMeta,
    #[serde(rename = "Mode", default)]
    mode: Mode,
    /// Entry-level JWT validation (L7): refused with its reason.
    #[serde(rename = "JWT", default)]
    jwt: Option<serde_json::Value>,
    /// Written by `consul config read`; accepted and ignored, as Consul does.
    #[serde(rename = "CreateIndex", default)]
    _create_index: Option<serde_json::Value>,
    /// Written by `consul config read`; accepted and ignored, as Consul does.
    #[serde(rename = "ModifyIndex", default)]
    _modify_index: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(rename = "Name", default)]
    name: Option<NamePattern>,
    #[serde(rename = "Namespace", default)]
    namespace: Option<NamespacePattern>,
    #[serde(rename = "Partition", default)]
    partition: Option<String>,
    #[serde(rename = "Peer", default)]
    peer: Option<String>,
    #[serde(rename = "SamenessGroup", default)]
    sameness_group: Option<String>,
    /// Checked by hand so the message is Consul's (`must be set to 'allow' or 'deny'`).
    #[serde(rename = "Action", default)]
    action: Option<String>,
    #[serde(rename = "Description", default)]
    description: Option<String>,
    /// Computed by us; accepted (so `consul config read` output loads) and ignored.
    #[serde(rename = "Precedence", default)]
    _precedence: Option<serde_json::Value>,
    #[serde(rename = "Type", default)]
    source_type: Option<String>,
    /// A rhizome extension (Consul has no per-source `Meta`); same limits as the entry's.
    #[serde(rename = "Meta", default)]
    meta: RawMeta,
    /// L7: an empty list is L4 (Consul accepts `Permissions = []` beside an `Action`);
    /// anything else is refused with its reason.
    #[serde(rename = "Permissions", default)]
    permissions: Option<serde_json::Value>,
    /// Cleared by Consul before validation: accepted and ignored.
    #[serde(rename = "LegacyID", default)]
    _legacy_id: Option<serde_json::Value>,
    /// Cleared by Consul before validation: accepted and ignored.
    #[serde(rename = "LegacyCreateTime", default)]
    _legacy_create_time: Option<serde_json::Value>,
    /// Cleared by Consul before validation: accepted and ignored.
    #[serde(rename = "LegacyUpdateTime", default)]
    _legacy_update_time: Option<serde_json::Value>,
    /// Refused by Consul when not empty (`LegacyMeta must be omitted`).
    #[serde(rename = "LegacyMeta", default)]
    legacy_meta: RawMeta,
}

impl Entry {
    /// Parses and validates one entry from `src`, the text of `file`, as Consul reads it.
    ///
    /// The text is Consul's HCL 1 dialect (or JSON, as `consul config read` writes it).
    /// `Sources` may be a list, repeated `Sources { }` blocks, or both: every source is kept,
    /// in file order. A source without `Namespace` takes the destination's, as in Consul. A
    /// `Precedence` in the file is ignored (it is computed); L7 `Permissions`, `JWT`, `Peer`,
    /// `SamenessGroup` and partitions other than `default` are refused with that reason.
    pub fn parse(src: &str, file: &str) -> Result<Self, SourceError> {
        let doc = Document::parse_consul(src, file, CONSUL)?;
        let raw: RawEntry = doc.deserialize()?;
        let at = |path: &[Step<'_>]| -> Origin {
            let offset = doc.offset(path).unwrap_or(0);
            Origin::at(src, file, offset)
        };
        let origin = at(&[Step::Key("Name")]);
        if raw.jwt.is_some() {
            return Err(at(&[Step::Key("JWT")]).error(
                "JWT is not supported: rhizome authorizes connections (L4) by the workload's \
                 certificate, not HTTP requests by tokens"
                    .into(),
            ));
        }
        check_partition(raw.partition.as_deref(), "Partition")
            .map_err(|m| at(&[Step::Key("Partition")]).error(m))?;
        check_meta(&raw.meta, "Meta").map_err(|m| at(&[Step::Key("Meta")]).error(m))?;
        let ns = raw.namespace.unwrap_or_else(default_namespace);
        let destination = ServicePattern::new(ns.clone(), raw.name)
            .map_err(|e| origin.error(format!("Name: {e}")))?;
        if raw.sources.is_empty() {
            return Err(origin.error("At least one source is required (`Sources`)".into()));
        }
        // Consul: a source without a namespace takes the destination's, but never its `*`.
        let source_default_ns = match ns {
            NamespacePattern::Any => default_namespace(),
            exact => exact,
        };
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.into_iter().enumerate() {
            let path = [Step::Key("Sources"), Step::Index(i)];
            let origin = at(&path);
            let field = |key: &'static str| {
                let mut p = path.to_vec();
                p.push(Step::Key(key));
                at(&p)
            };
            let source = build_source(s, i, &source_default_ns, origin, &field)?;
            sources.push(source);
        }
        let meta = raw.meta.into_iter().map(|(k, v)| (k, v.0)).collect();
        let entry = Self {
            destination,
            sources,
            meta,
            mode: raw.mode,
            origin,
        };
        if let Some((first, second)) = entry.duplicate_source() {
            let message = format!(
                "source {} is listed twice for destination {} (first at {})",
                second.pattern, entry.destination, first.origin
            );
            return Err(second.origin.error(message));
        }
        Ok(entry)
    }

    /// The first pair of sources with the same pattern, if any.
    pub(crate) fn duplicate_source(&self) -> Option<(&Source, &Source)> {
        let mut seen: BTreeMap<&ServicePattern, &Source> = BTreeMap::new();
        for s in &self.sources {
            if let Some(first) = seen.insert(&s.pattern, s) {
                return Some((first, s));
            }
        }
        None
    }
}

/// Validates one source the way Consul does (in Consul's order) and builds it.
fn build_source(
    s: RawSource,
    i: usize,
    default_ns: &NamespacePattern,
    origin: Origin,
    field: &dyn Fn(&'static str) -> Origin,
) -> Result<Source, SourceError> {
    let Some(name) = s.name else {
        return Err(origin.error(format!("Sources[{i}].Name is required")));
    };
    if s.peer.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(field("Peer").error(format!(
            "Sources[{i}].Peer is not supported: rhizome has no cluster peering (sources are \
             services of this mesh)"
        )));
    }
    if s.sameness_group.as_deref().is_some_and(|g| !g.is_empty()) {
        return Err(field("SamenessGroup").error(format!(
            "Sources[{i}].SamenessGroup is not supported: rhizome has no sameness groups"
        )));
    }
    check_partition(s.partition.as_deref(), &format!("Sources[{i}].Partition"))
        .map_err(|m| field("Partition").error(m))?;
    if s.description
        .as_ref()
        .is_some_and(|d| d.len() > DESCRIPTION_MAX_LEN)
    {
        return Err(field("Description").error(format!(
            "Sources[{i}].Description exceeds maximum length {DESCRIPTION_MAX_LEN}"
        )));
    }
    if !s.legacy_meta.is_empty() {
        return Err(field("LegacyMeta").error(format!("Sources[{i}].LegacyMeta must be omitted")));
    }
    check_meta(&s.meta, &format!("Sources[{i}].Meta")).map_err(|m| field("Meta").error(m))?;
    let has_permissions = match &s.permissions {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    };
    if has_permissions {
        let why = if s.action.is_some() {
            format!(
                "Sources[{i}].Action must be omitted if Permissions are specified (as in Consul); \
                 and L7 Permissions are not supported: rhizome is an L4 proxy, use `Action`"
            )
        } else {
            format!(
                "Sources[{i}].Permissions: L7 Permissions are not supported: rhizome is an L4 \
                 proxy (it authorizes connections, not HTTP requests); use `Action = \"allow\"` \
                 or `\"deny\"`"
            )
        };
        return Err(field("Permissions").error(why));
    }
    let action = match s.action.as_deref() {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        _ => {
            let at = if s.action.is_some() {
                field("Action")
            } else {
                origin
            };
            return Err(at.error(format!(
                "Sources[{i}].Action must be set to 'allow' or 'deny'"
            )));
        }
    };
    if let Some(t) = s.source_type.as_deref()
        && t != "consul"
        && !t.is_empty()
    {
        return Err(field("Type").error(format!("Sources[{i}].Type must be set to 'consul'")));
    }
    let ns = s.namespace.unwrap_or_else(|| default_ns.clone());
    let pattern =
        ServicePattern::new(ns, name).map_err(|e| origin.error(format!("Sources[{i}]: {e}")))?;
    Ok(Source {
        pattern,
        action,
        description: s.description,
        meta: s.meta.into_iter().map(|(k, v)| (k, v.0)).collect(),
        origin,
    })
}

/// Partitions: rhizome has one, `default` (Consul Enterprise's admin partitions are not
/// supported); `*` is refused as in Consul.
fn check_partition(partition: Option<&str>, what: &str) -> Result<(), String> {
    match partition {
        None | Some("") | Some("default") => Ok(()),
        Some(p) if p.contains('*') => Err(format!("{what}: cannot use wildcard '*' in partition")),
        Some(p) => Err(format!(
            "{what} `{p}` is not supported: rhizome has one admin partition, `default`"
        )),
    }
}

/// Consul's `Meta` limits.
fn check_meta(meta: &RawMeta, what: &str) -> Result<(), String> {
    if meta.len() > META_MAX_PAIRS {
        return Err(format!(
            "{what} exceeds maximum element count {META_MAX_PAIRS}"
        ));
    }
    for (k, v) in meta {
        if k.len() > META_KEY_MAX_LEN {
            return Err(format!(
                "{what} key {k:?} exceeds maximum length {META_KEY_MAX_LEN}"
            ));
        }
        if v.0.len() > META_VALUE_MAX_LEN {
            return Err(format!(
                "{what} value for key {k:?} exceeds maximum length {META_VALUE_MAX_LEN}"
            ));
        }
    }
    Ok(())
}

fn default_namespace() -> NamespacePattern {
    NamespacePattern::Exact(Default::default())
}
