//! Mesh-wide key rotation (install, use, remove) signed by an operator, with no member lost
//! and gossip still flowing under the new key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gossip_kit;

use std::time::Duration;

use base64::Engine as _;
use gossip_kit::{Mesh, all_alive, gossip_addr, metric, wait_until};
use rhizome_agent::api::types::{KeyOp, KeyringChange, KeyringView};
use rhizome_agent::app::Agent;
use rhizome_agent::client::{Client, ClientError};
use rhizome_agent::gossip::authority::operator_entry;
use rhizome_agent::gossip::keys::{change_entry, generate_key};
use rhizome_agent::gossip::now_ms;

const LIMIT: Duration = Duration::from_secs(20);

fn signed(op: KeyOp, key: &str, cred: Option<&rhizome_ca::Credential>) -> KeyringChange {
    let parsed = key.parse().unwrap();
    let entry = cred.map(|cred| {
        let (k, value) = change_entry(op, &parsed);
        let tomb = value.is_none();
        let e = operator_entry(cred, k, value.unwrap_or_default(), tomb, now_ms()).unwrap();
        base64::engine::general_purpose::STANDARD.encode(e.to_bytes())
    });
    KeyringChange {
        op,
        key: key.to_string(),
        entry,
    }
}

async fn post(agent: &Agent, change: KeyringChange) -> Result<KeyringView, ClientError> {
    let addr = agent.http_addr().to_string();
    tokio::task::spawn_blocking(move || Client::new(addr).send("POST", "/v1/keyring", &change))
        .await
        .unwrap()
}

fn has_key(agent: &Agent, key: &str, primary: bool) -> bool {
    let id = key
        .parse::<rhizome_gossip::keyring::Key>()
        .unwrap()
        .id()
        .to_string();
    agent
        .handles()
        .gossip
        .keys()
        .list()
        .iter()
        .any(|k| k.id == id && (!primary || k.primary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_reaches_every_agent_without_losing_members() {
    let mut mesh = Mesh::new(true);
    let k1 = mesh.key.clone().unwrap();
    let k2 = generate_key().unwrap().to_base64();
    let operator = mesh
        .ca
        .root
        .issue_operator(
            &"alice".parse().unwrap(),
            time::OffsetDateTime::now_utc(),
            time::Duration::hours(1),
        )
        .unwrap();
    let a = mesh.start("a", &[], "").await;
    let seed = [gossip_addr(&a)];
    let b = mesh.start("b", &seed, "").await;
    let c = mesh.start("c", &seed, "").await;
    let all = [&a, &b, &c];
    wait_until("all alive", LIMIT, || all_alive(&all, &["a", "b", "c"])).await;

    let unsigned = post(&a, signed(KeyOp::Install, &k2, None))
        .await
        .unwrap_err();
    assert!(
        matches!(unsigned, ClientError::Status { status: 403, .. }),
        "{unsigned}"
    );

    post(&a, signed(KeyOp::Install, &k2, Some(&operator)))
        .await
        .unwrap();
    wait_until("k2 installed everywhere", LIMIT, || {
        all.iter().all(|x| has_key(x, &k2, false))
    })
    .await;
    assert!(
        all.iter().all(|x| has_key(x, &k1, true)),
        "k1 still primary"
    );

    post(&b, signed(KeyOp::Use, &k2, Some(&operator)))
        .await
        .unwrap();
    wait_until("k2 primary everywhere", LIMIT, || {
        all.iter().all(|x| has_key(x, &k2, true))
    })
    .await;

    let primary = post(&c, signed(KeyOp::Remove, &k2, Some(&operator)))
        .await
        .unwrap_err();
    assert!(
        matches!(primary, ClientError::Status { status: 409, .. }),
        "{primary}"
    );
    post(&c, signed(KeyOp::Remove, &k1, Some(&operator)))
        .await
        .unwrap();
    wait_until("k1 removed everywhere", LIMIT, || {
        all.iter().all(|x| !has_key(x, &k1, false))
    })
    .await;
    assert!(
        all_alive(&all, &["a", "b", "c"]),
        "no member lost during rotation"
    );

    // Gossip goes on under the new key: an agent configured with k2 only joins.
    mesh.key = Some(k2.clone());
    let d = mesh.start("d", &seed, "").await;
    wait_until("d joins with the new key", LIMIT, || {
        all_alive(&[&a, &b, &c, &d], &["a", "b", "c", "d"])
    })
    .await;
    for x in all {
        assert_eq!(metric(x, "rhizome_gossip_members{state=\"failed\"}"), 0);
    }
    for x in [a, b, c, d] {
        x.shutdown().await.unwrap();
    }
}
