//! What pod discovery publishes: one [`PodEntry`] per pod seen on this node, registered as a
//! [`Service`] or skipped with a [`SkipReason`], and the source-IP index the data plane uses
//! to attribute a connection to a pod.

use super::annotations::{AnnotationError, Annotations};
use crate::config::{Service, Upstream};
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// Tag carried by every service instance registered from a pod.
pub const POD_TAG: &str = "k8s";

/// What the mapping needs to know about this agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The Kubernetes node this agent watches.
    pub node_name: String,
    /// Address pod upstream listeners bind (the node address under host networking).
    pub upstream_bind_addr: IpAddr,
}

/// Why a pod seen on this node is not registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The pod has no `rhizome.io/service` annotation: not part of the mesh.
    #[error("not annotated with rhizome.io/service")]
    NotAnnotated,
    /// The annotations do not parse (the pod author's fault).
    #[error("bad annotation: {0}")]
    BadAnnotation(AnnotationError),
    /// The pod is scheduled on another node (the field selector should have filtered it).
    #[error("scheduled on node {0:?}, not this one")]
    OtherNode(String),
    /// The pod runs in the node's network namespace, so its source IP is the node's and
    /// cannot identify it.
    #[error("host-network pods cannot be told apart by source IP")]
    HostNetwork,
    /// The pod is being deleted.
    #[error("terminating")]
    Terminating,
    /// The pod's phase is not `Running`.
    #[error("phase is {0}, not Running")]
    NotRunning(String),
    /// The pod's `Ready` condition is not `True`.
    #[error("not ready")]
    NotReady,
    /// The pod has no IP (yet), or an unparsable one.
    #[error("no pod IP")]
    NoPodIp,
}

/// Whether a pod is registered in the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Registered: this service instance is at the pod IP.
    Registered(Service),
    /// Seen but not registered.
    Skipped(SkipReason),
}

/// One pod seen on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEntry {
    /// The pod's uid (the key: a pod recreated under the same name is another pod).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Pod IP, once assigned.
    pub ip: Option<IpAddr>,
    /// Every IP of the pod (`status.podIPs`: both families on dual-stack clusters),
    /// the primary first; all of them identify the pod as a connection source.
    pub ips: Vec<IpAddr>,
    /// Registered or skipped.
    pub state: PodState,
}

impl PodEntry {
    /// Maps a pod to its entry: registered while Running and Ready with an IP and good
    /// annotations, skipped with the first reason that applies otherwise.
    pub fn from_pod(pod: &Pod, settings: &Settings) -> PodEntry {
        let meta = &pod.metadata;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let uid = meta
            .uid
            .clone()
            .unwrap_or_else(|| format!("{namespace}/{name}"));
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut ips: Vec<IpAddr> = ip.into_iter().collect();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten();
        for extra in listed.filter_map(|p| p.ip.parse::<IpAddr>().ok()) {
            if !ips.contains(&extra) {
                ips.push(extra);
            }
        }
        let state = match registration(pod, &namespace, ip, settings) {
            Ok((annotations, ip)) => {
                PodState::Registered(service(&annotations, &name, &namespace, &uid, ip, settings))
            }
            Err(reason) => PodState::Skipped(reason),
        };
        PodEntry {
            uid,
            name,
            namespace,
            ip,
            ips,
            state,
        }
    }

    /// The registered service instance, if any.
    pub fn service(&self) -> Option<&Service> {
        match &self.state {
            PodState::Registered(s) => Some(s),
            PodState::Skipped(_) => None,
        }
    }

    /// Why the pod is not registered, if it is not.
    pub fn skip_reason(&self) -> Option<&SkipReason> {
        match &self.state {
            PodState::Registered(_) => None,
            PodState::Skipped(r) => Some(r),
        }
    }
}

