#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::BroadcastReceiver;
use crate::hlc::Hlc;
use crate::state::{Rejection, StateConfig};
use proptest::prelude::*;

use crate::state::testkit::{Identity, NOW, POOL_SIZE, Role, TestAuthority, catalog, pool};

type TestState = State<TestAuthority>;

/// Bytes and messages of one exchange.
#[derive(Debug, Default)]
struct Traffic {
    messages: usize,
    bytes: Vec<usize>,
}

/// Runs a full exchange from `initiator` to `responder`, through the wire encoding.
fn exchange(initiator: &mut TestState, responder: &mut TestState, now: u64) -> Traffic {
    let mut traffic = Traffic::default();
    let mut wire = start(initiator).to_bytes();
    let mut to_responder = true;
    // Bounded: an exchange has at most four messages.
    for _ in 0..4 {
        traffic.messages += 1;
        traffic.bytes.push(wire.len());
        let message = SyncMessage::from_bytes(&wire).unwrap();
        let last = message.ends_exchange();
        let target = if to_responder {
            &mut *responder
        } else {
            &mut *initiator
        };
        // The sender of the last message knows it is the last (the agent closes after it).
        match handle(target, message, now).unwrap() {
            Some(reply) => {
                assert!(!last, "a message that ends the exchange got a reply");
                wire = reply.to_bytes();
            }
            None => {
                assert!(last, "the exchange ended on a message not marked last");
                return traffic;
            }
        }
        to_responder = !to_responder;
    }
    panic!("exchange did not finish in four messages");
}

fn snapshot(s: &TestState) -> (Vec<Entry>, Vec<u64>) {
    (s.iter_all().cloned().collect(), s.bucket_hashes().to_vec())
}

fn key(text: &str) -> Key {
    text.parse().unwrap()
}

struct Mesh {
    a: Arc<Identity>,
    b: Arc<Identity>,
    c: Arc<Identity>,
    op: Arc<Identity>,
    op2: Arc<Identity>,
    auth: TestAuthority,
}

fn mesh() -> Mesh {
    let a = Identity::new("node-a", Role::Agent);
    let b = Identity::new("node-b", Role::Agent);
    let c = Identity::new("node-c", Role::Agent);
    let op = Identity::new("ops", Role::Operator);
    let op2 = Identity::new("ops2", Role::Operator);
    let auth = TestAuthority::new(&[&a, &b, &c, &op, &op2]);
    Mesh {
        a,
        b,
        c,
        op,
        op2,
        auth,
    }
}

/// Writes on `writer` and delivers the broadcast item to `peers` (if it fits the budget).
fn write_and_broadcast(
    writer: &mut TestState,
    peers: &mut [&mut TestState],
    id: &Identity,
    key: Key,
    value: Option<Vec<u8>>,
    now: u64,
) {
    let entry = match value {
        Some(v) => writer.write(id, &id.name, key, v, now).unwrap(),
        None => writer.delete(id, &id.name, key, now).unwrap(),
    };
    if let Some(item) = writer.broadcast_item(&entry) {
        for peer in peers.iter_mut() {
            peer.set_wall_clock(now);
            peer.receive_broadcast(&item);
        }
    }
}

#[test]
fn states_diverged_by_a_partition_converge_after_sync() {
    let m = mesh();
    let new = || State::new(m.auth.clone(), StateConfig::default());
    let (mut a, mut b, mut c) = (new(), new(), new());
    // Shared history before the partition.
    write_and_broadcast(
        &mut a,
        &mut [&mut b, &mut c],
        &m.op,
        key("intentions/default/db"),
        Some(b"v0".to_vec()),
        NOW,
    );
    for (id, s) in [(&m.b, &mut b), (&m.c, &mut c)] {
        let k = catalog(id.name.as_str(), "web");
        s.write(&**id, &id.name, k, b"up".to_vec(), NOW).unwrap();
    }
    exchange(&mut a, &mut b, NOW);
    exchange(&mut b, &mut c, NOW);
    exchange(&mut a, &mut b, NOW);
    assert_eq!(snapshot(&a), snapshot(&c));

    // Partition {a} | {b, c}: writes on both sides, including a conflict on one key, a
    // delete, and an entry too big for a broadcast.
    let t = NOW + 1_000;
    write_and_broadcast(
        &mut a,
        &mut [],
        &m.a,
        catalog("node-a", "api"),
        Some(b"1".to_vec()),
        t,
    );
    write_and_broadcast(
        &mut a,
        &mut [],
        &m.op,
        key("intentions/default/db"),
        Some(b"a-side".to_vec()),
        t,
    );
    write_and_broadcast(
        &mut a,
        &mut [],
        &m.op,
        key("ca/bundle"),
        Some(vec![9; 3_000]),
        t,
    );
    write_and_broadcast(
        &mut b,
        &mut [&mut c],
        &m.op2,
        key("intentions/default/db"),
        Some(b"b-side".to_vec()),
        t + 5,
    );
    write_and_broadcast(
        &mut c,
        &mut [&mut b],
        &m.c,
        catalog("node-c", "web"),
        None,
        t + 6,
    );
    write_and_broadcast(
        &mut b,
        &mut [&mut c],
        &m.b,
        catalog("node-b", "cache"),
        Some(b"2".to_vec()),
        t + 7,
    );
    assert_ne!(snapshot(&a), snapshot(&b));
    assert_eq!(snapshot(&b), snapshot(&c));

    // Heal: a syncs with b, then b with c.
    let heal = t + 10_000;
    exchange(&mut a, &mut b, heal);
    exchange(&mut c, &mut b, heal);
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(snapshot(&b), snapshot(&c));
    // The later write (b's side) won everywhere; the delete and the big bundle spread.
    assert_eq!(
        c.get(&key("intentions/default/db")).unwrap().value,
        b"b-side"
    );
    assert_eq!(a.get(&catalog("node-c", "web")), None);
    assert!(a.entry(&catalog("node-c", "web")).unwrap().tombstone);
    assert_eq!(c.get(&key("ca/bundle")).unwrap().value.len(), 3_000);
    assert_eq!(c.get(&catalog("node-a", "api")).unwrap().value, b"1");
    for s in [&a, &b, &c] {
        assert_eq!(s.counters().rejected(), 0);
    }
    // A further round finds nothing to do: summary and an empty details.
    assert_eq!(exchange(&mut a, &mut c, heal).messages, 2);
}

