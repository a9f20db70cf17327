//! A reader for the HCL dialect Consul's own files are written in (HCL 1, as `consul config
//! write` reads them), into the spanned [`tree`](super::tree).
//!
//! What HCL 1 allows beyond the HCL 2 subset that hcl-rs parses, and that Consul's documents
//! use: blocks inside object literals (`{ Action = "allow"  HTTP { PathPrefix = "/v2" } }`),
//! quoted keys in blocks (`Meta { "k" = "v" }`), items separated by commas or by nothing but
//! white space, and heredoc strings. Keys are matched to the caller's vocabulary ignoring case
//! and underscores (Consul accepts `Sources`, `sources` and `source_type`-style spellings);
//! the values of opaque keys (`Meta`) keep their keys as written. No expressions: `${...}`
//! stays literal text, as in Consul's config entries.

use super::tree::{self, FoldError, Item, Kind, Node, Span};

/// How keys are named: the schema's spellings, and the keys whose objects hold user data.
#[derive(Debug, Clone, Copy)]
pub struct Dialect<'a> {
    /// Field names as the schema spells them; a key equal to one of them ignoring case and
    /// underscores is read as that name.
    pub vocabulary: &'a [&'a str],
    /// Keys whose values are free-form maps: their inner keys are kept as written.
    pub opaque: &'a [&'a str],
}

impl Dialect<'_> {
    fn canonical(&self, key: &str) -> String {
        let squash = |s: &str| -> String {
            s.chars()
                .filter(|c| *c != '_' && *c != '-')
                .flat_map(char::to_lowercase)
                .collect()
        };
        let wanted = squash(key);
        self.vocabulary
            .iter()
            .find(|v| squash(v) == wanted)
            .map_or_else(|| key.to_owned(), |v| (*v).to_owned())
    }

    fn is_opaque(&self, key: &str) -> bool {
        self.opaque.contains(&key)
    }
}

/// Parses `src` into an object node, or the first problem with its byte offset.
pub(crate) fn parse(src: &str, dialect: Dialect<'_>) -> Result<Node, FoldError> {
    let mut p = Parser {
        src,
        pos: 0,
        dialect,
    };
    p.skip_trivia(true)?;
    // JSON, as `consul config read` writes it: one object.
    if p.peek() == Some('{') {
        let node = p.value(false, 0)?;
        p.skip_trivia(true)?;
        if p.pos < src.len() {
            return Err(p.error("unexpected text after the closing `}`"));
        }
        return Ok(node);
    }
    let items = p.body_in(false, false, 0)?;
    p.skip_trivia(true)?;
    if p.pos < src.len() {
        return Err(p.error("expected a key"));
    }
    tree::fold(items, 0..src.len(), &|o| p.at(o))
}

struct Parser<'s, 'd> {
    src: &'s str,
    pos: usize,
    dialect: Dialect<'d>,
}

/// The most nested objects and lists accepted (keeps recursion bounded on hostile input).
const MAX_DEPTH: usize = 64;

impl Parser<'_, '_> {
    fn at(&self, offset: usize) -> String {
        let (line, column) = super::line_column(self.src, offset);
        format!("{line}:{column}")
    }

