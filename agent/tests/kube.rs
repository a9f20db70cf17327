//! Kubernetes pod discovery against a fake API server (a real HTTP server on loopback; see
//! `fake_kube`), with the real `kube` client and watcher. Waits are bounded polls of the
//! registry channel; nothing sleeps to assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_kube;

use fake_kube::{FakeApi, pod};
use rhizome_agent::app::Agent;
use rhizome_agent::client::Client;
use rhizome_agent::config::AgentConfig;
use rhizome_agent::kube::{
    Discovery, KubeMetrics, PodRegistry, PodRegistryRx, Settings, SkipReason, SourceRefused,
    attribute,
};
use rhizome_agent::runtime::ShutdownTrigger;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NODE: &str = "node-1";

fn settings() -> Settings {
    Settings {
        node_name: NODE.into(),
        upstream_bind_addr: "127.0.0.1".parse().unwrap(),
    }
}

/// Runs discovery against `api`; the task stops when the returned sender is dropped.
fn discover(api: &FakeApi) -> (PodRegistryRx, KubeMetrics, ShutdownTrigger) {
    let discovery = Discovery::new(api.client(), settings());
    let rx = discovery.subscribe();
    let metrics = KubeMetrics::default();
    let (stop, stop_rx) = rhizome_agent::runtime::shutdown();
    tokio::spawn(discovery.run(metrics.clone(), stop_rx));
    (rx, metrics, stop)
}

/// Waits (at most 20 s) until the registry satisfies `cond`.
async fn until(
    rx: &mut PodRegistryRx,
    what: &str,
    cond: impl FnMut(&Arc<PodRegistry>) -> bool,
) -> Arc<PodRegistry> {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        rx.wait_for(cond).await.map(|r| r.clone())
    })
    .await;
    match waited {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => panic!("discovery stopped while waiting for: {what}"),
        Err(_) => panic!("timed out waiting for: {what}; last: {:?}", *rx.borrow()),
    }
}

