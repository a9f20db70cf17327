//! Parsing intention files: accepted forms, and each kind of bad file with its exact
//! `file:line:column`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_intentions::{Action, BuildError, Entry, Mode, RuleSet, SourceError};

fn err(src: &str) -> SourceError {
    Entry::parse(src, "bad.hcl").expect_err("file must be refused")
}

/// Asserts the error's position and that its message contains `needle`.
fn assert_at(e: &SourceError, line: usize, column: usize, needle: &str) {
    assert_eq!(e.file, "bad.hcl", "{e}");
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert!(e.message.contains(needle), "`{needle}` not in: {e}");
    assert!(
        e.to_string()
            .starts_with(&format!("bad.hcl:{line}:{column}: ")),
        "{e}"
    );
}

#[test]
fn list_form_parses_with_defaults() {
    let src = r#"
Kind = "service-intentions"
Name = "db"
Meta = { team = "data" }
Sources = [
  { Name = "web", Action = "allow", Description = "shop", Meta = { ticket = "42" } },
  { Name = "*", Namespace = "*", Action = "deny", Precedence = 1, Type = "consul" },
]
"#;
    let e = Entry::parse(src, "db.hcl").unwrap();
    assert_eq!(e.destination.to_string(), "default/db");
    assert_eq!(e.mode, Mode::Enforce);
    assert_eq!(e.meta["team"], "data");
    assert_eq!(e.sources.len(), 2);
    assert_eq!(e.sources[0].pattern.to_string(), "default/web");
    assert_eq!(e.sources[0].action, Action::Allow);
    assert_eq!(e.sources[0].description.as_deref(), Some("shop"));
    assert_eq!(e.sources[0].meta["ticket"], "42");
    assert_eq!(e.sources[1].pattern.to_string(), "*/*");
    assert_eq!(e.sources[1].action, Action::Deny);
    // Positions: the entry's Name, each source's opening brace.
    assert_eq!(e.origin.to_string(), "db.hcl:3:1");
    assert_eq!(e.sources[0].origin.to_string(), "db.hcl:6:3");
    assert_eq!(e.sources[1].origin.to_string(), "db.hcl:7:3");
}

#[test]
fn block_forms_parse_one_or_many() {
    let many = r#"Kind = "service-intentions"
Name = "db"
Namespace = "pay"
Mode = "audit"
Sources {
  Name = "web-*"
  Action = "allow"
}
Sources {
  Name      = "*"
  Namespace = "pay"
  Action    = "deny"
}
"#;
    let e = Entry::parse(many, "db.hcl").unwrap();
    assert_eq!(e.destination.to_string(), "pay/db");
    assert_eq!(e.mode, Mode::Audit);
    // As in Consul, a source without a namespace is in the destination's namespace.
    let pats: Vec<String> = e.sources.iter().map(|s| s.pattern.to_string()).collect();
    assert_eq!(pats, ["pay/web-*", "pay/*"]);
    assert_eq!(e.sources[1].origin.to_string(), "db.hcl:9:1");

    let one = "kind = \"service-intentions\"\nname = \"db\"\nsources {\n  name = \"web\"\n  action = \"deny\"\n}\n";
    let e = Entry::parse(one, "one.hcl").unwrap();
    assert_eq!(e.sources.len(), 1);
    assert_eq!(e.sources[0].action, Action::Deny);
}

#[test]
fn syntax_error() {
    // Consul's HCL 1 needs no comma between object items, but strings need quotes.
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\" Action = allow },\n]\n",
    );
    assert_at(&e, 4, 27, "syntax error");
    let e =
        err("Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\" }\n");
    assert_at(&e, 5, 1, "syntax error");
}

#[test]
fn unknown_key_at_top_and_in_source() {
    let e = err("Kind = \"service-intentions\"\nName = \"db\"\nSorces = []\n");
    assert_at(&e, 3, 1, "unknown field `Sorces`");
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n  { Name = \"api\", Acton = \"allow\" },\n]\n",
    );
    assert_at(&e, 5, 19, "unknown field `Acton`");
}

