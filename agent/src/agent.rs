//! The running agent: opens the store, binds its listeners, starts its tasks and stops them
//! all on one shutdown signal.

use crate::api;
use crate::catalog::{Catalog, local_instances};
use crate::config::AgentConfig;
use crate::identity::Identity;
use crate::store::{Store, TreeName};
use anyhow::Context as _;
use rhizome_intentions::{Action, Policy, RuleSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// State shared by the agent's tasks and API handlers.
pub struct Shared {
    /// The effective configuration.
    pub config: AgentConfig,
    /// The persistent store.
    pub store: Store,
    /// When the agent started (monotonic), for uptime.
    pub started: Instant,
    /// When the agent started (Unix seconds).
    pub started_unix: u64,
    /// How many times an agent has started on this data_dir (this start included).
    pub boot_count: u64,
    /// Address the HTTP API actually bound (port 0 in config resolves here).
    pub http_addr: SocketAddr,
    /// Prometheus registry behind `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Pods of this node seen by Kubernetes pod discovery (`None`: `kubernetes` disabled).
    pub kube_pods: Option<crate::kube::PodRegistryRx>,
    /// This agent's credentials (trust bundle, intermediate, workload leaves).
    pub identity: Arc<Identity>,
    /// The service catalog; writers `send_replace`, readers `subscribe()`.
    pub catalog: watch::Sender<Arc<Catalog>>,
    /// The intentions in force; replaced only by a rule set that built without errors.
    pub rules: watch::Sender<Arc<RuleSet>>,
    /// Default decision and audit mode for intentions.
    pub policy: Policy,
    /// Accepted signed intention entries, decision counters, load problems.
    pub intentions: Arc<crate::intentions::Intentions>,
    /// Turns true once when the agent shuts down; every task watches it.
    pub shutdown: watch::Receiver<bool>,
    /// The replicated signed state (catalog, certificates, intentions, keyring).
    pub replica: Arc<crate::gossip::replica::Replica>,
    /// Membership, keyring and join/leave.
    pub gossip: Arc<crate::gossip::Gossip>,
}

/// A started agent. Dropping it does not stop it: call [`Agent::shutdown`].
pub struct Agent {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Agent {
    /// Opens the store, binds every listener and starts the tasks. Fails (and leaves nothing
    /// running) if the data_dir is in use or a port cannot be bound.
    pub async fn start(mut config: AgentConfig) -> anyhow::Result<Agent> {
        let store = Store::open(&config.data_dir)?;
        let boot_count = store.increment(TreeName::Meta, b"boot_count", 1)?;
        store.flush()?;
        let http = tokio::net::TcpListener::bind(config.http_addr())
            .await
            .with_context(|| format!("cannot bind the HTTP API on {}", config.http_addr()))?;
        let http_addr = http.local_addr()?;
        let kube = crate::kube::Discovery::connect(&config).await?;
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let identity = Arc::new(Identity::obtain(&config, &store).await?);
        let signer = match (&config.ca.root_dir, config.ca.signer) {
            (Some(dir), true) => Some(Arc::new(crate::join::Signer::new(
                crate::certfiles::load_root(dir)?,
                identity.clone(),
                store.clone(),
                rhizome_ca::DEFAULT_AGENT_TTL,
            ))),
            _ => None,
        };
        let mut tcp_services = crate::tcp_port::TcpServices::default();
        if let Some(signer) = &signer {
            tcp_services.register(
                crate::join::JOIN_ALPN,
                Arc::new(crate::join::JoinService(signer.clone())),
            );
        }
        // UDP (QUIC) and TCP (TLS transport, joins) on one port number; port 0 (tests)
        // resolves here, before anything advertises the data address.
        let data = crate::proxy::DataSockets::bind(&config).await?;
        config.ports.data = data.port();
        let policy = Policy {
            default: match config.default_intention_policy {
                crate::config::Policy::Allow => Action::Allow,
                crate::config::Policy::Deny => Action::Deny,
            },
            audit: config.intention_mode == crate::config::IntentionMode::Audit,
        };
        let (replica, outgoing) = crate::gossip::replica::Replica::open(
            store.clone(),
            identity.clone(),
            &config.node_name,
            config.dev,
        )?;
        let (gossip, gossip_tasks) =
            crate::gossip::bind(&config, &store, &replica, outgoing).await?;
        // Port 0 resolves here too: the API and the catalog show the bound gossip port.
        config.ports.gossip = gossip.addr().port();
        let (catalog, _) = watch::channel(Arc::new(Catalog::new(local_instances(&config))));
        let (rules, _) = watch::channel(Arc::new(RuleSet::empty()));
        let (stop, stop_rx) = watch::channel(false);
        let metrics = crate::metrics::Metrics::new();
        let intentions = Arc::new(crate::intentions::Intentions::open(
            &store,
            replica.clone(),
            &metrics,
        )?);
        let shared = Arc::new(Shared {
            config,
            store,
            started: Instant::now(),
            started_unix,
            boot_count,
            http_addr,
            metrics,
            kube_pods: kube.as_ref().map(crate::kube::Discovery::subscribe),
            identity,
            catalog,
            rules,
            policy,
            intentions,
            shutdown: stop_rx.clone(),
            replica,
            gossip,
        });
        let mut tasks = JoinSet::new();
        crate::intentions::start(&shared, &mut tasks).await;
        tasks.spawn(api::serve(http, shared.clone(), stop_rx.clone()));
        crate::gossip::spawn(gossip_tasks, &shared, &mut tasks);
        let expiry_watch = crate::expiry::ExpiryWatch::new(&shared.metrics);
        tasks.spawn(crate::renewal::run(
            shared.clone(),
            signer.clone(),
            expiry_watch,
        ));
        crate::proxy::start(&shared, data.udp, &mut tasks, &mut tcp_services).await?;
        tasks.spawn(crate::tcp_port::serve(
            data.tcp,
            tcp_services,
            stop_rx.clone(),
        ));
        if let Some(kube) = kube {
            let metrics = crate::kube::KubeMetrics::register(&shared.metrics);
            tasks.spawn(kube.run(metrics, stop_rx.clone()));
            tasks.spawn(crate::kube::publish::publisher(shared.clone()));
        }
        tracing::info!(
            node = %shared.config.node_name,
            http = %http_addr,
            data_dir = %shared.config.data_dir.display(),
            boot = boot_count,
            services = shared.config.services.len(),
            "agent started"
        );
        Ok(Agent {
            shared,
            stop,
            tasks,
        })
    }

    /// Shared state (for tests and the CLI).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    /// Runs until a task fails or `signal` resolves, then shuts down.
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(signal);
        let outcome = tokio::select! {
            () = &mut signal => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok(Ok(())) => Err(anyhow::anyhow!("an agent task stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("an agent task panicked: {e}")),
            },
        };
        self.shutdown().await?;
        outcome
    }

    /// Stops every task at once, as `kill -9` would: no graceful leave, no drain (for tests
    /// of failure detection). The store is still flushed.
    pub async fn abort(mut self) -> anyhow::Result<()> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.shared.store.flush()?;
        Ok(())
    }

    /// Signals every task to stop, waits for them, and flushes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!(node = %self.shared.config.node_name, "agent stopping");
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.shared.config.proxy.drain_timeout.0;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Ok(Err(e)))) => tracing::warn!(error = %e, "task ended with an error"),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        left = self.tasks.len(),
                        "drain timeout: aborting remaining tasks"
                    );
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.shared.store.flush()?;
        tracing::info!(node = %self.shared.config.node_name, "agent stopped, store flushed");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
