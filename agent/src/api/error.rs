//! The API's error answer and the name check of path and query parameters, in a module
//! that imports only the config's name rule, so every subsystem's `api.rs` can use it
//! without importing the router that merges them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer: `{"error": "..."}` with a status code.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Longest name echoed back in an error answer.
const MAX_ECHOED: usize = 80;

/// Checks a name taken from a request path or query as the config checks names
/// ([`crate::config::validate_name`]): a 400 with a JSON error otherwise. A very long name
/// is not echoed back whole.
pub(crate) fn valid_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.len() > MAX_ECHOED {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} name of {} bytes is not a valid name: at most 63 characters",
                name.len()
            ),
        ));
    }
    crate::config::validate_name(what, name).map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))
}
