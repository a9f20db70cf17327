#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::testkit::{
    Identity, NOW, POOL_SIZE, Role, TestAuthority, catalog, intentions, pool, signed,
};
use super::*;
use crate::hlc::Hlc;

struct World {
    a: Arc<Identity>,
    b: Arc<Identity>,
    op: Arc<Identity>,
    auth: TestAuthority,
}

fn world() -> World {
    let a = Identity::new("node-a", Role::Agent);
    let b = Identity::new("node-b", Role::Agent);
    let op = Identity::new("ops", Role::Operator);
    let auth = TestAuthority::new(&[&a, &b, &op]);
    World { a, b, op, auth }
}

#[test]
fn local_writes_are_readable_in_key_order_and_queued_as_changes() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    s.write(
        &*w.a,
        &w.a.name,
        catalog("node-a", "web"),
        b"v1".to_vec(),
        NOW,
    )
    .unwrap();
    s.write(&*w.op, &w.op.name, Key::CaBundle, b"roots".to_vec(), NOW)
        .unwrap();
    s.write(
        &*w.a,
        &w.a.name,
        catalog("node-a", "api"),
        b"v2".to_vec(),
        NOW,
    )
    .unwrap();
    let keys: Vec<String> = s.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(
        keys,
        ["ca/bundle", "catalog/node-a/api", "catalog/node-a/web"]
    );
    assert_eq!(s.get(&catalog("node-a", "web")).unwrap().value, b"v1");
    let changes = s.drain_changes();
    assert_eq!(changes.len(), 3);
    assert!(s.drain_changes().is_empty());
    // Successive local writes get increasing clocks even within one millisecond.
    let hlcs: Vec<Hlc> = changes
        .iter()
        .map(|c| match c {
            Change::Upserted(e) => e.hlc,
            Change::Removed(_) => panic!("unexpected removal"),
        })
        .collect();
    assert!(hlcs.windows(2).all(|p| p[0] < p[1]));
}

#[test]
fn merge_keeps_highest_hlc_then_origin() {
    let w = world();
    let op2 = Identity::new("ops2", Role::Operator);
    let auth = TestAuthority::new(&[&w.a, &w.op, &op2]);
    let mut s = State::new(auth, StateConfig::default());
    let key = intentions("db");
    let old = signed(&w.op, key.clone(), b"old", Hlc::new(NOW - 10, 0), false);
    let new = signed(&w.op, key.clone(), b"new", Hlc::new(NOW - 5, 0), false);
    assert_eq!(s.apply(new.clone(), NOW), Ok(Applied::New));
    assert_eq!(s.apply(old, NOW), Ok(Applied::Stale));
    assert_eq!(s.apply(new.clone(), NOW), Ok(Applied::Stale));
    assert_eq!(s.get(&key).unwrap().value, b"new");
    // Same clock, greater origin wins.
    let tie = signed(&op2, key.clone(), b"tie", new.hlc, false);
    assert_eq!(s.apply(tie, NOW), Ok(Applied::New));
    assert_eq!(s.get(&key).unwrap().value, b"tie");
    assert_eq!(s.counters().accepted, 2);
    assert_eq!(s.counters().stale, 2);
}

