//! The `rhizome.io/*` pod annotations: parsed once, at the boundary, into a typed
//! [`Annotations`] value or a typed [`AnnotationError`] that names the faulty annotation.

use crate::config::validate_name;
use std::collections::BTreeMap;

/// Service name of the pod; its presence opts the pod into the mesh.
pub const SERVICE: &str = "rhizome.io/service";
/// Port the pod's service listens on (defaults to the pod's only declared container port).
pub const PORT: &str = "rhizome.io/port";
/// Mesh namespace of the service (defaults to the pod's Kubernetes namespace).
pub const NAMESPACE: &str = "rhizome.io/namespace";
/// Upstream listeners of the pod: `"db:9191,cache:9192"`, entries `[NAMESPACE/]NAME:PORT`.
pub const UPSTREAMS: &str = "rhizome.io/upstreams";

/// A pod's annotations that did not parse. The pod's author is at fault; the pod is skipped
/// (never registered) until its annotations are fixed, and nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// `rhizome.io/service` is not a valid service name (pod author's fault).
    #[error("{SERVICE}: {0}")]
    ServiceName(String),
    /// `rhizome.io/namespace` (or the pod's namespace) is not a valid mesh namespace
    /// (pod author's fault).
    #[error("{NAMESPACE}: {0}")]
    Namespace(String),
    /// `rhizome.io/port` is not a port number in 1-65535 (pod author's fault).
    #[error("{PORT}: {0:?} is not a port number in 1-65535")]
    Port(String),
    /// No `rhizome.io/port`, and the pod does not declare exactly one container port to
    /// default to (pod author's fault).
    #[error(
        "{PORT} is missing and the pod declares {0} container ports (need exactly one to default to)"
    )]
    NoPort(usize),
    /// An entry of `rhizome.io/upstreams` is not `[NAMESPACE/]NAME:PORT` (pod author's fault).
    #[error("{UPSTREAMS}: entry {entry:?}: {reason}")]
    Upstream {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries of `rhizome.io/upstreams` use the same local port (pod author's fault).
    #[error("{UPSTREAMS}: local port {0} is used twice")]
    DuplicateUpstreamPort(u16),
}

/// One upstream listener a pod asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Destination service name.
    pub destination_name: String,
    /// Destination namespace (the pod's mesh namespace unless written `NS/NAME`).
    pub destination_namespace: String,
    /// Port of the listener on the node address.
    pub local_bind_port: u16,
}

/// The parsed annotations of a pod that opted into the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotations {
    /// Service name.
    pub service: String,
    /// Mesh namespace.
    pub namespace: String,
    /// Port of the service on the pod IP.
    pub port: u16,
    /// Upstream listeners, in the order written.
    pub upstreams: Vec<UpstreamSpec>,
}

