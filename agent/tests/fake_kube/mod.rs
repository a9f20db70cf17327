//! A fake Kubernetes API server for pod discovery tests: a real HTTP server on 127.0.0.1
//! port 0 that serves `GET /api/v1/pods` lists and `watch=true` streams like the real one:
//! resource versions, a server-side `spec.nodeName` field selector, BOOKMARK events, an
//! ERROR event with code 410 for expired resource versions, and dropped connections.
//!
//! The test drives it: [`FakeApi::apply`] / [`FakeApi::delete`] change pods (bumping the
//! resource version and notifying live watches), [`FakeApi::expire`] compacts history so
//! every outstanding watch gets 410 Gone, [`FakeApi::drop_watches`] cuts live connections
//! and [`FakeApi::end_watches`] ends them cleanly.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// What live watch streams are told.
#[derive(Clone, Debug)]
enum Live {
    /// A pod changed: (resource version, event type, pod JSON).
    Event(u64, &'static str, Value),
    /// A bookmark at this resource version.
    Bookmark(u64),
    /// Send ERROR 410 and end the stream.
    Gone,
    /// Abort the connection mid-stream.
    Drop,
    /// End the stream cleanly (as the server does when `timeoutSeconds` runs out).
    End,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    pods: BTreeMap<String, Value>,
    /// Events still available to watches (rv, type, pod); compacted by `expire`.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches starting from a resource version below this get 410 Gone.
    floor: u64,
    requests: Vec<String>,
    live_watches: usize,
    /// Refuse expired watches with HTTP 410 instead of 200 and an ERROR event.
    gone_as_http: bool,
}

/// The fake API server; stops when dropped.
pub struct FakeApi {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Live>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Live>,
}

impl FakeApi {
    /// Starts the server with these pods already present.
    pub async fn start(pods: Vec<Value>) -> FakeApi {
        let (live, _) = broadcast::channel(1024);
        let inner = Arc::new(Mutex::new(Inner {
            rv: 100,
            floor: 0,
            ..Inner::default()
        }));
        let fake_ctx = Ctx {
            inner: inner.clone(),
            live: live.clone(),
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods_endpoint))
            .with_state(fake_ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let api = FakeApi {
            addr,
            inner,
            live,
            task,
        };
        for p in pods {
            api.apply(p);
        }
        api
    }

    /// The URL to give `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Adds or modifies a pod (keyed by name); returns its new resource version.
    pub fn apply(&self, mut pod: Value) -> u64 {
        let mut g = self.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if g.pods.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        g.pods.insert(name, pod.clone());
        g.history.push((rv, kind, pod.clone()));
        let _ = self.live.send(Live::Event(rv, kind, pod));
        rv
    }

    /// Deletes a pod by name.
    pub fn delete(&self, name: &str) {
        let mut g = self.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        let mut pod = g.pods.remove(name).unwrap();
        pod["metadata"]["resourceVersion"] = json!(rv.to_string());
        g.history.push((rv, "DELETED", pod.clone()));
        let _ = self.live.send(Live::Event(rv, "DELETED", pod));
    }

    /// Changes pods while no watch can see it (history compacted): `changes` runs, then
    /// every resource version seen so far is expired, live watches get ERROR 410, and new
    /// watches from old versions get it too. Only a relist shows the new state.
    pub fn expire(&self, changes: impl FnOnce(&mut BTreeMap<String, Value>)) {
        self.expire_silently(changes);
        let _ = self.live.send(Live::Gone);
    }

    /// Like [`FakeApi::expire`] but live watches are not told: only the next watch request
    /// (after [`FakeApi::end_watches`]) is refused.
    pub fn expire_silently(&self, changes: impl FnOnce(&mut BTreeMap<String, Value>)) {
        let mut g = self.inner.lock().unwrap();
        changes(&mut g.pods);
        g.rv += 1;
        g.floor = g.rv;
        g.history.clear();
    }

    /// Refuse watches from expired versions with an HTTP 410 response (some servers and
    /// proxies do) rather than a 200 stream holding an ERROR event.
    pub fn refuse_expired_with_http_410(&self) {
        self.inner.lock().unwrap().gone_as_http = true;
    }

    /// Bumps the resource version (as a change elsewhere in the cluster would) and sends a
    /// BOOKMARK with it; returns the version.
    pub fn bookmark(&self) -> u64 {
        let mut g = self.inner.lock().unwrap();
        g.rv += 1;
        let rv = g.rv;
        let _ = self.live.send(Live::Bookmark(rv));
        rv
    }

    /// Aborts every live watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _guard = self.inner.lock().unwrap();
        let _ = self.live.send(Live::Drop);
    }

    /// Ends every live watch cleanly, as a watch timeout does.
    pub fn end_watches(&self) {
        let _guard = self.inner.lock().unwrap();
        let _ = self.live.send(Live::End);
    }