#[test]
fn every_rejection_reason_is_counted_and_changes_nothing() {
    let w = world();
    let stranger = Identity::new("node-x", Role::Agent);
    let config = StateConfig {
        max_value_bytes: 64,
        ..StateConfig::default()
    };
    let mut s = State::new(w.auth.clone(), config);
    let t = Hlc::new(NOW, 0);
    let good = signed(&w.a, catalog("node-a", "web"), b"ok", t, false);

    let mut tampered = good.clone();
    tampered.value = b"evil".to_vec();
    let mut unsigned = good.clone();
    unsigned.signature.clear();
    let cases: Vec<(Entry, Rejection)> = vec![
        (tampered, Rejection::BadSignature),
        (unsigned, Rejection::MissingSignature),
        (
            signed(&stranger, catalog("node-x", "w"), b"x", t, false),
            Rejection::UnknownSigner,
        ),
        // Agent a writing b's catalog, and an agent writing an operator key.
        (
            signed(&w.a, catalog("node-b", "web"), b"x", t, false),
            Rejection::WrongOwner,
        ),
        (
            signed(&w.a, intentions("db"), b"x", t, false),
            Rejection::WrongOwner,
        ),
        (
            signed(
                &w.a,
                catalog("node-a", "w"),
                b"x",
                Hlc::new(NOW + 3_600_000, 0),
                false,
            ),
            Rejection::ClockAhead,
        ),
        (
            signed(&w.a, catalog("node-a", "w"), &[0; 65], t, false),
            Rejection::TooLarge,
        ),
        (
            signed(&w.a, catalog("node-a", "w"), b"x", t, true),
            Rejection::Malformed,
        ),
    ];
    for (entry, want) in cases {
        assert_eq!(s.apply(entry, NOW), Err(want));
    }
    // Origin forged to another node but signed by a: wrong owner.
    let mut forged_origin = good.clone();
    forged_origin.origin = "node-b".parse().unwrap();
    w.a.resign(&mut forged_origin);
    assert_eq!(s.apply(forged_origin, NOW), Err(Rejection::WrongOwner));
    assert_eq!(
        s.apply_bytes(b"\x01\x01garbage", NOW),
        Err(Rejection::Malformed)
    );

    let c = s.counters();
    assert_eq!(
        (
            c.bad_signature,
            c.missing_signature,
            c.unknown_signer,
            c.wrong_owner
        ),
        (1, 1, 1, 3)
    );
    assert_eq!((c.clock_ahead, c.too_large, c.malformed), (1, 1, 2));
    assert_eq!(c.rejected(), 10);
    assert_eq!(c.accepted, 0);
    assert!(s.is_empty());
    assert!(s.drain_changes().is_empty());
    assert_eq!(s.apply(good, NOW), Ok(Applied::New));
}

#[test]
fn broadcast_receiver_reports_only_new_valid_items() {
    let w = world();
    let mut sender = State::new(w.auth.clone(), StateConfig::default());
    let mut receiver = State::new(w.auth.clone(), StateConfig::default());
    receiver.set_wall_clock(NOW);
    let entry = sender
        .write(
            &*w.b,
            &w.b.name,
            catalog("node-b", "db"),
            b"x".to_vec(),
            NOW,
        )
        .unwrap();
    let item = sender.broadcast_item(&entry).unwrap();
    let got = receiver.receive_broadcast(&item).unwrap();
    assert_eq!(got, broadcast_key(&entry));
    assert_eq!(got.version, entry.hlc.as_u64());
    assert_eq!(receiver.receive_broadcast(&item), None, "duplicate");
    let mut forged = entry.clone();
    forged.hlc = Hlc::new(NOW, 99);
    assert_eq!(receiver.receive_broadcast(&forged.to_bytes()), None);
    assert_eq!(receiver.receive_broadcast(&item[..item.len() - 1]), None);
    assert_eq!(receiver.counters().bad_signature, 1);
    assert_eq!(receiver.counters().malformed, 1);
    assert_eq!(receiver.get(&entry.key), Some(&entry));
}

#[test]
fn entries_over_the_budget_are_not_broadcast() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    let small = s
        .write(&*w.op, &w.op.name, intentions("a"), vec![7; 100], NOW)
        .unwrap();
    let big = s
        .write(&*w.op, &w.op.name, intentions("b"), vec![7; 2_000], NOW)
        .unwrap();
    assert!(s.broadcast_item(&small).unwrap().len() <= DEFAULT_BROADCAST_BUDGET);
    assert_eq!(s.broadcast_item(&big), None);
    assert!(broadcast_item(&big, 4_096).is_some());
}

#[test]
fn tombstones_hide_keys_and_are_collected_after_the_horizon() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    let key = catalog("node-a", "web");
    s.write(&*w.a, &w.a.name, key.clone(), b"v".to_vec(), NOW)
        .unwrap();
    let tomb = s.delete(&*w.a, &w.a.name, key.clone(), NOW + 1).unwrap();
    assert!(tomb.tombstone && tomb.value.is_empty());
    assert_eq!(s.get(&key), None);
    assert_eq!(s.entry(&key), Some(&tomb));
    assert_eq!(s.iter().count(), 0);
    s.drain_changes();
    assert_eq!(s.gc_tombstones(NOW), 0, "not older than the horizon yet");
    assert_eq!(s.gc_tombstones(NOW + 2), 1);
    assert_eq!(s.entry(&key), None);
    assert_eq!(s.drain_changes(), vec![Change::Removed(key)]);
    assert!(s.bucket_hashes().iter().all(|h| *h == 0));
}

