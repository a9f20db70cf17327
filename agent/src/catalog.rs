//! The service catalog as the rest of the agent reads it: every known instance of every
//! service in the mesh with its health, published through a `watch` channel so readers (the
//! proxy's instance picker, the API) always see one consistent snapshot.
//!
//! One writer, in the types: [`channel`] gives the [`CatalogWriter`] to the gossip catalog
//! builder (which merges the replicated instances, local and remote, with the member table)
//! and [`CatalogReader`]s to everyone else.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::watch;

/// A read end of the catalog: `borrow()` for the current snapshot, `changed()` to wait
/// for the next one.
pub type CatalogReader = watch::Receiver<Arc<Catalog>>;

/// The only write end of the catalog (owned by `gossip::catalog::builder`).
pub struct CatalogWriter(watch::Sender<Arc<Catalog>>);

/// A catalog holding `initial`: its writer and a first reader.
pub fn channel(initial: Catalog) -> (CatalogWriter, CatalogReader) {
    let (tx, rx) = watch::channel(Arc::new(initial));
    (CatalogWriter(tx), rx)
}

impl CatalogWriter {
    /// Publishes `catalog` unless its instances equal the current ones; returns whether
    /// readers were woken.
    pub fn replace_if_changed(&self, catalog: Catalog) -> bool {
        self.0.send_if_modified(|current| {
            if current.instances == catalog.instances {
                false
            } else {
                *current = Arc::new(catalog);
                true
            }
        })
    }
}

/// Health of an instance as the mesh sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// All checks pass (or there are none) and its node is alive.
    Passing,
    /// A check fails.
    Critical,
    /// Its node is suspected or failed: unhealthy at once, reaped later.
    NodeDown,
}

/// One service instance somewhere in the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Node whose agent registered it.
    pub node: String,
    /// Instance id, unique on its node.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// Address the instance listens on, as its own agent reaches it.
    pub address: IpAddr,
    /// Port the instance listens on.
    pub port: u16,
    /// Data-plane address of its agent (where proxied connections go).
    pub agent_addr: SocketAddr,
    /// Current health.
    pub health: Health,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// Whether new connections may be sent to it.
    pub fn is_healthy(&self) -> bool {
        self.health == Health::Passing
    }
}

/// A consistent snapshot of the catalog.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Catalog {
    /// Every instance, sorted by (namespace, name, node, id).
    pub instances: Vec<Instance>,
}

impl Catalog {
    /// A snapshot from instances in any order.
    pub fn new(mut instances: Vec<Instance>) -> Catalog {
        instances.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.node, &a.id).cmp(&(&b.namespace, &b.name, &b.node, &b.id))
        });
        Catalog { instances }
    }

    /// Every instance of `namespace/name`.
    pub fn instances_of<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances
            .iter()
            .filter(move |i| i.namespace == namespace && i.name == name)
    }

    /// Healthy instances of `namespace/name`.
    pub fn healthy<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances_of(namespace, name)
            .filter(|i| i.is_healthy())
    }

    /// Distinct (namespace, name) pairs of known services.
    pub fn services(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .instances
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect();
        out.dedup();
        out
    }
}

/// The local config services as catalog instances (before gossip knows anything).
pub fn local_instances(config: &crate::config::AgentConfig) -> Vec<Instance> {
    let agent_addr = SocketAddr::new(config.advertise_addr, config.ports.data);
    config
        .services
        .iter()
        .map(|s| Instance {
            node: config.node_name.clone(),
            id: s.id.clone(),
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            address: s.address,
            port: s.port,
            agent_addr,
            health: Health::Passing,
            tags: s.tags.clone(),
            meta: s.meta.clone(),
        })
        .collect()
}