/// The checks in order; annotations first, so a bad one is reported even while the pod
/// starts up.
fn registration(
    pod: &Pod,
    namespace: &str,
    ip: Option<IpAddr>,
    settings: &Settings,
) -> Result<(Annotations, IpAddr), SkipReason> {
    let spec = pod.spec.as_ref();
    let container_ports: Vec<u16> = spec
        .into_iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let parsed = Annotations::parse(annotations, namespace, &container_ports)
        .map_err(SkipReason::BadAnnotation)?
        .ok_or(SkipReason::NotAnnotated)?;
    if let Some(node) = spec.and_then(|s| s.node_name.as_ref())
        && *node != settings.node_name
    {
        return Err(SkipReason::OtherNode(node.clone()));
    }
    if spec.and_then(|s| s.host_network) == Some(true) {
        return Err(SkipReason::HostNetwork);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(SkipReason::Terminating);
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase != "Running" {
        return Err(SkipReason::NotRunning(phase.to_string()));
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return Err(SkipReason::NotReady);
    }
    let ip = ip.ok_or(SkipReason::NoPodIp)?;
    Ok((parsed, ip))
}

fn service(
    a: &Annotations,
    pod: &str,
    namespace: &str,
    uid: &str,
    ip: IpAddr,
    settings: &Settings,
) -> Service {
    let meta = [
        ("k8s-pod", pod),
        ("k8s-namespace", namespace),
        ("k8s-uid", uid),
        ("k8s-node", settings.node_name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Service {
        // Namespace names are DNS labels (no dots), so `pod.namespace` is unambiguous.
        id: format!("{pod}.{namespace}"),
        name: a.service.clone(),
        namespace: a.namespace.clone(),
        port: a.port,
        address: ip,
        tags: vec![POD_TAG.to_string()],
        meta,
        upstreams: a
            .upstreams
            .iter()
            .map(|u| Upstream {
                destination_name: u.destination_name.clone(),
                destination_namespace: u.destination_namespace.clone(),
                local_bind_port: u.local_bind_port,
                local_bind_address: settings.upstream_bind_addr,
            })
            .collect(),
        checks: Vec::new(),
    }
}

/// An immutable snapshot of the pods on this node, published on a `watch` channel after
/// every change. Cheap to read; replaced, never mutated.
#[derive(Clone, Debug, Default)]
pub struct PodRegistry {
    pods: BTreeMap<String, PodEntry>,
    by_source: HashMap<IpAddr, String>,
    synced: bool,
    generation: u64,
}

impl PodRegistry {
    /// Builds a snapshot; registered pods that share an IP are left out of the source index
    /// (fail closed: their connections cannot be attributed).
    pub fn new(pods: BTreeMap<String, PodEntry>, synced: bool, generation: u64) -> PodRegistry {
        let mut by_source: HashMap<IpAddr, String> = HashMap::new();
        let mut shared: Vec<IpAddr> = Vec::new();
        for entry in pods.values().filter(|e| e.service().is_some()) {
            for &ip in &entry.ips {
                if let Some(other) = by_source.insert(ip, entry.uid.clone()) {
                    tracing::warn!(pod.ip = %ip, pod.uid = %entry.uid, other.uid = %other,
                        "two registered pods share an IP: refusing its connections");
                    shared.push(ip);
                }
            }
        }
        for ip in shared {
            by_source.remove(&ip);
        }
        PodRegistry {
            pods,
            by_source,
            synced,
            generation,
        }
    }

    /// Every pod seen on this node, registered or skipped, by uid.
    pub fn pods(&self) -> impl Iterator<Item = &PodEntry> {
        self.pods.values()
    }

    /// The registered service instances (address = pod IP), one per ready annotated pod.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.pods.values().filter_map(PodEntry::service)
    }

    /// The pod with this uid.
    pub fn pod(&self, uid: &str) -> Option<&PodEntry> {
        self.pods.get(uid)
    }

    /// The registered pod a connection from `ip` comes from.
    pub fn pod_for_source(&self, ip: IpAddr) -> Option<&PodEntry> {
        self.by_source.get(&ip).and_then(|uid| self.pods.get(uid))
    }

    /// The service instance a connection from `ip` belongs to; `None`: refuse it.
    pub fn service_for_source(&self, ip: IpAddr) -> Option<&Service> {
        self.pod_for_source(ip).and_then(PodEntry::service)
    }

    /// The upstream listener ports the data plane should serve on the node address: the
    /// union over registered pods (one shared listener per port; [`super::attribute`]
    /// picks the pod and its upstream per connection).
    pub fn listener_ports(&self) -> std::collections::BTreeSet<u16> {
        self.services()
            .flat_map(|s| s.upstreams.iter().map(|u| u.local_bind_port))
            .collect()
    }

    /// True once the first complete list of pods has been received: before that, an absent
    /// pod may simply not have been listed yet.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Incremented on every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// One pod in `GET /v1/kubernetes/pods`.
#[derive(Serialize, Debug)]
pub struct PodView<'a> {
    /// Pod uid.
    pub uid: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Kubernetes namespace.
    pub namespace: &'a str,
    /// Pod IP, if assigned.
    pub ip: Option<String>,
    /// Every pod IP (dual-stack), primary first.
    pub ips: Vec<String>,
    /// `registered` or `skipped`.
    pub state: &'static str,
    /// Why it is skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The registered instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<crate::api::ServiceView<'a>>,
}

impl<'a> From<&'a PodEntry> for PodView<'a> {
    fn from(e: &'a PodEntry) -> Self {
        PodView {
            uid: &e.uid,
            name: &e.name,
            namespace: &e.namespace,
            ip: e.ip.map(|ip| ip.to_string()),
            ips: e.ips.iter().map(ToString::to_string).collect(),
            state: if e.service().is_some() {
                "registered"
            } else {
                "skipped"
            },
            reason: e.skip_reason().map(ToString::to_string),
            service: e.service().map(crate::api::ServiceView::from),
        }
    }
}
