//! The import graph of `agent/src` has no cycle.
//!
//! Every file of `agent/src` is a module (`lib.rs` is the root, `a/mod.rs` is `a`, `a/b.rs`
//! is `a::b`). A module depends on another when it names it: `use crate::…`,
//! `use super::…`, `use self::…`, a `use` of one of its own submodules, or a path such as
//! `crate::x::y(…)` or `child::f(…)` in code. A path counts for the longest module it
//! names. One kind of edge is left out: a module naming one of its ancestors (a submodule
//! using what its parent defines: the facade pattern of quinn's `lib.rs`); a parent naming
//! its submodules does count, so a cycle through a parent (`a → b`, `b → a::c`,
//! `a::c → b`) is still found.
//!
//! Run it alone with `cargo test -p rhizome-agent --test module_graph`; on failure it
//! prints each cycle with the lines that make it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path (`""` is the crate root).
type Module = String;

/// For each module, the modules it names, with one line that names each.
type Graph = BTreeMap<Module, BTreeMap<Module, String>>;

/// The module of a file path relative to `src` (`None` for other crate roots: `main.rs`,
/// `bin/*`).
fn module_of(rel: &str) -> Option<Module> {
    let rel = rel.strip_suffix(".rs")?;
    if rel == "main" || rel.starts_with("bin/") {
        return None;
    }
    if rel == "lib" {
        return Some(String::new());
    }
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    Some(rel.replace('/', "::"))
}

fn parent(m: &str) -> Option<Module> {
    if m.is_empty() {
        return None;
    }
    Some(
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned()),
    )
}

fn join(base: &str, seg: &str) -> Module {
    if base.is_empty() {
        seg.to_owned()
    } else {
        format!("{base}::{seg}")
    }
}

/// Whether `a` is `b` or one of its ancestors.
fn is_ancestor_or_self(a: &str, b: &str) -> bool {
    a.is_empty() || a == b || b.starts_with(&format!("{a}::"))
}

