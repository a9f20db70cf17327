//! `rhizome reload`: ask the local agent to re-read its config directory.

use crate::api::types::{ReloadAnswer, ReloadResult};
use crate::client::{Client, ClientError};
use std::process::ExitCode;

/// Sends `PUT /v1/agent/reload` and prints what changed, or why nothing did (exit 1).
pub fn run(addr: &str) -> anyhow::Result<ExitCode> {
    let answer: Result<ReloadAnswer, ClientError> =
        Client::new(addr).send("PUT", "/v1/agent/reload", &serde_json::json!({}));
    match answer {
        Ok(a) if a.result == ReloadResult::Ok => {
            if a.changes.is_empty() {
                println!("reloaded: nothing changed");
            } else {
                println!("reloaded:");
                for c in &a.changes {
                    println!("  {c}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(a) => {
            eprintln!(
                "not reloaded ({}): {}",
                a.result.as_str(),
                a.error.unwrap_or_default()
            );
            Ok(ExitCode::from(1))
        }
        Err(ClientError::Status { status, message }) if status == 409 || status == 422 => {
            let result = if status == 409 { "refused" } else { "invalid" };
            eprintln!("not reloaded ({result}): {message}");
            eprintln!("the agent keeps running on the configuration in force");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
