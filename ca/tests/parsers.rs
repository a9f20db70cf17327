//! Property tests for everything that parses outside input: SPIFFE ids, join tokens,
//! certificates from peers. None may panic; valid inputs round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use rhizome_ca::token::Claims;
use rhizome_ca::{CertInfo, CertKind, NodeName, SpiffeId, TokenId, verify_chain, verify_token};
use time::Duration;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_parses_or_errors_and_valid_ones_round_trip(s in "\\PC{0,60}") {
        if let Ok(id) = s.parse::<SpiffeId>() {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn generated_ids_round_trip(ns in label(), svc in label(), node in label()) {
        for s in [format!("spiffe://td.example/ns/{ns}/svc/{svc}"), format!("spiffe://td.example/agent/{node}.x")] {
            let id: SpiffeId = s.parse().unwrap();
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn garbage_tokens_are_refused_without_panicking(s in "\\PC{0,200}") {
        let mesh_root = root_cert();
        prop_assert!(verify_token(&s, &mesh_root, t0(), &"n".parse().unwrap()).is_err());
        let _ = rhizome_ca::peek_claims(&s);
    }

    #[test]
    fn garbage_certificates_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mesh = Mesh::new("rhizome.local");
        prop_assert!(verify_chain(&mesh.bundle, &bytes.clone().into(), &[], now(), CertKind::Workload).is_err());
        let _ = CertInfo::from_der(&bytes);
    }
}

fn root_cert() -> rustls_pki_types::CertificateDer<'static> {
    Mesh::new("rhizome.local").root.cert().clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_mutated_token_never_grants_something_else(pos in any::<usize>(), byte in any::<u8>()) {
        let mesh = Mesh::new("rhizome.local");
        let claims = Claims {
            id: TokenId([7; 16]),
            expires: t0() + Duration::hours(1),
            node_pattern: "web-*".parse().unwrap(),
            services: None,
            root: mesh.root.fingerprint(),
            max_uses: Some(1),
        };
        let token = claims.sign(&mesh.root).unwrap();
        let mut raw = token.into_bytes();
        let i = pos % raw.len();
        raw[i] = byte;
        if let Ok(mutated) = String::from_utf8(raw) {
            let node: NodeName = "web-1".parse().unwrap();
            if let Ok(got) = verify_token(&mutated, mesh.root.cert(), t0(), &node) {
                prop_assert_eq!(got, claims);
            }
        }
    }

    #[test]
    fn mutated_certificates_never_verify_as_someone_else(pos in any::<usize>(), byte in any::<u8>()) {
        let mesh = Mesh::new("rhizome.local");
        let web = workload(&mesh.agent("n", None), "default", "web");
        let mut der = web.leaf().to_vec();
        let i = pos % der.len();
        der[i] = byte;
        if let Ok(id) = verify_chain(&mesh.bundle, &der.into(), &web.chain()[1..], now(), CertKind::Workload) {
            prop_assert_eq!(&id, web.id());
        }
    }
}
