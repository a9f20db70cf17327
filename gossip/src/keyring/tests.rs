use super::*;

const T0: u64 = 1_800_000_000_000;

fn key(b: u8) -> Key {
    Key::from_bytes([b; KEY_LEN])
}

#[test]
fn seal_open_round_trip_and_overhead() {
    let mut a = Keyring::new(key(1), 11);
    let mut b = Keyring::new(key(1), 22);
    let sealed = a.seal(T0, b"hello gossip").unwrap();
    assert_eq!(sealed.len(), b"hello gossip".len() + SEAL_OVERHEAD);
    assert_eq!(sealed[0], VERSION_SEALED);
    assert!(!sealed.windows(5).any(|w| w == b"hello"));
    assert_eq!(b.open(T0 + 5, &sealed).unwrap(), b"hello gossip");
}

#[test]
fn base64_parse_and_generate() {
    let k = Key::generate([7; KEY_LEN]);
    let text = k.to_base64();
    assert_eq!(text.parse::<Key>().unwrap(), k);
    assert_eq!("AAAA".parse::<Key>(), Err(KeyParseError::Length(3)));
    assert_eq!("not base64!!".parse::<Key>(), Err(KeyParseError::Base64));
    assert!(!format!("{k:?}").contains(&text));
}

#[test]
fn forged_packet_with_wrong_key_is_rejected() {
    let mut a = Keyring::new(key(1), 1);
    let mut attacker = Keyring::new(key(9), 2);
    let mut b = Keyring::new(key(1), 3);
    let forged = attacker.seal(T0, b"evil").unwrap();
    assert_eq!(b.open(T0, &forged), Err(OpenError::UnknownKey));
    // A forger who copies a valid hint still fails authentication.
    let mut spoofed = forged.clone();
    spoofed[1..1 + HINT_LEN].copy_from_slice(&key(1).id().0);
    assert_eq!(b.open(T0, &spoofed), Err(OpenError::Garbled));
    // And the honest sender is unaffected.
    let ok = a.seal(T0, b"fine").unwrap();
    assert_eq!(b.open(T0, &ok).unwrap(), b"fine");
}

#[test]
fn garbled_and_short_packets_are_typed() {
    let mut a = Keyring::new(key(1), 1);
    let mut b = Keyring::new(key(1), 2);
    let mut p = a.seal(T0, b"payload").unwrap();
    let last = p.len() - 1;
    p[last] ^= 0x40;
    assert_eq!(b.open(T0, &p), Err(OpenError::Garbled));
    let mut p = a.seal(T0, b"payload").unwrap();
    p[CIPHER_AT + 2] ^= 1;
    assert_eq!(b.open(T0, &p), Err(OpenError::Garbled));
    assert_eq!(b.open(T0, &[]), Err(OpenError::TooShort));
    assert_eq!(
        b.open(T0, &[VERSION_SEALED, 1, 2]),
        Err(OpenError::TooShort)
    );
    assert_eq!(b.open(T0, &[9, 1, 2]), Err(OpenError::UnknownVersion(9)));
    assert_eq!(
        b.open(T0, &[VERSION_CLEAR, 1, 2]),
        Err(OpenError::Cleartext)
    );
}

#[test]
fn replayed_packets_are_rejected_but_reordering_is_fine() {
    let mut a = Keyring::new(key(1), 1);
    let mut b = Keyring::new(key(1), 2);
    let packets: Vec<_> = (0..5).map(|_| a.seal(T0, b"x").unwrap()).collect();
    for i in [1, 0, 4, 2, 3] {
        assert!(b.open(T0, &packets[i]).is_ok(), "packet {i}");
    }
    for p in &packets {
        assert_eq!(b.open(T0, p), Err(OpenError::Replayed));
    }
    // Far behind the window: rejected even though never seen.
    let old = a.seal(T0, b"old").unwrap();
    for _ in 0..REPLAY_WINDOW + 10 {
        let p = a.seal(T0, b"n").unwrap();
        b.open(T0, &p).unwrap();
    }
    assert_eq!(b.open(T0, &old), Err(OpenError::Replayed));
}

#[test]
fn a_reordered_burst_as_long_as_a_large_table_push_is_accepted() {
    // A 10,000-member full-state push is ~160 packets back to back; the receiver may see
    // them in any order. Every one must open, once, and the replays must not.
    let mut a = Keyring::new(key(1), 1);
    let mut b = Keyring::new(key(1), 2);
    let burst: Vec<_> = (0..1000).map(|_| a.seal(T0, b"m").unwrap()).collect();
    // Newest first, then the rest oldest first: the oldest is 999 behind when it arrives.
    assert!(b.open(T0, &burst[999]).is_ok());
    for (i, p) in burst[..999].iter().enumerate() {
        assert!(b.open(T0, p).is_ok(), "packet {i} of a reordered burst");
    }
    for (i, p) in burst.iter().enumerate() {
        assert_eq!(
            b.open(T0, p),
            Err(OpenError::Replayed),
            "replay of packet {i}"
        );
    }
}

