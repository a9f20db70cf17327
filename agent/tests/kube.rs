//! Kubernetes pod discovery. Against a real API server (etcd and kube-apiserver started by
//! `real_kube`; skipped with one line when `make kube-apiserver` has not been run): the
//! shipped manifests applied server-side, the shipped ServiceAccount's token and RBAC
//! checked by the real authorizer, pods created and their status set as the kubelet does,
//! discovery and the agent following them; a node agent and a VM agent reaching each other
//! (pod -> VM and VM -> pod) under intentions. Against the fake API server (`fake_kube`): only
//! the faults a real server cannot be made to produce on cue (expired history answered with
//! 410 Gone, as an ERROR event or an HTTP 410; a BOOKMARK now; a watch ended or cut
//! mid-stream). Waits are bounded polls; nothing sleeps to assert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_kube;
mod kube_shipped;
mod proxy_support;
mod real_kube;

use fake_kube::{FakeApi, pod};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchParams,
};
use kube_shipped::*;
use real_kube::{ControlPlane, User};
use rhizome_agent::app::Agent;
use rhizome_agent::client::Client;
use rhizome_agent::config::AgentConfig;
use rhizome_agent::kube::{
    Discovery, KubeMetrics, PodRegistry, PodRegistryRx, Settings, SkipReason, attribute,
};
use rhizome_agent::runtime::ShutdownTrigger;
use serde_json::{Value, json};
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

async fn get_json(addr: SocketAddr, path: &'static str) -> serde_json::Value {
    tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get(path))
        .await
        .unwrap()
        .unwrap()
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

