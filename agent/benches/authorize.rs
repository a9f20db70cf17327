//! Cost of the data plane's per-stream call, [`Authorizer::authorize`] (rule-set read,
//! decision, owned verdict, counter, log), next to the bare `RuleSet::decide_spiffe`, at
//! 10, 1,000 and 10,000 rules. No agent, no socket: the authorizer is built with
//! [`Authorizer::for_test`].
//!
//! Run with `cargo bench -p rhizome-agent --bench authorize`. Prints numbers; asserts
//! nothing about time (machines are noisy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rhizome_agent::intentions::Authorizer;
use rhizome_intentions::{Policy, RuleSet, ServiceRef};
use std::hint::black_box;
use std::time::Instant;

/// `rules` rules: one entry per destination `svc-D`, ten exact sources each; the first
/// source of every destination is allowed, the others denied.
fn rule_set(rules: usize) -> RuleSet {
    let dests = rules.div_ceil(10).max(1);
    let files: Vec<(String, String)> = (0..dests)
        .map(|d| {
            let sources: String = (0..10)
                .map(|k| {
                    let action = if k == 0 { "allow" } else { "deny" };
                    format!(
                        "  {{ Name = \"src-{}\", Action = \"{action}\" }},\n",
                        d * 10 + k
                    )
                })
                .collect();
            (
                format!("d{d}.hcl"),
                format!(
                    "Kind = \"service-intentions\"\nName = \"svc-{d}\"\nSources = [\n{sources}]\n"
                ),
            )
        })
        .collect();
    RuleSet::load(files.iter().map(|(f, t)| (f.as_str(), t.as_str()))).unwrap()
}

fn ns_per(iterations: u32, mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..iterations {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    // The `--dev` agent's settings: default deny, enforced, trust domain rhizome.local.
    let policy = Policy {
        default: rhizome_intentions::Action::Deny,
        audit: false,
    };
    let trust_domain = "rhizome.local".parse().unwrap();
    let (authz, rules_writer) = Authorizer::for_test(RuleSet::empty(), policy, trust_domain);
    println!("rules   decide_spiffe ns   authorize(allow) ns   authorize(deny) ns");
    for rules in [10, 1_000, 10_000] {
        let set = rule_set(rules);
        let dests = rules.div_ceil(10).max(1);
        rules_writer.replace(set);
        let dst: Vec<ServiceRef> = (0..dests)
            .map(|d| format!("svc-{d}").parse().unwrap())
            .collect();
        let allowed: Vec<String> = (0..dests)
            .map(|d| format!("spiffe://rhizome.local/ns/default/svc/src-{}", d * 10))
            .collect();
        let denied: Vec<String> = (0..dests)
            .map(|d| format!("spiffe://rhizome.local/ns/default/svc/src-{}", d * 10 + 3))
            .collect();
        let n = 200_000;
        let pick = |i: u32| (i as usize * 7919) % dests;
        let rules_now = authz.rules();
        let bare = ns_per(n, |i| {
            let k = pick(i);
            black_box(
                rules_now
                    .decide_spiffe(&allowed[k], &dst[k], authz.policy())
                    .unwrap(),
            );
        });
        let allow = ns_per(n, |i| {
            let k = pick(i);
            let v = authz.authorize(&allowed[k], &dst[k]);
            assert!(v.allowed);
            black_box(v);
        });
        let deny = ns_per(n, |i| {
            let k = pick(i);
            let v = authz.authorize(&denied[k], &dst[k]);
            assert!(!v.allowed);
            black_box(v);
        });
        println!("{rules:>6}   {bare:>16.0}   {allow:>19.0}   {deny:>18.0}");
    }
}