#[test]
fn digest_stays_small_and_one_change_costs_one_entry() {
    let m = mesh();
    let mut a = State::new(m.auth.clone(), StateConfig::default());
    // 3,000 entries: 1,000 nodes with three instances each, in entry count and key size.
    for i in 0..3_000 {
        let k = key(&format!("intentions/ns-{:04}/service-{i}", i / 3));
        a.write(&*m.op, &m.op.name, k, vec![1; 120], NOW).unwrap();
    }
    let mut b = a.clone();
    assert_eq!(snapshot(&a), snapshot(&b));
    b.write(
        &*m.op,
        &m.op.name,
        key("intentions/ns-0007/service-21"),
        vec![2; 120],
        NOW + 1,
    )
    .unwrap();
    let traffic = exchange(&mut a, &mut b, NOW + 2);
    assert_eq!(snapshot(&a), snapshot(&b));
    println!(
        "3000 entries, one change: message sizes {:?}",
        traffic.bytes
    );
    assert_eq!(traffic.messages, 4);
    let summary = traffic.bytes[0];
    assert!(summary <= BUCKETS * 8 + 8, "summary {summary} bytes");
    // Details carry one bucket (~12 keys of 3,000); the push is empty and the reply one entry.
    assert!(
        traffic.bytes[1] < 2_000,
        "details {} bytes",
        traffic.bytes[1]
    );
    assert!(traffic.bytes[2] < 100, "push {} bytes", traffic.bytes[2]);
    assert!(traffic.bytes[3] < 400, "entries {} bytes", traffic.bytes[3]);
    assert_eq!(a.counters().accepted, 3_001);
}

#[test]
fn forged_entries_in_a_push_are_rejected_and_counted() {
    let m = mesh();
    let mut honest = State::new(m.auth.clone(), StateConfig::default());
    let real = honest
        .write(
            &*m.a,
            &m.a.name,
            catalog("node-a", "web"),
            b"real".to_vec(),
            NOW,
        )
        .unwrap();
    let mut tampered = real.clone();
    tampered.value = b"evil".to_vec();
    tampered.hlc = Hlc::new(NOW, 50);
    let mut stolen_key = real.clone();
    stolen_key.key = catalog("node-b", "web");
    stolen_key.origin = m.b.name.clone();
    m.a.resign(&mut stolen_key);
    let before = snapshot(&honest);
    let push = SyncMessage::Push {
        entries: vec![tampered, stolen_key],
        want: vec![real.key.clone(), catalog("node-z", "nothing")],
    };
    let reply = handle(&mut honest, push, NOW).unwrap();
    assert_eq!(reply, Some(SyncMessage::Entries(vec![real])));
    assert_eq!(snapshot(&honest), before);
    assert_eq!(honest.counters().bad_signature, 1);
    assert_eq!(honest.counters().wrong_owner, 1);
}

