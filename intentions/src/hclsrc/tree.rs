//! The spanned document tree both HCL dialects are read into, and the one rule for keys
//! given more than once.
//!
//! A body (or object) is first a list of [`Item`]s in file order: attributes (`key = value`)
//! and blocks (`key "label" { ... }`). [`fold`] turns it into an object where every key is
//! unique:
//!
//! - a key given once keeps its value (one unlabeled block becomes an object; labeled blocks
//!   nest by label, as in the HCL JSON model);
//! - a key given more than once, in any mix of attributes and unlabeled blocks, becomes one
//!   list of every occurrence in file order (a list value contributes its items), and
//!   remembers where each occurrence was. Deserializing that list into a field that takes one
//!   value fails, and the error then names every position ([`super::Document`]). So a repeated
//!   key is merged where the schema is a list and refused otherwise; never last-wins.

use std::ops::Range;

/// Byte range in the source text.
pub(crate) type Span = Range<usize>;

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Where the value (or, for merged keys, the first occurrence) starts and ends.
    pub span: Span,
    /// The value.
    pub kind: Kind,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A string, number, boolean or null (or an evaluated expression without inner spans).
    Scalar(serde_json::Value),
    /// A list; `repeated` holds the position of each occurrence when the list was merged from
    /// a key given more than once (empty for a list written as one value).
    List {
        /// The items in file order.
        items: Vec<Node>,
        /// Where each occurrence of the repeated key was written.
        repeated: Vec<Span>,
    },
    /// An object (a body, a block or an object literal) with unique keys in file order.
    Object(Vec<Field>),
}

/// One key of an object.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// The key as used for deserialization.
    pub key: String,
    /// The key as written in the file (differs from `key` when a dialect renamed it).
    pub written: String,
    /// Where the key was written.
    pub key_span: Span,
    /// Its value.
    pub value: Node,
}

/// One attribute or block of a body, before keys are folded.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// `key = value`.
    Attr {
        /// The key, possibly renamed by the dialect.
        key: String,
        /// The key as written.
        written: String,
        /// Where the key was written.
        key_span: Span,
        /// The value.
        value: Node,
    },
    /// `key "label" ... { body }`.
    Block {
        /// The block type (its first word), possibly renamed by the dialect.
        key: String,
        /// The block type as written.
        written: String,
        /// The labels, with their positions.
        labels: Vec<(String, Span)>,
        /// The body, already folded into an object node.
        body: Node,
        /// Where the block starts (its first word) and ends.
        span: Span,
    },
}

impl Item {
    fn key(&self) -> &str {
        match self {
            Item::Attr { key, .. } | Item::Block { key, .. } => key,
        }
    }

    fn start(&self) -> usize {
        match self {
            Item::Attr { key_span, .. } => key_span.start,
            Item::Block { span, .. } => span.start,
        }
    }
}

/// A problem found while folding: a byte offset and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoldError {
    /// Where to point.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Folds the items of one body or object literal into an object node spanning `span`.
pub(crate) fn fold(
    items: Vec<Item>,
    span: Span,
    at: &dyn Fn(usize) -> String,
) -> Result<Node, FoldError> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<Item>> = Vec::new();
    for item in items {
        match order.iter().position(|k| k == item.key()) {
            Some(i) => groups[i].push(item),
            None => {
                order.push(item.key().to_owned());
                groups.push(vec![item]);
            }
        }
    }
    let mut fields = Vec::with_capacity(groups.len());
    for group in groups {
        fields.push(fold_key(group, at)?);
    }
    Ok(Node {
        span,
        kind: Kind::Object(fields),
    })
}