// ---------------------------------------------------------------------------------------
// Against a real API server (etcd + kube-apiserver from `make kube-apiserver`; see
// `real_kube`). The fake above stays only for what a real server cannot be made to do on
// cue: expire a watch's history (410 Gone as an ERROR event, or as an HTTP 410 refusing a
// rewatch), send a BOOKMARK now, and end or cut a watch connection mid-stream.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn kube_real_api_server_manifests_rbac_and_pods() {
    let Some(bin) = real_kube::binaries_or_skip() else {
        return;
    };
    let plane = ControlPlane::start(&bin).await;
    println!(
        "control plane: kube-apiserver {} at {} (etcd {}), ready in {:.1?}",
        plane.version().await,
        plane.url,
        bin.etcd.display(),
        plane.started_in
    );
    let admin = plane.client(User::Admin).await;

    // 1. Every shipped object, applied server-side: the server validates each.
    apply_manifests(&admin, true).await;

    // 2. The agent's identity: a token of the shipped ServiceAccount, and what the real
    // authorizer lets it do under the shipped RBAC.
    let token = service_account_token(&admin).await;
    let sa = plane.client(User::Token(&token)).await;
    prove_rbac(&sa).await;

    // 3. Play the kubelet: a Node, pods bound to it (and one bound to another node),
    // their status set through the status subresource.
    let nodes: Api<Node> = Api::all(admin.clone());
    for n in [NODE, "node-2"] {
        let node: Node = serde_json::from_value(json!({ "metadata": { "name": n } })).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "shop");
    for (name, node, svc, ip) in [
        ("web-1", NODE, Some("web"), "127.0.0.2"),
        ("web-2", "node-2", Some("web"), "10.2.0.5"),
        ("plain", NODE, None, "127.0.0.5"),
        ("other", NODE, Some("api"), "127.0.0.4"),
        ("bad", NODE, Some("web"), "127.0.0.6"),
    ] {
        let mut doc = new_pod(name, node, svc, port);
        if name == "other" {
            let a = doc["metadata"]["annotations"].as_object_mut().unwrap();
            a.remove("rhizome.io/upstreams");
        }
        if name == "bad" {
            doc["metadata"]["annotations"]["rhizome.io/upstreams"] = json!("db");
        }
        let pod: Pod = serde_json::from_value(doc).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        set_status(&pods, name, true, ip).await;
    }

    // 4. Discovery with the agent's token follows the pods of its node.
    let discovery = Discovery::new(sa.clone(), settings());
    let mut rx = discovery.subscribe();
    let metrics = KubeMetrics::default();
    let (_stop, stop_rx) = rhizome_agent::runtime::shutdown();
    tokio::spawn(discovery.run(metrics.clone(), stop_rx));
    let r = until(&mut rx, "web-1 and other registered", |r| {
        r.is_synced() && r.services().count() == 2
    })
    .await;
    let mut registered = ids(&r);
    registered.sort();
    assert_eq!(registered, ["other.shop", "web-1.shop"]);
    assert!(r.pods().all(|p| p.name != "web-2"), "other node never seen");
    assert_eq!(
        r.pods().find(|p| p.name == "plain").unwrap().skip_reason(),
        Some(&SkipReason::NotAnnotated)
    );
    assert!(matches!(
        r.pods().find(|p| p.name == "bad").unwrap().skip_reason(),
        Some(SkipReason::BadAnnotation(_))
    ));
    assert_eq!(metrics.annotation_errors.get(), 1);
    let web = r.service_for_source(ip("127.0.0.2")).unwrap();
    assert_eq!((web.name.as_str(), web.port), ("web", 8080));
    assert_eq!(web.upstreams[0].destination_name, "db");

    // Connections on the pod upstream listener are attributed by source IP.
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_upstream(listener, rx.clone()));
    assert_eq!(call("127.0.0.2", addr).await, "web->db", "the pod is known");
    assert_eq!(call("127.0.0.3", addr).await, "", "unknown source IP");
    assert_eq!(
        call("127.0.0.4", addr).await,
        "",
        "no upstream on this port"
    );

    set_status(&pods, "web-1", false, "127.0.0.2").await;
    let r = until(&mut rx, "web-1 NotReady", |r| r.services().count() == 1).await;
    assert_eq!(
        r.pods().find(|p| p.name == "web-1").unwrap().skip_reason(),
        Some(&SkipReason::NotReady)
    );
    assert_eq!(call("127.0.0.2", addr).await, "", "not ready: refused");
    set_status(&pods, "web-1", true, "127.0.0.2").await;
    until(&mut rx, "web-1 Ready again", |r| r.services().count() == 2).await;
    set_status(&pods, "web-2", false, "10.2.0.5").await;

    // 5. The agent as the DaemonSet runs it: the shipped config and intentions, the
    // operator Secret filled in as the README says, the ServiceAccount's token. It
    // publishes the Ready pods in its catalog, issues their leaves, enforces the shipped
    // intentions, and withdraws pods when they go.
    let dir = tempfile::tempdir().unwrap();
    let config = shipped_agent_config(&admin, dir.path(), &plane, &token).await;
    let agent = Agent::start(config).await.unwrap();
    let mut catalog = agent.handles().catalog.clone();
    let has = |c: &rhizome_agent::catalog::Catalog, name: &str, at: &str| {
        c.instances
            .iter()
            .any(|i| i.name == name && i.address.to_string() == at && i.is_healthy())
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        catalog.wait_for(|c| has(c, "web", "127.0.0.2") && has(c, "api", "127.0.0.4")),
    )
    .await
    .expect("the agent publishes its node's Ready pods within 30 s")
    .unwrap();
    assert!(
        !has(&catalog.borrow(), "web", "10.2.0.5"),
        "a pod of another node is not published"
    );
    let leaves: Vec<String> = agent
        .handles()
        .identity
        .workloads()
        .iter()
        .map(|((ns, svc), _)| format!("{ns}/{svc}"))
        .collect();
    assert!(leaves.contains(&"shop/web".to_string()), "{leaves:?}");
    assert!(leaves.contains(&"shop/api".to_string()), "{leaves:?}");
    let view = get_json(agent.http_addr(), "/v1/kubernetes/pods").await;
    assert_eq!(view["synced"], true);
    println!("agent published web-1 and other, leaves issued for {leaves:?}");

    // A user deletes the pod: the server marks it terminating (the kubelet has 30 s to stop
    // it), the agent withdraws it at once; then the kubelet confirms and the pod is gone.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        catalog.wait_for(|c| !has(c, "web", "127.0.0.2") && has(c, "api", "127.0.0.4")),
    )
    .await
    .expect("the terminating pod is withdrawn within 30 s")
    .unwrap();
    let r = until(&mut rx, "web-1 terminating", |r| r.services().count() == 1).await;
    assert_eq!(
        r.pods().find(|p| p.name == "web-1").unwrap().skip_reason(),
        Some(&SkipReason::Terminating)
    );
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    until(&mut rx, "web-1 gone from discovery", |r| {
        r.pods().all(|p| p.name != "web-1")
    })
    .await;
    let addr = agent.http_addr();
    let metrics_text =
        tokio::task::spawn_blocking(move || Client::new(addr.to_string()).get_raw("/metrics"))
            .await
            .unwrap()
            .unwrap();
    let metrics_text = String::from_utf8(metrics_text).unwrap();
    assert!(
        metrics_text.contains("rhizome_kube_pods_registered 1"),
        "{metrics_text}"
    );
    assert!(
        metrics_text.contains("rhizome_kube_watch_errors_total 0"),
        "a real server under the shipped RBAC: no refused list or watch: {metrics_text}"
    );
    println!("agent withdrew web-1 after its deletion");

    // The shipped intentions, signed with the operator of the Secret: web may reach db,
    // any other service of shop may not.
    let addr = agent.http_addr();
    let check = |src: &'static str| async move {
        let path = format!("/v1/intentions/check?src={src}&dst=shop/db");
        tokio::task::spawn_blocking(move || {
            Client::new(addr.to_string()).get::<serde_json::Value>(&path)
        })
        .await
        .unwrap()
        .unwrap()
    };
    rhizome_agent::testkit::wait_until_async(
        "the shipped intentions signed and in force",
        Duration::from_secs(30),
        || {
            let answer = check("shop/web");
            async move { answer.await["allowed"] == true }
        },
    )
    .await;
    let allowed = check("shop/web").await;
    let denied = check("shop/api").await;
    println!("intentions as shipped: shop/web -> shop/db {allowed}");
    println!("intentions as shipped: shop/api -> shop/db {denied}");
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(
        denied["rule"].is_object(),
        "denied by the shipped rule, not by default: {denied}"
    );
    agent.shutdown().await.unwrap();
}

