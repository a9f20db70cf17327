//! The member table as the API and the CLI show it: one [`MemberRow`] per node, with its
//! [`Status`]. Written by the driver, read by the catalog builder, anti-entropy, metrics
//! and `/v1/members` (a leaf module, so none of them depends on the driver).

use rhizome_gossip::membership::MemberStatus;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A member's status as `rhizome members` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answering probes.
    Alive,
    /// Failed a probe; declared failed unless it refutes in time.
    Suspect,
    /// Declared down.
    Failed,
    /// Left gracefully.
    Left,
}

impl From<MemberStatus> for Status {
    fn from(s: MemberStatus) -> Self {
        match s {
            MemberStatus::Alive => Status::Alive,
            MemberStatus::Suspect => Status::Suspect,
            MemberStatus::Failed => Status::Failed,
            MemberStatus::Left => Status::Left,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Failed => "failed",
            Status::Left => "left",
        })
    }
}

/// One row of `GET /v1/members` and `rhizome members --format json`: exactly these fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRow {
    /// Node name.
    pub node: String,
    /// Gossip address.
    pub address: SocketAddr,
    /// `alive`, `suspect`, `failed` or `left`.
    pub status: Status,
    /// Process generation: higher after each restart or rejoin.
    pub incarnation: u64,
}