#[test]
fn wrong_type() {
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\", Meta = \"x\" },\n]\n",
    );
    assert_at(&e, 4, 37, "Meta");
    let e = err("Kind = \"service-intentions\"\nName = [\"db\"]\nSources = []\n");
    assert_at(&e, 2, 1, "Name");
}

#[test]
fn bad_action_is_named() {
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"permit\" },\n]\n",
    );
    assert_at(
        &e,
        4,
        19,
        "Sources[0].Action must be set to 'allow' or 'deny'",
    );
}

#[test]
fn l7_permissions_are_refused_in_both_forms() {
    let list = "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  {\n    Name = \"web\"\n    Permissions = [\n      { Action = \"allow\", HTTP = { PathPrefix = \"/v2\" } },\n    ]\n  },\n]\n";
    assert_at(&err(list), 6, 5, "L7 Permissions are not supported");
    let blocks = "Kind = \"service-intentions\"\nName = \"db\"\nSources {\n  Name = \"web\"\n  Permissions {\n    Action = \"allow\"\n    HTTP {\n      PathPrefix = \"/v2\"\n    }\n  }\n}\n";
    assert_at(&err(blocks), 5, 3, "L7 Permissions are not supported");
}

#[test]
fn bad_names_and_patterns() {
    let base = |name: &str, ns: &str| {
        format!(
            "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  {{ Name = \"{name}\", Namespace = \"{ns}\", Action = \"allow\" }},\n]\n"
        )
    };
    assert_at(
        &err(&base("w*b", "default")),
        4,
        5,
        "`*` may only appear once",
    );
    assert_at(&err(&base("web", "team-*")), 4, 19, "no prefix wildcards");
    // Cross-field: reported at the source itself.
    assert_at(
        &err(&base("web", "*")),
        4,
        3,
        "namespace `*` requires name `*`",
    );
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nNamespace = \"*\"\nSources = [{ Name = \"*\", Action = \"deny\" }]\n",
    );
    assert_at(&e, 2, 1, "namespace `*` requires name `*`");
}

#[test]
fn wrong_kind_missing_action_and_empty_sources() {
    let e = err("Kind = \"service-defaults\"\nName = \"db\"\nSources = []\n");
    assert_at(&e, 1, 1, "unknown variant `service-defaults`");
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\" },\n]\n",
    );
    assert_at(
        &e,
        4,
        3,
        "Sources[0].Action must be set to 'allow' or 'deny'",
    );
    let e = err("Kind = \"service-intentions\"\nName = \"db\"\nSources = []\n");
    assert_at(&e, 2, 1, "At least one source is required");
}

#[test]
fn duplicate_source_in_one_file_names_both_positions() {
    let e = err(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  { Name = \"web\", Action = \"allow\" },\n  { Name = \"api\", Action = \"deny\" },\n  { Name = \"web\", Namespace = \"default\", Action = \"allow\" },\n]\n",
    );
    assert_at(&e, 6, 3, "first at bad.hcl:4:3");
}

#[test]
fn load_reports_every_bad_file_and_builds_nothing() {
    let good = "Kind = \"service-intentions\"\nName = \"db\"\nSources = [{ Name = \"web\", Action = \"allow\" }]\n";
    let bad1 = "Kind = \"service-intentions\"\nName = \"api\"\nSources = [{ Name = \"web\", Action = \"alow\" }]\n";
    let bad2 = "Kind = \"service-intentions\"\nName = \"cache\"\nBogus = 1\nSources = [{ Name = \"web\", Action = \"allow\" }]\n";
    let errors = RuleSet::load([("good.hcl", good), ("b1.hcl", bad1), ("b2.hcl", bad2)])
        .expect_err("two bad files")
        .0;
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{text:?}");
    assert!(text[0].starts_with("b1.hcl:3:28: "), "{text:?}");
    assert!(text[1].starts_with("b2.hcl:3:1: "), "{text:?}");
    assert!(errors.iter().all(|e| matches!(e, BuildError::Source(_))));
}