#[test]
fn entries_refused_after_a_trust_change_are_dropped() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    s.write(
        &*w.a,
        &w.a.name,
        catalog("node-a", "web"),
        b"v".to_vec(),
        NOW,
    )
    .unwrap();
    s.write(
        &*w.b,
        &w.b.name,
        catalog("node-b", "web"),
        b"v".to_vec(),
        NOW,
    )
    .unwrap();
    s.write(&*w.op, &w.op.name, intentions("db"), b"i".to_vec(), NOW)
        .unwrap();
    s.delete(&*w.a, &w.a.name, catalog("node-a", "old"), NOW)
        .unwrap();
    s.drain_changes();
    assert!(s.drop_refused(|_| true).is_empty(), "nothing changed yet");
    // node-a is no longer trusted (revoked): its live entries go, its tombstone stays.
    *s.authority_mut() = TestAuthority::new(&[&w.b]);
    // Only the selected keys are looked at: the operator's entry stays this time.
    assert_eq!(
        s.drop_refused(|k| k.owner_node().is_some()),
        vec![catalog("node-a", "web")]
    );
    assert!(s.get(&catalog("node-a", "web")).is_none());
    assert!(s.entry(&catalog("node-a", "old")).is_some());
    assert!(s.get(&catalog("node-b", "web")).is_some());
    assert!(s.get(&intentions("db")).is_some());
    assert!(matches!(
        s.drain_changes().as_slice(),
        [Change::Removed(k)] if *k == catalog("node-a", "web")
    ));
    // A peer sending it again is refused.
    let again = signed(
        &w.a,
        catalog("node-a", "web"),
        b"v",
        Hlc::new(NOW + 1, 0),
        false,
    );
    assert_eq!(s.apply(again, NOW), Err(Rejection::UnknownSigner));
    // Selecting every key drops the operator's entry as well.
    assert_eq!(s.drop_refused(|_| true), vec![intentions("db")]);
}

#[test]
fn load_reverifies_stored_records() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    s.write(
        &*w.a,
        &w.a.name,
        catalog("node-a", "web"),
        b"v".to_vec(),
        NOW,
    )
    .unwrap();
    s.write(&*w.op, &w.op.name, intentions("db"), b"i".to_vec(), NOW)
        .unwrap();
    let mut records: Vec<Vec<u8>> = s.iter_all().map(Entry::to_bytes).collect();
    let mut forged = s.get(&intentions("db")).unwrap().clone();
    forged.value = b"allow all".to_vec();
    records.push(forged.to_bytes());
    records.push(vec![1, 1, 0xff]);
    // Without the operator in the trust set, its entry is refused at load.
    let (loaded, report) = State::load(
        TestAuthority::new(&[&w.a]),
        StateConfig::default(),
        records.iter().map(Vec::as_slice),
        NOW,
    );
    assert_eq!(
        report,
        LoadReport {
            loaded: 1,
            skipped: 3
        }
    );
    assert!(loaded.get(&catalog("node-a", "web")).is_some());
    assert!(loaded.get(&intentions("db")).is_none());
    let (full, report) = State::load(
        w.auth.clone(),
        StateConfig::default(),
        records.iter().map(Vec::as_slice),
        NOW,
    );
    assert_eq!(report.loaded, 2);
    assert_eq!(full.get(&intentions("db")).unwrap().value, b"i");
    // A later local write still orders after the loaded entries.
    let mut full = full;
    let next = full
        .write(
            &*w.a,
            &w.a.name,
            catalog("node-a", "web"),
            b"w".to_vec(),
            NOW - 1000,
        )
        .unwrap();
    assert!(next.hlc > Hlc::new(NOW, 0));
}