fn ids(r: &PodRegistry) -> Vec<String> {
    r.services().map(|s| s.id.clone()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn kube_watch_follows_readiness_deletes_and_ignores_other_nodes() {
    let mut bad = pod("bad", NODE, Some("web"), true, Some("10.1.0.9"));
    bad["metadata"]["annotations"]["rhizome.io/upstreams"] = "db".into();
    let api = FakeApi::start(vec![
        pod("web-1", NODE, Some("web"), true, Some("10.1.0.5")),
        pod("web-2", "node-2", Some("web"), true, Some("10.2.0.5")),
        pod("plain", NODE, None, true, Some("10.1.0.6")),
        bad,
    ])
    .await;
    let (mut rx, metrics, _stop) = discover(&api);

    let r = until(&mut rx, "first sync", |r| r.is_synced()).await;
    assert_eq!(ids(&r), ["web-1.shop"]);
    let web = r.service_for_source(ip("10.1.0.5")).unwrap();
    assert_eq!((web.name.as_str(), web.port), ("web", 8080));
    assert_eq!(web.upstreams[0].destination_name, "db");
    assert_eq!(web.upstreams[0].local_bind_address, ip("127.0.0.1"));
    assert!(r.pods().all(|p| p.name != "web-2"), "other node never seen");
    let reasons: Vec<_> = r
        .pods()
        .map(|p| (p.name.as_str(), p.skip_reason()))
        .collect();
    assert!(reasons.contains(&("plain", Some(&SkipReason::NotAnnotated))));
    assert!(matches!(
        r.pods().find(|p| p.name == "bad").unwrap().skip_reason(),
        Some(SkipReason::BadAnnotation(_))
    ));
    assert_eq!(metrics.annotation_errors.get(), 1);

    // The field selector went to the server, on the list and on the watch.
    api.wait_for_watches(1).await;
    let requests = api.requests();
    let selector = "fieldSelector=spec.nodeName%3Dnode-1";
    assert!(
        requests.iter().all(|r| r.contains(selector)),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );

    api.apply(pod("web-1", NODE, Some("web"), false, Some("10.1.0.5")));
    let r = until(&mut rx, "web-1 NotReady removed", |r| {
        r.services().count() == 0
    })
    .await;
    assert_eq!(
        r.pods().find(|p| p.name == "web-1").unwrap().skip_reason(),
        Some(&SkipReason::NotReady)
    );
    assert!(r.service_for_source(ip("10.1.0.5")).is_none());

    api.apply(pod("web-1", NODE, Some("web"), true, Some("10.1.0.5")));
    until(&mut rx, "web-1 Ready again", |r| ids(r) == ["web-1.shop"]).await;

    // A change on another node is filtered by the server and changes nothing here.
    api.apply(pod("web-2", "node-2", Some("web"), false, Some("10.2.0.5")));
    api.delete("web-1");
    let r = until(&mut rx, "web-1 deleted", |r| {
        r.pods().all(|p| p.name != "web-1")
    })
    .await;
    assert!(ids(&r).is_empty());
    assert_eq!(
        r.pods().count(),
        2,
        "plain and bad remain, nothing from node-2"
    );
    assert_eq!(api.lists(), 1, "no relist needed");
}

#[tokio::test]
async fn kube_relist_after_410_neither_loses_nor_duplicates() {
    let api = FakeApi::start(vec![
        pod("a", NODE, Some("web"), true, Some("10.1.0.1")),
        pod("b", NODE, Some("api"), true, Some("10.1.0.2")),
    ])
    .await;
    let (mut rx, metrics, _stop) = discover(&api);
    let before = until(&mut rx, "a and b", |r| r.services().count() == 2).await;
    api.wait_for_watches(1).await;

    // While the watch cannot see it, b goes away and c arrives; then history expires.
    api.expire(|pods| {
        pods.remove("b");
        let mut c = pod("c", NODE, Some("db"), true, Some("10.1.0.3"));
        c["metadata"]["resourceVersion"] = "1".into();
        pods.insert("c".into(), c);
    });
    let r = until(&mut rx, "relisted a and c", |r| {
        ids(r) == ["a.shop", "c.shop"]
    })
    .await;
    assert_eq!(ids(&r).len(), 2, "no duplicates: {:?}", ids(&r));
    assert_eq!(r.pods().count(), 2);
    assert_eq!(
        r.service_for_source(ip("10.1.0.1")),
        before.service_for_source(ip("10.1.0.1")),
        "a kept unchanged across the relist"
    );
    assert!(r.service_for_source(ip("10.1.0.2")).is_none(), "b is gone");
    assert_eq!(r.service_for_source(ip("10.1.0.3")).unwrap().name, "db");
    assert_eq!(api.lists(), 2, "the 410 forced exactly one relist");
    assert!(metrics.watch_errors.get() >= 1);

    // The watch resumes after the relist: later changes still arrive, once.
    api.wait_for_watches(1).await;
    api.apply(pod("c", NODE, Some("db"), false, Some("10.1.0.3")));
    let r = until(&mut rx, "c NotReady", |r| r.services().count() == 1).await;
    assert_eq!(ids(&r), ["a.shop"]);
}

#[tokio::test]
async fn kube_watch_refused_with_http_410_relists() {
    let api = FakeApi::start(vec![
        pod("a", NODE, Some("web"), true, Some("10.1.0.1")),
        pod("b", NODE, Some("api"), true, Some("10.1.0.2")),
    ])
    .await;
    api.refuse_expired_with_http_410();
    let (mut rx, metrics, _stop) = discover(&api);
    until(&mut rx, "a and b", |r| r.services().count() == 2).await;
    api.wait_for_watches(1).await;

    // The watch ends; meanwhile history expires, so the rewatch gets HTTP 410.
    api.expire_silently(|pods| {
        pods.remove("a");
    });
    api.end_watches();
    let r = until(&mut rx, "relisted without a", |r| ids(r) == ["b.shop"]).await;
    assert_eq!(r.pods().count(), 1);
    assert_eq!(api.lists(), 2, "one relist");
    assert!(
        api.requests()
            .iter()
            .any(|q| q.contains("watch=true") && q.contains("resourceVersion=102")),
        "the refused rewatch from the old version: {:?}",
        api.requests()
    );
    assert_eq!(metrics.watch_errors.get(), 1);
}

#[tokio::test]
async fn kube_watch_resumes_from_bookmark_and_after_dropped_connection_without_relist() {
    let api = FakeApi::start(vec![pod("a", NODE, Some("web"), true, Some("10.1.0.1"))]).await;
    let (mut rx, metrics, _stop) = discover(&api);
    until(&mut rx, "a", |r| r.services().count() == 1).await;
    api.wait_for_watches(1).await;

    // A change elsewhere moves the resource version; the bookmark tells the watcher, and
    // the next watch (after the server ends this one) starts from there.
    let mark = api.bookmark();
    api.end_watches();
    api.apply(pod("b", NODE, Some("api"), true, Some("10.1.0.2")));
    let r = until(&mut rx, "b after the watch ended", |r| {
        r.services().count() == 2
    })
    .await;
    assert_eq!(ids(&r), ["a.shop", "b.shop"]);
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|q| q.contains("watch=true") && q.contains(&format!("resourceVersion={mark}"))),
        "rewatch from the bookmark's version {mark}: {requests:?}"
    );

    // The connection drops mid-stream; what happens meanwhile arrives after the rewatch.
    api.wait_for_watches(1).await;
    api.drop_watches();
    api.delete("a");
    api.apply(pod("b", NODE, Some("api"), false, Some("10.1.0.2")));
    let r = until(&mut rx, "a deleted, b NotReady", |r| {
        r.services().count() == 0 && r.pods().count() == 1
    })
    .await;
    assert_eq!(
        r.pods().next().unwrap().skip_reason(),
        Some(&SkipReason::NotReady)
    );
    // (kube reads a connection cut mid-chunk as a resumable end of the watch, not an error.)
    assert_eq!(api.lists(), 1, "the watch resumed each time, no relist");
    assert_eq!(metrics.watch_errors.get(), 0);
}