/// Folds every occurrence of one key.
fn fold_key(mut group: Vec<Item>, at: &dyn Fn(usize) -> String) -> Result<Field, FoldError> {
    let labeled = group
        .iter()
        .filter(|i| matches!(i, Item::Block { labels, .. } if !labels.is_empty()))
        .count();
    if labeled > 0 && labeled < group.len() {
        let first = &group[0];
        let other = group
            .iter()
            .skip(1)
            .find(|i| {
                let is_labeled = matches!(i, Item::Block { labels, .. } if !labels.is_empty());
                let first_labeled =
                    matches!(first, Item::Block { labels, .. } if !labels.is_empty());
                is_labeled != first_labeled
            })
            .unwrap_or(first);
        return Err(FoldError {
            offset: other.start(),
            message: format!(
                "`{}` is given both as labeled blocks and otherwise (at {} and {}); use one form",
                written(first),
                at(first.start()),
                at(other.start())
            ),
        });
    }
    if labeled > 0 {
        return fold_labeled(group, 0, at);
    }
    if group.len() == 1 {
        let item = group.remove(0);
        return Ok(match item {
            Item::Attr {
                key,
                written,
                key_span,
                value,
            } => Field {
                key,
                written,
                key_span,
                value,
            },
            Item::Block {
                key,
                written,
                body,
                span,
                ..
            } => Field {
                key,
                written,
                key_span: span,
                value: body,
            },
        });
    }
    // The key is repeated: one list of every occurrence, in file order.
    let first_span = match &group[0] {
        Item::Attr { key_span, .. } => key_span.clone(),
        Item::Block { span, .. } => span.clone(),
    };
    let key = group[0].key().to_owned();
    let written_key = written(&group[0]).to_owned();
    let mut items = Vec::new();
    let mut repeated = Vec::new();
    for item in group {
        match item {
            Item::Attr {
                key_span, value, ..
            } => {
                repeated.push(key_span);
                match value.kind {
                    Kind::List { items: inner, .. } => items.extend(inner),
                    _ => items.push(value),
                }
            }
            Item::Block { body, span, .. } => {
                repeated.push(span.clone());
                items.push(Node {
                    span,
                    kind: body.kind,
                });
            }
        }
    }
    Ok(Field {
        key,
        written: written_key,
        key_span: first_span.clone(),
        value: Node {
            span: first_span,
            kind: Kind::List { items, repeated },
        },
    })
}

/// Nests labeled blocks by their label at `depth` (the HCL JSON model); the same full label
/// path given twice is refused with both positions.
fn fold_labeled(
    group: Vec<Item>,
    depth: usize,
    at: &dyn Fn(usize) -> String,
) -> Result<Field, FoldError> {
    let key = group[0].key().to_owned();
    let written_key = written(&group[0]).to_owned();
    let key_span = match &group[0] {
        Item::Block { span, .. } => span.clone(),
        Item::Attr { key_span, .. } => key_span.clone(),
    };
    let value = nest(group, depth, at)?;
    Ok(Field {
        key,
        written: written_key,
        key_span,
        value,
    })
}

fn nest(group: Vec<Item>, depth: usize, at: &dyn Fn(usize) -> String) -> Result<Node, FoldError> {
    let span = match &group[0] {
        Item::Block { span, .. } => span.clone(),
        Item::Attr { key_span, .. } => key_span.clone(),
    };
    // A block whose labels end here is the value itself; two of them are a conflict.
    let mut ended: Vec<Item> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut deeper: Vec<Vec<Item>> = Vec::new();
    let mut label_spans: Vec<Span> = Vec::new();
    for item in group {
        let label = match &item {
            Item::Block { labels, .. } => labels.get(depth).cloned(),
            Item::Attr { .. } => None,
        };
        match label {
            None => ended.push(item),
            Some((label, lspan)) => match order.iter().position(|l| *l == label) {
                Some(i) => deeper[i].push(item),
                None => {
                    order.push(label);
                    label_spans.push(lspan);
                    deeper.push(vec![item]);
                }
            },
        }
    }
    if let Some(first) = ended.first() {
        let other = ended
            .get(1)
            .or_else(|| deeper.first().and_then(|d| d.first()));
        if let Some(other) = other {
            return Err(FoldError {
                offset: other.start(),
                message: format!(
                    "block `{}` with these labels is given more than once (at {} and {})",
                    written(first),
                    at(first.start()),
                    at(other.start())
                ),
            });
        }
        return Ok(match ended.remove(0) {
            Item::Block { body, .. } => body,
            Item::Attr { value, .. } => value,
        });
    }
    let mut fields = Vec::with_capacity(order.len());
    for ((label, lspan), items) in order.into_iter().zip(label_spans).zip(deeper) {
        let value = nest(items, depth + 1, at)?;
        fields.push(Field {
            key: label.clone(),
            written: label,
            key_span: lspan,
            value,
        });
    }
    Ok(Node {
        span,
        kind: Kind::Object(fields),
    })
}

