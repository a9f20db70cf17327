//! rhizome-agent: the `rhizome` binary's library. The agent (config, store, HTTP API,
//! metrics, and the tasks that drive the CA, gossip, intentions and the L4 proxy) and the CLI.
//!
//! The three library crates (`rhizome-ca`, `rhizome-intentions`, `rhizome-gossip`) are pure
//! state machines; this crate owns every socket, file, clock and task.

pub(crate) mod accept;
pub mod api;
pub mod app;
pub mod ca;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod dataport;
pub(crate) mod duration;
pub(crate) mod env;
pub mod gossip;
pub mod intentions;
pub mod kube;
pub mod logging;
pub(crate) mod metrics;
pub mod proxy;
pub(crate) mod readahead;
pub(crate) mod refusals;
pub mod reload;
pub mod runtime;
pub(crate) mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod ui;
