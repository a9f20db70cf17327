//! HTTP endpoints of intentions and of the access graph (merged into `crate::api::router`):
//!
//! - `GET /v1/intentions`: the entries in force ([`view::ListView`]);
//! - `GET /v1/intentions/match?dst=NS/NAME`: rules that apply to a destination;
//! - `GET /v1/intentions/check?src=..&dst=..`: the decision (src may be a SPIFFE id);
//! - `POST /v1/intentions`: apply a signed entry (`{"entry": base64}`), or on `--dev`
//!   agents unsigned HCL (`{"hcl": "...", "file": "..."}`);
//! - `DELETE /v1/intentions/{ns}/{name}`: a signed tombstone (`{"entry": base64}`), or on
//!   `--dev` agents an empty body;
//! - `GET /v1/graph?format=json|dot`: the access graph over the catalog's services.

use super::Intentions;
use super::signed::{self, SignedError};
use super::{SubmitError, Verdict};
use crate::api::error::ApiError;
use crate::api::types::{
    CheckView, EntryView, ListView, MatchView, OriginView, ProblemsView, RuleView, SubmitRequest,
    SubmitView,
};
use crate::catalog::CatalogReader;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use rhizome_ca::SpiffeId;
use rhizome_gossip::state::Applied;
use rhizome_intentions::{AccessGraph, Precedence, Rule, RuleSet, ServicePattern, ServiceRef};
use std::collections::BTreeMap;
use std::sync::Arc;

type Params = Query<BTreeMap<String, String>>;

/// What the intentions endpoints read and write.
#[derive(Clone)]
pub struct ApiState {
    /// Entries, submission, the authorizer (rules in force, policy).
    pub intentions: Arc<Intentions>,
    /// The catalog's services are the nodes of the access graph.
    pub catalog: CatalogReader,
}

/// The routes of this module with their state, to merge into the agent's router.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/v1/intentions", get(list).post(apply))
        .route("/v1/intentions/match", get(matching))
        .route("/v1/intentions/check", get(check))
        .route("/v1/intentions/{ns}/{name}", delete(remove))
        .route("/v1/graph", get(graph))
        .with_state(state)
}

fn bad(message: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.to_string())
}

fn param<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| bad(format!("missing query parameter `{name}`")))
}

fn rules_in_force(s: &ApiState) -> Arc<RuleSet> {
    s.intentions.authorizer().rules()
}

async fn list(State(s): State<ApiState>) -> Result<Json<ListView>, ApiError> {
    let rules = rules_in_force(&s);
    let entries = rules
        .entries()
        .map(|e| {
            let key = signed::key_for(&e.destination).ok();
            let held = key.as_ref().and_then(|k| s.intentions.ledger().get(k));
            let key_text = key.map(|k| k.to_string()).unwrap_or_default();
            let origin = held.map(|h| {
                let file = s.intentions.dir_file(&h.key);
                OriginView {
                    kind: if file.is_some() { "dir" } else { "applied" }.into(),
                    file,
                    signer: signed::signer_id(&h).map(|id| id.to_string()),
                    writer: h.origin.to_string(),
                    written_ms: h.hlc.physical_ms(),
                }
            });
            let sources = e
                .sources
                .iter()
                .map(|src| {
                    RuleView::of(&Rule {
                        source: src.pattern.clone(),
                        destination: e.destination.clone(),
                        action: src.action,
                        mode: e.mode,
                        precedence: Precedence::of(&src.pattern, &e.destination),
                        description: src.description.clone(),
                        origin: src.origin.clone(),
                    })
                })
                .collect();
            EntryView {
                key: key_text,
                destination: e.destination.to_string(),
                mode: RuleView::mode_name(e.mode).into(),
                meta: e.meta.clone(),
                sources,
                origin,
            }
        })
        .collect();
    let problems = s.intentions.problems();
    Ok(Json(ListView {
        version: rules.version().to_string(),
        default: s.intentions.authorizer().policy().default.to_string(),
        audit: s.intentions.authorizer().policy().audit,
        entries,
        problems: ProblemsView {
            dir: problems.dir,
            rules: problems.rules,
        },
    }))
}

async fn matching(State(s): State<ApiState>, params: Params) -> Result<Json<MatchView>, ApiError> {
    let dst: ServiceRef = param(&params, "dst")?.parse().map_err(bad)?;
    let rules = rules_in_force(&s);
    Ok(Json(MatchView {
        destination: dst.to_string(),
        rules: rules.matching(&dst).into_iter().map(RuleView::of).collect(),
    }))
}

