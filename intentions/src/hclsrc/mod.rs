//! Deserialize HCL text into serde types with errors that point at `file:line:column`.
//!
//! Two dialects are read into one spanned document tree ([`tree`]): HCL 2 as hcl-rs parses
//! it (the agent's configuration, with `env("X")` evaluated), and the HCL 1 dialect that
//! Consul's own files are written in ([`hcl1`], for intention entries). Both then follow one
//! rule for a key given more than once, in any mix of attributes, lists and blocks: the
//! occurrences are merged, in file order, where the schema takes a list, and refused with
//! every position where it takes one value. Never last-wins, never dropped.
//!
//! The tree is deserialized through `serde_path_to_error`, which reports the path
//! (`service[1].port`) of a failing field; the path is walked through the tree to find the
//! place to blame.

mod de;
mod edit;
pub mod hcl1;
mod tree;

use serde::de::DeserializeOwned;
use std::fmt;

pub use hcl1::Dialect;
use tree::{FoldError, Kind, Node};

/// A problem in an HCL source file, located at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// File name as given by the caller (shown as is).
    pub file: String,
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// What is wrong, including the field path when there is one.
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl SourceError {
    /// Builds an error for byte `offset` of `src`.
    pub fn at_offset(src: &str, file: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(src, offset);
        SourceError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Converts a byte offset into a 1-based (line, column); offsets past the end clamp to it.
pub fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Deserializes `src` (the contents of `file`, HCL 2) into `T`.
///
/// Syntax errors, unknown fields (with `#[serde(deny_unknown_fields)]`), wrong types, keys
/// given more than once where one value is taken, and custom errors raised by `Deserialize`
/// impls all carry the position of the culprit.
pub fn from_str<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, SourceError> {
    Document::parse_hcl2(src, file, None)?.deserialize()
}

/// Like [`from_str`], but first evaluates expressions (function calls such as `env("X")`,
/// variables) with `ctx`, so configuration can refer to the environment.
pub fn from_str_eval<T: DeserializeOwned>(
    src: &str,
    file: &str,
    ctx: &hcl::eval::Context<'_>,
) -> Result<T, SourceError> {
    Document::parse_hcl2(src, file, Some(ctx))?.deserialize()
}

/// Deserializes `src` (the contents of `file`, in Consul's HCL 1 dialect) into `T`, with
/// keys matched to `dialect`'s vocabulary as Consul matches them.
pub fn from_consul_str<T: DeserializeOwned>(
    src: &str,
    file: &str,
    dialect: Dialect<'_>,
) -> Result<T, SourceError> {
    Document::parse_consul(src, file, dialect)?.deserialize()
}

/// A parsed file: its text, name and spanned tree, to deserialize and to locate things in.
#[derive(Debug, Clone)]
pub(crate) struct Document<'a> {
    src: &'a str,
    file: &'a str,
    root: Node,
}

/// One step of a path into a [`Document`]: a key of an object or an index into a list.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step<'a> {
    /// The field with this (dialect) key.
    Key(&'a str),
    /// The item with this index; a value that is not a list is its own item 0.
    Index(usize),
}

impl<'a> Document<'a> {
    /// Parses HCL 2 text, evaluating expressions with `ctx` when given.
    pub(crate) fn parse_hcl2(
        src: &'a str,
        file: &'a str,
        ctx: Option<&hcl::eval::Context<'_>>,
    ) -> Result<Self, SourceError> {
        let body = hcl::edit::parser::parse_body(src).map_err(|e| {
            let loc = e.location();
            let mut message = format!("syntax error: {}", e.message());
            if message.contains("redefined attribute")
                && let Some(first) = earlier_definition(src, loc.line(), loc.column())
            {
                message.push_str(&format!(" (first defined at {first})"));
            }
            SourceError {
                file: file.to_string(),
                line: loc.line(),
                column: loc.column(),
                message,
            }
        })?;
        let root = edit::body(src, &body, ctx).map_err(|e| fold_error(src, file, e))?;
        Ok(Self { src, file, root })
    }

    /// Parses text in Consul's HCL 1 dialect.
    pub(crate) fn parse_consul(
        src: &'a str,
        file: &'a str,
        dialect: Dialect<'_>,
    ) -> Result<Self, SourceError> {
        let root = hcl1::parse(src, dialect).map_err(|e| fold_error(src, file, e))?;
        Ok(Self { src, file, root })
    }

    /// Deserializes the whole document into `T`, locating any error.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, SourceError> {
        let de = de::NodeDe {
            node: &self.root,
            key: None,
            src: self.src,
        };
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().clone();
            let inner = err.into_inner().to_string();
            self.locate_error(&path, &inner)
        })
    }

    /// An error at byte `offset`.
    pub(crate) fn error_at(&self, offset: usize, message: impl Into<String>) -> SourceError {
        SourceError::at_offset(self.src, self.file, offset, message)
    }

    /// Where the value at `path` was written (its key for fields, its start for items).
    pub(crate) fn offset(&self, path: &[Step<'_>]) -> Option<usize> {
        let mut node = &self.root;
        let mut offset = None;
        for step in path {
            match *step {
                Step::Key(key) => {
                    let field = node.field(key)?;
                    offset = Some(field.key_span.start);
                    node = &field.value;
                }
                Step::Index(i) => {
                    let item = *node.as_items().get(i)?;
                    offset = Some(item.span.start);
                    node = item;
                }
            }
        }
        offset
    }

    fn locate_error(&self, path: &serde_path_to_error::Path, inner: &str) -> SourceError {
        use serde_path_to_error::Segment;
        let mut node = &self.root;
        let mut offset = 0;
        for seg in path.iter() {
            match seg {
                Segment::Map { key } => match node.field(key) {
                    Some(f) => {
                        offset = f.key_span.start;
                        node = &f.value;
                    }
                    None => break,
                },
                Segment::Seq { index } => match node.as_items().get(*index) {
                    Some(item) => {
                        offset = item.span.start;
                        node = item;
                    }
                    None => break,
                },
                Segment::Enum { .. } => {}
                Segment::Unknown => break,
            }
        }
        let mut message = inner.to_string();
        // An unknown field is reported at the struct holding it: find the key itself.
        if let Some(name) = unknown_field_name(inner)
            && let Some(f) = node.field(&name)
        {
            offset = f.key_span.start;
            if f.written != name {
                message = message.replacen(&format!("`{name}`"), &format!("`{}`", f.written), 1);
            }
        }
        // A key given more than once where the schema takes one value: point at the second.
        if let Kind::List { repeated, .. } = &node.kind
            && repeated.len() > 1
            && inner.contains("times (at ")
        {
            offset = repeated.get(1).map_or(offset, |s| s.start);
        }
        let path_text = path.to_string();
        let message = if path_text == "." || path_text.is_empty() {
            message
        } else {
            format!("{path_text}: {message}")
        };
        self.error_at(offset, message)
    }
}

