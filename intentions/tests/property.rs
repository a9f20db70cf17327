//! Property tests: a rule of lower precedence never changes a decision made by a rule of
//! higher precedence, and the index agrees with a plain scan in precedence order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{entry_hcl, svc};
use proptest::prelude::*;
use rhizome_intentions::{Entry, Policy, Precedence, RuleSet, ServicePattern};

const NAMESPACES: [&str; 3] = ["a", "b", "*"];
const NAMES: [&str; 7] = ["x", "x-1", "x-12", "y", "x-*", "x-1*", "*"];
const SERVICES: [&str; 8] = [
    "a/x", "a/x-1", "a/x-12", "a/y", "b/x", "b/x-1", "b/x-12", "b/y",
];

/// A pattern `ns/name` from two indices, or `None` for the refused `*/name`.
fn pattern(ns: usize, name: usize) -> Option<String> {
    let (ns, name) = (NAMESPACES[ns % 3], NAMES[name % 7]);
    (ns != "*" || name == "*").then(|| format!("{ns}/{name}"))
}

type RawRule = (usize, usize, usize, usize, bool);

fn raw_rules(max: usize) -> impl Strategy<Value = Vec<RawRule>> {
    prop::collection::vec(
        (0..3usize, 0..7usize, 0..3usize, 0..7usize, any::<bool>()),
        0..max,
    )
}

/// Rules as `(destination, source) -> allow?`, dropping refused patterns; later
/// duplicates are skipped.
fn to_map(raw: &[RawRule], into: &mut BTreeMap<(String, String), bool>) {
    for &(sn, s, dn, d, allow) in raw {
        if let (Some(src), Some(dst)) = (pattern(sn, s), pattern(dn, d)) {
            into.entry((dst, src)).or_insert(allow);
        }
    }
}

fn build(rules: &BTreeMap<(String, String), bool>) -> RuleSet {
    load_with(rules, |d, s| entry_hcl(d, s, false))
}

/// One entry whose sources are written in a mix of forms: `form[i] % 3` is 0 for "item of
/// the current `Sources = [...]` list", 1 for "a `Sources { }` block", 2 for "item of a new
/// `Sources = [...]` list". Keys are spelled CamelCase or snake_case by `snake`.
fn entry_mixed(dst: &str, sources: &[(&str, &str)], form: &[u8], snake: bool) -> String {
    let key = |k: &str| {
        if snake {
            k.to_lowercase()
        } else {
            k.to_owned()
        }
    };
    let (dns, dname) = dst.split_once('/').unwrap();
    let mut out = format!(
        "{} = \"service-intentions\"\n{} = \"{dname}\"\n{} = \"{dns}\"\n",
        key("Kind"),
        key("Name"),
        key("Namespace")
    );
    let mut list: Vec<String> = Vec::new();
    let flush = |list: &mut Vec<String>, out: &mut String| {
        if !list.is_empty() {
            out.push_str(&format!("{} = [\n{}]\n", key("Sources"), list.join("")));
            list.clear();
        }
    };
    for (i, (src, action)) in sources.iter().enumerate() {
        let (ns, name) = src.split_once('/').unwrap();
        let fields = format!(
            "{} = \"{name}\"\n{} = \"{ns}\"\n{} = \"{action}\"\n",
            key("Name"),
            key("Namespace"),
            key("Action")
        );
        match form.get(i).copied().unwrap_or(0) % 3 {
            1 => {
                flush(&mut list, &mut out);
                out.push_str(&format!("{} {{\n{fields}}}\n", key("Sources")));
            }
            f => {
                if f == 2 {
                    flush(&mut list, &mut out);
                }
                list.push(format!("  {{\n{fields}  }},\n"));
            }
        }
    }
    flush(&mut list, &mut out);
    out
}

fn build_with(rules: &BTreeMap<(String, String), bool>, form: &[u8], snake: bool) -> RuleSet {
    load_with(rules, |d, s| entry_mixed(d, s, form, snake))
}

/// One file per destination, written by `write(destination, sources)`, loaded together.
fn load_with(
    rules: &BTreeMap<(String, String), bool>,
    write: impl Fn(&str, &[(&str, &str)]) -> String,
) -> RuleSet {
    let mut by_dst: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for ((dst, src), allow) in rules {
        by_dst
            .entry(dst)
            .or_default()
            .push((src, if *allow { "allow" } else { "deny" }));
    }
    let files: Vec<(String, String)> = by_dst
        .iter()
        .map(|(d, s)| (format!("{d}.hcl"), write(d, s)))
        .collect();
    RuleSet::load(files.iter().map(|(f, s)| (f.as_str(), s.as_str())))
        .unwrap_or_else(|e| panic!("{e}\n{files:?}"))
}

