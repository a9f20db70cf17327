//! The glue foca needs: a `Runtime` that only buffers effects, a broadcast handler that
//! hands received items to `Membership` (foca has no accessor for its handler), and the
//! framing of custom broadcast items (a tag byte says whose item it is).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::{Invalidates, Notification, OwnedNotification, Runtime, Timer};
use serde::{Deserialize, Serialize};

use super::identity::{Generation, NodeId};
use crate::BroadcastKey;

/// Everything foca asked for during one call, drained right after it.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) sends: VecDeque<(NodeId, Vec<u8>)>,
    pub(crate) timers: VecDeque<(Duration, Timer<NodeId>)>,
    pub(crate) notes: VecDeque<OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        self.notes.push_back(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.sends.push_back((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push_back((after, event));
    }
}

/// Tag byte of a custom broadcast item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ItemTag {
    /// Replicated state, for the `BroadcastReceiver`.
    State = 0,
    /// A Lifeguard suspicion claim.
    Claim = 1,
    /// A graceful leave notice.
    Leave = 2,
}

impl ItemTag {
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::State),
            1 => Some(Self::Claim),
            2 => Some(Self::Leave),
            _ => None,
        }
    }
}

/// "`origin` failed to probe `member` at SWIM incarnation `incarnation`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub(crate) origin: NodeId,
    pub(crate) member: NodeId,
    pub(crate) incarnation: u16,
}

/// Foca's dissemination key for our items: newer state versions replace older ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ItemKey {
    State(BroadcastKey),
    Claim {
        origin: SocketAddr,
        member: SocketAddr,
        generation: Generation,
        incarnation: u16,
    },
    Leave(SocketAddr, Generation),
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::State(a), Self::State(b)) => a.key_hash == b.key_hash && a.version >= b.version,
            (a, b) => a == b,
        }
    }
}

/// Shared between `Membership` and the handler living inside foca.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Items received from peers, to be judged after foca returns.
    pub(crate) received: Vec<Vec<u8>>,
    /// The key to give foca for the item `Membership` is adding right now.
    pub(crate) next_key: Option<ItemKey>,
}

/// Foca's broadcast handler. Received items are queued (foca re-gossips nothing by itself);
/// `Membership` judges them and re-adds the new ones through `add_broadcast`, setting
/// `next_key` just before, which is what this handler returns for local items.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handler {
    pub(crate) inbox: Arc<Mutex<Inbox>>,
}

impl Handler {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Inbox) -> R) -> R {
        let mut guard = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = ItemKey;
    type Error = Infallible;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<ItemKey>, Infallible> {
        Ok(self.with(|inbox| {
            if sender.is_some() {
                inbox.received.push(data.to_vec());
                None
            } else {
                inbox.next_key.take()
            }
        }))
    }
}
