//! Source identity of pod traffic. Pod upstream listeners are served on the node address and
//! shared by every pod of the node, so a connection is attributed to a pod by its source IP,
//! and to the pod's upstream by the listener port. Anything else is refused.

use super::registry::{PodEntry, PodRegistry};
use crate::config::{Service, Upstream};
use std::net::SocketAddr;

/// Why a connection on a pod upstream listener is refused. The connecting side is at fault
/// (an unknown or misconfigured client); nothing changes but a log line and a counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceRefused {
    /// No registered, ready pod of this node has this source IP.
    #[error("no registered pod has source IP {0}")]
    UnknownSource(std::net::IpAddr),
    /// The pod is known but declares no upstream on this listener port.
    #[error("pod {pod} declares no upstream on port {port}")]
    NoSuchUpstream {
        /// `namespace/name` of the pod.
        pod: String,
        /// The listener port the connection arrived on.
        port: u16,
    },
}

/// A connection attributed to a pod: who is calling, and which upstream it asked for.
#[derive(Clone, Copy, Debug)]
pub struct Attribution<'a> {
    /// The calling pod.
    pub pod: &'a PodEntry,
    /// Its service instance: the source identity to present (its leaf certificate).
    pub service: &'a Service,
    /// The upstream of that service served on this listener: the destination.
    pub upstream: &'a Upstream,
}

/// Decides who a connection accepted on a pod upstream listener comes from: `peer` is the
/// connection's remote address, `local` the listener address it arrived on. The data plane
/// calls this on accept and closes the connection on `Err`; refusals are logged here.
pub fn attribute(
    registry: &PodRegistry,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Attribution<'_>, SourceRefused> {
    let result = attribution(registry, peer, local);
    if let Err(e) = &result {
        tracing::warn!(src.ip = %peer.ip(), listener.port = local.port(), reason = %e,
            "pod upstream connection refused");
    }
    result
}

fn attribution(
    registry: &PodRegistry,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Attribution<'_>, SourceRefused> {
    let ip = peer.ip().to_canonical();
    let pod = registry
        .pod_for_source(ip)
        .ok_or(SourceRefused::UnknownSource(ip))?;
    let service = pod.service().ok_or(SourceRefused::UnknownSource(ip))?;
    let upstream = service
        .upstreams
        .iter()
        .find(|u| u.local_bind_port == local.port())
        .ok_or_else(|| SourceRefused::NoSuchUpstream {
            pod: format!("{}/{}", pod.namespace, pod.name),
            port: local.port(),
        })?;
    Ok(Attribution {
        pod,
        service,
        upstream,
    })
}
