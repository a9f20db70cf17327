//! Deserialize HCL text into serde types with errors that point at `file:line:column`.
//!
//! hcl-rs deserializes through the HCL JSON model and forgets where things were. This module
//! parses the text twice: once with `hcl-edit` (which keeps byte spans) and once into the
//! target type through `serde_path_to_error`, which reports the path (`service[1].port`) of a
//! failing field. The path is then walked through the spanned syntax tree to find the place
//! to blame. Used for intention files and for the agent's own configuration.

use hcl::edit::Span as _;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Block, Body};
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;

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

/// Deserializes `src` (the contents of `file`) into `T`.
///
/// Syntax errors, unknown fields (with `#[serde(deny_unknown_fields)]`), wrong types and
/// custom errors raised by `Deserialize` impls all carry the position of the culprit.
pub fn from_str<T: DeserializeOwned>(src: &str, file: &str) -> Result<T, SourceError> {
    from_str_with(src, file, None)
}

/// Like [`from_str`], but first evaluates expressions (function calls such as `env("X")`,
/// variables) with `ctx`, so configuration can refer to the environment.
pub fn from_str_eval<T: DeserializeOwned>(
    src: &str,
    file: &str,
    ctx: &hcl::eval::Context<'_>,
) -> Result<T, SourceError> {
    from_str_with(src, file, Some(ctx))
}

fn from_str_with<T: DeserializeOwned>(
    src: &str,
    file: &str,
    ctx: Option<&hcl::eval::Context<'_>>,
) -> Result<T, SourceError> {
    let edit_body = hcl::edit::parser::parse_body(src).map_err(|e| {
        let loc = e.location();
        SourceError {
            file: file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: format!("syntax error: {}", e.message()),
        }
    })?;
    let mut body: hcl::Body = edit_body.clone().into();
    if let Some(ctx) = ctx {
        use hcl::eval::Evaluate as _;
        body = body
            .evaluate(ctx)
            .map_err(|e| SourceError::at_offset(src, file, 0, format!("evaluation error: {e}")))?;
    }
    let de = hcl::de::Deserializer::from_body(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().clone();
        let inner = err.into_inner().to_string();
        locate_error(src, file, &edit_body, &path, &inner)
    })
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

/// Where a path segment led in the spanned syntax tree.
enum Node<'a> {
    Body(&'a Body),
    Expr(&'a Expression),
    /// Several blocks sharing one identifier: a sequence (unlabeled) or a label map.
    Blocks(Vec<&'a Block>, usize),
}

fn locate_error(
    src: &str,
    file: &str,
    body: &Body,
    path: &serde_path_to_error::Path,
    inner: &str,
) -> SourceError {
    let mut node = Node::Body(body);
    let mut span: Option<Range<usize>> = None;
    let mut resolved = Vec::new();
    for seg in path.iter() {
        match step(&node, seg) {
            Some((next, s)) => {
                node = next;
                if s.is_some() {
                    span = s;
                }
                resolved.push(seg.to_string());
            }
            None => break,
        }
    }
    // An unknown field is reported at the struct holding it: find the key itself.
    if let Some(name) = unknown_field_name(inner)
        && let Some((_, s)) = step(&node, &serde_path_to_error::Segment::Map { key: name })
    {
        span = s.or(span);
    }
    let path_text = path.to_string();
    let message = if path_text == "." || path_text.is_empty() {
        inner.to_string()
    } else {
        format!("{path_text}: {inner}")
    };
    SourceError::at_offset(src, file, span.map_or(0, |r| r.start), message)
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn step<'a>(
    node: &Node<'a>,
    seg: &serde_path_to_error::Segment,
) -> Option<(Node<'a>, Option<Range<usize>>)> {
    use serde_path_to_error::Segment;
    match (node, seg) {
        (Node::Body(body), Segment::Map { key }) => {
            if let Some(attr) = body.get_attribute(key) {
                return Some((Node::Expr(&attr.value), attr.span()));
            }
            let blocks: Vec<&Block> = body.blocks().filter(|b| b.has_ident(key)).collect();
            match blocks.as_slice() {
                [] => None,
                [one] if one.labels.is_empty() => Some((Node::Body(&one.body), one.span())),
                [first, ..] => Some((Node::Blocks(blocks.clone(), 0), first.span())),
            }
        }
        (Node::Blocks(blocks, _), Segment::Seq { index }) => {
            let block = blocks.get(*index)?;
            Some((Node::Body(&block.body), block.span()))
        }
        (Node::Blocks(blocks, depth), Segment::Map { key }) => {
            let matching: Vec<&Block> = blocks
                .iter()
                .copied()
                .filter(|b| b.labels.get(*depth).is_some_and(|l| l.as_str() == key))
                .collect();
            let first = *matching.first()?;
            if first.labels.len() == depth + 1 {
                Some((Node::Body(&first.body), first.span()))
            } else {
                Some((Node::Blocks(matching, depth + 1), first.span()))
            }
        }
        (Node::Expr(Expression::Object(obj)), Segment::Map { key }) => {
            obj.iter().find_map(|(k, v)| {
                let name = match k {
                    ObjectKey::Ident(id) => id.as_str().to_string(),
                    ObjectKey::Expression(Expression::String(s)) => s.as_str().to_string(),
                    ObjectKey::Expression(_) => return None,
                };
                (name == *key).then(|| (Node::Expr(v.expr()), k.span()))
            })
        }
        (Node::Expr(Expression::Array(arr)), Segment::Seq { index }) => {
            let e = arr.iter().nth(*index)?;
            Some((Node::Expr(e), e.span()))
        }
        // Newtype and enum wrappers do not move in the source.
        (Node::Body(b), Segment::Enum { .. }) => Some((Node::Body(b), None)),
        (Node::Expr(e), Segment::Enum { .. }) => Some((Node::Expr(e), None)),
        _ => None,
    }
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
