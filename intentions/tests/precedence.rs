//! Every precedence level decides over every lower one, for one connection
//! `a/web-1 -> b/db-1`, and wildcards and prefixes select what they should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{set, svc};
use rhizome_intentions::{Action, Matched, Policy, RuleSet};

/// (level, Consul number, source, destination): one rule per level, all matching
/// `a/web-1 -> b/db-1`.
const LEVELS: [(u8, Option<u8>, &str, &str); 16] = [
    (16, Some(9), "a/web-1", "b/db-1"),
    (15, None, "a/web-*", "b/db-1"),
    (14, Some(8), "a/*", "b/db-1"),
    (13, Some(7), "*/*", "b/db-1"),
    (12, None, "a/web-1", "b/db-*"),
    (11, None, "a/web-*", "b/db-*"),
    (10, None, "a/*", "b/db-*"),
    (9, None, "*/*", "b/db-*"),
    (8, Some(6), "a/web-1", "b/*"),
    (7, None, "a/web-*", "b/*"),
    (6, Some(5), "a/*", "b/*"),
    (5, Some(4), "*/*", "b/*"),
    (4, Some(3), "a/web-1", "*/*"),
    (3, None, "a/web-*", "*/*"),
    (2, Some(2), "a/*", "*/*"),
    (1, Some(1), "*/*", "*/*"),
];

fn action_for(level: u8) -> &'static str {
    if level.is_multiple_of(2) {
        "allow"
    } else {
        "deny"
    }
}

/// A set with the rules of all levels `<= top`, actions alternating by level.
fn set_up_to(top: u8) -> RuleSet {
    let rules: Vec<(&str, &str, &str)> = LEVELS
        .iter()
        .filter(|l| l.0 <= top)
        .map(|l| (l.2, l.3, action_for(l.0)))
        .collect();
    let mut dsts: Vec<&str> = rules.iter().map(|r| r.1).collect();
    dsts.dedup();
    let groups: Vec<(&str, Vec<(&str, &str)>)> = dsts
        .iter()
        .map(|d| {
            (
                *d,
                rules
                    .iter()
                    .filter(|r| r.1 == *d)
                    .map(|r| (r.0, r.2))
                    .collect(),
            )
        })
        .collect();
    let refs: Vec<(&str, &[(&str, &str)])> =
        groups.iter().map(|(d, s)| (*d, s.as_slice())).collect();
    set(&refs)
}

#[test]
fn each_level_beats_all_lower_levels() {
    for (level, consul, src_pat, dst_pat) in LEVELS {
        let rules = set_up_to(level);
        let d = rules.decide(&svc("a/web-1"), &svc("b/db-1"), Policy::DENY);
        let rule = d
            .rule()
            .unwrap_or_else(|| panic!("level {level}: no rule matched"));
        assert_eq!(rule.precedence.level(), level);
        assert_eq!(rule.precedence.consul(), consul, "level {level}");
        assert_eq!(rule.source.to_string(), src_pat);
        assert_eq!(rule.destination.to_string(), dst_pat);
        let want = if level.is_multiple_of(2) {
            Action::Allow
        } else {
            Action::Deny
        };
        assert_eq!(
            (d.action, d.allowed),
            (want, want == Action::Allow),
            "level {level}"
        );
        // `check` is the same evaluation from CLI strings.
        assert_eq!(rules.check("a/web-1", "b/db-1", Policy::DENY).unwrap(), d);
        // `match` lists the deciding rule first, then every lower level in order.
        let levels: Vec<u8> = rules
            .matching(&svc("b/db-1"))
            .iter()
            .map(|r| r.precedence.level())
            .collect();
        assert_eq!(levels, (1..=level).rev().collect::<Vec<_>>());
    }
}