#[test]
fn down_nodes_are_flagged_then_reaped_and_old_copies_stay_out() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    let a_web = signed(
        &w.a,
        catalog("node-a", "web"),
        b"v",
        Hlc::new(NOW, 0),
        false,
    );
    let b_db = signed(&w.b, catalog("node-b", "db"), b"v", Hlc::new(NOW, 0), false);
    s.apply(a_web.clone(), NOW).unwrap();
    s.apply(b_db, NOW).unwrap();
    let down: BTreeSet<NodeName> = ["node-b".parse().unwrap()].into();
    let view: Vec<(String, bool)> = s
        .catalog(&down)
        .map(|v| (v.node.to_string(), v.is_node_down))
        .collect();
    assert_eq!(view, [("node-a".into(), false), ("node-b".into(), true)]);

    let since: BTreeMap<NodeName, u64> = [("node-a".parse().unwrap(), NOW)].into();
    let later = NOW + DEFAULT_REAP_AFTER_MS;
    assert!(nodes_to_reap(&since, later - 1, DEFAULT_REAP_AFTER_MS).is_empty());
    s.drain_changes();
    let reaped = s.reap_down_nodes(&since, later, DEFAULT_REAP_AFTER_MS);
    assert_eq!(reaped, vec![("node-a".parse().unwrap(), 1)]);
    assert_eq!(s.drain_changes(), vec![Change::Removed(a_web.key.clone())]);
    assert_eq!(s.catalog(&BTreeSet::new()).count(), 1);
    // A peer that has not reaped yet pushes the old copy back: ignored.
    assert_eq!(s.apply(a_web.clone(), later), Ok(Applied::Stale));
    assert_eq!(s.catalog_nodes(), ["node-b".parse().unwrap()].into());
    // The floor survives a restart when the agent persists and restores it.
    let floors = s.reaped_floors().clone();
    let mut restarted = State::new(w.auth.clone(), StateConfig::default());
    for (node, floor) in floors {
        restarted.restore_reaped_floor(node, floor);
    }
    assert_eq!(restarted.apply(a_web.clone(), later), Ok(Applied::Stale));
    // The node comes back and writes again: accepted.
    let back = signed(&w.a, a_web.key.clone(), b"back", Hlc::new(later, 0), false);
    assert_eq!(s.apply(back, later), Ok(Applied::New));
}

#[test]
fn decoders_never_panic_on_random_or_truncated_bytes() {
    let w = world();
    let mut s = State::new(w.auth.clone(), StateConfig::default());
    s.set_wall_clock(NOW);
    let entry = signed(&w.op, intentions("db"), b"value", Hlc::new(NOW, 1), false);
    let bytes = entry.to_bytes();
    assert_eq!(Entry::from_bytes(&bytes), Ok(entry.clone()));
    for cut in 0..bytes.len() {
        assert!(Entry::from_bytes(&bytes[..cut]).is_err(), "prefix {cut}");
        assert_eq!(s.receive_broadcast(&bytes[..cut]), None);
    }
    let mut extended = bytes.clone();
    extended.push(0);
    assert_eq!(
        Entry::from_bytes(&extended),
        Err(DecodeError::TrailingBytes(1))
    );
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 9;
    assert_eq!(
        Entry::from_bytes(&wrong_version),
        Err(DecodeError::UnsupportedVersion(9))
    );
    // Flipping any single byte never panics and never yields an accepted forgery.
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        let _ = Entry::from_bytes(&flipped);
        let _ = s.receive_broadcast(&flipped);
    }
    assert!(s.get(&entry.key).is_none_or(|e| *e == entry));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Entry::from_bytes(&bytes);
        let _ = crate::sync::SyncMessage::from_bytes(&bytes);
        let mut with_header = vec![WIRE_VERSION, 1];
        with_header.extend_from_slice(&bytes);
        let _ = Entry::from_bytes(&with_header);
        with_header[1] = 2;
        let _ = crate::sync::SyncMessage::from_bytes(&with_header);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = text.parse::<Key>();
        }
    }
}

fn snapshot(s: &State<TestAuthority>) -> (Vec<Entry>, Vec<u64>) {
    (s.iter_all().cloned().collect(), s.bucket_hashes().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any delivery order, with duplicates and replays, converges to the same state.
    #[test]
    fn any_delivery_order_converges(
        order_a in Just((0..POOL_SIZE).collect::<Vec<usize>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..POOL_SIZE, 0..20),
    ) {
        use std::sync::OnceLock;
        static POOL: OnceLock<(TestAuthority, Vec<Entry>)> = OnceLock::new();
        let (auth, entries) = POOL.get_or_init(pool);
        prop_assert_eq!(entries.len(), POOL_SIZE);
        let mut a = State::new(auth.clone(), StateConfig::default());
        let mut b = State::new(auth.clone(), StateConfig::default());
        for i in &order_a {
            a.apply(entries[*i].clone(), NOW).unwrap();
        }
        for i in dups {
            a.apply(entries[i].clone(), NOW).unwrap();
        }
        for e in entries.iter().rev() {
            b.apply(e.clone(), NOW).unwrap();
        }
        prop_assert_eq!(snapshot(&a), snapshot(&b));
        prop_assert_eq!(a.counters().rejected(), 0);
    }
}
