//! The running agent, and the only module that names every subsystem: it opens the store,
//! obtains the credentials, binds every listener, builds each subsystem's inputs (giving
//! each write end to its one owner) and spawns the tasks, then stops them all on one
//! [`crate::runtime::Shutdown`].

use crate::ca::identity::Identity;
use crate::ca::{expiry, join, renewal};
use crate::catalog::{self, Catalog, local_instances};
use crate::config::{AgentConfig, ConfigReader, ConfigSource};
use crate::gossip::Gossip;
use crate::gossip::replica::Replica;
use crate::intentions::{Authorizer, Intentions};
use crate::kube::PodRegistryRx;
use crate::metrics::Metrics;
use crate::runtime::ShutdownTrigger;
use crate::store::{Store, TreeName};
use crate::{api, dataport, gossip, intentions, kube, proxy, reload};
use anyhow::Context as _;
use rhizome_intentions::{Action, Policy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Handles into a running agent, for tests and benchmarks: no task is given this bag (each
/// gets its own inputs). The catalog and the rules are here only as read ends (their
/// writers are owned by the catalog builder and by [`Intentions`]); the other handles
/// change state only through their own checked methods (signed submissions, commands).
pub struct Handles {
    /// The configuration at start (with the ports bound when 0 was asked).
    pub config: Arc<AgentConfig>,
    /// The configuration in force (a reload changes services, upstreams, checks,
    /// `intentions_dir` and log level).
    pub live: ConfigReader,
    /// Reloads the configuration (what SIGHUP and `PUT /v1/agent/reload` call).
    pub reloader: Arc<reload::Reloader>,
    /// The persistent store.
    pub store: Store,
    /// Prometheus registry behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Pods of this node seen by Kubernetes pod discovery (`None`: `kubernetes` disabled).
    pub kube_pods: Option<PodRegistryRx>,
    /// This agent's credentials (trust bundle, intermediate, workload leaves).
    pub identity: Arc<Identity>,
    /// The service catalog (written only by the gossip catalog builder).
    pub catalog: catalog::CatalogReader,
    /// The per-connection decision over the intentions in force.
    pub authorizer: Authorizer,
    /// Accepted signed intention entries, submission, load problems.
    pub intentions: Arc<Intentions>,
    /// The replicated signed state (catalog, certificates, intentions, keyring).
    pub replica: Arc<Replica>,
    /// Membership, keyring and join/leave.
    pub gossip: Arc<Gossip>,
    /// What certificate renewal works on (to renew by hand in tests).
    pub renewal: renewal::Inputs,
    /// Address the HTTP API actually bound.
    pub http_addr: SocketAddr,
}

/// A started agent. Dropping it does not stop it: call [`Agent::shutdown`].
pub struct Agent {
    handles: Handles,
    stop: ShutdownTrigger,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// The intentions policy of the config (`config::Policy` is the config's spelling).
fn policy(config: &AgentConfig) -> Policy {
    Policy {
        default: match config.default_intention_policy {
            crate::config::Policy::Allow => Action::Allow,
            crate::config::Policy::Deny => Action::Deny,
        },
        audit: config.intention_mode == crate::config::IntentionMode::Audit,
    }
}

impl Agent {
    /// Loads the configuration from `source` and starts the agent on it ([`Agent::start`]);
    /// a reload reads `source` again.
    pub async fn start_from(source: ConfigSource) -> anyhow::Result<Agent> {
        let reader = source.clone();
        let config = tokio::task::spawn_blocking(move || reader.load())
            .await?
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Self::start_with(config, Some(source)).await
    }

    /// Opens the store, binds every listener and starts the tasks. Fails (and leaves nothing
    /// running) if the data_dir is in use or a port cannot be bound. With no source to read
    /// again, every reload is refused (see [`Agent::start_from`]).
    pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        Self::start_with(config, None).await
    }

    /// [`Agent::start`] on `config`, already loaded from `source` (which a reload reads
    /// again; `None`: every reload is refused).
    pub async fn start_with(
        mut config: AgentConfig,
        source: Option<ConfigSource>,
    ) -> anyhow::Result<Agent> {
        let loaded = config.clone();
        crate::accept::raise_open_files_limit();
        let store = Store::open(&config.data_dir)?;
        let boot_count = store.increment(TreeName::Meta, b"boot_count", 1)?;
        store.flush()?;
        // Services registered through the API before a restart join the files' ones before
        // anything reads the services (leaves, catalog, upstream listeners).
        let registered = reload::register::load(&store, &mut config)?;
        let http = tokio::net::TcpListener::bind(config.http_addr())
            .await
            .with_context(|| format!("cannot bind the HTTP API on {}", config.http_addr()))?;
        let http_addr = http.local_addr()?;
        let kube = kube::Discovery::connect(&config).await?;
        let started_unix = crate::runtime::now_unix_ms() / 1000;
        let identity = Arc::new(Identity::obtain(&config, &store).await?);
        let signer = match (&config.ca.root_dir, config.ca.signer) {
            (Some(dir), true) => Some(Arc::new(join::Signer::new(
                crate::ca::files::load_root(dir)?,
                identity.clone(),
                store.clone(),
                rhizome_ca::DEFAULT_AGENT_TTL,
            ))),
            _ => None,
        };
        let mut tcp_services = dataport::TcpServices::default();
        if let Some(signer) = &signer {
            tcp_services.register(join::JOIN_ALPN, Arc::new(join::JoinService(signer.clone())));
        }
        // UDP (QUIC) and TCP (TLS transport, joins) on one port number; port 0 (tests)
        // resolves here, before anything advertises the data address.
        let data = proxy::DataSockets::bind(&config).await?;
        config.ports.data = data.port();
        let (replica, outgoing) = Replica::open(
            store.clone(),
            identity.clone(),
            &config.node_name,
            config.dev,
        )?;
        let (gossip, gossip_tasks) = gossip::bind(&config, &store, &replica, outgoing).await?;
        // Port 0 resolves here too: the API and the catalog show the bound gossip port.
        config.ports.gossip = gossip.addr().port();
        let config = Arc::new(config);
        let (config_writer, live) = crate::config::live(config.clone());
        let (catalog_writer, catalog) = catalog::channel(Catalog::new(local_instances(&config)));
        let (stop, shutdown) = crate::runtime::shutdown();
        let metrics = Arc::new(Metrics::new());
        metrics.register(
            "trust_refusals",
            "Chains, signatures and entries refused on trust grounds, by point (proxy_inbound, \
             proxy_outbound, gossip, signer) and reason (revoked, expired, unknown_issuer, ...)",
            identity.refusals().family(),
        );
        let intentions = Arc::new(Intentions::open(
            &store,
            replica.clone(),
            identity.clone(),
            config.dev,
            policy(&config),
            &metrics,
        )?);
        let authorizer = intentions.authorizer().clone();
        let kube_pods = kube.as_ref().map(kube::Discovery::subscribe);
        let renewal_inputs = renewal::Inputs {
            identity: identity.clone(),
            store: store.clone(),
            config: config.clone(),
        };
        let mut tasks = JoinSet::new();
        let dir_watch = intentions::start(
            intentions::Inputs {
                intentions: intentions.clone(),
                dir: config.intentions_dir.clone(),
                operator_dir: config.operator_dir.clone(),
                shutdown: shutdown.clone(),
            },
            &mut tasks,
        )
        .await;
        gossip::spawn(
            gossip_tasks,
            gossip::Inputs {
                config: config.clone(),
                live: live.clone(),
                gossip: gossip.clone(),
                replica: replica.clone(),
                catalog: catalog_writer,
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            },
            &mut tasks,
        );
        tasks.spawn(renewal::run(
            renewal_inputs.clone(),
            signer,
            expiry::ExpiryWatch::new(&metrics),
            shutdown.clone(),
        ));
        let upstreams = proxy::start(
            proxy::Inputs {
                config: config.clone(),
                live: live.clone(),
                identity: identity.clone(),
                catalog: catalog.clone(),
                authz: authorizer.clone(),
                pods: kube_pods.clone(),
                members: gossip.subscribe_members(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            },
            data.udp,
            &mut tasks,
            &mut tcp_services,
        )
        .await?;
        let reloader = Arc::new(reload::Reloader::new(reload::Inputs {
            source,
            loaded,
            writer: config_writer,
            upstreams,
            identity: identity.clone(),
            intentions: intentions.clone(),
            dir: dir_watch,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            registered,
        }));
        let traffic = crate::ui::state(
            config.node_name.clone(),
            metrics.clone(),
            replica.clone(),
            identity.clone(),
        );
        tasks.spawn(crate::ui::traffic::publisher(
            traffic.clone(),
            shutdown.clone(),
        ));
        let router = api::router(
            api::AgentInfo {
                config: config.clone(),
                http_addr,
                started: Instant::now(),
                started_unix,
                boot_count,
                metrics: metrics.clone(),
                live: live.clone(),
            },
            [
                crate::ui::routes(traffic.clone()),
                reload::api::routes(reloader.clone()),
                expiry::routes(identity.clone()),
                kube::api::routes(kube::api::ApiState {
                    pods: kube_pods.clone(),
                    node_name: kube::settings(&config).node_name,
                }),
                intentions::api::routes(intentions::api::ApiState {
                    intentions: intentions.clone(),
                    catalog: catalog.clone(),
                }),
                gossip::api::routes(gossip::api::ApiState {
                    gossip: gossip.clone(),
                    catalog: catalog.clone(),
                    replica: replica.clone(),
                    dev: config.dev,
                }),
            ],
        );
        tasks.spawn(api::serve(
            http,
            router,
            metrics.accept_errors.clone(),
            metrics.refusals.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(dataport::serve(
            data.tcp,
            tcp_services,
            metrics.accept_errors.clone(),
            metrics.refusals.clone(),
            shutdown.clone(),
        ));
        if let Some(kube) = kube {
            let kube_metrics = kube::KubeMetrics::register(&metrics);
            tasks.spawn(kube.run(kube_metrics, shutdown.clone()));
            if let Some(pods) = kube_pods.clone() {
                tasks.spawn(kube::publish::publisher(kube::publish::Inputs {
                    agent_addr: SocketAddr::new(config.advertise_addr, config.ports.data),
                    replica: replica.clone(),
                    identity: identity.clone(),
                    pods,
                    shutdown: shutdown.clone(),
                }));
            }
        }
        tracing::info!(
            node = %config.node_name,
            http = %http_addr,
            data_dir = %config.data_dir.display(),
            boot = boot_count,
            services = config.services.len(),
            "agent started"
        );
        Ok(Agent {
            handles: Handles {
                config,
                live,
                reloader,
                store,
                metrics,
                kube_pods,
                identity,
                catalog,
                authorizer,
                intentions,
                replica,
                gossip,
                renewal: renewal_inputs,
                http_addr,
            },
            stop,
            tasks,
        })
    }

    /// Read handles into this agent (for tests, benchmarks and the CLI).
    pub fn handles(&self) -> &Handles {
        &self.handles
    }

    /// Address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.handles.http_addr
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
        self.handles.store.flush()?;
        Ok(())
    }

    /// Signals every task to stop, waits for them, and flushes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        tracing::info!(node = %self.handles.config.node_name, "agent stopping");
        self.stop.trigger();
        let deadline = tokio::time::Instant::now() + self.handles.config.proxy.drain_timeout.0;
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
        self.handles.store.flush()?;
        tracing::info!(node = %self.handles.config.node_name, "agent stopped, store flushed");
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