/// The text without comments (line comments, doc comments, block comments).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut kept = String::new();
        let mut chars = line.char_indices().peekable();
        let mut in_str = false;
        while let Some((i, c)) = chars.next() {
            let next = line[i + c.len_utf8()..].chars().next();
            if in_block > 0 {
                if c == '*' && next == Some('/') {
                    in_block -= 1;
                    chars.next();
                }
                continue;
            }
            if in_str {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_str = false;
                }
                kept.push(' ');
                continue;
            }
            match (c, next) {
                ('/', Some('/')) => break,
                ('/', Some('*')) => {
                    in_block += 1;
                    chars.next();
                }
                ('"', _) => {
                    in_str = true;
                    kept.push(' ');
                }
                _ => kept.push(c),
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d as e, *}}`) into its paths (segments; `self` in a
/// group names the group's prefix, which is already in the path, so it is dropped).
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    let words: Vec<&str> = tree.split_whitespace().collect();
    // `x as y` -> `x` + a rename marker, then whitespace goes.
    let tree: String = words.join(" ").replace(" as ", "\u{1}").replace(' ', "");
    let mut out = Vec::new();
    expand_into(&tree, &[], &mut out);
    out
}

fn expand_into(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let segs = |text: &str| -> Vec<String> {
        text.split("::")
            .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
            .map(str::to_owned)
            .collect()
    };
    if let Some(open) = tree.find('{') {
        let mut base = prefix.to_vec();
        base.extend(segs(&tree[..open]));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_into(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_into(&inner[start..], &base, out);
    } else {
        let path = tree.split('\u{1}').next().unwrap_or(tree);
        let mut full = prefix.to_vec();
        full.extend(segs(path));
        if !full.is_empty() {
            out.push(full);
        }
    }
}

/// Every path (as segments) that starts with `crate`, `super`, `self` or `first_segments`
/// in code outside `use` statements.
fn code_paths(code: &str, first_segments: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == ':')) {
            let mut j = i;
            let mut segs = Vec::new();
            loop {
                let start = j;
                while j < bytes.len() && is_ident(bytes[j]) {
                    j += 1;
                }
                segs.push(bytes[start..j].iter().collect::<String>());
                if j + 2 < bytes.len()
                    && bytes[j] == ':'
                    && bytes[j + 1] == ':'
                    && is_ident(bytes[j + 2])
                {
                    j += 2;
                } else {
                    break;
                }
            }
            let first = segs[0].as_str();
            if segs.len() > 1
                && (matches!(first, "crate" | "super" | "self") || first_segments.contains(first))
            {
                out.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The module a path names, from module `from` (`None`: an external path).
fn resolve(
    from: &str,
    segs: &[String],
    children: &BTreeSet<String>,
    modules: &BTreeSet<Module>,
) -> Option<Module> {
    let (mut base, rest) = match segs.first().map(String::as_str) {
        Some("crate") => (String::new(), &segs[1..]),
        Some("self") => (from.to_owned(), &segs[1..]),
        Some("super") => {
            let mut base = parent(from)?;
            let mut rest = &segs[1..];
            while rest.first().map(String::as_str) == Some("super") {
                base = parent(&base)?;
                rest = &rest[1..];
            }
            (base, rest)
        }
        Some(first) if children.contains(first) => (from.to_owned(), segs),
        _ => return None,
    };
    for seg in rest {
        let next = join(&base, seg);
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// The graph of `files` (path relative to `src`, text).
fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<Module> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    let mut g = Graph::new();
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| parent(m).as_deref() == Some(from.as_str()) && !m.is_empty())
            .map(|m| m.rsplit("::").next().unwrap_or(m).to_owned())
            .collect();
        let code = strip_comments(text);
        let edges = g.entry(from.clone()).or_default();
        let mut add = |segs: &[String], line: &str| {
            if let Some(to) = resolve(&from, segs, &children, &modules)
                && !is_ancestor_or_self(&to, &from)
            {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("{path}: {}", line.trim()));
            }
        };
        // `use` statements (possibly over several lines).
        let mut rest = code.as_str();
        let mut outside = String::new();
        while let Some(pos) = find_use(rest) {
            outside.push_str(&rest[..pos]);
            let after = &rest[pos..];
            let end = after.find(';').unwrap_or(after.len());
            let stmt = &after[..end];
            let tree = stmt.trim_start().trim_start_matches("use").trim();
            for segs in expand_use(tree) {
                add(&segs, stmt.lines().next().unwrap_or(stmt));
            }
            rest = &after[(end + 1).min(after.len())..];
        }
        outside.push_str(rest);
        for line in outside.lines() {
            for segs in code_paths(line, &children) {
                add(&segs, line);
            }
        }
    }
    g
}

/// The byte offset of the next `use` keyword that starts a statement.
fn find_use(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("use ") {
        let at = from + i;
        let before = code[..at].trim_end();
        let starts = before.is_empty()
            || before.ends_with(';')
            || before.ends_with('{')
            || before.ends_with('}')
            || before.ends_with(']')
            || before.ends_with("pub")
            || before.ends_with(')');
        let ident_before = code[..at].chars().last().is_some_and(is_ident);
        if starts && !ident_before {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<Module>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(edges) = t.g.get(v) {
            for w in edges.keys() {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

fn explain(g: &Graph, scc: &[Module]) -> String {
    let members: BTreeSet<&str> = scc.iter().map(String::as_str).collect();
    let mut lines = vec![format!("cycle among {scc:?}:")];
    for m in scc {
        for (to, why) in &g[m] {
            if members.contains(to.as_str()) {
                lines.push(format!("  {m} -> {to}   ({why})"));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn agent_src_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    assert!(
        files.len() > 20,
        "read {} files of {}",
        files.len(),
        src.display()
    );
    let g = graph(&files);
    let found = cycles(&g);
    let report: Vec<String> = found.iter().map(|scc| explain(&g, scc)).collect();
    assert!(found.is_empty(), "{}", report.join("\n\n"));
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect()
}

#[test]
fn the_check_finds_cycles_of_every_kind_of_path() {
    // Two siblings through `use crate::` and a code path.
    let g = graph(&files(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        ("b.rs", "fn f() { crate::a::g(); }\n"),
    ]));
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned()]]);
    // Through a parent's relative path to its child, and `super::` from a grandchild.
    let g = graph(&files(&[
        ("lib.rs", "pub mod app;\npub mod net;\n"),
        ("app.rs", "use crate::net;\n"),
        ("net/mod.rs", "pub mod task;\nfn f() { task::run(); }\n"),
        ("net/task.rs", "use super::super::app::Shared;\n"),
    ]));
    assert_eq!(
        cycles(&g),
        vec![vec![
            "app".to_owned(),
            "net".to_owned(),
            "net::task".to_owned()
        ]]
    );
    // Nested groups, multi-line `use`, and a cycle of three.
    let g = graph(&files(&[
        ("lib.rs", "pub mod x;\npub mod y;\npub mod z;\n"),
        ("x.rs", "use crate::{\n    y::{self, A},\n    w,\n};\n"),
        ("y.rs", "pub(crate) use crate::z::B as C;\n"),
        ("z.rs", "use crate::x;\n"),
    ]));
    assert_eq!(
        cycles(&g),
        vec![vec!["x".to_owned(), "y".to_owned(), "z".to_owned()]]
    );
}

#[test]
fn facades_comments_and_strings_are_not_cycles() {
    let g = graph(&files(&[
        ("lib.rs", "pub mod p;\npub mod q;\n"),
        (
            "p/mod.rs",
            "pub mod c;\npub use c::Thing;\npub struct Parent;\n",
        ),
        ("p/c.rs", "use super::Parent;\nuse crate::p::Parent as P;\n"),
        (
            "q.rs",
            "// crate::p::c is mentioned here\nconst S: &str = \"crate::p\";\n",
        ),
    ]));
    assert!(cycles(&g).is_empty(), "{g:?}");
    assert!(g["q"].is_empty(), "{g:?}");
}