fn written(item: &Item) -> &str {
    match item {
        Item::Attr { written, .. } | Item::Block { written, .. } => written,
    }
}

impl Node {
    /// The value in serde's data model (via JSON values).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::List { items, .. } => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Kind::Object(fields) => serde_json::Value::Object(
                fields
                    .iter()
                    .map(|f| (f.key.clone(), f.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The field `key` of an object node.
    pub(crate) fn field(&self, key: &str) -> Option<&Field> {
        match &self.kind {
            Kind::Object(fields) => fields.iter().find(|f| f.key == key),
            _ => None,
        }
    }

    /// The items of a list node, or the node itself as a one-item list (one block written
    /// once reads as a list of one where the schema takes a list).
    pub(crate) fn as_items(&self) -> Vec<&Node> {
        match &self.kind {
            Kind::List { items, .. } => items.iter().collect(),
            _ => vec![self],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(s: &str, at: usize) -> Node {
        Node {
            span: at..at + 1,
            kind: Kind::Scalar(serde_json::Value::String(s.into())),
        }
    }

    fn attr(key: &str, at: usize, value: Node) -> Item {
        Item::Attr {
            key: key.into(),
            written: key.into(),
            key_span: at..at + key.len(),
            value,
        }
    }

    fn block(key: &str, at: usize, labels: &[&str], body: Vec<Item>) -> Item {
        Item::Block {
            key: key.into(),
            written: key.into(),
            labels: labels.iter().map(|l| (l.to_string(), at..at + 1)).collect(),
            body: fold(body, at..at + 1, &|o| o.to_string()).unwrap(),
            span: at..at + 10,
        }
    }

    fn list(items: Vec<Node>, at: usize) -> Node {
        Node {
            span: at..at + 1,
            kind: Kind::List {
                items,
                repeated: vec![],
            },
        }
    }

    #[test]
    fn list_and_blocks_merge_in_file_order() {
        let items = vec![
            block("S", 0, &[], vec![attr("Name", 1, scalar("web", 2))]),
            attr("S", 20, list(vec![scalar("a", 21), scalar("b", 22)], 21)),
            block("S", 30, &[], vec![attr("Name", 31, scalar("db", 32))]),
        ];
        let node = fold(items, 0..40, &|o| o.to_string()).unwrap();
        let json = node.to_json();
        assert_eq!(
            json,
            serde_json::json!({"S": [{"Name": "web"}, "a", "b", {"Name": "db"}]})
        );
        match &node.field("S").unwrap().value.kind {
            Kind::List { repeated, .. } => assert_eq!(repeated.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeated_scalars_become_a_list_that_remembers_positions() {
        let items = vec![
            attr("Name", 0, scalar("a", 5)),
            attr("Name", 10, scalar("b", 15)),
        ];
        let node = fold(items, 0..20, &|o| o.to_string()).unwrap();
        match &node.field("Name").unwrap().value.kind {
            Kind::List { repeated, items } => {
                assert_eq!(items.len(), 2);
                assert_eq!(repeated[0].start, 0);
                assert_eq!(repeated[1].start, 10);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn labeled_blocks_nest_and_refuse_duplicates() {
        let ok = vec![
            block("service", 0, &["web"], vec![]),
            block("service", 20, &["db"], vec![]),
        ];
        let node = fold(ok, 0..40, &|o| o.to_string()).unwrap();
        assert_eq!(
            node.to_json(),
            serde_json::json!({"service": {"web": {}, "db": {}}})
        );
        let dup = vec![
            block("service", 0, &["web"], vec![]),
            block("service", 20, &["web"], vec![]),
        ];
        let err = fold(dup, 0..40, &|o| o.to_string()).unwrap_err();
        assert_eq!(err.offset, 20);
        assert!(err.message.contains("at 0 and 20"), "{}", err.message);
        let mixed = vec![
            block("service", 0, &["web"], vec![]),
            attr("service", 20, scalar("x", 25)),
        ];
        let err = fold(mixed, 0..40, &|o| o.to_string()).unwrap_err();
        assert_eq!(err.offset, 20);
    }
}
