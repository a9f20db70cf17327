//! Consul's own published `service-intentions` files, read as a Consul user would bring them.
//!
//! Each file in `tests/consul/` is copied verbatim from HashiCorp's documentation or from the
//! hashicorp/consul repository; its header comment gives the provenance (repository, path,
//! commit) and what Consul makes of it. The table below says what rhizome must do with each:
//! load it with Consul's decisions (source, destination, action and Consul's precedence
//! number), or refuse it with the real reason at the right place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_intentions::{Action, Policy, RuleSet, ServiceRef};

enum Expect {
    /// Loads; the rules as `(source, destination, action, Consul precedence)`, in any order.
    Rules(&'static [(&'static str, &'static str, &'static str, u8)]),
    /// Refused at `line:column` with a message containing the text.
    Refused(usize, usize, &'static str),
}

const L7: &str = "L7 Permissions are not supported";

/// Every file of the corpus and what rhizome does with it.
const CORPUS: &[(&str, Expect)] = &[
    // Consul's docs template: placeholders such as `"allow" or "deny"` are not HCL.
    (
        "01-ref-complete-configuration-template.hcl",
        Expect::Refused(39, 86, "syntax error"),
    ),
    (
        "02-ref-l4-specific-sources.hcl",
        Expect::Rules(&[
            ("default/web", "default/db", "deny", 9),
            ("default/api", "default/db", "allow", 9),
        ]),
    ),
    (
        "03-ref-l4-all-destinations.hcl",
        Expect::Rules(&[("default/web", "default/*", "deny", 6)]),
    ),
    (
        "04-ref-l4-all-sources.hcl",
        Expect::Rules(&[("default/*", "default/db", "deny", 8)]),
    ),
    ("05-ref-rest-access-l7.hcl", Expect::Refused(16, 5, L7)),
    ("06-ref-grpc-l7.hcl", Expect::Refused(15, 5, L7)),
    // The L4 sources are fine; the third source is L7, so the whole entry is refused.
    ("07-ref-l4-and-l7-mixed.hcl", Expect::Refused(21, 5, L7)),
    (
        "08-ref-cluster-peering-peer.hcl",
        Expect::Refused(14, 7, "Sources[0].Peer is not supported"),
    ),
    // Invalid in Consul too (a permission without Action); refused here as L7 first.
    (
        "09-ref-jwt-permissions-missing-action.hcl",
        Expect::Refused(14, 5, L7),
    ),
    (
        "10-docs-jwt-authorization-provider-key.hcl",
        Expect::Refused(12, 1, "JWT is not supported"),
    ),
    (
        "11-docs-jwt-minimal-no-sources.hcl",
        Expect::Refused(8, 1, "JWT is not supported"),
    ),
    (
        "12-docs-sameness-group-namespace-partition.hcl",
        Expect::Refused(19, 1, "Partition `partition-1` is not supported"),
    ),
    // Consul's decoding test: a `Sources = [...]` list and a later `Sources { }` block.
    // Every source is read (the error is about the third, L7, one).
    (
        "13-test-kitchen-sink-camel-list-plus-block.hcl",
        Expect::Refused(37, 2, "Sources[2].Permissions"),
    ),
    (
        "13b-derived-kitchen-sink-l4-list-plus-block.hcl",
        Expect::Rules(&[
            ("default/foo", "default/web", "deny", 9),
            ("default/bar", "default/web", "allow", 9),
            ("default/*", "default/web", "deny", 8),
        ]),
    ),
    (
        "14-test-kitchen-sink-snake-list-plus-block.hcl",
        Expect::Refused(27, 2, "Sources[2].Permissions"),
    ),
    (
        "15-test-wildcard-destination-camel-block.hcl",
        Expect::Rules(&[("default/foo", "default/*", "deny", 6)]),
    ),
    (
        "16-test-wildcard-destination-snake-block.hcl",
        Expect::Rules(&[("default/foo", "default/*", "deny", 6)]),
    ),
    (
        "17-integ-l7-intentions-setup-sources-block.hcl",
        Expect::Refused(15, 3, L7),
    ),
];

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/consul")
}

#[test]
fn every_corpus_file_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hcl"))
        .collect();
    on_disk.sort();
    let listed: Vec<&str> = CORPUS.iter().map(|(n, _)| *n).collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn consul_corpus_reads_with_consuls_meaning() {
    for (name, expect) in CORPUS {
        let src = std::fs::read_to_string(dir().join(name)).unwrap();
        let loaded = RuleSet::load([(*name, src.as_str())]);
        match (expect, loaded) {
            (Expect::Rules(want), Ok(rules)) => {
                let mut got: Vec<(String, String, String, u8)> = rules
                    .rules()
                    .iter()
                    .map(|r| {
                        let consul = r.precedence.consul().expect("a Consul precedence");
                        (
                            r.source.to_string(),
                            r.destination.to_string(),
                            r.action.to_string(),
                            consul,
                        )
                    })
                    .collect();
                let mut want: Vec<(String, String, String, u8)> = want
                    .iter()
                    .map(|(s, d, a, p)| (s.to_string(), d.to_string(), a.to_string(), *p))
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want, "{name}");
                // And the decisions follow: each exact source/destination pair decides as its rule.
                for (s, d, a, _) in &want {
                    if s.ends_with('*') || d.ends_with('*') {
                        continue;
                    }
                    let (s, d) = (
                        s.parse::<ServiceRef>().unwrap(),
                        d.parse::<ServiceRef>().unwrap(),
                    );
                    let decision = rules.decide(&s, &d, Policy::DENY);
                    let action = if decision.allowed {
                        Action::Allow
                    } else {
                        Action::Deny
                    };
                    assert_eq!(action.as_str(), a, "{name}: {s} -> {d}");
                }
            }
            (Expect::Refused(line, column, needle), Err(errors)) => {
                assert_eq!(errors.0.len(), 1, "{name}: {errors}");
                let text = errors.0[0].to_string();
                let at = format!("{name}:{line}:{column}: ");
                assert!(
                    text.starts_with(&at),
                    "{name}: expected at {at}, got {text}"
                );
                assert!(text.contains(needle), "{name}: `{needle}` not in {text}");
            }
            (Expect::Rules(_), Err(errors)) => panic!("{name} was refused: {errors}"),
            (Expect::Refused(..), Ok(_)) => panic!("{name} was accepted"),
        }
    }
}
