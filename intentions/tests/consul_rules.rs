//! Consul's rules, one test each: keys given more than once, namespace defaults, the HCL 1
//! dialect, validation limits and the fields of `consul config read` output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::svc;
use rhizome_intentions::{Entry, Policy, RuleSet, SourceError};

fn load(src: &str) -> RuleSet {
    RuleSet::load([("f.hcl", src)]).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(src: &str) -> SourceError {
    Entry::parse(src, "f.hcl").expect_err("must be refused")
}

fn allowed(set: &RuleSet, src: &str, dst: &str) -> bool {
    set.decide(&svc(src), &svc(dst), Policy::DENY).allowed
}

/// Regression: a `Sources { }` block then a `Sources = [...]` list kept only the list, so a
/// deny disappeared and `web` was allowed under default deny.
#[test]
fn a_deny_block_before_an_allow_list_is_kept() {
    let src = r#"Kind = "service-intentions"
Name = "db"
Sources {
  Name   = "web"
  Action = "deny"
}
Sources = [
  { Name = "*", Action = "allow" },
]
"#;
    let set = load(src);
    assert_eq!(set.rules().len(), 2);
    assert!(!allowed(&set, "default/web", "default/db"));
    assert!(allowed(&set, "default/api", "default/db"));
    // The other order too, and blocks on both sides of a list.
    let reversed = r#"Kind = "service-intentions"
Name = "db"
Sources = [{ Name = "*", Action = "allow" }]
Sources { Name = "web", Action = "deny" }
Sources = [{ Name = "batch", Action = "deny" }]
"#;
    let set = load(reversed);
    assert_eq!(set.rules().len(), 3);
    assert!(!allowed(&set, "default/web", "default/db"));
    assert!(!allowed(&set, "default/batch", "default/db"));
    assert!(allowed(&set, "default/api", "default/db"));
}

/// Regression: a source without `Namespace` is in the destination's namespace (Consul's
/// `MergeNoWildcard`), not in `default`.
#[test]
fn sources_take_the_destination_namespace() {
    let src = r#"Kind      = "service-intentions"
Name      = "api"
Namespace = "payments"
Sources = [
  { Name = "web", Action = "deny" },
  { Name = "*", Namespace = "*", Action = "allow" },
]
"#;
    let set = load(src);
    assert!(!allowed(&set, "payments/web", "payments/api"));
    assert!(allowed(&set, "default/web", "payments/api"));
    // A `*` destination namespace is not copied into sources: they stay in `default`.
    let wild = r#"Kind = "service-intentions"
Name = "*"
Namespace = "*"
Sources = [{ Name = "web", Action = "deny" }, { Name = "*", Namespace = "*", Action = "allow" }]
"#;
    let set = load(wild);
    assert!(!allowed(&set, "default/web", "team/api"));
    assert!(allowed(&set, "team/web", "team/api"));
}

#[test]
fn a_key_given_twice_where_one_value_is_taken_names_both_positions() {
    let e = refused(
        "Kind = \"service-intentions\"\nName = \"db\"\nName = \"api\"\nSources = [{ Name = \"web\", Action = \"allow\" }]\n",
    );
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(
        e.message
            .contains("`Name` is given 2 times (at 2:1 and 3:1)"),
        "{e}"
    );
    // Two spellings of one field are the same key.
    let e = refused(
        "Kind = \"service-intentions\"\nName = \"db\"\nname = \"api\"\nSources = [{ Name = \"web\", Action = \"allow\" }]\n",
    );
    assert!(e.message.contains("(at 2:1 and 3:1)"), "{e}");
    // Inside a source, and for a map: Consul merges repeated Meta blocks, rhizome refuses.
    let e = refused(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [{ Name = \"web\", Action = \"allow\", Action = \"deny\" }]\n",
    );
    assert!(e.message.contains("`Action` is given 2 times"), "{e}");
    let e = refused(
        "Kind = \"service-intentions\"\nName = \"db\"\nMeta { a = \"1\" }\nMeta { b = \"2\" }\nSources = [{ Name = \"web\", Action = \"allow\" }]\n",
    );
    assert_eq!((e.line, e.column), (4, 1), "{e}");
    assert!(
        e.message
            .contains("`Meta` is given 2 times (at 3:1 and 4:1)"),
        "{e}"
    );
}

#[test]
fn consul_hcl1_dialect_reads() {
    // Quoted keys in a Meta block, numbers and booleans as Meta values, snake_case keys,
    // heredoc descriptions, `Permissions = []` beside an Action, read-back fields.
    let src = r#"kind = "service-intentions"
name = "db"
meta {
  "team-name" = "data"
  "tier" = 1
  "paged" = true
}
sources = [
  {
    name        = "web"
    action      = "allow"
    permissions = []
    precedence  = 9
    type        = "consul"
    legacy_id   = "c4e1"
    description = <<DESC
the shop
DESC
  }
]
"#;
    let e = Entry::parse(src, "f.hcl").unwrap();
    assert_eq!(e.meta["team-name"], "data");
    assert_eq!(e.meta["tier"], "1");
    assert_eq!(e.meta["paged"], "1");
    assert_eq!(e.sources[0].description.as_deref(), Some("the shop\n"));
    // `Permissions = []` without an Action has nothing to decide with.
    let e = refused(
        "Kind = \"service-intentions\"\nName = \"db\"\nSources = [{ Name = \"web\", Permissions = [] }]\n",
    );
    assert!(
        e.message
            .contains("Sources[0].Action must be set to 'allow' or 'deny'"),
        "{e}"
    );
}

#[test]
fn consul_config_read_json_loads() {
    let src = r#"{
    "Kind": "service-intentions",
    "Name": "db",
    "Sources": [
        { "Name": "web", "Action": "allow", "Precedence": 9, "Type": "consul" },
        { "Name": "*", "Action": "deny", "Precedence": 8, "Type": "consul" }
    ],
    "CreateIndex": 18,
    "ModifyIndex": 21
}
"#;
    let set = load(src);
    assert!(allowed(&set, "default/web", "default/db"));
    assert!(!allowed(&set, "default/api", "default/db"));
}

#[test]
fn consul_validation_limits() {
    let meta = |n: usize, k: usize, v: usize| {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&format!(
                "  \"{}{i:03}\" = \"{}\"\n",
                "k".repeat(k - 3),
                "v".repeat(v)
            ));
        }
        format!(
            "Kind = \"service-intentions\"\nName = \"db\"\nMeta {{\n{m}}}\nSources = [{{ Name = \"web\", Action = \"allow\" }}]\n"
        )
    };
    assert!(Entry::parse(&meta(64, 128, 512), "f.hcl").is_ok());
    let e = refused(&meta(65, 8, 1));
    assert!(
        e.message.contains("Meta exceeds maximum element count 64"),
        "{e}"
    );
    assert_eq!(e.line, 3, "{e}");
    let e = refused(&meta(1, 129, 1));
    assert!(e.message.contains("exceeds maximum length 128"), "{e}");
    let e = refused(&meta(1, 8, 513));
    assert!(e.message.contains("exceeds maximum length 512"), "{e}");
    let desc = |n: usize| {
        format!(
            "Kind = \"service-intentions\"\nName = \"db\"\nSources = [\n  {{ Name = \"web\", Action = \"allow\", Description = \"{}\" }}\n]\n",
            "d".repeat(n)
        )
    };
    assert!(Entry::parse(&desc(512), "f.hcl").is_ok());
    let e = refused(&desc(513));
    assert!(
        e.message
            .contains("Sources[0].Description exceeds maximum length 512"),
        "{e}"
    );
    assert_eq!((e.line, e.column), (4, 37), "{e}");
}