impl Annotations {
    /// Parses a pod's annotations. `Ok(None)`: the pod has no `rhizome.io/service` and is not
    /// part of the mesh. `pod_namespace` is the default mesh namespace; `container_ports`
    /// are the ports the pod's containers declare (for the port default).
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        pod_namespace: &str,
        container_ports: &[u16],
    ) -> Result<Option<Annotations>, AnnotationError> {
        let Some(service) = annotations.get(SERVICE) else {
            return Ok(None);
        };
        let service = service.trim().to_string();
        validate_name("service name", &service).map_err(AnnotationError::ServiceName)?;
        let namespace = annotations
            .get(NAMESPACE)
            .map_or(pod_namespace, |n| n.trim())
            .to_string();
        validate_name("namespace", &namespace).map_err(AnnotationError::Namespace)?;
        let port = match annotations.get(PORT) {
            Some(p) => parse_port(p).ok_or_else(|| AnnotationError::Port(p.clone()))?,
            None => match container_ports {
                [only] => *only,
                other => return Err(AnnotationError::NoPort(other.len())),
            },
        };
        let upstreams = match annotations.get(UPSTREAMS) {
            Some(list) => parse_upstreams(list, &namespace)?,
            None => Vec::new(),
        };
        Ok(Some(Annotations {
            service,
            namespace,
            port,
            upstreams,
        }))
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// Parses `"db:9191, other/cache:9192"`; empty entries (a trailing comma) are ignored.
fn parse_upstreams(list: &str, namespace: &str) -> Result<Vec<UpstreamSpec>, AnnotationError> {
    let mut out: Vec<UpstreamSpec> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: String| AnnotationError::Upstream {
            entry: entry.to_string(),
            reason,
        };
        let (target, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| bad("expected NAME:PORT or NAMESPACE/NAME:PORT".into()))?;
        let port = parse_port(port).ok_or_else(|| bad(format!("{port:?} is not a port")))?;
        let (dest_ns, dest) = match target.split_once('/') {
            Some((ns, name)) => (ns.trim(), name.trim()),
            None => (namespace, target.trim()),
        };
        validate_name("destination service", dest).map_err(bad)?;
        validate_name("destination namespace", dest_ns).map_err(bad)?;
        if out.iter().any(|u| u.local_bind_port == port) {
            return Err(AnnotationError::DuplicateUpstreamPort(port));
        }
        out.push(UpstreamSpec {
            destination_name: dest.to_string(),
            destination_namespace: dest_ns.to_string(),
            local_bind_port: port,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::type_complexity)]
mod tests {
    use super::*;

    fn parse(
        pairs: &[(&str, &str)],
        ports: &[u16],
    ) -> Result<Option<Annotations>, AnnotationError> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Annotations::parse(&map, "shop", ports)
    }

    #[test]
    fn kube_annotations_full_form() {
        let a = parse(
            &[
                (SERVICE, "web"),
                (PORT, "8080"),
                (UPSTREAMS, "db:9191, payments/cache:9192,"),
            ],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.service, "web");
        assert_eq!(a.namespace, "shop", "defaults to the pod's namespace");
        assert_eq!(a.port, 8080);
        assert_eq!(a.upstreams.len(), 2);
        assert_eq!(a.upstreams[0].destination_name, "db");
        assert_eq!(a.upstreams[0].destination_namespace, "shop");
        assert_eq!(a.upstreams[0].local_bind_port, 9191);
        assert_eq!(a.upstreams[1].destination_namespace, "payments");
        assert_eq!(a.upstreams[1].destination_name, "cache");
    }

    #[test]
    fn kube_annotations_defaults_and_opt_out() {
        assert_eq!(parse(&[(PORT, "80")], &[80]).unwrap(), None);
        let a = parse(&[(SERVICE, "api"), (NAMESPACE, "prod")], &[7000])
            .unwrap()
            .unwrap();
        assert_eq!((a.namespace.as_str(), a.port), ("prod", 7000));
        assert!(a.upstreams.is_empty());
    }

    #[test]
    fn kube_annotations_errors_name_the_fault() {
        let table: &[(&[(&str, &str)], &[u16], &str)] = &[
            (&[(SERVICE, "Web!")], &[80], SERVICE),
            (&[(SERVICE, "web"), (NAMESPACE, "")], &[80], NAMESPACE),
            (
                &[(SERVICE, "web"), (PORT, "http")],
                &[80],
                "not a port number",
            ),
            (&[(SERVICE, "web"), (PORT, "0")], &[80], "not a port number"),
            (
                &[(SERVICE, "web"), (PORT, "70000")],
                &[80],
                "not a port number",
            ),
            (&[(SERVICE, "web")], &[80, 81], "2 container ports"),
            (&[(SERVICE, "web")], &[], "0 container ports"),
            (
                &[(SERVICE, "web"), (PORT, "80"), (UPSTREAMS, "db")],
                &[],
                "NAME:PORT",
            ),
            (
                &[(SERVICE, "web"), (PORT, "80"), (UPSTREAMS, "db:x")],
                &[],
                "\"x\"",
            ),
            (
                &[(SERVICE, "web"), (PORT, "80"), (UPSTREAMS, "DB:1")],
                &[],
                "\"DB\"",
            ),
            (
                &[(SERVICE, "web"), (PORT, "80"), (UPSTREAMS, "/db:1")],
                &[],
                "namespace",
            ),
            (
                &[(SERVICE, "web"), (PORT, "80"), (UPSTREAMS, "db:1,cache:1")],
                &[],
                "used twice",
            ),
        ];
        for (pairs, ports, needle) in table {
            let err = parse(pairs, ports).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err:?} lacks {needle:?}");
        }
    }
}
