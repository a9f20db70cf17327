//! Kubernetes pod discovery. With `kubernetes { enabled = true }` the agent (a DaemonSet pod
//! with host networking) watches the pods of its own node and registers each pod annotated
//! `rhizome.io/service` as a service instance at the pod IP while it is Running and Ready.
//!
//! Output: a `watch` channel of [`PodRegistry`] snapshots ([`PodRegistryRx`], given to the
//! publisher, the proxy and the API). The catalog publishes [`PodRegistry::services`]; the data plane
//! serves each [`crate::config::Upstream`] of those services on the node address and
//! attributes every accepted connection with [`attribute`] (source IP -> pod -> service),
//! refusing unknown sources.
//!
//! Parts: [`annotations`] (parsing), [`registry`] (pod -> entry, snapshots), [`table`]
//! (watcher events -> table, relists), [`source`] (attribution), [`discovery`] (the task).

pub mod annotations;
pub(crate) mod api;
pub(crate) mod discovery;
pub(crate) mod publish;
pub(crate) mod registry;
pub(crate) mod source;
pub(crate) mod table;

pub use discovery::{
    Discovery, Ended, KubeMetrics, PodRegistryRx, client, drive, pod_events, settings,
};
pub use registry::{PodEntry, PodRegistry, PodState, PodView, Settings, SkipReason};
pub use source::{Attribution, SourceRefused, attribute};
pub use table::{Change, PodTable};
