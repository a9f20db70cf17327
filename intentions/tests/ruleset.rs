//! Rule sets: conflicts, audit mode, SPIFFE sources, replication form, versions, updates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{entry, entry_hcl, set, svc};
use rhizome_intentions::{
    Action, BuildError, Entry, Matched, NameError, Policy, RuleSet, ServicePattern,
};

#[test]
fn two_entries_for_one_destination_name_both_files() {
    let a = entry_hcl("default/db", &[("default/web", "allow")], false);
    let b = entry_hcl("default/db", &[("default/api", "allow")], false);
    let errors = RuleSet::load([("a.hcl", a.as_str()), ("b.hcl", b.as_str())])
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1);
    match &errors[0] {
        BuildError::DuplicateDestination {
            destination,
            first,
            second,
        } => {
            assert_eq!(destination.to_string(), "default/db");
            assert_eq!(first.to_string(), "a.hcl:2:1");
            assert_eq!(second.to_string(), "b.hcl:2:1");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(
        errors[0].to_string(),
        "b.hcl:2:1: destination default/db already has an entry at a.hcl:2:1"
    );
}

#[test]
fn conflicting_sources_in_hand_built_entries_are_refused() {
    // Entries from replication bypass `Entry::parse`; the set checks them again.
    let mut e = entry(
        "default/db",
        &[("default/web", "allow"), ("default/api", "deny")],
    );
    e.sources[1].pattern = "default/web".parse().unwrap();
    let errors = RuleSet::build([e]).unwrap_err().0;
    match &errors[0] {
        BuildError::Conflict {
            source_pattern,
            first,
            second,
            first_action,
            second_action,
            ..
        } => {
            assert_eq!(source_pattern.to_string(), "default/web");
            assert_eq!((first.line, second.line), (5, 6));
            assert_eq!(
                (*first_action, *second_action),
                (Action::Allow, Action::Deny)
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(errors[0].to_string().contains("default/db.hcl:6:3: rule default/web => default/db (deny) conflicts with default/db.hcl:5:3 (allow)"), "{}", errors[0]);
}

#[test]
fn failed_update_leaves_the_old_set_usable() {
    let old = set(&[("default/db", &[("default/web", "allow")])]);
    let mut bad = entry(
        "default/db",
        &[("default/api", "deny"), ("default/x", "deny")],
    );
    bad.sources[1].pattern = bad.sources[0].pattern.clone();
    assert!(old.with_entry(bad).is_err());
    assert!(old.decide(&svc("web"), &svc("db"), Policy::DENY).allowed);
    // A good update replaces the entry of the same destination.
    let new = old
        .with_entry(entry("default/db", &[("default/api", "allow")]))
        .unwrap();
    assert!(!new.decide(&svc("web"), &svc("db"), Policy::DENY).allowed);
    assert!(new.decide(&svc("api"), &svc("db"), Policy::DENY).allowed);
    assert_ne!(new.version(), old.version());
    let dst: ServicePattern = "default/db".parse().unwrap();
    let gone = new.without(&dst);
    assert_eq!(gone.rules().len(), 0);
    assert_eq!(gone.version(), RuleSet::empty().version());
}

#[test]
fn audit_mode_per_entry_and_agent_wide() {
    let audited = entry_hcl(
        "default/db",
        &[("default/web", "deny"), ("default/api", "allow")],
        true,
    );
    let enforced = entry_hcl("default/cache", &[("default/web", "deny")], false);
    let rules = RuleSet::load([
        ("db.hcl", audited.as_str()),
        ("cache.hcl", enforced.as_str()),
    ])
    .unwrap();
    let d = rules.decide(&svc("web"), &svc("db"), Policy::DENY);
    assert_eq!((d.action, d.allowed, d.audit), (Action::Deny, true, true));
    let d = rules.decide(&svc("api"), &svc("db"), Policy::DENY);
    assert_eq!((d.action, d.allowed, d.audit), (Action::Allow, true, false));
    let d = rules.decide(&svc("web"), &svc("cache"), Policy::DENY);
    assert_eq!((d.action, d.allowed, d.audit), (Action::Deny, false, false));
    // Agent-wide audit covers every deny, including the default.
    let audit_all = Policy {
        default: Action::Deny,
        audit: true,
    };
    let d = rules.decide(&svc("web"), &svc("cache"), audit_all);
    assert_eq!((d.action, d.allowed, d.audit), (Action::Deny, true, true));
    let d = rules.decide(&svc("x"), &svc("y"), audit_all);
    assert_eq!(
        (d.matched, d.allowed, d.audit),
        (Matched::Default, true, true)
    );
}

#[test]
fn spiffe_sources_are_parsed_with_typed_errors() {
    let rules = set(&[("pay/db", &[("pay/api", "allow")])]);
    let d = rules
        .decide_spiffe(
            "spiffe://rhizome.local/ns/pay/svc/api",
            &svc("pay/db"),
            Policy::DENY,
        )
        .unwrap();
    assert!(d.allowed);
    let d = rules
        .decide_spiffe(
            "spiffe://rhizome.local/ns/default/svc/api",
            &svc("pay/db"),
            Policy::DENY,
        )
        .unwrap();
    assert!(!d.allowed);
    let bad = "spiffe://rhizome.local/agent/node-1";
    assert_eq!(
        rules
            .decide_spiffe(bad, &svc("pay/db"), Policy::DENY)
            .unwrap_err(),
        NameError::Spiffe(bad.into())
    );
    assert!(matches!(
        rules.check("a/b/c", "db", Policy::DENY),
        Err(NameError::Reference(_))
    ));
}

#[test]
fn serialized_set_round_trips_and_checks_its_version() {
    let rules = set(&[
        ("default/db", &[("default/web-*", "allow"), ("*/*", "deny")]),
        ("pay/*", &[("pay/api", "allow")]),
    ]);
    let json = serde_json::to_string(&rules).unwrap();
    let back: RuleSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back.version(), rules.version());
    assert_eq!(back.rules(), rules.rules());
    let d = back.decide(&svc("web-1"), &svc("db"), Policy::DENY);
    assert!(d.allowed);
    let tampered = json.replace("\"allow\"", "\"deny\"");
    let err = serde_json::from_str::<RuleSet>(&tampered).unwrap_err();
    assert!(err.to_string().contains("version mismatch"), "{err}");
}

#[test]
fn version_depends_on_content_not_on_files_or_order() {
    let db = entry_hcl("default/db", &[("default/web", "allow")], false);
    let api = entry_hcl("default/api", &[("default/web", "deny")], false);
    let one = RuleSet::load([("x/db.hcl", db.as_str()), ("x/api.hcl", api.as_str())]).unwrap();
    let two = RuleSet::load([("api", api.as_str()), ("db", db.as_str())]).unwrap();
    assert_eq!(one.version(), two.version());
    let changed = entry_hcl("default/db", &[("default/web", "deny")], false);
    let three = RuleSet::load([("db", changed.as_str()), ("api", api.as_str())]).unwrap();
    assert_ne!(one.version(), three.version());
    assert_eq!(one.version().to_string().len(), 16);
}

#[test]
fn entries_keep_their_order_and_positions() {
    let rules = set(&[(
        "default/db",
        &[("default/b", "allow"), ("default/a", "deny")],
    )]);
    let e: Vec<&Entry> = rules.entries().collect();
    let names: Vec<String> = e[0].sources.iter().map(|s| s.pattern.to_string()).collect();
    assert_eq!(names, ["default/b", "default/a"]);
    let dst: ServicePattern = "default/db".parse().unwrap();
    assert_eq!(
        rules.entry(&dst).unwrap().origin.to_string(),
        "default/db.hcl:2:1"
    );
}

#[test]
fn decisions_serialize_with_their_rule() {
    let rules = set(&[("default/db", &[("default/web-*", "allow")])]);
    let d = rules.decide(&svc("web-1"), &svc("db"), Policy::DENY);
    let v = serde_json::to_value(d).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["action"], "allow");
    assert_eq!(v["audit"], false);
    let rule = &v["matched"]["rule"];
    assert_eq!(rule["source"], "default/web-*");
    assert_eq!(rule["destination"], "default/db");
    assert_eq!(rule["precedence"]["level"], 15);
    assert_eq!(rule["precedence"]["consul"], serde_json::Value::Null);
    assert_eq!(rule["precedence"]["source_prefix"], 4);
    assert_eq!(rule["origin"]["line"], 5);
    let d = rules.decide(&svc("api"), &svc("db"), Policy::DENY);
    assert_eq!(serde_json::to_value(d).unwrap()["matched"], "default");
}
