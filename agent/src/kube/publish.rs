//! Publishes the pods of this node into the replicated catalog: every registered pod (Running,
//! Ready, annotated) becomes an instance `catalog/<node>/<pod>.<namespace>` with source
//! `kubernetes`, its workload leaf is issued so inbound connections can be served, and
//! instances of pods that went away are withdrawn. Nothing is withdrawn before the first list
//! completed, so an agent restart does not flap its pods out of the catalog.

use super::PodRegistryRx;
use crate::ca::identity::Identity;
use crate::gossip::catalog::{InstanceValue, ValueHealth, publish_instance};
use crate::gossip::replica::Replica;
use crate::runtime::Shutdown;
use rhizome_gossip::state::Key;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// `source` of catalog instances registered from Kubernetes pods.
pub const SOURCE_KUBERNETES: &str = "kubernetes";

/// What the pod publisher is given: no catalog writer (it publishes into the replicated
/// state, and the catalog builder picks the instances up from there).
pub struct Inputs {
    /// The data address peers dial for these pods (`advertise_addr:ports.data`).
    pub agent_addr: SocketAddr,
    /// Where pod instances are published.
    pub replica: Arc<Replica>,
    /// Issues the workload leaves of the pods' services.
    pub identity: Arc<Identity>,
    /// The pod registry.
    pub pods: PodRegistryRx,
    /// Ends the task.
    pub shutdown: Shutdown,
}

/// Keeps the catalog in step with the pod registry until shutdown.
pub async fn publisher(inputs: Inputs) -> anyhow::Result<()> {
    let Inputs {
        agent_addr,
        replica,
        identity,
        mut pods,
        shutdown,
    } = inputs;
    loop {
        let registry = pods.borrow_and_update().clone();
        if registry.is_synced() {
            sync(agent_addr, &replica, &identity, &registry);
        }
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            changed = pods.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// Publishes every registered pod and withdraws Kubernetes instances no longer registered.
pub fn sync(
    agent_addr: SocketAddr,
    replica: &Replica,
    identity: &Identity,
    registry: &super::PodRegistry,
) {
    let mut present = BTreeSet::new();
    for service in registry.services() {
        present.insert(service.id.clone());
        if let Err(e) = identity.ensure_workload(&service.namespace, &service.name) {
            tracing::warn!(k8s.service = %service.name, error = %e, "no leaf for a pod's service");
            continue;
        }
        let value = InstanceValue {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            address: service.address,
            port: service.port,
            agent_addr,
            tags: service.tags.clone(),
            meta: service.meta.clone(),
            health: ValueHealth::Passing,
            source: SOURCE_KUBERNETES.to_string(),
        };
        match publish_instance(replica, &service.id, &value) {
            Ok(true) => tracing::info!(instance = %service.id, "published pod instance"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(instance = %service.id, error = %e, "cannot publish pod instance")
            }
        }
    }
    for entry in replica.entries(&format!("catalog/{}/", replica.origin())) {
        let Key::Catalog { instance, .. } = &entry.key else {
            continue;
        };
        let is_pod =
            InstanceValue::decode(&entry.value).is_some_and(|v| v.source == SOURCE_KUBERNETES);
        if is_pod && !present.contains(instance.as_str()) {
            match replica.delete_local(entry.key.clone()) {
                Ok(_) => tracing::info!(instance = %instance, "withdrew pod instance"),
                Err(e) => {
                    tracing::warn!(instance = %instance, error = %e, "cannot withdraw pod instance")
                }
            }
        }
    }
}
