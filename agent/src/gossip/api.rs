//! HTTP handlers of the gossip layer: members, catalog, join/leave, the keyring and
//! revocations (operator-signed replicated entries, like keyring changes).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use rhizome_gossip::keyring::Key as GossipKey;
use rhizome_gossip::state::{Applied, Entry, Key};

use super::Gossip;
use super::keys;
use super::replica::Replica;
use crate::api::error::ApiError;
use crate::api::types::{
    JoinRequest, KeyOp, KeyringChange, KeyringView, MemberRow, NsQuery, RevocationAnswer,
    RevocationRequest, RevocationView, ServiceSummary,
};
use crate::catalog::{CatalogReader, Instance};

/// What the gossip endpoints read and write.
#[derive(Clone)]
pub struct ApiState {
    /// Members, join/leave, the keyring.
    pub gossip: Arc<Gossip>,
    /// The catalog the builder keeps up to date.
    pub catalog: CatalogReader,
    /// Signed keyring changes are submitted here.
    pub replica: Arc<Replica>,
    /// `--dev`: unsigned keyring changes are accepted.
    pub dev: bool,
}

/// The routes of this module with their state, to merge into the agent's router.
pub fn routes(state: ApiState) -> axum::Router {
    use axum::routing::{get, put};
    axum::Router::new()
        .route("/v1/members", get(members))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/join", put(join))
        .route("/v1/leave", put(leave))
        .route("/v1/keyring", get(keyring).post(keyring_change))
        .route("/v1/ca/revocations", get(revocations).post(revoke))
        .with_state(state)
}

/// How long `PUT /v1/join` waits for the seed to answer.
pub const JOIN_WAIT: Duration = Duration::from_secs(10);

/// `GET /v1/members`: `[{node, address, status, incarnation}]`.
pub async fn members(State(s): State<ApiState>) -> Json<Vec<MemberRow>> {
    Json(s.gossip.members().as_ref().clone())
}

/// `GET /v1/catalog/services`.
pub async fn catalog_services(State(s): State<ApiState>) -> Json<Vec<ServiceSummary>> {
    let catalog = s.catalog.borrow().clone();
    let rows = catalog
        .services()
        .into_iter()
        .map(|(namespace, name)| ServiceSummary {
            instances: catalog.instances_of(&namespace, &name).count(),
            passing: catalog.healthy(&namespace, &name).count(),
            namespace,
            name,
        })
        .collect();
    Json(rows)
}

/// `GET /v1/catalog/service/<name>?ns=`: its instances with node, address, port, health.
/// A name or namespace the config would refuse is a 400, not an empty list.
pub async fn catalog_service(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<NsQuery>,
) -> Result<Json<Vec<Instance>>, ApiError> {
    let ns =
        q.ns.unwrap_or_else(|| crate::config::DEFAULT_NAMESPACE.to_string());
    crate::api::error::valid_name("service", &name)?;
    crate::api::error::valid_name("namespace", &ns)?;
    let catalog = s.catalog.borrow().clone();
    Ok(Json(catalog.instances_of(&ns, &name).cloned().collect()))
}

/// `PUT /v1/join`: announces to `address` and waits for it to answer.
pub async fn join(
    State(s): State<ApiState>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match s.gossip.join(&req.address, JOIN_WAIT).await {
        Ok(n) => Ok(Json(
            serde_json::json!({ "joined": req.address, "members": n }),
        )),
        Err(e @ super::GossipError::Resolve(_)) => {
            Err(ApiError(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, e.to_string())),
    }
}

/// `PUT /v1/leave`: leaves the cluster gracefully.
pub async fn leave(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.gossip
        .leave()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(serde_json::json!({ "left": true })))
}

/// `GET /v1/keyring`: this agent's installed keys.
pub async fn keyring(State(s): State<ApiState>) -> Json<KeyringView> {
    let k = s.gossip.keys();
    Json(KeyringView {
        encrypted: k.is_encrypted(),
        keys: k.list(),
    })
}

/// `POST /v1/keyring`: install, use or remove a key mesh-wide.
pub async fn keyring_change(
    State(s): State<ApiState>,
    Json(req): Json<KeyringChange>,
) -> Result<Json<KeyringView>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let key: GossipKey = req.key.parse().map_err(|e| bad(format!("key: {e}")))?;
    if req.op == KeyOp::Remove && s.gossip.keys().primary() == Some(key.id()) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "key {} is the primary key: `use` another key first",
                key.id()
            ),
        ));
    }
    match req.entry {
        Some(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| bad("entry: not base64".into()))?;
            let entry = Entry::from_bytes(&bytes).map_err(|e| bad(format!("entry: {e}")))?;
            if !keys::entry_matches(&entry, req.op, &key) {
                return Err(bad("the signed entry does not describe this change".into()));
            }
            match s.replica.submit(entry) {
                Ok(Applied::New | Applied::Stale) => {}
                Err(r) => {
                    return Err(ApiError(
                        StatusCode::FORBIDDEN,
                        format!("entry refused: {r}"),
                    ));
                }
            }
        }
        None if s.dev => {
            let (k, value) = keys::change_entry(req.op, &key);
            let res = match value {
                Some(v) => s.replica.write_local(k, v),
                None => s.replica.delete_local(k),
            };
            res.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
        None => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "keyring changes must be signed by an operator: pass --operator-dir".into(),
            ));
        }
    }
    // The follower applies the change asynchronously; apply now so the answer shows it.
    s.gossip
        .keys()
        .apply(&s.replica.entries_with_tombstones("keyring/"));
    Ok(keyring(State(s)).await)
}

/// The revocations in force, from the replicated `revoked/..` entries.
fn revocation_views(replica: &Replica) -> Vec<RevocationView> {
    replica
        .entries("revoked/")
        .iter()
        .filter_map(|e| {
            let r = rhizome_ca::Revocation::from_bytes(&e.value).ok()?;
            Some(RevocationView {
                key: e.key.to_string(),
                node: r.node().map(ToString::to_string),
                fingerprint: r.fingerprint().map(ToString::to_string),
                reason: r.reason().to_string(),
                revoked_at: r.revoked_at(),
                revoked_by: e.origin.to_string(),
            })
        })
        .collect()
}

/// `GET /v1/ca/revocations`: every revocation in force.
pub async fn revocations(State(s): State<ApiState>) -> Json<Vec<RevocationView>> {
    Json(revocation_views(&s.replica))
}

/// `POST /v1/ca/revocations`: applies an operator-signed revocation (or its withdrawal),
/// which takes effect on this agent at once and reaches the others by gossip. 400 if the
/// body is not a `revoked/..` entry, 403 if the signature, the signer or the value is refused.
pub async fn revoke(
    State(s): State<ApiState>,
    Json(req): Json<RevocationRequest>,
) -> Result<Json<RevocationAnswer>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.entry.trim())
        .map_err(|_| bad("entry: not base64".into()))?;
    let entry = Entry::from_bytes(&bytes).map_err(|e| bad(format!("entry: {e}")))?;
    if !matches!(entry.key, Key::Revoked(_)) {
        return Err(bad(format!(
            "entry key {} is not revoked/<name>",
            entry.key
        )));
    }
    let (key, withdrawn) = (entry.key.to_string(), entry.tombstone);
    let stale = match s.replica.submit(entry) {
        Ok(Applied::New) => false,
        Ok(Applied::Stale) => true,
        Err(r) => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("revocation refused: {r} (it must be signed by an operator of this mesh)"),
            ));
        }
    };
    Ok(Json(RevocationAnswer {
        key,
        withdrawn,
        stale,
        revocations: revocation_views(&s.replica),
    }))
}
