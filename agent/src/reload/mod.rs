//! Reloading the configuration while the agent runs: on SIGHUP, `rhizome reload` or
//! `PUT /v1/agent/reload`, the config source is read again and the difference applied.
//!
//! | applied live | refused (needs a restart) |
//! |---|---|
//! | `service` blocks: catalog publication, checks, upstream listeners | `node_name`, `data_dir` |
//! | `intentions_dir`, `operator_dir` | `bind_addr`, `advertise_addr`, `client_addr`, `ports` |
//! | `log_level` (unless `--log-level` pinned it) | `encrypt`, `ca`, `gossip`, `proxy`, `transport`, `kubernetes`, `retry_join`, intention policy and mode |
//!
//! All or nothing: a configuration that does not load (`invalid`: the file:line:column
//! is in the answer and the log), that touches a restart-only setting (`refused`: the
//! settings are named), whose new upstream cannot be bound or whose new service cannot get
//! a certificate (`invalid`) changes nothing,
//! and the agent keeps running on the configuration in force. A refusal does not apply
//! the rest either: the files were edited as a whole, and half of an edit (a service moved
//! together with the port it relied on) is a state nobody wrote.
//!
//! [`Reloader`] owns the configuration's only write end; the reload steps run under one
//! lock, so two reloads never interleave. Services registered through the API
//! ([`register`]) are put in force by the same step and under the same lock: the services
//! in force are always the files' followed by the registered ones.

pub mod api;
pub mod plan;
pub mod register;

