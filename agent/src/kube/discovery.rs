//! The pod discovery task: a `kube` watcher on this node's pods (field selector
//! `spec.nodeName`, default backoff) feeding a [`PodTable`], whose snapshots are published
//! on a `watch` channel.

use super::registry::{PodRegistry, Settings};
use super::table::{Change, PodTable};
use crate::config::AgentConfig;
use crate::metrics::Metrics;
use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use tokio::sync::watch;

/// The receiving end consumers hold: the latest [`PodRegistry`] snapshot.
pub type PodRegistryRx = watch::Receiver<Arc<PodRegistry>>;

/// Counters of pod discovery, registered under `rhizome_kube_*`.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    /// Watcher events handled.
    pub events: Counter,
    /// Watch, list and connection errors (each followed by a backoff and a retry).
    pub watch_errors: Counter,
    /// Pods skipped because their annotations turned bad.
    pub annotation_errors: Counter,
    /// Pods currently registered.
    pub registered: Gauge,
}

impl KubeMetrics {
    /// Creates the counters and registers them in the agent's registry.
    pub fn register(metrics: &Metrics) -> KubeMetrics {
        let m = KubeMetrics::default();
        metrics.register(
            "kube_events",
            "Pod watcher events handled",
            m.events.clone(),
        );
        metrics.register(
            "kube_watch_errors",
            "Pod list/watch errors (retried with backoff)",
            m.watch_errors.clone(),
        );
        metrics.register(
            "kube_annotation_errors",
            "Pods skipped because their rhizome.io annotations are invalid",
            m.annotation_errors.clone(),
        );
        metrics.register(
            "kube_pods_registered",
            "Pods of this node registered as service instances",
            m.registered.clone(),
        );
        m
    }
}

/// The mapping settings of an agent: `kubernetes.node_name` (or `node_name`), and
/// `kubernetes.upstream_bind_addr` (or `advertise_addr`) for pod upstream listeners.
pub fn settings(config: &AgentConfig) -> Settings {
    Settings {
        node_name: config
            .kubernetes
            .node_name
            .clone()
            .unwrap_or_else(|| config.node_name.clone()),
        upstream_bind_addr: config
            .kubernetes
            .upstream_bind_addr
            .unwrap_or(config.advertise_addr),
    }
}

/// A client from `kubernetes.kubeconfig` if set, else the in-cluster service account, else
/// `$KUBECONFIG` / `~/.kube/config`. The error says what was tried.
pub async fn client(config: &AgentConfig) -> anyhow::Result<kube::Client> {
    if let Some(path) = &config.kubernetes.kubeconfig {
        let file = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?;
        let options = kube::config::KubeConfigOptions::default();
        let cfg = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .with_context(|| format!("kubernetes.kubeconfig {}", path.display()))?;
        return kube::Client::try_from(cfg).context("kubernetes client");
    }
    kube::Client::try_default().await.context(
        "kubernetes.enabled = true but no Kubernetes API access was found: run the agent in a \
         pod with a service account (see examples/kubernetes/), or set $KUBECONFIG or \
         kubernetes.kubeconfig",
    )
}

/// The raw watcher events of the pods on `node`, with the default backoff after errors.
pub fn pod_events(
    client: kube::Client,
    node: &str,
) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static {
    let api = kube::Api::<Pod>::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher::watcher(api, config).default_backoff()
}

/// Pod discovery, ready to run: the client, the mapping settings and the channel.
pub struct Discovery {
    client: kube::Client,
    settings: Settings,
    tx: watch::Sender<Arc<PodRegistry>>,
}

impl Discovery {
    /// Discovery for this agent, or `None` when `kubernetes.enabled` is false. Fails when
    /// no Kubernetes API access is configured.
    pub async fn connect(config: &AgentConfig) -> anyhow::Result<Option<Discovery>> {
        if !config.kubernetes.enabled {
            return Ok(None);
        }
        Ok(Some(Discovery::new(
            client(config).await?,
            settings(config),
        )))
    }