#[test]
fn malformed_sync_input_gives_typed_errors() {
    let m = mesh();
    let mut s = State::new(m.auth.clone(), StateConfig::default());
    let short = SyncMessage::Summary(vec![[0; 8]; 3]);
    assert_eq!(handle(&mut s, short, NOW), Err(SyncError::BadSummary(3)));
    let bytes = start(&s).to_bytes();
    for cut in 0..bytes.len() {
        assert!(SyncMessage::from_bytes(&bytes[..cut]).is_err());
    }
    let entry_bytes = s
        .write(&*m.c, &m.c.name, catalog("node-c", "x"), b"v".to_vec(), NOW)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        SyncMessage::from_bytes(&entry_bytes),
        Err(DecodeError::WrongKind { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Two states holding arbitrary subsets of the versions (in arbitrary order) end up equal
    /// to a state that received every version, after one exchange.
    #[test]
    fn one_exchange_makes_any_two_states_equal(
        left in proptest::sample::subsequence((0..POOL_SIZE).collect::<Vec<_>>(), 0..=POOL_SIZE).prop_shuffle(),
        right in proptest::sample::subsequence((0..POOL_SIZE).collect::<Vec<_>>(), 0..=POOL_SIZE).prop_shuffle(),
    ) {
        use std::sync::OnceLock;
        static POOL: OnceLock<(TestAuthority, Vec<Entry>)> = OnceLock::new();
        let (auth, entries) = POOL.get_or_init(pool);
        let fill = |picks: &[usize]| {
            let mut s = State::new(auth.clone(), StateConfig::default());
            for i in picks {
                s.apply(entries[*i].clone(), NOW).unwrap();
            }
            s
        };
        let (mut a, mut b) = (fill(&left), fill(&right));
        let union: Vec<usize> = left.iter().chain(&right).copied().collect();
        let all = fill(&union);
        exchange(&mut a, &mut b, NOW);
        prop_assert_eq!(snapshot(&a), snapshot(&all));
        prop_assert_eq!(snapshot(&b), snapshot(&all));
    }
}

#[test]
fn an_empty_node_gets_entries_with_the_details_and_wants_nothing() {
    let m = mesh();
    let mut full = State::new(m.auth.clone(), StateConfig::default());
    for i in 0..50 {
        let k = key(&format!("intentions/default/svc-{i}"));
        full.write(&*m.op, &m.op.name, k, vec![3; 40], NOW).unwrap();
    }
    let mut empty = State::new(m.auth.clone(), StateConfig::default());
    let reply = handle(&mut full, start(&empty), NOW).unwrap().unwrap();
    let SyncMessage::Details {
        versions, entries, ..
    } = &reply
    else {
        panic!("expected details, got {reply:?}");
    };
    assert!(versions.is_empty());
    assert_eq!(entries.len(), 50);
    let push = handle(&mut empty, reply, NOW).unwrap().unwrap();
    assert_eq!(
        push,
        SyncMessage::Push {
            entries: vec![],
            want: vec![]
        }
    );
    assert_eq!(snapshot(&empty), snapshot(&full));
}

#[test]
fn certificates_travel_with_the_entries_they_sign() {
    use crate::state::testkit::ChainSigner;
    let root = Identity::new("root", Role::Operator);
    let a = Identity::new("node-a", Role::Agent);
    // Nobody knows node-a's key up front: only the root is trusted.
    let trust = || TestAuthority::with_roots(&[], &[&root]);
    let mut origin = State::new(trust(), StateConfig::default());
    let chain = ChainSigner {
        id: &a,
        chain: a.certify(&root),
    };
    let certs = origin
        .write(&chain, &a.name, key("certs/node-a"), Vec::new(), NOW)
        .unwrap();
    assert!(origin.broadcast_item(&certs).is_some());
    let web = origin
        .write(&*a, &a.name, catalog("node-a", "web"), b"v".to_vec(), NOW)
        .unwrap();

    // A broadcast that arrives before the certificate is refused (and counted) ...
    let mut late = State::new(trust(), StateConfig::default());
    late.set_wall_clock(NOW);
    assert_eq!(late.receive_broadcast(&web.to_bytes()), None);
    assert_eq!(late.counters().unknown_signer, 1);
    // ... and a sync repairs it: in one batch, the certificate is applied first although
    // `catalog/` sorts before `certs/`.
    exchange(&mut late, &mut origin, NOW);
    assert_eq!(late.get(&web.key), Some(&web));
    assert_eq!(snapshot(&late), snapshot(&origin));
    assert_eq!(late.counters().unknown_signer, 1);

    // Stored records in key order load the same way.
    let records: Vec<Vec<u8>> = origin.iter_all().map(Entry::to_bytes).collect();
    let (loaded, report) = State::load(
        trust(),
        StateConfig::default(),
        records.iter().map(Vec::as_slice),
        NOW,
    );
    assert_eq!((report.loaded, report.skipped), (2, 0));
    assert_eq!(snapshot(&loaded), snapshot(&origin));

    // A chain endorsed by another root is not trusted.
    let rogue = Identity::new("rogue-root", Role::Operator);
    let mut forged = certs.clone();
    forged.signer = crate::state::Signer::Chain(a.certify(&rogue));
    a.resign(&mut forged);
    let mut fresh = State::new(trust(), StateConfig::default());
    assert_eq!(fresh.apply(forged, NOW), Err(Rejection::UnknownSigner));
}
