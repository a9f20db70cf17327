//! Config entries: one `service-intentions` file, Consul-compatible, validated.
//!
//! An entry names one destination and lists its sources in order. Parsing checks every
//! field and every cross-field rule, and each error names `file:line:column`.

use std::collections::BTreeMap;
use std::fmt;

use hcl::edit::Span as _;
use hcl::edit::expr::Expression;
use serde::{Deserialize, Deserializer, Serialize};

use crate::hclsrc::{self, SourceError, one_or_many};
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

/// The only `Kind` accepted.
#[derive(Debug, Deserialize)]
enum Kind {
    #[serde(rename = "service-intentions")]
    ServiceIntentions,
}

/// The only source `Type` accepted (written by `consul config read`).
#[derive(Debug, Deserialize)]
enum SourceType {
    #[serde(rename = "consul")]
    Consul,
}

/// An L7 `Permissions` field: refused whatever it holds, so the error points at it.
#[derive(Debug)]
struct Permissions;

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "L7 `Permissions` are not supported (L4 only for now): use `Action = \"allow\"` or \
             `\"deny\"` on the source instead",
        ))
    }
}

/// The file as written; field names and aliases follow Consul (PascalCase or snake_case).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "Kind", alias = "kind")]
    _kind: Kind,
    #[serde(rename = "Name", alias = "name")]
    name: NamePattern,
    #[serde(rename = "Namespace", alias = "namespace", default)]
    namespace: Option<NamespacePattern>,
    #[serde(
        rename = "Sources",
        alias = "sources",
        default,
        deserialize_with = "one_or_many"
    )]
    sources: Vec<RawSource>,
    #[serde(rename = "Meta", alias = "meta", default)]
    meta: BTreeMap<String, String>,
    #[serde(rename = "Mode", alias = "mode", default)]
    mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(rename = "Name", alias = "name")]
    name: NamePattern,
    #[serde(rename = "Namespace", alias = "namespace", default)]
    namespace: Option<NamespacePattern>,
    #[serde(rename = "Action", alias = "action")]
    action: Action,
    #[serde(rename = "Description", alias = "description", default)]
    description: Option<String>,
    /// Computed by us; accepted (so `consul config read` output loads) and ignored.
    #[serde(rename = "Precedence", alias = "precedence", default)]
    _precedence: Option<i64>,
    #[serde(rename = "Type", alias = "type", default)]
    _type: Option<SourceType>,
    #[serde(rename = "Meta", alias = "meta", default)]
    meta: BTreeMap<String, String>,
    #[serde(rename = "Permissions", alias = "permissions", default)]
    _permissions: Option<Permissions>,
}

impl Entry {
    /// Parses and validates one entry from the HCL text `src` of `file`.
    ///
    /// `Sources` may be a list of objects or repeated `Sources { }` blocks. A missing
    /// `Namespace` means `default`. A `Precedence` given in the file is ignored (it is
    /// computed); `Permissions` (L7) are refused.
    pub fn parse(src: &str, file: &str) -> Result<Self, SourceError> {
        let raw: RawEntry = hclsrc::from_str(src, file)?;
        let spans = Spans::find(src);
        let at = |offset: Option<usize>| Origin::at(src, file, offset.unwrap_or(0));
        let origin = at(spans.name);
        let ns = raw.namespace.unwrap_or_else(default_namespace);
        let destination =
            ServicePattern::new(ns, raw.name).map_err(|e| origin.error(format!("Name: {e}")))?;
        if raw.sources.is_empty() {
            return Err(origin.error("an entry needs at least one source in `Sources`".into()));
        }
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.into_iter().enumerate() {
            let origin = at(spans.sources.get(i).copied().or(spans.name));
            let ns = s.namespace.unwrap_or_else(default_namespace);
            let pattern = ServicePattern::new(ns, s.name)
                .map_err(|e| origin.error(format!("Sources[{i}]: {e}")))?;
            sources.push(Source {
                pattern,
                action: s.action,
                description: s.description,
                meta: s.meta,
                origin,
            });
        }
        let entry = Self {
            destination,
            sources,
            meta: raw.meta,
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

fn default_namespace() -> NamespacePattern {
    NamespacePattern::Exact(Default::default())
}

/// Byte offsets of the entry's `Name` and of each source, from the spanned syntax tree.
#[derive(Debug, Default)]
struct Spans {
    name: Option<usize>,
    sources: Vec<usize>,
}

impl Spans {
    fn find(src: &str) -> Self {
        let Ok(body) = hcl::edit::parser::parse_body(src) else {
            return Self::default();
        };
        let attr = |key: &str| body.get_attribute(key);
        let name = attr("Name").or_else(|| attr("name")).and_then(|a| a.span());
        let mut sources = Vec::new();
        if let Some(a) = attr("Sources").or_else(|| attr("sources"))
            && let Expression::Array(items) = &a.value
        {
            sources.extend(items.iter().filter_map(|e| e.span()).map(|r| r.start));
        }
        for b in body.blocks() {
            if b.has_ident("Sources") || b.has_ident("sources") {
                sources.extend(b.span().map(|r| r.start));
            }
        }
        Self {
            name: name.map(|r| r.start),
            sources,
        }
    }
}
