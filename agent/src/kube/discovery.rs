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
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let events = pod_events(self.client, &self.settings.node_name);
        tracing::info!(k8s.node = %self.settings.node_name, "watching the pods of this node");
        drive(events, PodTable::new(self.settings), self.tx, metrics, stop).await
    }
}

/// Drives `table` with `events`, publishing a snapshot on `tx` after each change. Errors
/// of the stream are logged and counted; the stream itself retries.
pub async fn drive<S>(
    events: S,
    mut table: PodTable,
    tx: watch::Sender<Arc<PodRegistry>>,
    metrics: KubeMetrics,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            next = events.next() => next,
        };
        match next {
            None => anyhow::bail!("the pod watcher stream ended"),
            Some(Err(e)) => {
                metrics.watch_errors.inc();
                log_watch_error(&e);
            }
            Some(Ok(event)) => {
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
        }
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
