//! Decision speed: nanoseconds per `RuleSet::decide` at 10, 1,000 and 10,000 rules.
//!
//! Run with `cargo bench -p rhizome-intentions`. Prints numbers; asserts nothing about
//! time (machines are noisy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use rhizome_intentions::{Policy, RuleSet, ServiceRef};

/// Deterministic pseudo-random numbers (64-bit LCG), so every run measures the same work.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % below.max(1)
    }
}

/// How many services the mesh has for a rule count (enough that sources rarely repeat).
fn services_for(rules: usize) -> usize {
    (rules.div_ceil(10) * 4).max(64)
}

/// One entry per destination, ten sources each: exact names in several namespaces,
/// prefixes, `ns/*` and `*/*`, as a large mesh might have.
fn rule_set(rules: usize, rng: &mut Lcg) -> (RuleSet, usize) {
    let dests = rules.div_ceil(10).max(1);
    let services = services_for(rules);
    let mut files = Vec::new();
    for d in 0..dests {
        let mut src = String::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut push = |ns: String, name: String, allow: bool| {
            if seen.insert((ns.clone(), name.clone())) {
                let action = if allow { "allow" } else { "deny" };
                src.push_str(&format!(
                    "  {{ Name = \"{name}\", Namespace = \"{ns}\", Action = \"{action}\" }},\n"
                ));
            }
        };
        for k in 0..6 {
            let s = rng.next(services);
            push(format!("ns-{}", s % 4), format!("svc-{s}"), k % 2 == 0);
        }
        push(
            format!("ns-{}", d % 4),
            format!("svc-{}*", rng.next(10)),
            true,
        );
        push(
            format!("ns-{}", d % 4),
            format!("svc-{}*", 10 + rng.next(90)),
            false,
        );
        push(format!("ns-{}", (d + 1) % 4), "*".into(), true);
        push("*".into(), "*".into(), false);
        let text = format!(
            "Kind = \"service-intentions\"\nName = \"svc-{d}\"\nNamespace = \"ns-{}\"\nSources = [\n{src}]\n",
            d % 4
        );
        files.push((format!("svc-{d}.hcl"), text));
    }
    let set = RuleSet::load(files.iter().map(|(f, s)| (f.as_str(), s.as_str()))).unwrap();
    let count = set.rules().len();
    (set, count)
}

fn main() {
    let mut rng = Lcg(0x5eed);
    println!(
        "{:>8} {:>12} {:>14} {:>10} {:>20}",
        "rules", "decisions", "ns/decision", "allowed", "ns/decide_spiffe"
    );
    for target in [10, 1_000, 10_000] {
        let (set, count) = rule_set(target, &mut rng);
        let services = services_for(target);
        let requests: Vec<(ServiceRef, ServiceRef)> = (0..1024)
            .map(|_| {
                let (s, d) = (rng.next(services), rng.next(target.div_ceil(10)));
                let src = ServiceRef::new(&format!("ns-{}", s % 4), &format!("svc-{s}")).unwrap();
                let dst = ServiceRef::new(&format!("ns-{}", d % 4), &format!("svc-{d}")).unwrap();
                (src, dst)
            })
            .collect();
        let rounds = 2_000;
        // Warm up caches and branch predictors once.
        for (s, d) in &requests {
            black_box(set.decide(s, d, Policy::DENY));
        }
        let mut allowed = 0usize;
        let start = Instant::now();
        for _ in 0..rounds {
            for (s, d) in &requests {
                allowed += usize::from(
                    black_box(set.decide(black_box(s), black_box(d), Policy::DENY)).allowed,
                );
            }
        }
        let elapsed = start.elapsed();
        let decisions = rounds * requests.len();
        let ns = elapsed.as_nanos() as f64 / decisions as f64;
        // The same decisions from the peer certificate's SPIFFE id (parsing included).
        let ids: Vec<(String, &ServiceRef)> = requests
            .iter()
            .map(|(s, d)| (s.spiffe_id("rhizome.local"), d))
            .collect();
        let spiffe_rounds = rounds / 4;
        let start = Instant::now();
        for _ in 0..spiffe_rounds {
            for (id, d) in &ids {
                let decision = set.decide_spiffe(black_box(id), black_box(d), Policy::DENY);
                black_box(decision.unwrap().allowed);
            }
        }
        let spiffe_ns = start.elapsed().as_nanos() as f64 / (spiffe_rounds * ids.len()) as f64;
        println!(
            "{count:>8} {decisions:>12} {ns:>14.1} {:>9.1}% {spiffe_ns:>20.1}",
            100.0 * allowed as f64 / decisions as f64
        );
    }
}
