//! The catalog over gossip: each local service is published as `catalog/<node>/<instance>`
//! (JSON [`InstanceValue`], republished when its health changes), and the agent's catalog is
//! rebuilt from the replicated state and the member table whenever either changes.
//!
//! An instance whose node is suspect, failed, left or unknown to membership is `node_down`
//! at once, whatever its entry says; its entries are reaped once the node has been down for
//! `gossip.reap_after` (the floors are persisted by the [`super::replica::Replica`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rhizome_gossip::state::{Key, Segment};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::health::{CheckResults, is_passing};
use super::now_ms;
use super::replica::Replica;
use crate::api::types::{MemberRow, Status};
use crate::catalog::{Catalog, CatalogWriter, Health, Instance};
use crate::config::{AgentConfig, Service};
use crate::runtime::Shutdown;

/// Source tag of instances published from the config file (others, e.g. Kubernetes pods,
/// use their own tag and are not removed at start when absent from the config).
pub const SOURCE_CONFIG: &str = "config";

/// Tombstones are kept at least this long (a node partitioned for less catches up).
const MIN_TOMBSTONE_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// Health an agent gossips for its own instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueHealth {
    /// Its checks pass (or it has none).
    Passing,
    /// A check fails.
    Critical,
}

/// The value of a `catalog/<node>/<instance>` entry (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceValue {
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Address the instance listens on.
    pub address: IpAddr,
    /// Port the instance listens on.
    pub port: u16,
    /// Data-plane address of the owning agent (advertise address + data port).
    pub agent_addr: SocketAddr,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Health as its agent checks it.
    pub health: ValueHealth,
    /// Who registered it ([`SOURCE_CONFIG`] for config services).
    #[serde(default)]
    pub source: String,
}

impl InstanceValue {
    /// Decodes an entry value; `None` if it is not an instance.
    pub fn decode(bytes: &[u8]) -> Option<InstanceValue> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The value published for a config service with the given health.
pub fn config_value(service: &Service, agent_addr: SocketAddr, passing: bool) -> InstanceValue {
    InstanceValue {
        name: service.name.clone(),
        namespace: service.namespace.clone(),
        address: service.address,
        port: service.port,
        agent_addr,
        tags: service.tags.clone(),
        meta: service.meta.clone(),
        health: if passing {
            ValueHealth::Passing
        } else {
            ValueHealth::Critical
        },
        source: SOURCE_CONFIG.to_string(),
    }
}

/// Publishes `value` as local instance `id` unless the state already holds exactly it.
pub fn publish_instance(
    replica: &Replica,
    id: &str,
    value: &InstanceValue,
) -> anyhow::Result<bool> {
    let key = Key::Catalog {
        node: replica.origin().clone(),
        instance: id.parse::<Segment>()?,
    };
    let current = replica
        .get(&key)
        .and_then(|e| InstanceValue::decode(&e.value));
    if current.as_ref() == Some(value) {
        return Ok(false);
    }
    replica.write_local(key, serde_json::to_vec(value)?)?;
    Ok(true)
}

/// Publishes every config service with its current health, and withdraws config instances
/// that are no longer configured.
pub fn publish_config(c: &AgentConfig, replica: &Replica, results: &CheckResults) {
    let agent_addr = SocketAddr::new(c.advertise_addr, c.ports.data);
    for service in &c.services {
        let value = config_value(service, agent_addr, is_passing(results, service));
        match publish_instance(replica, &service.id, &value) {
            Ok(true) => tracing::info!(
                instance = %service.id,
                health = ?value.health,
                "published service instance"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(instance = %service.id, error = %e, "cannot publish instance"),
        }
    }
    let configured: BTreeSet<&str> = c.services.iter().map(|s| s.id.as_str()).collect();
    for entry in replica.entries(&format!("catalog/{}/", replica.origin())) {
        let Key::Catalog { instance, .. } = &entry.key else {
            continue;
        };
        let is_config =
            InstanceValue::decode(&entry.value).is_some_and(|v| v.source == SOURCE_CONFIG);
        if is_config && !configured.contains(instance.as_str()) {
            if let Err(e) = replica.delete_local(entry.key.clone()) {
                tracing::warn!(instance = %instance, error = %e, "cannot withdraw instance");
            } else {
                tracing::info!(instance = %instance, "withdrew an instance no longer configured");
            }
        }
    }
}

/// Republishes the config services whenever a health check changes, until shutdown.
pub async fn publisher(
    config: Arc<AgentConfig>,
    replica: Arc<Replica>,
    mut results: watch::Receiver<CheckResults>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    #[allow(clippy::while_let_loop)]
    loop {
        let snapshot = results.borrow_and_update().clone();
        publish_config(&config, &replica, &snapshot);
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            changed = results.changed() => if changed.is_err() { break },
        }
    }
    shutdown.wait().await;
    Ok(())
}

/// The catalog from the state's instances and the member table.
pub fn build(replica: &Replica, members: &[MemberRow]) -> Catalog {
    let me = replica.origin().as_str();
    let alive: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.status == Status::Alive)
        .map(|m| m.node.as_str())
        .collect();
    let instances = replica
        .entries("catalog/")
        .into_iter()
        .filter_map(|entry| {
            let Key::Catalog { node, instance } = &entry.key else {
                return None;
            };
            let v = InstanceValue::decode(&entry.value)?;
            let node_up = node.as_str() == me || alive.contains(node.as_str());
            let health = match (node_up, v.health) {
                (false, _) => Health::NodeDown,
                (true, ValueHealth::Passing) => Health::Passing,
                (true, ValueHealth::Critical) => Health::Critical,
            };
            Some(Instance {
                node: node.as_str().to_string(),
                id: instance.as_str().to_string(),
                name: v.name,
                namespace: v.namespace,
                address: v.address,
                port: v.port,
                agent_addr: v.agent_addr,
                health,
                tags: v.tags,
                meta: v.meta,
            })
        })
        .collect();
    Catalog::new(instances)
}