/// An echo server on `ip` (a loopback address standing for a pod IP); returns its port.
async fn echo_on(ip: &str) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

/// Connects from `src` to `to`, sends `data`, half-closes and reads until EOF (empty or
/// an error: refused).
async fn send_from(src: &str, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(ip(src), 0))?;
        let mut conn = socket.connect(to).await?;
        conn.write_all(data).await?;
        conn.shutdown().await?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.map(|_| out)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Waits (at most 30 s) until a connection from `src` to `to` is answered with `data`.
async fn until_answered(what: &str, src: &str, to: SocketAddr, data: &[u8]) {
    rhizome_agent::testkit::wait_until_async(what, Duration::from_secs(30), || async {
        send_from(src, to, data).await == data
    })
    .await;
}

#[tokio::test]
async fn kube_real_pod_and_vm_reach_each_other_under_intentions() {
    use proxy_support::{Mesh, rules};
    let Some(bin) = real_kube::binaries_or_skip() else {
        return;
    };
    let plane = ControlPlane::start(&bin).await;
    let admin = plane.client(User::Admin).await;
    apply_manifests(&admin, false).await;
    let token = service_account_token(&admin).await;

    // The VM agent: db (allows shop/web only) and two clients of the pod service web.
    let mesh = Mesh::new("test.mesh");
    let db = echo_on("127.0.0.1").await;
    let (billing_up, batch_up) = (proxy_support::free_port(), proxy_support::free_port());
    let vm_services = format!(
        "service {{\n  name = \"db\"\n  namespace = \"shop\"\n  port = {db}\n}}\n\
         service {{\n  name = \"billing\"\n  namespace = \"shop\"\n  port = 1\n\
           upstreams {{\n    destination_name = \"web\"\n    local_bind_port = {billing_up}\n  }}\n}}\n\
         service {{\n  name = \"batch\"\n  namespace = \"shop\"\n  port = 2\n\
           upstreams {{\n    destination_name = \"web\"\n    local_bind_port = {batch_up}\n  }}\n}}\n"
    );
    let vm = mesh.start("vm-billing-1", &vm_services).await;

    // The node: pods web (at 127.0.0.2, upstream db) and api (at 127.0.0.4, upstream db),
    // created and made Ready as the kubelet would, seen with the ServiceAccount's token.
    let nodes: Api<Node> = Api::all(admin.clone());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": NODE } })).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let web_port = echo_on("127.0.0.2").await;
    let (web_up, api_up) = (proxy_support::free_port(), proxy_support::free_port());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "shop");
    for (name, svc, pod_ip, up) in [
        ("web-1", "web", "127.0.0.2", web_up),
        ("api-1", "api", "127.0.0.4", api_up),
    ] {
        let mut doc = new_pod(name, NODE, Some(svc), up);
        doc["metadata"]["annotations"]["rhizome.io/port"] = json!(web_port.to_string());
        doc["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(web_port);
        let pod: Pod = serde_json::from_value(doc).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        set_status(&pods, name, true, pod_ip).await;
    }
    let kubeconfig = mesh.dir.path().join("kubeconfig");
    plane.write_kubeconfig(&User::Token(&token), &kubeconfig);
    let k8s = mesh
        .start_joined(
            "k8s-node-1",
            &[&vm],
            &format!(
                "kubernetes {{\n  enabled = true\n  node_name = \"{NODE}\"\n  \
                 kubeconfig = \"{}\"\n}}\n",
                kubeconfig.display()
            ),
        )
        .await;

    // Intentions (the shipped ones for db; web open to billing only), on both agents.
    let intentions = [
        "Kind = \"service-intentions\"\nName = \"db\"\nNamespace = \"shop\"\nSources = [\n  \
         { Name = \"web\", Namespace = \"shop\", Action = \"allow\" },\n  \
         { Name = \"*\", Namespace = \"shop\", Action = \"deny\" },\n]\n",
        "Kind = \"service-intentions\"\nName = \"web\"\nNamespace = \"shop\"\nSources = [\n  \
         { Name = \"billing\", Namespace = \"shop\", Action = \"allow\" },\n]\n",
    ];
    rules(&vm, &intentions);
    rules(&k8s, &intentions);
    proxy_support::wait_catalog(
        &k8s,
        "shop",
        "db",
        1,
        rhizome_agent::catalog::Health::Passing,
    )
    .await;
    proxy_support::wait_catalog(
        &vm,
        "shop",
        "web",
        1,
        rhizome_agent::catalog::Health::Passing,
    )
    .await;

    // Pod -> VM: web's upstream listener on the node reaches db; api's is refused.
    let node_addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    until_answered(
        "pod web -> VM db",
        "127.0.0.2",
        node_addr(web_up),
        b"from pod web",
    )
    .await;
    assert!(
        send_from("127.0.0.4", node_addr(api_up), b"from pod api")
            .await
            .is_empty(),
        "pod api -> VM db is denied"
    );
    let denied = |src: &str, dst: &str| {
        let pair = format!("source=\"{src}\",destination=\"{dst}\"");
        [&vm, &k8s].iter().any(|a| {
            proxy_support::metrics(a)
                .lines()
                .any(|l| l.starts_with("rhizome_proxy_connections_denied") && l.contains(&pair))
        })
    };
    rhizome_agent::testkit::wait_until(
        "pod api -> VM db counted as denied by intentions",
        Duration::from_secs(10),
        || denied("shop/api", "shop/db"),
    )
    .await;
    println!("pod web -> VM db: allowed and answered; pod api -> VM db: denied");

    // VM -> pod: billing's upstream reaches the pod web at its pod IP; batch is refused.
    until_answered(
        "VM billing -> pod web",
        "127.0.0.1",
        node_addr(billing_up),
        b"from billing",
    )
    .await;
    assert!(
        send_from("127.0.0.1", node_addr(batch_up), b"from batch")
            .await
            .is_empty(),
        "VM batch -> pod web is denied"
    );
    rhizome_agent::testkit::wait_until(
        "VM batch -> pod web counted as denied by intentions",
        Duration::from_secs(10),
        || denied("shop/batch", "shop/web"),
    )
    .await;
    println!("VM billing -> pod web: allowed and answered; VM batch -> pod web: denied");
    let vm_metrics = proxy_support::metrics(&vm);
    assert!(
        vm_metrics.contains("source=\"shop/web\",destination=\"shop/db\""),
        "db saw the pod's identity: {vm_metrics}"
    );
    k8s.shutdown().await.unwrap();
    vm.shutdown().await.unwrap();
}
