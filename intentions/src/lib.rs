//! Intentions for rhizome: Consul-compatible `service-intentions` config entries, turned
//! into a validated rule set that decides, in well under a microsecond, whether one
//! service may open a connection to another.
//!
//! Library only: no files, sockets or clocks. The agent reads the files, hands their text
//! to [`RuleSet::load`] (or parses one with [`Entry::parse`]), keeps the resulting
//! [`RuleSet`] behind an `Arc`, and swaps it only when a new one builds without error,
//! so a bad file never replaces the rules in force. Non-goals for now: L7 (`Permissions`
//! are refused), peers, partitions, JWT.
//!
//! # Files
//!
//! One entry per file, one entry per destination (two entries for one destination are an
//! error naming both files):
//!
//! ```hcl
//! Kind      = "service-intentions"
//! Name      = "db"            # destination: exact, prefix (`db-*`) or `*`
//! Namespace = "default"       # optional, `default` when omitted; exact or `*`
//! Mode      = "audit"         # optional rhizome extension: "enforce" (default) or "audit"
//! Sources = [
//!   { Name = "web", Action = "allow", Description = "the shop" },
//!   { Name = "*",   Action = "deny" },
//! ]
//! ```
//!
//! `Sources` may also be written as repeated `Sources { ... }` blocks. Keys may be
//! PascalCase (Consul's documents) or snake_case (Consul's API). Unknown keys are errors.
//! `Precedence` on a source is accepted and ignored, as Consul does, so the output of
//! `consul config read` loads: precedence is always computed. `Type = "consul"` is
//! accepted for the same reason. Every error is `file:line:column: message`.
//!
//! # Precedence
//!
//! For a connection, the matching rule with the highest precedence decides; if none
//! matches, the agent's default (`deny` unless configured otherwise) does. Consul's nine
//! levels order rules by how exact the destination is, then how exact the source is.
//! rhizome adds prefix wildcards (`web-*`), which sit, in each column, between an exact
//! name and `*`: so a rule with a more specific destination still always wins, as in
//! Consul. Levels 1–16 are rhizome's ([`Precedence::level`]); the last column is the
//! number Consul shows for the same rule ([`Precedence::consul`]).
//!
//! | level | destination | source | Consul |
//! |---:|---|---|---:|
//! | 16 | `ns/name` | `ns/name` | 9 |
//! | 15 | `ns/name` | `ns/prefix*` | – |
//! | 14 | `ns/name` | `ns/*` | 8 |
//! | 13 | `ns/name` | `*/*` | 7 |
//! | 12 | `ns/prefix*` | `ns/name` | – |
//! | 11 | `ns/prefix*` | `ns/prefix*` | – |
//! | 10 | `ns/prefix*` | `ns/*` | – |
//! | 9 | `ns/prefix*` | `*/*` | – |
//! | 8 | `ns/*` | `ns/name` | 6 |
//! | 7 | `ns/*` | `ns/prefix*` | – |
//! | 6 | `ns/*` | `ns/*` | 5 |
//! | 5 | `ns/*` | `*/*` | 4 |
//! | 4 | `*/*` | `ns/name` | 3 |
//! | 3 | `*/*` | `ns/prefix*` | – |
//! | 2 | `*/*` | `ns/*` | 2 |
//! | 1 | `*/*` | `*/*` | 1 |
//!
//! Prefix lengths refine the table the same way, destination first: between two
//! `ns/prefix*` destinations the longer prefix wins whatever the sources (rows 12–9 are
//! ordered by destination prefix length first, then by row), and between two
//! `ns/prefix*` sources of one destination the longer prefix wins (`web-eu-*` beats
//! `web-*`). Two rules that tie and both match a connection would have identical
//! patterns, which is refused as a conflict, so the order of files never matters.
//! `Namespace = "*"` requires `Name = "*"`, and namespaces have no prefixes.
//!
//! # Audit mode
//!
//! An entry with `Mode = "audit"`, or the agent-wide [`Policy::audit`] flag, turns a deny
//! into a [`Decision`] with `allowed = true, audit = true`: log it, count it as "would
//! deny", let the connection through. The agent-wide flag also covers the default deny.
//!
//! # Main types
//!
//! - [`ServiceRef`]: a service, parsed from `NAME`, `NAMESPACE/NAME` or a SPIFFE id.
//! - [`Entry`]: one validated file; [`RuleSet`]: all of them, with a content
//!   [`Version`], serializable for replication.
//! - [`RuleSet::decide`] / [`RuleSet::check`] / [`RuleSet::matching`]: evaluation.
//! - [`AccessGraph`]: who may talk to whom, as DOT or JSON.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod decision;
mod entry;
mod graph;
pub mod hclsrc;
mod index;
mod pattern;
mod precedence;
mod ruleset;
mod service;

pub use decision::{Decision, Matched, Policy};
pub use entry::{Action, Entry, Mode, Origin, Source};
pub use graph::{AccessGraph, Edge, Node};
pub use hclsrc::SourceError;
pub use pattern::{NamePattern, NamespacePattern, PatternError, ServicePattern};
pub use precedence::Precedence;
pub use ruleset::{BuildError, BuildErrors, Rule, RuleSet, Version};
pub use service::{DEFAULT_NAMESPACE, MAX_NAME_LEN, NameError, Namespace, ServiceName, ServiceRef};
