//! Lifeguard's observation hooks: probe outcomes and refutations read from the foca headers
//! we send and receive, suspicion claims, and the buddy system.

use foca::{Header, Message, State};

use super::effects::{Claim, ItemKey, ItemTag};
use super::lifeguard::SuspectKey;
use super::{Membership, NodeId, ProbeWatch};
use std::time::Duration;

impl Membership {
    /// Tells the cluster we suspect `member` (a Lifeguard confirmation for the others).
    pub(super) fn send_claim(&mut self, member: &NodeId, incarnation: u16) {
        let origin = self.identity().clone();
        let key = ItemKey::Claim {
            origin: origin.addr,
            member: member.addr,
            generation: member.generation,
            incarnation,
        };
        let claim = Claim {
            origin,
            member: member.clone(),
            incarnation,
        };
        if let Ok(body) = postcard::to_allocvec(&claim) {
            self.add_item(key, ItemTag::Claim, &body);
        }
    }

    /// Counts another member's suspicion claim as a confirmation.
    pub(super) fn on_claim(&mut self, now: Duration, body: &[u8]) {
        let Ok(claim) = postcard::from_bytes::<Claim>(body) else {
            self.bad_items += 1;
            return;
        };
        let me = self.identity();
        if claim.origin.addr == me.addr {
            return;
        }
        if claim.member == *me {
            // Someone suspects us: let foca refute it (it ignores stale incarnations).
            let update = foca::Member::new(claim.member, claim.incarnation, State::Suspect);
            if self
                .foca
                .apply_many(std::iter::once(update), true, &mut self.effects)
                .is_err()
            {
                self.bad_items += 1;
            }
            return;
        }
        if claim.member.addr == me.addr {
            return;
        }
        let key = SuspectKey::new(&claim.member, claim.incarnation);
        let (bounds, expected) = self.suspicion_params();
        let item_key = ItemKey::Claim {
            origin: claim.origin.addr,
            member: claim.member.addr,
            generation: claim.member.generation,
            incarnation: claim.incarnation,
        };
        if self
            .suspicions
            .confirm(now, key, claim.origin.name.clone(), bounds, expected)
        {
            self.add_item(item_key, ItemTag::Claim, body);
        }
    }

    /// Notes the probe we start and our SWIM incarnation (a rise means we refuted).
    pub(super) fn observe_outgoing(&mut self, to: &NodeId, payload: &[u8]) {
        let Ok((header, _)) = postcard::take_from_bytes::<Header<NodeId>>(payload) else {
            return;
        };
        if let Message::Ping(number) = header.message {
            self.probe = Some(ProbeWatch {
                target: to.addr,
                number,
                acked: false,
            });
            self.tell_suspect(&header, to);
        }
        if header.src_incarnation > self.swim_incarnation {
            self.awareness.apply(1);
            self.events
                .push_back(super::MemberEvent::Refuted(header.src_incarnation));
        }
        self.swim_incarnation = header.src_incarnation;
    }

    /// Lifeguard's buddy system: when we probe a member we hold as suspect, we also send it
    /// a one-update foca `Gossip` packet carrying that suspicion, so it learns and refutes
    /// within a probe period even if the epidemic spread of the update missed it (foca sends
    /// each update only `max_transmissions` times, to random members).
    pub(super) fn tell_suspect(&mut self, ping: &Header<NodeId>, to: &NodeId) {
        let Some(suspect) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id() == to && m.state() == State::Suspect)
        else {
            return;
        };
        let header = Header {
            src: ping.src.clone(),
            src_incarnation: ping.src_incarnation,
            dst: to.clone(),
            message: Message::Gossip,
        };
        let (Ok(mut packet), Ok(update)) = (
            postcard::to_allocvec(&header),
            postcard::to_allocvec(suspect),
        ) else {
            return;
        };
        packet.extend_from_slice(&1u16.to_be_bytes());
        packet.extend_from_slice(&update);
        if packet.len() <= self.config.max_packet_size {
            self.push_swim(to.addr, &packet);
        }
    }

    /// Marks the probe in flight as answered when its ack (direct or forwarded) arrives.
    pub(super) fn observe_incoming(&mut self, payload: &[u8]) {
        let Some(probe) = self.probe.as_mut().filter(|p| !p.acked) else {
            return;
        };
        let Ok((header, _)) = postcard::take_from_bytes::<Header<NodeId>>(payload) else {
            return;
        };
        probe.acked = match header.message {
            Message::Ack(n) => n == probe.number && header.src.addr == probe.target,
            Message::ForwardedAck {
                origin,
                probe_number,
            } => probe_number == probe.number && origin.addr == probe.target,
            _ => false,
        };
    }
}