/// For HCL 2's "redefined attribute" error at `line:column`: where the same key was first
/// written as an attribute (`key =` at the start of an earlier line), so both places are named.
fn earlier_definition(src: &str, line: usize, column: usize) -> Option<String> {
    let text = src.lines().nth(line.checked_sub(1)?)?;
    let rest: String = text.chars().skip(column.checked_sub(1)?).collect();
    let key: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if key.is_empty() {
        return None;
    }
    src.lines().take(line - 1).enumerate().find_map(|(i, l)| {
        let trimmed = l.trim_start();
        let after = trimmed.strip_prefix(key.as_str())?;
        after.trim_start().starts_with('=').then(|| {
            let col = l.chars().count() - trimmed.chars().count() + 1;
            format!("{}:{col}", i + 1)
        })
    })
}

fn fold_error(src: &str, file: &str, e: FoldError) -> SourceError {
    SourceError::at_offset(src, file, e.offset, e.message)
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

/// Accepts one value or a list of them, for HCL blocks that may be written once or repeated
/// (one block deserializes as a map, repeated blocks as a sequence).
///
/// Unlike an untagged enum, this keeps the inner error (and so its position) intact.
/// Use as `#[serde(default, deserialize_with = "rhizome_intentions::hclsrc::one_or_many")]`.
pub fn one_or_many<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a block, an object or a list of them")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            serde::Deserialize::deserialize(SeqAccessDeserializer::new(seq))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            let one: T = serde::Deserialize::deserialize(MapAccessDeserializer::new(map))?;
            Ok(vec![one])
        }
    }
    de.deserialize_any(V(std::marker::PhantomData))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Check {
        tcp: Option<String>,
        interval: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Svc {
        name: String,
        port: u16,
        check: Option<Check>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        node_name: String,
        #[serde(default, deserialize_with = "one_or_many")]
        service: Vec<Svc>,
        #[serde(default)]
        list: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[serde(rename = "Name")]
        name: String,
    }

    #[test]
    fn good_file_parses() {
        let src = "node_name = \"a\"\nservice {\n  name = \"web\"\n  port = 80\n}\nservice {\n  name = \"db\"\n  port = 5432\n}\n";
        let c: Conf = from_str(src, "a.hcl").unwrap();
        assert_eq!(c.node_name, "a");
        assert_eq!(c.service.len(), 2);
        assert_eq!(c.service[1].port, 5432);
    }

    #[test]
    fn syntax_error_has_position() {
        let src = "node_name = \"a\"\nservice {\n  name = \n}\n";
        let e = from_str::<Conf>(src, "bad.hcl").unwrap_err();
        assert_eq!(e.file, "bad.hcl");
        assert_eq!((e.line, e.column), (3, 10), "{e}");
        assert!(
            e.to_string().starts_with("bad.hcl:3:10: syntax error"),
            "{e}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_located() {
        let src = "node_name = \"a\"\n  nod_nme = 3\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(e.message.contains("unknown field `nod_nme`"), "{e}");
    }

    #[test]
    fn unknown_key_in_second_block_is_located() {
        let src = "node_name = \"a\"\nservice {\n  name = \"web\"\n  port = 80\n}\nservice {\n  name = \"db\"\n  prot = 5432\n}\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!((e.line, e.column), (8, 3), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let src = "node_name = \"a\"\nservice {\n  name = \"web\"\n  port = \"eighty\"\n}\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!((e.line, e.column), (4, 3), "{e}");
        assert!(e.message.contains("service"), "{e}");
    }

    #[test]
    fn nested_block_unknown_key() {
        let src = "node_name = \"a\"\nservice {\n  name = \"web\"\n  port = 80\n  check {\n    tpc = \"x\"\n  }\n}\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!((e.line, e.column), (6, 5), "{e}");
    }

    #[test]
    fn object_list_unknown_key() {
        let src =
            "node_name = \"a\"\nlist = [\n  { Name = \"x\" },\n  { Name = \"y\", Bogus = 1 },\n]\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!((e.line, e.column), (4, 17), "{e}");
    }

    #[test]
    fn missing_field_points_at_enclosing_block() {
        let src = "node_name = \"a\"\nservice {\n  name = \"web\"\n}\n";
        let e = from_str::<Conf>(src, "t.hcl").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("port"), "{e}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("", 10), (1, 1));
    }
}
