//! Pod discovery costs, printed (no assertions): the pod table's event rate on a full node,
//! and the latency from a pod change on the fake API server (real HTTP on loopback, the real
//! `kube` watcher) to the published registry. `cargo bench -p rhizome-agent --bench kube_pods`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/fake_kube/mod.rs"]
mod fake_kube;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use rhizome_agent::kube::{Discovery, KubeMetrics, PodTable, Settings};
use std::time::{Duration, Instant};

/// Pods per node: the kubelet's default `maxPods`.
const PODS: usize = 110;

fn settings() -> Settings {
    Settings {
        node_name: "node-1".into(),
        upstream_bind_addr: "10.0.0.1".parse().unwrap(),
    }
}

fn pod(i: usize, ready: bool) -> Pod {
    let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
    let name = format!("app-{i}");
    serde_json::from_value(fake_kube::pod(
        &name,
        "node-1",
        Some("app"),
        ready,
        Some(&ip),
    ))
    .unwrap()
}

fn table_rate() {
    let mut table = PodTable::new(settings());
    table.handle(Event::Init);
    for i in 0..PODS {
        table.handle(Event::InitApply(pod(i, true)));
    }
    table.handle(Event::InitDone);
    let events: Vec<Pod> = (0..2000).map(|n| pod(n % PODS, n % 2 == 0)).collect();
    let start = Instant::now();
    let mut published = 0;
    for p in &events {
        let _ = table.handle(Event::Apply(p.clone()));
        published += table.snapshot().services().count();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pod table, {PODS} pods: apply + snapshot        {:>9.0} events/s  {:>7.1} us/event  ({published})",
        events.len() as f64 / secs,
        secs * 1e6 / events.len() as f64
    );

    let listed: Vec<Pod> = (0..PODS).map(|i| pod(i, true)).collect();
    let start = Instant::now();
    let rounds = 200;
    for _ in 0..rounds {
        table.handle(Event::Init);
        for p in &listed {
            table.handle(Event::InitApply(p.clone()));
        }
        table.handle(Event::InitDone);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pod table, {PODS} pods: full relist              {:>9.0} relists/s {:>7.1} us/relist",
        f64::from(rounds) / secs,
        secs * 1e6 / f64::from(rounds)
    );
}

async fn watch_latency() {
    let pods = (0..PODS)
        .map(|i| {
            let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
            fake_kube::pod(&format!("app-{i}"), "node-1", Some("app"), true, Some(&ip))
        })
        .collect();
    let api = fake_kube::FakeApi::start(pods).await;
    let start = Instant::now();
    let discovery = Discovery::new(api.client(), settings());
    let mut rx = discovery.subscribe();
    let (_stop, stop_rx) = rhizome_agent::runtime::shutdown();
    tokio::spawn(discovery.run(KubeMetrics::default(), stop_rx));
    rx.wait_for(|r| r.services().count() == PODS).await.unwrap();
    println!(
        "first list of {PODS} pods to registry          {:>9.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    api.wait_for_watches(1).await;

    let mut samples: Vec<Duration> = Vec::new();
    for n in 0..400 {
        let ready = n % 2 == 1;
        let want = if ready { PODS } else { PODS - 1 };
        let ip = "10.1.0.1";
        let start = Instant::now();
        api.apply(fake_kube::pod(
            "app-0",
            "node-1",
            Some("app"),
            ready,
            Some(ip),
        ));
        rx.wait_for(|r| r.services().count() == want).await.unwrap();
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: usize| samples[samples.len() * p / 100].as_secs_f64() * 1e6;
    println!(
        "pod change -> registry (fake API, HTTP watch)   p50 {:>7.0} us  p99 {:>7.0} us  ({} changes)",
        pct(50),
        pct(99),
        samples.len()
    );
}

fn main() {
    table_rate();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(watch_latency());
}