fn prec(src: &str, dst: &str) -> Precedence {
    let (s, d): (ServicePattern, ServicePattern) = (src.parse().unwrap(), dst.parse().unwrap());
    Precedence::of(&s, &d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lower_precedence_rules_never_change_a_decision(
        base in raw_rules(12),
        extra in raw_rules(12),
        src in 0..8usize,
        dst in 0..8usize,
    ) {
        let (src, dst) = (svc(SERVICES[src]), svc(SERVICES[dst]));
        let mut rules = BTreeMap::new();
        to_map(&base, &mut rules);
        let before_set = build(&rules);
        let before = before_set.decide(&src, &dst, Policy::DENY);
        let Some(decider) = before.rule() else { return Ok(()) };
        let mut candidates = BTreeMap::new();
        to_map(&extra, &mut candidates);
        let mut added = 0;
        for ((d, s), allow) in candidates {
            if prec(&s, &d) < decider.precedence && !rules.contains_key(&(d.clone(), s.clone())) {
                rules.insert((d, s), allow);
                added += 1;
            }
        }
        let after_set = build(&rules);
        let after = after_set.decide(&src, &dst, Policy::DENY);
        let rule = after.rule().expect("a rule still decides");
        prop_assert_eq!((&rule.source, &rule.destination), (&decider.source, &decider.destination),
            "added {} lower rules", added);
        prop_assert_eq!((after.action, after.allowed), (before.action, before.allowed));
    }

    #[test]
    fn index_agrees_with_a_scan_in_precedence_order(
        base in raw_rules(24),
        src in 0..8usize,
        dst in 0..8usize,
    ) {
        let (src, dst) = (svc(SERVICES[src]), svc(SERVICES[dst]));
        let mut rules = BTreeMap::new();
        to_map(&base, &mut rules);
        let set = build(&rules);
        let matching = set.matching(&dst);
        prop_assert!(matching.windows(2).all(|w| w[0].precedence >= w[1].precedence));
        let scanned = matching
            .into_iter()
            .find(|r| r.source.matches(src.namespace.as_str(), src.name.as_str()));
        prop_assert_eq!(set.decide(&src, &dst, Policy::DENY).rule(), scanned);
    }

    /// A rule set written as lists, as blocks, or as any mix of them (in either spelling of
    /// the keys) holds the same rules and decides every connection identically.
    #[test]
    fn lists_blocks_and_mixes_decide_identically(
        base in raw_rules(16),
        form in prop::collection::vec(any::<u8>(), 16),
        snake in any::<bool>(),
    ) {
        let mut rules = BTreeMap::new();
        to_map(&base, &mut rules);
        let lists = build(&rules);
        let blocks = build_with(&rules, &[1; 16], false);
        let mixed = build_with(&rules, &form, snake);
        prop_assert_eq!(lists.rules().len(), rules.len());
        for set in [&blocks, &mixed] {
            prop_assert_eq!(set.version(), lists.version());
            prop_assert_eq!(set.rules().len(), lists.rules().len());
            for src in SERVICES {
                for dst in SERVICES {
                    let (s, d) = (svc(src), svc(dst));
                    let (a, b) = (lists.decide(&s, &d, Policy::DENY), set.decide(&s, &d, Policy::DENY));
                    prop_assert_eq!((a.allowed, a.action), (b.allowed, b.action));
                    prop_assert_eq!(
                        a.rule().map(|r| (&r.source, &r.destination)),
                        b.rule().map(|r| (&r.source, &r.destination))
                    );
                }
            }
        }
    }

    /// Parsing never panics, and every refusal carries a position inside the file.
    #[test]
    fn damaged_files_are_refused_with_a_position(cut in 0..200usize, insert in "[ {}\\[\\]=\",*/a-z\n]{0,3}") {
        let good = entry_hcl("default/db", &[("default/web-*", "allow"), ("*/*", "deny")], true);
        let at = cut % good.len();
        let damaged = format!("{}{insert}{}", &good[..at], &good[at + 1..]);
        if let Err(e) = Entry::parse(&damaged, "f.hcl") {
            prop_assert!(e.line >= 1 && e.line <= damaged.lines().count() + 1, "{}", e);
            prop_assert!(e.column >= 1, "{}", e);
            prop_assert!(e.to_string().starts_with("f.hcl:"), "{}", e);
        }
    }
}