use crate::api::types::{RegisterAnswer, ReloadAnswer, ReloadResult};
use crate::ca::identity::Identity;
use crate::config::definition::{ServiceDefinition, check_all};
use crate::config::{AgentConfig, ConfigSource, ConfigWriter, Service};
use crate::intentions::{DirWatch, Intentions};
use crate::metrics::Metrics;
use crate::proxy::upstreams::Upstreams;
use crate::runtime::Shutdown;
use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use register::RegisterError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label of `rhizome_config_reloads_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// What a reload works on (given by `Agent::start`).
pub struct Inputs {
    /// Where the configuration is read again (`None`: the agent was given a value, there
    /// is nothing to re-read and every reload is refused).
    pub source: Option<ConfigSource>,
    /// The configuration as loaded from the source at start (ports 0 not yet resolved):
    /// what restart-only settings are compared with.
    pub loaded: AgentConfig,
    /// The only write end of the configuration in force.
    pub writer: ConfigWriter,
    /// The config services' upstream listeners.
    pub upstreams: Arc<Upstreams>,
    /// Issues the leaves of services added by a reload.
    pub identity: Arc<Identity>,
    /// Where `intentions_dir` files are submitted.
    pub intentions: Arc<Intentions>,
    /// The running `intentions_dir` watcher.
    pub dir: DirWatch,
    /// The agent's shutdown (a new `intentions_dir` watcher ends with it).
    pub shutdown: Shutdown,
    /// Where `rhizome_config_reloads_total` is registered.
    pub metrics: Arc<Metrics>,
    /// Where API registrations are kept.
    pub store: Store,
    /// The API registrations in force at start ([`register::load`]), by id.
    pub registered: BTreeMap<String, Service>,
}

struct State {
    /// The configuration as loaded from the files (no API registration in it).
    loaded: AgentConfig,
    dir: Option<DirWatch>,
    /// Services registered through the API, by id (in force after the files' services).
    registered: BTreeMap<String, Service>,
}

/// Applies reloads, one at a time.
pub struct Reloader {
    source: Option<ConfigSource>,
    writer: ConfigWriter,
    upstreams: Arc<Upstreams>,
    identity: Arc<Identity>,
    intentions: Arc<Intentions>,
    shutdown: Shutdown,
    store: Store,
    state: tokio::sync::Mutex<State>,
    counts: Family<ResultLabel, Counter>,
}

impl Reloader {
    /// A reloader over `inputs`; registers `rhizome_config_reloads_total{result}` (each
    /// result at 0).
    pub fn new(inputs: Inputs) -> Reloader {
        let counts = Family::<ResultLabel, Counter>::default();
        for r in [
            ReloadResult::Ok,
            ReloadResult::Invalid,
            ReloadResult::Refused,
        ] {
            let _ = counts.get_or_create(&ResultLabel { result: r.as_str() });
        }
        inputs.metrics.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, rhizome reload, PUT /v1/agent/reload) by result",
            counts.clone(),
        );
        Reloader {
            source: inputs.source,
            writer: inputs.writer,
            upstreams: inputs.upstreams,
            identity: inputs.identity,
            intentions: inputs.intentions,
            shutdown: inputs.shutdown,
            store: inputs.store,
            state: tokio::sync::Mutex::new(State {
                loaded: inputs.loaded,
                dir: Some(inputs.dir),
                registered: inputs.registered,
            }),
            counts,
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<AgentConfig> {
        self.writer.current()
    }

    /// Reads the source again and applies the difference (see the module doc); the answer
    /// says what changed or why nothing did. Also logged and counted.
    pub async fn reload(&self) -> ReloadAnswer {
        let answer = self.try_reload().await;
        self.counts
            .get_or_create(&ResultLabel {
                result: answer.result.as_str(),
            })
            .inc();
        match (&answer.result, &answer.error) {
            (ReloadResult::Ok, _) => tracing::info!(
                changes = answer.changes.len(),
                detail = %answer.changes.join("; "),
                "configuration reloaded"
            ),
            (result, error) => tracing::error!(
                result = result.as_str(),
                error = error.as_deref().unwrap_or_default(),
                "configuration not reloaded: the configuration in force stays"
            ),
        }
        answer
    }

    async fn try_reload(&self) -> ReloadAnswer {
        let fail = |result, error: String| ReloadAnswer {
            result,
            error: Some(error),
            changes: Vec::new(),
        };
        let Some(source) = self.source.clone() else {
            return fail(
                ReloadResult::Refused,
                "this agent was not started from a config directory: nothing to re-read".into(),
            );
        };
        let mut state = self.state.lock().await;
        let new = match tokio::task::spawn_blocking(move || source.load()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return fail(ReloadResult::Invalid, format!("invalid configuration: {e}"));
            }
            Err(e) => return fail(ReloadResult::Invalid, format!("config reader failed: {e}")),
        };
        if let Some(level) = &new.log_level
            && let Err(e) = crate::logging::parse(level)
        {
            return fail(ReloadResult::Invalid, format!("log_level: {e}"));
        }
        let refused = plan::restart_only(&state.loaded, &new);
        if !refused.is_empty() {
            return fail(
                ReloadResult::Refused,
                format!(
                    "these settings change only with a restart: {} (nothing was applied; restart the agent, or undo them and reload)",
                    refused.join(", ")
                ),
            );
        }
        let (effective, mut changes) = match self.services(&new, &state.registered).await {
            Ok(applied) => applied,
            Err(e) => return fail(ReloadResult::Invalid, e),
        };
        if let Some(dir) = state.dir.take() {
            let (d, o) = (new.intentions_dir.clone(), new.operator_dir.clone());
            state.dir = Some(if dir.watches(d.as_deref(), o.as_deref()) {
                dir
            } else {
                changes.push(format!(
                    "intentions_dir: {} (operator_dir: {})",
                    shown(d.as_deref()),
                    shown(o.as_deref())
                ));
                dir.replace(self.intentions.clone(), d, o, &self.shutdown)
                    .await
            });
        }
        if state.loaded.log_level != new.log_level {
            match crate::logging::set_level(new.log_level.as_deref()) {
                Ok(true) => changes.push(format!(
                    "log_level: {}",
                    new.log_level.as_deref().unwrap_or("(default)")
                )),
                Ok(false) => changes.push("log_level: unchanged (--log-level given)".into()),
                Err(e) => changes.push(format!("log_level: not applied: {e}")),
            }
        }
        self.writer.replace(Arc::new(effective));
        state.loaded = new;
        ReloadAnswer {
            result: ReloadResult::Ok,
            error: None,
            changes,
        }
    }
}

impl Reloader {
    /// Prepares the services of `files` followed by the `registered` ones for use, all or
    /// nothing: checked as a whole (ids, upstream ports), a leaf issued for each, the
    /// upstream listeners bound. Returns the configuration to put in force (ports as bound)
    /// and one line per change; on an error nothing changed. The one path by which
    /// services change, for reloads and registrations alike.
    async fn services(
        &self,
        files: &AgentConfig,
        registered: &BTreeMap<String, Service>,
    ) -> Result<(AgentConfig, Vec<String>), String> {
        let mut services = files.services.clone();
        for (id, svc) in registered {
            if files.services.iter().any(|s| s.id == *id) {
                return Err(format!(
                    "service {id:?} is registered through the API and now also defined in the config files: deregister it first (rhizome services deregister {id}) or give the file's service another id"
                ));
            }
            services.push(svc.clone());
        }
        let current = self.writer.current();
        check_all(&services, &current.ports)?;
        // Fallible before anything changes: a leaf for each service (an intermediate
        // limited to some services refuses the others).
        for svc in &services {
            if let Err(e) = self.identity.ensure_workload(&svc.namespace, &svc.name) {
                return Err(format!(
                    "service {:?}: cannot issue its certificate: {e:#}",
                    svc.id
                ));
            }
        }
        // The ports as bound (a port 0 in the files resolved at start).
        let effective = AgentConfig {
            ports: current.ports,
            services,
            registered: registered.keys().cloned().collect(),
            ..files.clone()
        };
        let listeners = self
            .upstreams
            .apply(&effective.services)
            .await
            .map_err(|e| e.to_string())?;
        let mut changes = plan::service_changes(&current.services, &effective.services);
        for (kind, list) in [
            ("added", &listeners.added),
            ("changed", &listeners.changed),
            ("removed", &listeners.removed),
        ] {
            changes.extend(list.iter().map(|l| format!("upstream {kind}: {l}")));
        }
        Ok((effective, changes))
    }

    /// Registers (or replaces) a service through the API: validated as a config `service`
    /// block, kept in the store, put in force with the files' services. A file-owned id is
    /// refused; on any error nothing changed.
    pub async fn register(
        &self,
        definition: &ServiceDefinition,
    ) -> Result<RegisterAnswer, RegisterError> {
        let service = definition
            .validate("registration")
            .map_err(|e| RegisterError::Invalid(register::message(e)))?;
        let id = service.id.clone();
        let mut state = self.state.lock().await;
        if state.loaded.services.iter().any(|s| s.id == id) {
            return Err(register::owned(&id, "registered"));
        }
        let mut next = state.registered.clone();
        next.insert(id.clone(), service);
        let json = serde_json::to_vec(&definition.to_json())
            .map_err(|e| RegisterError::Invalid(e.to_string()))?;
        self.change(&mut state, next, &id, Some(&json)).await
    }

    /// Deregisters a service registered through the API (removed from the store and from
    /// the services in force). A file-owned id is refused, an unknown one is not found.
    pub async fn deregister(&self, id: &str) -> Result<RegisterAnswer, RegisterError> {
        let mut state = self.state.lock().await;
        if !state.registered.contains_key(id) {
            if state.loaded.services.iter().any(|s| s.id == id) {
                return Err(register::owned(id, "deregistered"));
            }
            return Err(RegisterError::NotFound(format!(
                "no service is registered through the API with id {id:?}"
            )));
        }
        let mut next = state.registered.clone();
        next.remove(id);
        self.change(&mut state, next, id, None).await
    }

    /// Stores the registration `id` (`None`: removes it), then puts `next` in force; puts
    /// the stored registration back if that fails.
    async fn change(
        &self,
        state: &mut State,
        next: BTreeMap<String, Service>,
        id: &str,
        json: Option<&[u8]>,
    ) -> Result<RegisterAnswer, RegisterError> {
        let before = register::stored(&self.store, id)?;
        register::persist(&self.store, id, json)?;
        match self.services(&state.loaded, &next).await {
            Ok((effective, changes)) => {
                self.writer.replace(Arc::new(effective));
                state.registered = next;
                tracing::info!(
                    id,
                    detail = %changes.join("; "),
                    "services changed through the API"
                );
                Ok(RegisterAnswer {
                    id: id.to_string(),
                    changes,
                })
            }
            Err(e) => {
                if let Err(undo) = register::persist(&self.store, id, before.as_deref()) {
                    tracing::error!(error = %undo, "cannot put the previous registration back in the store");
                }
                Err(RegisterError::Invalid(e))
            }
        }
    }
}

fn shown(p: Option<&std::path::Path>) -> String {
    p.map_or_else(|| "(none)".to_string(), |p| p.display().to_string())
}

/// Reloads on every SIGHUP, for as long as the process runs. `hangups` must be created
/// before the agent starts, so that a SIGHUP during the start does not kill the process.
pub async fn on_hangup(reloader: Arc<Reloader>, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        reloader.reload().await;
    }
}