    fn error(&self, message: impl Into<String>) -> FoldError {
        FoldError {
            offset: self.pos,
            message: format!("syntax error: {}", message.into()),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    /// Skips white space and comments; with `newlines = false`, stops at a line end.
    fn skip_trivia(&mut self, newlines: bool) -> Result<(), FoldError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next()
                && c.is_whitespace()
                && (newlines || c != '\n')
            {
                self.pos += c.len_utf8();
            } else if rest.starts_with('#') || rest.starts_with("//") {
                let end = rest.find('\n').unwrap_or(rest.len());
                self.pos += end;
            } else if let Some(comment) = rest.strip_prefix("/*") {
                match comment.find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => return Err(self.error("unterminated `/*` comment")),
                }
            } else {
                return Ok(());
            }
        }
    }

    /// Items until `}` (when `braced`) or the end of the text; keys of an `opaque` object are
    /// kept as written.
    fn body_in(
        &mut self,
        braced: bool,
        opaque: bool,
        depth: usize,
    ) -> Result<Vec<Item>, FoldError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let mut items = Vec::new();
        loop {
            self.skip_trivia(true)?;
            match self.peek() {
                None if braced => return Err(self.error("missing `}`")),
                None => return Ok(items),
                Some('}') if braced => return Ok(items),
                Some(',') if !items.is_empty() => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            items.push(self.item(opaque, depth)?);
        }
    }

    fn item(&mut self, opaque: bool, depth: usize) -> Result<Item, FoldError> {
        let (written, key_span) = self.key()?;
        let key = if opaque {
            written.clone()
        } else {
            self.dialect.canonical(&written)
        };
        let inner_opaque = self.dialect.is_opaque(&key);
        let mut labels: Vec<(String, Span)> = Vec::new();
        loop {
            self.skip_trivia(false)?;
            match self.peek() {
                Some('=') | Some(':') if labels.is_empty() => {
                    self.pos += 1;
                    self.skip_trivia(false)?;
                    let value = self.value(inner_opaque, depth + 1)?;
                    return Ok(Item::Attr {
                        key,
                        written,
                        key_span,
                        value,
                    });
                }
                Some('{') => {
                    let start = self.pos;
                    self.pos += 1;
                    let body = self.body_in(true, inner_opaque, depth + 1)?;
                    self.pos += 1; // the `}`
                    let at = |o| self.at(o);
                    let body = tree::fold(body, start..self.pos, &at)?;
                    return Ok(Item::Block {
                        key,
                        written,
                        labels,
                        body,
                        span: key_span.start..self.pos,
                    });
                }
                Some('"') => labels.push(self.string()?),
                Some(c) if is_ident_start(c) => labels.push(self.ident()),
                _ => {
                    return Err(self.error(format!("expected `=` or `{{` after `{written}`")));
                }
            }
        }
    }

    fn key(&mut self) -> Result<(String, Span), FoldError> {
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_ident_start(c) => Ok(self.ident()),
            _ => Err(self.error("expected a key")),
        }
    }

    fn ident(&mut self) -> (String, Span) {
        let start = self.pos;
        let len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| {
                !(is_ident_start(c) || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '.')))
            })
            .map_or(self.rest().len(), |(i, _)| i);
        self.pos += len;
        (self.src[start..self.pos].to_owned(), start..self.pos)
    }

    fn value(&mut self, opaque: bool, depth: usize) -> Result<Node, FoldError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let start = self.pos;
        let scalar = |v, end| Node {
            span: start..end,
            kind: Kind::Scalar(v),
        };
        match self.peek() {
            Some('"') => {
                let (s, span) = self.string()?;
                Ok(scalar(serde_json::Value::String(s), span.end))
            }
            Some('<') if self.rest().starts_with("<<") => {
                let s = self.heredoc()?;
                Ok(scalar(serde_json::Value::String(s), self.pos))
            }
            Some('[') => self.list(opaque, depth),
            Some('{') => {
                self.pos += 1;
                let items = self.body_in(true, opaque, depth + 1)?;
                self.pos += 1;
                let at = |o| self.at(o);
                tree::fold(items, start..self.pos, &at)
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let n = self.number()?;
                Ok(scalar(n, self.pos))
            }
            Some(c) if is_ident_start(c) => {
                let (word, span) = self.ident();
                let v = match word.as_str() {
                    "true" => serde_json::Value::Bool(true),
                    "false" => serde_json::Value::Bool(false),
                    "null" => serde_json::Value::Null,
                    _ => {
                        self.pos = span.start;
                        return Err(self.error(format!(
                            "expected a value, found `{word}` (strings need double quotes)"
                        )));
                    }
                };
                Ok(scalar(v, span.end))
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn list(&mut self, opaque: bool, depth: usize) -> Result<Node, FoldError> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_trivia(true)?;
            match self.peek() {
                Some(']') => {
                    self.pos += 1;
                    return Ok(Node {
                        span: start..self.pos,
                        kind: Kind::List {
                            items,
                            repeated: Vec::new(),
                        },
                    });
                }
                None => return Err(self.error("missing `]`")),
                _ => {}
            }
            items.push(self.value(opaque, depth + 1)?);
            self.skip_trivia(true)?;
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                _ => return Err(self.error("expected `,` or `]` in a list")),
            }
        }
    }

    fn number(&mut self) -> Result<serde_json::Value, FoldError> {
        let start = self.pos;
        let len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric() || c == '.' || (c == '-' && i == 0) || c == '+')
            })
            .map_or(self.rest().len(), |(i, _)| i);
        let text = &self.src[start..start + len];
        let value = if let Some(hex) = text.strip_prefix("0x") {
            i64::from_str_radix(hex, 16)
                .ok()
                .map(serde_json::Value::from)
        } else if let Ok(i) = text.parse::<i64>() {
            Some(serde_json::Value::from(i))
        } else {
            text.parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
        };
        match value {
            Some(v) => {
                self.pos += len;
                Ok(v)
            }
            None => Err(self.error(format!("invalid number `{text}`"))),
        }
    }

    /// A double-quoted string; `${...}` is kept as written (with its inner quotes).
    fn string(&mut self) -> Result<(String, Span), FoldError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut interp = 0usize;
        loop {
            let Some(c) = self.peek() else {
                self.pos = start;
                return Err(self.error("unterminated string"));
            };
            match c {
                '\n' if interp == 0 => {
                    self.pos = start;
                    return Err(self.error("unterminated string (a line ends inside it)"));
                }
                '"' if interp == 0 => {
                    self.pos += 1;
                    return Ok((out, start..self.pos));
                }
                '$' if self.rest().starts_with("${") => {
                    interp += 1;
                    out.push_str("${");
                    self.pos += 2;
                }
                '}' if interp > 0 => {
                    interp -= 1;
                    out.push('}');
                    self.pos += 1;
                }
                '\\' => {
                    self.pos += 1;
                    let esc = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += esc.len_utf8();
                    match esc {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '\\' => out.push('\\'),
                        '"' => out.push('"'),
                        'u' | 'U' => {
                            let n = if esc == 'u' { 4 } else { 8 };
                            let hex = self.rest().get(..n).unwrap_or("");
                            let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            match ch {
                                Some(ch) if hex.len() == n => {
                                    out.push(ch);
                                    self.pos += n;
                                }
                                _ => return Err(self.error("invalid unicode escape")),
                            }
                        }
                        other => {
                            self.pos -= other.len_utf8() + 1;
                            return Err(self.error(format!("unknown escape `\\{other}`")));
                        }
                    }
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// `<<EOF` ... `EOF` (or `<<-EOF`, whose lines lose their common indentation).
    fn heredoc(&mut self) -> Result<String, FoldError> {
        let start = self.pos;
        self.pos += 2;
        let indented = self.rest().starts_with('-');
        if indented {
            self.pos += 1;
        }
        let (marker, _) = self.ident();
        if marker.is_empty() || !self.rest().starts_with('\n') {
            self.pos = start;
            return Err(self.error("a heredoc needs a marker and a line end (`<<EOF`)"));
        }
        self.pos += 1;
        let mut lines = Vec::new();
        loop {
            if self.pos >= self.src.len() {
                self.pos = start;
                return Err(self.error(format!("heredoc `{marker}` is never closed")));
            }
            let src = self.src;
            let rest = &src[self.pos..];
            let end = rest.find('\n').unwrap_or(rest.len());
            let line = &rest[..end];
            self.pos += end;
            if line.trim() == marker {
                break;
            }
            if self.pos < self.src.len() {
                self.pos += 1;
            }
            lines.push(line);
        }
        if indented {
            let indent = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let mut out = String::new();
            for l in lines {
                out.push_str(l.get(indent..).unwrap_or(""));
                out.push('\n');
            }
            Ok(out)
        } else {
            let mut out = lines.join("\n");
            out.push('\n');
            Ok(out)
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Dialect<'static> = Dialect {
        vocabulary: &["Name", "Sources", "Meta", "Action", "HTTP", "PathPrefix"],
        opaque: &["Meta"],
    };

    fn json(src: &str) -> serde_json::Value {
        parse(src, D).unwrap().to_json()
    }

    #[test]
    fn consul_l7_example_reads() {
        let src = r#"
Name = "api"
sources = [
  {
    name = "web"
    permissions = [
      {
        action = "allow"
        http {
          path_prefix = "/v2"
        }
      }
    ]
  }
]
"#;
        let v = json(src);
        assert_eq!(v["Name"], "api");
        assert_eq!(v["Sources"][0]["Name"], "web");
        assert_eq!(
            v["Sources"][0]["permissions"][0]["HTTP"]["PathPrefix"],
            "/v2"
        );
    }

    #[test]
    fn quoted_meta_keys_keep_their_spelling() {
        let v = json("Meta {\n  \"some_key\" = \"v\"\n  Name = \"x\"\n}\n");
        assert_eq!(v["Meta"]["some_key"], "v");
        assert_eq!(v["Meta"]["Name"], "x");
        let v = json("meta = { k = 1, name = true }");
        assert_eq!(v["Meta"]["name"], true);
        assert_eq!(v["Meta"]["k"], 1);
    }

    #[test]
    fn comments_heredocs_and_numbers() {
        let src = "# c\n// c\n/* c\n */ Name = <<EOF\nline\nEOF\nx = -1.5\ny = 0x10\n";
        let v = json(src);
        assert_eq!(v["Name"], "line\n");
        assert_eq!(v["x"], -1.5);
        assert_eq!(v["y"], 16);
        let v = json("Name = <<-EOF\n    a\n      b\n    EOF\n");
        assert_eq!(v["Name"], "a\n  b\n");
    }

    #[test]
    fn strings_keep_interpolation_and_unescape() {
        let v = json(r#"Name = "a${lookup("x")}\"b\u00e9""#);
        assert_eq!(v["Name"], "a${lookup(\"x\")}\"bé");
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = parse("Name = \n", D).unwrap_err();
        assert_eq!(e.offset, 7, "{e:?}");
        let e = parse("Name = web\n", D).unwrap_err();
        assert_eq!(e.offset, 7);
        assert!(e.message.contains("double quotes"), "{}", e.message);
        let e = parse("Sources = [ { Name = \"a\" } \n", D).unwrap_err();
        assert!(e.message.contains("]"), "{}", e.message);
        let e = parse("Name \"x\" = 1", D).unwrap_err();
        assert!(e.message.contains("expected"), "{}", e.message);
        assert!(parse("a = \"unterminated\n", D).is_err());
        assert!(parse("a = { b = 1", D).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let src = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse(&src, D).unwrap_err();
        assert!(e.message.contains("deeply"), "{}", e.message);
        let src = format!("{}{}", "a {".repeat(10_000), "}".repeat(10_000));
        assert!(parse(&src, D).is_err());
    }

    #[test]
    fn list_and_block_forms_merge() {
        let src = "Sources { Name = \"web\" }\nSources = [ { Name = \"*\" } ]\n";
        let v = json(src);
        assert_eq!(
            v["Sources"],
            serde_json::json!([{"Name": "web"}, {"Name": "*"}])
        );
    }
}