#[test]
fn wildcards_in_namespace_and_name_select_the_right_services() {
    let rules = set(&[
        ("b/db", &[("a/*", "allow"), ("*/*", "deny")]),
        ("b/*", &[("a/web", "deny"), ("c/*", "allow")]),
        ("*/*", &[("ops/*", "allow")]),
    ]);
    let decide = |s: &str, d: &str| {
        let d = rules.decide(&svc(s), &svc(d), Policy::DENY);
        (
            d.allowed,
            d.rule()
                .map(|r| format!("{} => {}", r.source, r.destination)),
        )
    };
    let some = |s: &str| Some(s.to_owned());
    // Exact destination wins over `b/*` even though the source there is exact.
    assert_eq!(decide("a/web", "b/db"), (true, some("a/* => b/db")));
    assert_eq!(decide("c/x", "b/db"), (false, some("*/* => b/db")));
    assert_eq!(decide("a/web", "b/cache"), (false, some("a/web => b/*")));
    assert_eq!(decide("a/api", "b/cache"), (false, None));
    assert_eq!(decide("c/api", "b/cache"), (true, some("c/* => b/*")));
    assert_eq!(
        decide("ops/admin", "z/anything"),
        (true, some("ops/* => */*"))
    );
    assert_eq!(decide("a/web", "z/anything"), (false, None));
    // Namespaces are exact: `a/*` does not select `aa/web`.
    assert_eq!(decide("aa/web", "b/db"), (false, some("*/* => b/db")));
}

#[test]
fn prefixes_order_exact_longer_shorter_star() {
    let rules = set(&[(
        "default/db",
        &[
            ("default/web-eu-1", "deny"),
            ("default/web-eu-*", "allow"),
            ("default/web-*", "deny"),
            ("default/w*", "allow"),
            ("default/*", "deny"),
        ],
    )]);
    let cases = [
        ("web-eu-1", "default/web-eu-1", false),
        ("web-eu-2", "default/web-eu-*", true),
        ("web-us-1", "default/web-*", false),
        ("worker", "default/w*", true),
        ("api", "default/*", false),
    ];
    for (src, rule, allowed) in cases {
        let d = rules.decide(&svc(src), &svc("db"), Policy::ALLOW);
        assert_eq!(d.rule().unwrap().source.to_string(), rule, "{src}");
        assert_eq!(d.allowed, allowed, "{src}");
    }
    // Destination prefixes: longer beats shorter, both lose to exact.
    let rules = set(&[
        ("default/db", &[("default/*", "allow")]),
        ("default/db-*", &[("default/*", "deny")]),
        ("default/db-eu-*", &[("default/*", "allow")]),
    ]);
    let dst_of = |rules: &RuleSet, d: &str| {
        let d = rules.decide(&svc("web"), &svc(d), Policy::DENY);
        (d.allowed, d.rule().unwrap().destination.to_string())
    };
    assert_eq!(dst_of(&rules, "db"), (true, "default/db".into()));
    assert_eq!(dst_of(&rules, "db-eu-1"), (true, "default/db-eu-*".into()));
    assert_eq!(dst_of(&rules, "db-us-1"), (false, "default/db-*".into()));
    // A longer destination prefix wins even over a more exact source.
    let rules = set(&[
        ("default/db-*", &[("default/web", "deny")]),
        ("default/db-eu-*", &[("default/*", "allow")]),
    ]);
    assert_eq!(dst_of(&rules, "db-eu-1"), (true, "default/db-eu-*".into()));
    let m: Vec<String> = rules
        .matching(&svc("db-eu-1"))
        .iter()
        .map(|r| r.destination.to_string())
        .collect();
    assert_eq!(m, ["default/db-eu-*", "default/db-*"]);
}

#[test]
fn default_allow_and_deny() {
    let empty = RuleSet::empty();
    for policy in [Policy::ALLOW, Policy::DENY] {
        let d = empty.decide(&svc("web"), &svc("db"), policy);
        assert_eq!(d.matched, Matched::Default);
        assert_eq!(d.action, policy.default);
        assert_eq!(d.allowed, policy.default == Action::Allow);
        assert!(!d.audit);
    }
    // A set whose rules do not match falls back to the default too.
    let rules = set(&[("default/db", &[("default/web", "deny")])]);
    let d = rules.decide(&svc("api"), &svc("db"), Policy::ALLOW);
    assert!(d.allowed && d.matched == Matched::Default);
    let d = rules.decide(&svc("api"), &svc("db"), Policy::DENY);
    assert!(!d.allowed && d.matched == Matched::Default);
}
