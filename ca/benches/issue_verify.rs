//! Leaf issuance and chain verification throughput. Plain main, prints numbers:
//! `cargo bench -p rhizome-ca`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use rhizome_ca::{
    AgentCa, CertKind, DEFAULT_LEAF_TTL, RootCa, TrustBundle, unix_time, verify_chain,
};
use time::{Duration, OffsetDateTime};

fn rate(label: &str, n: u32, f: impl FnMut()) {
    let mut f = f;
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<44} {n:>6} ops  {:>9.1} ops/s  {:>8.1} us/op",
        f64::from(n) / secs,
        secs * 1e6 / f64::from(n)
    );
}

fn main() {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let root =
        RootCa::generate("rhizome.local".parse().unwrap(), now, Duration::days(365)).unwrap();
    let bundle = TrustBundle::new(vec![root.cert().clone()]).unwrap();
    let services: Vec<_> = ["web", "db", "api"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let agent: AgentCa = root
        .issue_agent(
            &"node-1".parse().unwrap(),
            Some(&services),
            now,
            Duration::days(30),
        )
        .unwrap();
    let ns = "default".parse().unwrap();
    let svc = "web".parse().unwrap();

    rate("issue workload leaf (keygen + sign)", 2000, || {
        black_box(
            agent
                .issue_workload(&ns, &svc, now, DEFAULT_LEAF_TTL)
                .unwrap(),
        );
    });

    let leaf = agent
        .issue_workload(&ns, &svc, now, DEFAULT_LEAF_TTL)
        .unwrap();
    let t = unix_time(now);
    rate("verify_chain (leaf + agent -> root)", 5000, || {
        black_box(
            verify_chain(
                &bundle,
                leaf.leaf(),
                &leaf.chain()[1..],
                t,
                CertKind::Workload,
            )
            .unwrap(),
        );
    });

    let mut new_root =
        RootCa::generate("rhizome.local".parse().unwrap(), now, Duration::days(365)).unwrap();
    new_root.set_cross_signed(vec![
        root.cross_sign(&new_root, now, Duration::days(30)).unwrap(),
    ]);
    let rotated = new_root
        .issue_agent(&"node-2".parse().unwrap(), None, now, Duration::days(30))
        .unwrap();
    let cross_leaf = rotated
        .issue_workload(&ns, &svc, now, DEFAULT_LEAF_TTL)
        .unwrap();
    rate(
        "verify_chain via cross cert (old-only bundle)",
        5000,
        || {
            black_box(
                verify_chain(
                    &bundle,
                    cross_leaf.leaf(),
                    &cross_leaf.chain()[1..],
                    t,
                    CertKind::Workload,
                )
                .unwrap(),
            );
        },
    );
}