/// Accepts on `listener` like the data plane's pod upstream listener: attribute, then
/// answer `service->destination` or close the connection.
async fn serve_upstream(listener: tokio::net::TcpListener, rx: PodRegistryRx) {
    loop {
        let Ok((mut conn, peer)) = listener.accept().await else {
            return;
        };
        let local = conn.local_addr().unwrap();
        let registry = rx.borrow().clone();
        let answer = match attribute(&registry, peer, local) {
            Ok(a) => format!("{}->{}", a.service.name, a.upstream.destination_name),
            Err(_) => continue, // dropping `conn` refuses it
        };
        let _ = conn.write_all(answer.as_bytes()).await;
    }
}

/// Connects from `src` (a loopback address) and reads until EOF.
async fn call(src: &str, to: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(src), 0)).unwrap();
    let mut conn = socket.connect(to).await.unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out).await;
    out
}

#[tokio::test]
async fn kube_connection_from_unknown_pod_ip_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut web = pod("web", NODE, Some("web"), true, Some("127.0.0.2"));
    web["metadata"]["annotations"]["rhizome.io/upstreams"] = format!("db:{}", addr.port()).into();
    let api = FakeApi::start(vec![
        web,
        pod("other", NODE, Some("api"), true, Some("127.0.0.4")),
    ])
    .await;
    let (mut rx, _metrics, _stop) = discover(&api);
    let r = until(&mut rx, "web", |r| r.services().count() == 2).await;
    tokio::spawn(serve_upstream(listener, rx.clone()));

    assert_eq!(call("127.0.0.2", addr).await, "web->db", "the pod is known");
    assert_eq!(
        call("127.0.0.3", addr).await,
        "",
        "unknown source IP: closed"
    );
    assert_eq!(
        call("127.0.0.4", addr).await,
        "",
        "known pod, no upstream on this port"
    );
    assert_eq!(
        attribute(&r, "127.0.0.3:5000".parse().unwrap(), addr).unwrap_err(),
        SourceRefused::UnknownSource(ip("127.0.0.3"))
    );
    assert!(matches!(
        attribute(&r, "127.0.0.4:5000".parse().unwrap(), addr).unwrap_err(),
        SourceRefused::NoSuchUpstream { port, .. } if port == addr.port()
    ));

    // When the pod stops being ready, its source IP is refused too.
    api.apply(pod("web", NODE, Some("web"), false, Some("127.0.0.2")));
    until(&mut rx, "web NotReady", |r| r.services().count() == 1).await;
    assert_eq!(call("127.0.0.2", addr).await, "", "not ready: refused");
}