#[test]
fn the_window_ring_wraps_without_forgetting_or_inventing() {
    // Counters far past the ring's size, with gaps and late arrivals: each number opens once
    // iff it is within the window of the newest seen, in a model kept beside it.
    let mut a = Keyring::new(key(1), 1);
    let mut b = Keyring::new(key(1), 2);
    let sealed: Vec<_> = (0..6000u32).map(|_| a.seal(T0, b"w").unwrap()).collect();
    let mut seen = std::collections::HashSet::new();
    let mut highest: Option<u32> = None;
    let (mut late_accepted, mut late_refused) = (0, 0);
    // Mostly forward, each number displaced by a pseudo-random 0..2,500 ahead: late arrivals
    // both within and beyond the window.
    let order = (0..6000u32).map(|i| (i + (i.wrapping_mul(2_654_435_761) >> 20) % 2500) % 6000);
    for c in order.chain(0..6000) {
        let expect_ok = match highest {
            None => true,
            Some(h) => !seen.contains(&c) && (c > h || h - c < REPLAY_WINDOW),
        };
        let got = b.open(T0, &sealed[c as usize]).is_ok();
        assert_eq!(got, expect_ok, "counter {c}, newest {highest:?}");
        match highest {
            Some(h) if c < h && !seen.contains(&c) && got => late_accepted += 1,
            Some(h) if c < h && !seen.contains(&c) => late_refused += 1,
            _ => {}
        }
        if got {
            seen.insert(c);
            highest = Some(highest.map_or(c, |h| h.max(c)));
        }
    }
    // The order exercised both sides of the window's edge.
    assert!(
        late_accepted > 100 && late_refused > 100,
        "{late_accepted} {late_refused}"
    );
}

#[test]
fn stale_timestamps_are_rejected_and_old_senders_forgotten() {
    let mut a = Keyring::new(key(1), 1);
    let mut b = Keyring::new(key(1), 2);
    let p = a.seal(T0, b"x").unwrap();
    assert_eq!(
        b.open(T0 + DEFAULT_MAX_SKEW_MS + 1, &p),
        Err(OpenError::Replayed)
    );
    let future = a.seal(T0 + DEFAULT_MAX_SKEW_MS + 1, b"x").unwrap();
    assert_eq!(b.open(T0, &future), Err(OpenError::Replayed));
    let p = a.seal(T0, b"x").unwrap();
    b.open(T0, &p).unwrap();
    assert_eq!(b.tracked_senders(), 1);
    // A new sender long after: the first one's window is dropped, and its replay still fails.
    let mut c = Keyring::new(key(1), 3);
    let later = T0 + 3 * DEFAULT_MAX_SKEW_MS;
    b.open(later, &c.seal(later, b"y").unwrap()).unwrap();
    assert_eq!(b.tracked_senders(), 1);
    assert_eq!(b.open(later, &p), Err(OpenError::Replayed));
}

#[test]
fn rotation_loses_no_message() {
    // Three agents; rotate from key 1 to key 2 while traffic flows between every step.
    let mut rings: Vec<Keyring> = (0..3).map(|i| Keyring::new(key(1), i)).collect();
    let mut delivered = 0;
    let mut exchange = |rings: &mut Vec<Keyring>| {
        for s in 0..rings.len() {
            let p = rings[s].seal(T0, b"msg").unwrap();
            for (r, ring) in rings.iter_mut().enumerate() {
                if r != s {
                    assert_eq!(ring.open(T0, &p).unwrap(), b"msg");
                    delivered += 1;
                }
            }
        }
    };
    exchange(&mut rings);
    for r in rings.iter_mut() {
        assert!(r.install(key(2)));
        assert!(!r.install(key(2)));
    }
    exchange(&mut rings);
    // Switch primaries one at a time: mixed senders must still be understood.
    for i in 0..rings.len() {
        rings[i].use_key(key(2).id()).unwrap();
        exchange(&mut rings);
    }
    for r in rings.iter_mut() {
        assert_eq!(
            r.remove(key(2).id()),
            Err(KeyringError::RemovePrimary(key(2).id()))
        );
        r.remove(key(1).id()).unwrap();
        assert_eq!(
            r.remove(key(1).id()),
            Err(KeyringError::NotInstalled(key(1).id()))
        );
    }
    exchange(&mut rings);
    assert_eq!(delivered, 6 * 6);
    assert_eq!(
        rings[0].list(),
        vec![KeyInfo {
            id: key(2).id(),
            is_primary: true
        }]
    );
    // A straggler still on key 1 is now refused.
    let mut old = Keyring::new(key(1), 99);
    assert_eq!(
        rings[0].open(T0, &old.seal(T0, b"late").unwrap()),
        Err(OpenError::UnknownKey)
    );
}

#[test]
fn cleartext_mode_and_switch_on() {
    let mut a = Keyring::cleartext(1);
    let mut b = Keyring::cleartext(2);
    assert!(!a.is_encrypted());
    let p = a.seal(T0, b"plain").unwrap();
    assert_eq!(p[0], VERSION_CLEAR);
    assert_eq!(b.open(T0, &p).unwrap(), b"plain");
    let mut enc = Keyring::new(key(3), 5);
    assert_eq!(
        b.open(T0, &enc.seal(T0, b"s").unwrap()),
        Err(OpenError::UnknownKey)
    );
    assert!(b.install(key(3)));
    assert!(b.is_encrypted());
    assert_eq!(b.open(T0, &p), Err(OpenError::Cleartext));
}

#[test]
fn counter_exhaustion_requires_reseed() {
    let mut a = Keyring::new(key(1), 1);
    a.counter = u32::MAX;
    assert_eq!(a.seal(T0, b"x"), Err(SealError::CounterExhausted));
    a.reseed(2);
    assert!(a.seal(T0, b"x").is_ok());
}