#[test]
fn consul_field_rules() {
    let one = |source: &str| {
        format!("Kind = \"service-intentions\"\nName = \"db\"\nSources = [{{ {source} }}]\n")
    };
    let cases = [
        (
            "Name = \"web\", Action = \"Allow\"",
            "Sources[0].Action must be set to 'allow' or 'deny'",
        ),
        (
            "Name = \"web\", Action = \"allow\", Type = \"k8s\"",
            "Sources[0].Type must be set to 'consul'",
        ),
        ("Action = \"allow\"", "Sources[0].Name is required"),
        (
            "Name = \"web\", Action = \"allow\", Partition = \"*\"",
            "cannot use wildcard '*' in partition",
        ),
        (
            "Name = \"web\", Action = \"allow\", Partition = \"eu\"",
            "rhizome has one admin partition",
        ),
        (
            "Name = \"web\", Action = \"allow\", SamenessGroup = \"g\"",
            "SamenessGroup is not supported",
        ),
        (
            "Name = \"web\", Action = \"allow\", LegacyMeta = { a = \"b\" }",
            "Sources[0].LegacyMeta must be omitted",
        ),
        (
            "Name = \"web\", Action = \"allow\", Permissions = [{ Action = \"allow\", HTTP = { PathPrefix = \"/\" } }]",
            "Action must be omitted if Permissions are specified",
        ),
        (
            "Name = \"web\", Action = \"allow\", SourceNS = \"x\"",
            "unknown field `SourceNS`",
        ),
    ];
    for (source, needle) in cases {
        let e = refused(&one(source));
        assert!(
            e.message.contains(needle),
            "{source}: `{needle}` not in {e}"
        );
        assert_eq!(e.line, 3, "{e}");
    }
    // `Partition = "default"` is the one partition there is.
    let ok = one("Name = \"web\", Action = \"allow\", Partition = \"default\"");
    assert!(Entry::parse(&ok, "f.hcl").is_ok());
}