    /// Discovery with an existing client (tests point it at a fake API server).
    pub fn new(client: kube::Client, settings: Settings) -> Discovery {
        let (tx, _) = watch::channel(Arc::new(PodRegistry::default()));
        Discovery {
            client,
            settings,
            tx,
        }
    }

    /// A receiver of the registry snapshots (an empty, unsynced registry until the first
    /// list arrives).
    pub fn subscribe(&self) -> PodRegistryRx {
        self.tx.subscribe()
    }

    /// Watches and publishes until `stop` turns true (or its sender is dropped).
    pub async fn run(
        self,
        metrics: KubeMetrics,
        stop: crate::runtime::Shutdown,
    ) -> anyhow::Result<()> {
        tracing::info!(k8s.node = %self.settings.node_name, "watching the pods of this node");
        let mut table = PodTable::new(self.settings.clone());
        loop {
            let events = pod_events(self.client.clone(), &self.settings.node_name);
            match drive(events, &mut table, &self.tx, &metrics, stop.clone()).await? {
                Ended::Stopped => return Ok(()),
                Ended::Expired => {
                    // A fresh watcher starts with a relist; the table keeps publishing the
                    // current set until that list is complete.
                    tracing::info!("pod watch refused with 410 Gone: restarting with a relist");
                    tokio::select! {
                        () = stop.wait() => return Ok(()),
                        () = tokio::time::sleep(RESTART_DELAY) => {}
                    }
                }
            }
        }
    }
}

/// Pause before a watcher is rebuilt after a refused watch, so a server that keeps
/// refusing is not hammered with lists.
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why [`drive`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stop signal arrived.
    Stopped,
    /// The server refused to start a watch with HTTP 410 Gone. The `kube` watcher would
    /// retry the same expired resource version forever; the caller builds a new watcher,
    /// which relists.
    Expired,
}

/// Drives `table` with `events`, publishing a snapshot on `tx` after each change. Errors
/// of the stream are logged and counted; the stream itself retries, except after a watch
/// refused with HTTP 410, where this returns [`Ended::Expired`].
pub async fn drive<S>(
    events: S,
    table: &mut PodTable,
    tx: &watch::Sender<Arc<PodRegistry>>,
    metrics: &KubeMetrics,
    stop: crate::runtime::Shutdown,
) -> anyhow::Result<Ended>
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            () = stop.wait() => return Ok(Ended::Stopped),
            next = events.next() => next,
        };
        match next {
            None => anyhow::bail!("the pod watcher stream ended"),
            Some(Err(e)) => {
                metrics.watch_errors.inc();
                log_watch_error(&e);
                if matches!(&e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
                {
                    return Ok(Ended::Expired);
                }
            }
            Some(Ok(event)) => apply(table, event, tx, metrics),
        }
    }
}

/// One event into the table; publishes when it changed something.
fn apply(
    table: &mut PodTable,
    event: Event<Pod>,
    tx: &watch::Sender<Arc<PodRegistry>>,
    metrics: &KubeMetrics,
) {
    metrics.events.inc();
    let change = table.handle(event);
    for bad in table.take_bad() {
        metrics.annotation_errors.inc();
        tracing::warn!(k8s.pod = %bad.pod, reason = %bad.reason, "pod skipped");
    }
    if change == Change::Changed {
        let snapshot = table.snapshot();
        let registered = snapshot.services().count();
        metrics
            .registered
            .set(i64::try_from(registered).unwrap_or(i64::MAX));
        tracing::debug!(
            registered,
            generation = snapshot.generation(),
            "pod registry updated"
        );
        tx.send_replace(Arc::new(snapshot));
    }
}

fn log_watch_error(e: &watcher::Error) {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match status {
        Some(403) => tracing::error!(error = %e,
            "pod watch forbidden: the agent's ServiceAccount needs get/list/watch on pods"),
        Some(410) => tracing::info!(error = %e, "pod watch expired (410 Gone): relisting"),
        _ => tracing::warn!(error = %e, "pod watch error: retrying with backoff"),
    }
}
