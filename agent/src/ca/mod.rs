//! The CA's I/O side: everything that reads, writes, obtains or renews this agent's
//! certificates (the certificate logic itself is the pure `rhizome_ca` crate).
//!
//! - [`identity`]: the [`Identity`] handle (bundle, intermediate, leaves, rustls configs,
//!   entry signing); [`obtain`]: where it comes from at start, and the store copy.
//! - [`files`]: the PEM files of `ca { dir }` and of the `rhizome ca` commands.
//! - [`join`]: the join protocol (ALPN `rhizome-join/1`): frames, the signer's policy and
//!   service, the joining client and intermediate renewal over the network.
//! - [`renewal`]: the renewal schedule and task (the one writer of the credentials after
//!   the start); [`expiry`]: expiry gauges, warnings and `/v1/ca/status`.
//! - [`refusals`]: `rhizome_trust_refusals_total{point, reason}`, fed by every verifier.
//!
//! Dependencies point one way: `identity` ← `obtain`, `join` ← `renewal`; `files` and
//! `identity` import no other module of this folder but `files`.

pub(crate) mod expiry;
pub(crate) mod files;
pub mod identity;
pub(crate) mod join;
pub(crate) mod obtain;
pub mod refusals;
pub mod renewal;

pub use identity::Identity;
