//! HCL 2 (as hcl-rs parses it) into the spanned [`tree`](super::tree): the agent's own
//! configuration, where expressions such as `env("X")` are evaluated.

use hcl::edit::Span as _;
use hcl::edit::expr::{Expression, ObjectKey};
use hcl::edit::structure::{Body, Structure};
use hcl::eval::Evaluate as _;

use super::tree::{self, FoldError, Item, Kind, Node, Span};

/// Converts a parsed body into an object node, evaluating non-literal expressions with `ctx`
/// (an empty context when `None`).
pub(crate) fn body(
    src: &str,
    body: &Body,
    ctx: Option<&hcl::eval::Context<'_>>,
) -> Result<Node, FoldError> {
    let empty = hcl::eval::Context::new();
    let conv = Conv {
        src,
        ctx: ctx.unwrap_or(&empty),
    };
    conv.body(body, 0..src.len())
}

struct Conv<'a, 'c> {
    src: &'a str,
    ctx: &'a hcl::eval::Context<'c>,
}

impl Conv<'_, '_> {
    fn at(&self, offset: usize) -> String {
        let (line, column) = super::line_column(self.src, offset);
        format!("{line}:{column}")
    }

    fn body(&self, body: &Body, span: Span) -> Result<Node, FoldError> {
        let mut items = Vec::new();
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str().to_owned();
                    let key_span = attr.key.span().or_else(|| attr.span()).unwrap_or(0..0);
                    items.push(Item::Attr {
                        written: key.clone(),
                        key,
                        key_span,
                        value: self.expr(&attr.value)?,
                    });
                }
                Structure::Block(block) => {
                    let span = block.span().unwrap_or(0..0);
                    let labels = block
                        .labels
                        .iter()
                        .map(|l| (l.as_str().to_owned(), l.span().unwrap_or(span.clone())))
                        .collect();
                    let key = block.ident.as_str().to_owned();
                    items.push(Item::Block {
                        written: key.clone(),
                        key,
                        labels,
                        body: self.body(&block.body, span.clone())?,
                        span,
                    });
                }
            }
        }
        tree::fold(items, span, &|o| self.at(o))
    }

    fn expr(&self, expr: &Expression) -> Result<Node, FoldError> {
        let span = expr.span().unwrap_or(0..0);
        match expr {
            Expression::Array(arr) => {
                let items = arr.iter().map(|e| self.expr(e)).collect::<Result<_, _>>()?;
                Ok(Node {
                    span,
                    kind: Kind::List {
                        items,
                        repeated: Vec::new(),
                    },
                })
            }
            Expression::Object(obj) => {
                let mut items = Vec::new();
                for (k, v) in obj.iter() {
                    let key_span = k.span().unwrap_or(span.clone());
                    let key = match k {
                        ObjectKey::Ident(id) => id.as_str().to_owned(),
                        ObjectKey::Expression(e) => match self.eval(e, key_span.start)? {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        },
                    };
                    items.push(Item::Attr {
                        written: key.clone(),
                        key,
                        key_span,
                        value: self.expr(v.expr())?,
                    });
                }
                tree::fold(items, span, &|o| self.at(o))
            }
            other => Ok(Node {
                kind: Kind::Scalar(self.eval(other, span.start)?),
                span,
            }),
        }
    }

    fn eval(&self, expr: &Expression, offset: usize) -> Result<serde_json::Value, FoldError> {
        let e: hcl::Expression = expr.clone().into();
        let value = e.evaluate(self.ctx).map_err(|err| FoldError {
            offset,
            message: format!("evaluation error: {err}"),
        })?;
        serde_json::to_value(&value).map_err(|err| FoldError {
            offset,
            message: format!("evaluation error: {err}"),
        })
    }
}
