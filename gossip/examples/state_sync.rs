//! Measures the replicated state at mesh scale and prints numbers (no assertions):
//! 1,000 agents with three catalog instances each, signed with real ECDSA P-256 keys.
//!
//! `cargo run --release -p rhizome-gossip --example state_sync [nodes] [instances]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use rhizome_gossip::state::{
    Authority, Entry, EntrySigner, Key, NodeName, Rejection, SignError, Signer, State, StateConfig,
};
use rhizome_gossip::sync::{SyncMessage, handle, start};
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};

const NOW: u64 = 1_800_000_000_000;

struct Agent {
    name: NodeName,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl EntrySigner for Agent {
    fn signer(&self) -> Signer {
        let d = digest(&SHA256, self.key.public_key().as_ref());
        Signer::Fingerprint(d.as_ref().try_into().unwrap())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError("ecdsa".into()))
    }
}

/// Agents may write their own catalog only.
#[derive(Clone, Default)]
struct Agents(BTreeMap<[u8; 32], (Vec<u8>, NodeName)>);

impl Authority for Agents {
    fn check(&self, entry: &Entry) -> Result<(), Rejection> {
        let Signer::Fingerprint(fp) = &entry.signer else {
            return Err(Rejection::UnknownSigner);
        };
        let (public, name) = self.0.get(fp).ok_or(Rejection::UnknownSigner)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public)
            .verify(&entry.signing_bytes(), &entry.signature)
            .map_err(|_| Rejection::BadSignature)?;
        if &entry.origin != name || entry.key.owner_node() != Some(name) {
            return Err(Rejection::WrongOwner);
        }
        Ok(())
    }
}

/// One exchange through the wire encoding; returns the message sizes.
fn exchange(a: &mut State<Agents>, b: &mut State<Agents>, now: u64) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut wire = start(a).to_bytes();
    let mut to_b = true;
    loop {
        sizes.push(wire.len());
        let msg = SyncMessage::from_bytes(&wire).unwrap();
        let target = if to_b { &mut *b } else { &mut *a };
        match handle(target, msg, now).unwrap() {
            Some(reply) => wire = reply.to_bytes(),
            None => return sizes,
        }
        to_b = !to_b;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(1_000, |a| a.parse().unwrap());
    let per_node: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let rng = SystemRandom::new();
    let agents: Vec<Agent> = (0..nodes)
        .map(|i| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Agent {
                name: format!("node-{i:04}.dc1").parse().unwrap(),
                key,
                rng: SystemRandom::new(),
            }
        })
        .collect();
    let mut auth = Agents::default();
    for a in &agents {
        let fp = match a.signer() {
            Signer::Fingerprint(fp) => fp,
            Signer::Chain(_) => unreachable!(),
        };
        auth.0
            .insert(fp, (a.key.public_key().as_ref().to_vec(), a.name.clone()));
    }

    // Each agent writes its instances on its own state; collect the entries.
    let value = br#"{"service":"payments-api","address":"10.20.30.40","port":8443,"tags":["v2","canary"],"health":"passing","meta":{"version":"1.42.0"}}"#.to_vec();
    let started = Instant::now();
    let mut entries = Vec::new();
    for a in &agents {
        let mut own = State::new(auth.clone(), StateConfig::default());
        for j in 0..per_node {
            let key: Key = format!("catalog/{}/payments-api-{j}", a.name)
                .parse()
                .unwrap();
            entries.push(own.write(a, &a.name, key, value.clone(), NOW).unwrap());
        }
    }
    let sign_s = started.elapsed().as_secs_f64();
    let sizes: Vec<usize> = entries.iter().map(|e| e.to_bytes().len()).collect();
    let max = sizes.iter().max().copied().unwrap_or(0);
    let avg = sizes.iter().sum::<usize>() / sizes.len().max(1);
    println!(
        "entries: {} ({} nodes x {}), encoded size avg {avg} B, max {max} B (broadcast budget 1000 B)",
        entries.len(),
        nodes,
        per_node
    );
    println!(
        "write (HLC + sign + verify own entry): {:.1} us/entry",
        sign_s * 1e6 / entries.len() as f64
    );

    let mut full = State::new(auth.clone(), StateConfig::default());
    let started = Instant::now();
    for e in &entries {
        full.apply(e.clone(), NOW).unwrap();
    }
    let apply_s = started.elapsed().as_secs_f64();
    println!(
        "apply (decode-free merge + ECDSA verify): {:.1} us/entry, {:.0} entries/s",
        apply_s * 1e6 / entries.len() as f64,
        entries.len() as f64 / apply_s
    );
    let started = Instant::now();
    for e in &entries {
        full.apply(e.clone(), NOW).unwrap();
    }
    println!(
        "apply duplicate (stale, no verify): {:.2} us/entry",
        started.elapsed().as_secs_f64() * 1e6 / entries.len() as f64
    );

    // Cold start: an empty node syncs with a full one.
    let mut empty = State::new(auth.clone(), StateConfig::default());
    let started = Instant::now();
    let cold = exchange(&mut empty, &mut full, NOW);
    println!(
        "sync, empty node <- full node: messages {:?} B, total {} KB, {:.0} ms",
        cold,
        cold.iter().sum::<usize>() / 1024,
        started.elapsed().as_secs_f64() * 1e3
    );

    // Steady state: one instance changed on one side.
    let mut other = full.clone();
    let a = &agents[nodes / 2];
    let key: Key = format!("catalog/{}/payments-api-0", a.name)
        .parse()
        .unwrap();
    let mut changed = value.clone();
    changed.extend_from_slice(b" ");
    other.write(a, &a.name, key, changed, NOW + 1).unwrap();
    let started = Instant::now();
    let one = exchange(&mut full, &mut other, NOW + 2);
    println!(
        "sync, one changed entry: messages {:?} B, total {} B, {:.2} ms",
        one,
        one.iter().sum::<usize>(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let same = exchange(&mut full, &mut other, NOW + 3);
    println!(
        "sync, equal states: messages {:?} B, {:.2} ms",
        same,
        started.elapsed().as_secs_f64() * 1e3
    );
}