/// The catalog builder: the only owner of the catalog's write end.
pub struct Builder {
    /// Where instances are read (and reaped, and the renewed agent certificate published).
    pub replica: Arc<Replica>,
    /// The member table (instances of nodes not alive are `node_down`).
    pub members: watch::Receiver<Arc<Vec<MemberRow>>>,
    /// How long a node stays down before its instances are reaped (`gossip.reap_after`).
    pub reap_after: Duration,
    /// The catalog's write end.
    pub catalog: CatalogWriter,
}

impl Builder {
    /// Keeps the catalog up to date and reaps nodes down for `reap_after`, until
    /// `shutdown`.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Builder {
            replica,
            mut members,
            reap_after,
            catalog: writer,
        } = self;
        let mut version = replica.subscribe();
        let reap_after_ms = u64::try_from(reap_after.as_millis()).unwrap_or(u64::MAX);
        let horizon_ms =
            u64::try_from(reap_after.max(MIN_TOMBSTONE_HORIZON).as_millis()).unwrap_or(u64::MAX);
        let mut down_since: BTreeMap<Segment, u64> = BTreeMap::new();
        let mut tick = tokio::time::interval(
            Duration::from_secs(1).min(reap_after.max(Duration::from_millis(100))),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let rows = members.borrow_and_update().clone();
            version.borrow_and_update();
            writer.replace_if_changed(build(&replica, &rows));
            tokio::select! {
                () = shutdown.wait() => return Ok(()),
                _ = version.changed() => {}
                _ = members.changed() => {}
                _ = tick.tick() => {
                    if let Err(e) = replica.ensure_certs() {
                        tracing::warn!(error = %e, "cannot publish the renewed agent certificate");
                    }
                    track_down(&mut down_since, &replica, &rows);
                    for (node, removed) in replica.tick(&down_since, reap_after_ms, horizon_ms) {
                        tracing::info!(peer.node = %node, removed, "reaped the instances of a node down too long");
                        down_since.remove(&node);
                    }
                }
            }
        }
    }
}

/// Notes when each node with instances was first seen not alive; forgets nodes that are
/// alive again or have no instances left.
fn track_down(down_since: &mut BTreeMap<Segment, u64>, replica: &Replica, members: &[MemberRow]) {
    let now = now_ms();
    let me = replica.origin().clone();
    let nodes: BTreeSet<Segment> = replica
        .entries("catalog/")
        .iter()
        .filter_map(|e| e.key.owner_node().cloned())
        .filter(|n| *n != me)
        .collect();
    down_since.retain(|n, _| nodes.contains(n));
    for node in nodes {
        let alive = members
            .iter()
            .any(|m| m.node == node.as_str() && m.status == Status::Alive);
        if alive {
            down_since.remove(&node);
        } else {
            down_since.entry(node).or_insert(now);
        }
    }
}
