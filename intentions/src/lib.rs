//! Intentions for rhizome: Consul-compatible `service-intentions` config entries, turned
//! into a validated rule set that decides, in well under a microsecond, whether one
//! service may open a connection to another.
//!
//! Library only: no files, sockets or clocks. The agent reads the files, hands their text
//! to [`RuleSet::load`] (or parses one with [`Entry::parse`]), keeps the resulting
//! [`RuleSet`] behind an `Arc`, and swaps it only when a new one builds without error,
//! so a bad file never replaces the rules in force. Non-goals for now: L7 (`Permissions`
//! are refused), peers, sameness groups, partitions, JWT.
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
//!                             # (sources without one take the destination's)
//! Mode      = "audit"         # optional rhizome extension: "enforce" (default) or "audit"
//! Sources = [
//!   { Name = "web", Action = "allow", Description = "the shop" },
//!   { Name = "*",   Action = "deny" },
//! ]
//! ```
//!
//! Files are read as Consul reads them (`consul config write`): Consul's HCL 1 dialect
//! (blocks inside objects, quoted keys such as `Meta { "k" = "v" }`, heredocs), or the JSON
//! that `consul config read` prints. Keys match Consul's field names ignoring case and
//! underscores (`Sources`, `sources`, `sameness_group`); unknown keys are errors. A key given
//! more than once is merged in file order where it takes a list (`Sources = [...]` beside
//! `Sources { }` blocks keeps every source, as in Consul) and refused, naming every position,
//! where it takes one value (Consul lets the last one win; rhizome does not guess).
//!
//! A source without `Namespace` is in the destination entry's namespace (Consul's rule); with a
//! `*` destination namespace it is in `default`. `Precedence`, `Type = "consul"`,
//! `CreateIndex`/`ModifyIndex` and the `Legacy*` fields that Consul clears are accepted and
//! ignored, so read-back files load. Consul's validation applies with Consul's messages
//! (`Meta`: 64 pairs, keys up to 128 and values up to 512 bytes; `Description` up to 512
//! bytes; `Action` exactly `allow` or `deny`). Refused with their reason: L7 `Permissions`
//! (an empty `Permissions = []` beside an `Action` is L4 and accepted), `JWT`, `Peer`,
//! `SamenessGroup`, partitions other than `default`. Every error is
//! `file:line:column: message`.
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