    /// Every request seen so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// How many list requests (not watches) were served.
    pub fn lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
    }

    /// Number of watch streams open right now.
    pub fn live_watches(&self) -> usize {
        self.inner.lock().unwrap().live_watches
    }

    /// Waits (bounded) until `n` watch streams are open.
    pub async fn wait_for_watches(&self, n: usize) {
        for _ in 0..1000 {
            if self.live_watches() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no live watch after 10s; requests: {:?}", self.requests());
    }
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    let q = q.unwrap_or_default();
    url_pairs(q).collect()
}

/// Minimal `application/x-www-form-urlencoded` decoding (enough for kube's queries).
fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The node a `spec.nodeName=X` field selector asks for (the only selector supported).
fn node_filter(q: &HashMap<String, String>) -> Option<String> {
    q.get("fieldSelector")
        .map(|f| f.strip_prefix("spec.nodeName=").expect(f).to_string())
}

fn on_node(pod: &Value, node: Option<&String>) -> bool {
    node.is_none_or(|n| pod["spec"]["nodeName"].as_str() == Some(n))
}

async fn pods_endpoint(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> Response {
    let q = query_map(raw.as_deref());
    ctx.inner.lock().unwrap().requests.push(format!(
        "/api/v1/pods?{}",
        raw.as_deref().unwrap_or_default()
    ));
    let node = node_filter(&q);
    if q.get("watch").map(String::as_str) == Some("true") {
        watch(ctx, node, &q)
    } else {
        list(&ctx, node.as_ref())
    }
}

fn list(ctx: &Ctx, node: Option<&String>) -> Response {
    let g = ctx.inner.lock().unwrap();
    // Items of a real list carry no kind/apiVersion.
    let items: Vec<Value> = g
        .pods
        .values()
        .filter(|p| on_node(p, node))
        .map(|p| {
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            p
        })
        .collect();
    axum::Json(json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": { "resourceVersion": g.rv.to_string() },
        "items": items,
    }))
    .into_response()
}

fn line(v: &Value) -> Result<bytes::Bytes, std::io::Error> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(bytes::Bytes::from(s))
}

fn gone(from: u64, floor: u64) -> Value {
    json!({ "type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from} ({floor})"),
        "reason": "Expired", "code": 410 } })
}

/// Decrements the live-watch count when the stream is dropped.
struct WatchGuard(Arc<Mutex<Inner>>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap().live_watches -= 1;
    }
}

fn watch(ctx: Ctx, node: Option<String>, q: &HashMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let mut g = ctx.inner.lock().unwrap();
    if from < g.floor {
        if g.gone_as_http {
            let status = gone(from, g.floor)["object"].clone();
            return (axum::http::StatusCode::GONE, axum::Json(status)).into_response();
        }
        let body = gone(from, g.floor).to_string() + "\n";
        return Body::from(body).into_response();
    }
    let backlog: Vec<Value> = g
        .history
        .iter()
        .filter(|(rv, _, p)| *rv > from && on_node(p, node.as_ref()))
        .map(|(_, kind, p)| json!({ "type": kind, "object": p }))
        .collect();
    let rx = ctx.live.subscribe();
    g.live_watches += 1;
    let guard = WatchGuard(ctx.inner.clone());
    drop(g);

    let live = futures::stream::unfold((rx, false), move |(mut rx, done)| {
        let node = node.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let item = match rx.recv().await {
                    Err(_) => return None,
                    Ok(Live::Event(_, kind, pod)) if on_node(&pod, node.as_ref()) => {
                        line(&json!({ "type": kind, "object": pod }))
                    }
                    Ok(Live::Event(..)) => continue,
                    Ok(Live::Bookmark(_)) if !bookmarks => continue,
                    Ok(Live::Bookmark(rv)) => line(&json!({ "type": "BOOKMARK", "object": {
                        "kind": "Pod", "apiVersion": "v1",
                        "metadata": { "resourceVersion": rv.to_string() } } })),
                    Ok(Live::Gone) => return Some((line(&gone(from, 0)), (rx, true))),
                    Ok(Live::End) => return None,
                    Ok(Live::Drop) => {
                        return Some((Err(std::io::Error::other("dropped")), (rx, true)));
                    }
                };
                return Some((item, (rx, false)));
            }
        }
    });
    let stream = futures::stream::iter(backlog.iter().map(line).collect::<Vec<_>>())
        .chain(live)
        .map(move |item| {
            let _keep = &guard;
            item
        });
    Body::from_stream(stream).into_response()
}

/// A pod of `node` annotated as service `svc` on port 8080 with `upstreams`, Running, and
/// Ready or not, at `ip`.
pub fn pod(name: &str, node: &str, svc: Option<&str>, ready: bool, ip: Option<&str>) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(svc) = svc {
        annotations.insert("rhizome.io/service".into(), json!(svc));
        annotations.insert("rhizome.io/port".into(), json!("8080"));
        annotations.insert("rhizome.io/upstreams".into(), json!("db:9191"));
    }
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "annotations": annotations,
        },
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "app:1" }] },
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
        },
    })
}