fn agent_config(dir: &std::path::Path, kubeconfig: &std::path::Path) -> AgentConfig {
    let ca = rhizome_agent::testkit::TestCa::new("test.mesh").unwrap();
    let ca_dir = ca.agent_dir(dir, "agent-1").unwrap();
    let src = format!(
        r#"
node_name = "agent-1"
data_dir  = "{data}/data"
bind_addr = "127.0.0.1"
ca {{ dir = "{ca}" }}
ports {{
  http   = 0
  gossip = 0
  data   = 0
}}
kubernetes {{
  enabled    = true
  node_name  = "{NODE}"
  kubeconfig = "{kubeconfig}"
}}
"#,
        data = dir.display(),
        ca = ca_dir.display(),
        kubeconfig = kubeconfig.display(),
    );
    AgentConfig::from_str(&src, "kube.hcl").unwrap()
}

/// A kubeconfig (JSON is YAML) pointing at `url` without credentials.
fn write_kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "fake", "cluster": { "server": url } }],
        "users": [{ "name": "agent", "user": {} }],
        "contexts": [{ "name": "fake", "context": { "cluster": "fake", "user": "agent" } }],
        "current-context": "fake",
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

async fn get_json(addr: SocketAddr, path: &'static str) -> serde_json::Value {
    tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get(path))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn kube_agent_serves_pods_endpoint_and_metrics() {
    let mut bad = pod("bad", NODE, Some("web"), true, Some("10.1.0.9"));
    bad["metadata"]["annotations"]["rhizome.io/port"] = "http".into();
    let api = FakeApi::start(vec![
        pod("web-1", NODE, Some("web"), true, Some("10.1.0.5")),
        pod("web-2", NODE, Some("web"), false, Some("10.1.0.6")),
        bad,
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &api.url());
    let agent = Agent::start(agent_config(dir.path(), &kubeconfig))
        .await
        .unwrap();
    let mut rx = agent
        .handles()
        .kube_pods
        .clone()
        .expect("discovery enabled");
    until(&mut rx, "agent synced", |r| r.is_synced()).await;

    let view = get_json(agent.http_addr(), "/v1/kubernetes/pods").await;
    assert_eq!(view["enabled"], true);
    assert_eq!(view["node_name"], NODE);
    assert_eq!(view["synced"], true);
    let pods = view["pods"].as_array().unwrap();
    let by_name = |n: &str| pods.iter().find(|p| p["name"] == n).unwrap().clone();
    let web1 = by_name("web-1");
    assert_eq!(web1["state"], "registered");
    assert_eq!(web1["service"]["name"], "web");
    assert_eq!(web1["service"]["address"], "10.1.0.5");
    assert_eq!(web1["service"]["upstreams"][0]["destination_name"], "db");
    assert_eq!(by_name("web-2")["reason"], "not ready");
    let bad = by_name("bad");
    assert_eq!(bad["state"], "skipped");
    assert!(
        bad["reason"].as_str().unwrap().contains("rhizome.io/port"),
        "{bad}"
    );

    // The Ready pod is published in the replicated catalog at its pod IP (and its service
    // gets a leaf so inbound connections can be served); the NotReady one is not.
    let mut catalog = agent.handles().catalog.clone();
    let published = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        catalog.wait_for(|c| {
            c.instances
                .iter()
                .any(|i| i.name == "web" && i.address.to_string() == "10.1.0.5")
        }),
    )
    .await
    .expect("kube pod published in the catalog within 10 s")
    .unwrap()
    .clone();
    let webs: Vec<_> = published
        .instances
        .iter()
        .filter(|i| i.name == "web")
        .collect();
    assert_eq!(webs.len(), 1, "only the Ready pod: {webs:?}");
    assert!(webs[0].id.starts_with("web-1."), "{:?}", webs[0]);
    assert!(webs[0].is_healthy());
    assert!(
        agent
            .handles()
            .identity
            .workloads()
            .iter()
            .any(|((_, svc), _)| svc.as_str() == "web"),
        "a leaf for the pod's service"
    );

    let addr = agent.http_addr();
    let metrics =
        tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get_raw("/metrics"))
            .await
            .unwrap()
            .unwrap();
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("rhizome_kube_annotation_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rhizome_kube_pods_registered 1"),
        "{metrics}"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn kube_enabled_without_api_access_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    let err = Agent::start(agent_config(dir.path(), &missing))
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("kubernetes.kubeconfig"),
        "{err:#}"
    );
}