async fn check(State(s): State<ApiState>, params: Params) -> Result<Json<CheckView>, ApiError> {
    let src_text = param(&params, "src")?;
    let dst: ServiceRef = param(&params, "dst")?.parse().map_err(bad)?;
    let src: ServiceRef = if src_text.starts_with("spiffe://") {
        ServiceRef::from_spiffe(src_text).map_err(bad)?.1
    } else {
        src_text.parse().map_err(bad)?
    };
    let rules = rules_in_force(&s);
    let verdict = Verdict::from_decision(
        &rules.decide(&src, &dst, s.intentions.authorizer().policy()),
        rules.version(),
    );
    Ok(Json(CheckView {
        source: src.to_string(),
        destination: dst.to_string(),
        allowed: verdict.allowed,
        action: verdict.action.to_string(),
        audit: verdict.audit,
        decision: verdict.outcome.as_str().into(),
        rule: verdict.rule.as_ref().map(RuleView::of),
        version: verdict.version.to_string(),
    }))
}

fn request(body: &Bytes) -> Result<SubmitRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SubmitRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn submitted(
    key: String,
    outcome: Result<(SpiffeId, Applied), SubmitError>,
) -> Result<Json<SubmitView>, ApiError> {
    match outcome {
        Ok((signer, Applied::New)) => Ok(Json(SubmitView {
            key,
            applied: "new".into(),
            signer: signer.to_string(),
        })),
        Ok((_, Applied::Stale)) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("{key}: this agent already holds an equal or newer version"),
        )),
        Err(SubmitError::Refused(e)) => {
            let status = match e {
                SignedError::Unsigned
                | SignedError::NoChain
                | SignedError::Untrusted(_)
                | SignedError::OriginMismatch { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError(status, e.to_string()))
        }
        Err(e @ SubmitError::Rejected(_)) => Err(ApiError(StatusCode::FORBIDDEN, e.to_string())),
        Err(e @ SubmitError::Store(_)) => {
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
    }
}

async fn apply(State(s): State<ApiState>, body: Bytes) -> Result<Json<SubmitView>, ApiError> {
    let req = request(&body)?;
    match (req.entry, req.hcl) {
        (Some(text), _) => {
            let entry = signed::decode(&text).map_err(bad)?;
            if entry.tombstone {
                return Err(bad("a tombstone: use DELETE /v1/intentions/<ns>/<name>"));
            }
            let key = entry.key.to_string();
            submitted(key, s.intentions.submit(entry))
        }
        (None, Some(hcl)) => {
            let file = req.file.unwrap_or_else(|| "<request>".into());
            let key = rhizome_intentions::Entry::parse(&hcl, &file)
                .ok()
                .and_then(|e| signed::key_for(&e.destination).ok())
                .map(|k| k.to_string())
                .unwrap_or_default();
            submitted(key, s.intentions.submit_unsigned(&hcl, &file, None))
        }
        (None, None) => Err(bad("expected {\"entry\": BASE64} or {\"hcl\": TEXT}")),
    }
}

async fn remove(
    State(s): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SubmitView>, ApiError> {
    let dst: ServicePattern = format!("{ns}/{name}").parse().map_err(bad)?;
    let key = signed::key_for(&dst).map_err(bad)?;
    let live = s
        .intentions
        .ledger()
        .get(&key)
        .is_some_and(|e| !e.tombstone);
    if !live {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no intentions for destination {dst}"),
        ));
    }
    let req = request(&body)?;
    let outcome = match req.entry {
        Some(text) => {
            let entry = signed::decode(&text).map_err(bad)?;
            if !entry.tombstone || entry.key != key {
                return Err(bad(format!("expected a signed tombstone for {key}")));
            }
            s.intentions.submit(entry)
        }
        None => s.intentions.submit_unsigned("", "", Some(&key)),
    };
    submitted(key.to_string(), outcome)
}

async fn graph(State(s): State<ApiState>, params: Params) -> Result<Response, ApiError> {
    let known: Vec<ServiceRef> = s
        .catalog
        .borrow()
        .services()
        .iter()
        .filter_map(|(ns, name)| ServiceRef::new(ns, name).ok())
        .collect();
    let rules = rules_in_force(&s);
    let graph = AccessGraph::build(&rules, &known, s.intentions.authorizer().policy());
    match params.get("format").map_or("json", String::as_str) {
        "json" => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            graph.to_json(),
        )
            .into_response()),
        "dot" => Ok((
            [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
            graph.to_dot(),
        )
            .into_response()),
        other => Err(bad(format!("format={other}: expected json or dot"))),
    }
}
