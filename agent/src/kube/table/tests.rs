//! Table-driven checks of the pod table on synthetic watcher events.

use super::*;
use crate::kube::registry::SkipReason;
use serde_json::json;

fn settings() -> Settings {
    Settings {
        node_name: "node-1".into(),
        upstream_bind_addr: "10.0.0.1".parse().unwrap(),
    }
}

/// A pod of node-1 annotated as service `svc`, Running, with `ready` and `ip`.
fn pod(uid: &str, svc: &str, ready: bool, ip: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{svc}-{uid}"), "namespace": "shop", "uid": uid,
            "resourceVersion": "1",
            "annotations": {
                "rhizome.io/service": svc, "rhizome.io/port": "8080",
                "rhizome.io/upstreams": "db:9191"
            }
        },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "app", "image": "app" }] },
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
        }
    }))
    .unwrap()
}

fn registered(t: &PodTable) -> Vec<String> {
    t.snapshot().services().map(|s| s.id.clone()).collect()
}

#[test]
fn kube_table_apply_ready_notready_delete() {
    let mut t = PodTable::new(settings());
    assert_eq!(t.handle(Event::Init), Change::Unchanged);
    assert_eq!(
        t.handle(Event::InitDone),
        Change::Changed,
        "first sync publishes"
    );
    assert!(t.snapshot().is_synced());

    assert_eq!(
        t.handle(Event::Apply(pod("a", "web", false, None))),
        Change::Changed
    );
    assert!(registered(&t).is_empty());
    assert_eq!(
        t.snapshot().pod("a").unwrap().skip_reason(),
        Some(&SkipReason::NotReady)
    );

    t.handle(Event::Apply(pod("a", "web", true, Some("10.1.0.5"))));
    let snap = t.snapshot();
    let svc = snap
        .service_for_source("10.1.0.5".parse().unwrap())
        .unwrap();
    assert_eq!((svc.id.as_str(), svc.name.as_str()), ("web-a.shop", "web"));
    assert_eq!(svc.address.to_string(), "10.1.0.5");
    assert_eq!(svc.upstreams[0].local_bind_address.to_string(), "10.0.0.1");
    assert_eq!(svc.meta["k8s-uid"], "a");

    assert_eq!(
        t.handle(Event::Apply(pod("a", "web", true, Some("10.1.0.5")))),
        Change::Unchanged,
        "an identical update publishes nothing"
    );
    t.handle(Event::Apply(pod("a", "web", false, Some("10.1.0.5"))));
    assert!(registered(&t).is_empty(), "NotReady deregisters");
    assert!(
        t.snapshot()
            .service_for_source("10.1.0.5".parse().unwrap())
            .is_none()
    );

    t.handle(Event::Apply(pod("a", "web", true, Some("10.1.0.5"))));
    assert_eq!(
        t.handle(Event::Delete(pod("a", "web", true, Some("10.1.0.5")))),
        Change::Changed
    );
    assert_eq!(t.snapshot().pods().count(), 0);
}

#[test]
fn kube_table_relist_replaces_without_loss_or_duplicates() {
    let mut t = PodTable::new(settings());
    t.handle(Event::Init);
    t.handle(Event::InitApply(pod("a", "web", true, Some("10.1.0.5"))));
    t.handle(Event::InitApply(pod("b", "api", true, Some("10.1.0.6"))));
    t.handle(Event::InitDone);
    assert_eq!(registered(&t), ["web-a.shop", "api-b.shop"]);
    let generation = t.snapshot().generation();

    // A relist: b vanished while we were away, c appeared; a is listed again.
    t.handle(Event::Init);
    assert_eq!(
        t.handle(Event::InitApply(pod("c", "db", true, Some("10.1.0.7")))),
        Change::Unchanged
    );
    t.handle(Event::InitApply(pod("a", "web", true, Some("10.1.0.5"))));
    assert_eq!(
        registered(&t),
        ["web-a.shop", "api-b.shop"],
        "old set stays until InitDone"
    );
    assert_eq!(t.handle(Event::InitDone), Change::Changed);
    assert_eq!(registered(&t), ["web-a.shop", "db-c.shop"]);
    assert!(t.snapshot().generation() > generation);
    assert_eq!(
        t.snapshot()
            .listener_ports()
            .into_iter()
            .collect::<Vec<_>>(),
        [9191]
    );

    // A relist listing the same set publishes nothing.
    t.handle(Event::Init);
    t.handle(Event::InitApply(pod("a", "web", true, Some("10.1.0.5"))));
    t.handle(Event::InitApply(pod("c", "db", true, Some("10.1.0.7"))));
    assert_eq!(t.handle(Event::InitDone), Change::Unchanged);
}

#[test]
fn kube_table_bad_annotation_reported_once_and_ip_clash_fails_closed() {
    let mut t = PodTable::new(settings());
    let mut bad = pod("a", "web", true, Some("10.1.0.5"));
    bad.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("rhizome.io/port".into(), "eighty".into());
    t.handle(Event::Apply(bad.clone()));
    let reported = t.take_bad();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].pod, "shop/web-a");
    t.handle(Event::Apply(bad.clone()));
    t.handle(Event::Init);
    t.handle(Event::InitApply(bad));
    t.handle(Event::InitDone);
    assert!(
        t.take_bad().is_empty(),
        "an unchanged bad pod is not reported again"
    );

    let mut dual = pod("d", "web", true, Some("10.1.0.20"));
    dual.status.as_mut().unwrap().pod_ips =
        Some(serde_json::from_value(json!([{ "ip": "10.1.0.20" }, { "ip": "fd00::20" }])).unwrap());
    t.handle(Event::Apply(dual));
    let snap = t.snapshot();
    for src in ["10.1.0.20", "fd00::20"] {
        let svc = snap.service_for_source(src.parse().unwrap());
        assert_eq!(svc.map(|s| s.id.as_str()), Some("web-d.shop"), "{src}");
    }

    t.handle(Event::Apply(pod("b", "api", true, Some("10.1.0.9"))));
    t.handle(Event::Apply(pod("c", "db", true, Some("10.1.0.9"))));
    let snap = t.snapshot();
    assert_eq!(snap.services().count(), 3);
    assert!(
        snap.service_for_source("10.1.0.9".parse().unwrap())
            .is_none()
    );
}

#[test]
fn kube_table_skip_reasons() {
    let mut other = pod("a", "web", true, Some("10.1.0.5"));
    other.spec.as_mut().unwrap().node_name = Some("node-2".into());
    let mut host = pod("b", "web", true, Some("10.0.0.1"));
    host.spec.as_mut().unwrap().host_network = Some(true);
    let mut pending = pod("c", "web", false, None);
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    let mut plain = pod("d", "web", true, Some("10.1.0.8"));
    plain.metadata.annotations = None;
    let mut no_ip = pod("e", "web", true, None);
    no_ip.status.as_mut().unwrap().pod_ip = Some("not-an-ip".into());
    let mut gone = pod("f", "web", true, Some("10.1.0.9"));
    gone.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-11-26T08:00:00Z")).unwrap());
    let cases = [
        (other, SkipReason::OtherNode("node-2".into())),
        (host, SkipReason::HostNetwork),
        (pending, SkipReason::NotRunning("Pending".into())),
        (plain, SkipReason::NotAnnotated),
        (no_ip, SkipReason::NoPodIp),
        (gone, SkipReason::Terminating),
    ];
    for (pod, reason) in cases {
        let e = crate::kube::PodEntry::from_pod(&pod, &settings());
        assert_eq!(e.skip_reason(), Some(&reason), "{}", e.name);
    }
}
