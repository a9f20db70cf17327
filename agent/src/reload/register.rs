//! Services registered through the API (`PUT /v1/agent/service/register`, `rhizome services
//! register`): kept in the store's `services` tree (by id, the definition as JSON with the
//! config's field names) and loaded again at start, as Consul's agent keeps its API
//! registrations. The services in force are the config files' followed by these.
//!
//! The files own their services: an API call cannot overwrite or deregister a service whose
//! id a file defines, and a reload whose files define an id registered through the API is
//! refused as invalid (deregister it first). Registering goes through the
//! [`super::Reloader`], the one writer of the configuration in force, under the reload lock.

use crate::config::definition::ServiceDefinition;
use crate::config::{AgentConfig, ConfigError, Service};
use crate::store::{Store, TreeName};
use std::collections::BTreeMap;

/// Why a registration or deregistration changed nothing (each maps to an HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The definition does not validate, or does not fit with the services in force
    /// (400).
    #[error("{0}")]
    Invalid(String),
    /// The id belongs to a service of the config files (409).
    #[error("{0}")]
    Owned(String),
    /// No service is registered through the API under this id (404).
    #[error("{0}")]
    NotFound(String),
    /// The store could not keep the change (500).
    #[error("{0}")]
    Store(String),
}

/// The message of a validation error, without the `<file>:` prefix the files' errors carry.
pub fn message(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// The answer to an attempt to change a file-owned service through the API.
pub fn owned(id: &str, verb: &str) -> RegisterError {
    RegisterError::Owned(format!(
        "service {id:?} is defined in the config files, which own it: it cannot be {verb} through the API (edit the files and reload, or register under another id)"
    ))
}

/// Writes (or with `None` removes) the registration `id`, flushed.
pub fn persist(store: &Store, id: &str, value: Option<&[u8]>) -> Result<(), RegisterError> {
    let done = match value {
        Some(v) => store.put(TreeName::Services, id.as_bytes(), v),
        None => store.remove(TreeName::Services, id.as_bytes()),
    }
    .and_then(|()| store.flush());
    done.map_err(|e| RegisterError::Store(format!("cannot keep the registration of {id:?}: {e}")))
}

/// The stored registration `id` (its JSON), to put back if applying a change fails.
pub fn stored(store: &Store, id: &str) -> Result<Option<Vec<u8>>, RegisterError> {
    store
        .get(TreeName::Services, id.as_bytes())
        .map_err(|e| RegisterError::Store(format!("cannot read the registration of {id:?}: {e}")))
}

/// Loads the stored registrations at start and appends those that fit to
/// `config.services` (before anything reads the services). A registration that no longer
/// validates, or that the files now conflict with (same id, an upstream on the same
/// port), is dropped from the store with an error in the log: the files own the agent.
pub fn load(store: &Store, config: &mut AgentConfig) -> anyhow::Result<BTreeMap<String, Service>> {
    let mut registered = BTreeMap::new();
    for (key, value) in store.scan(TreeName::Services, b"")? {
        let id = String::from_utf8_lossy(&key).into_owned();
        let fitted = serde_json::from_slice(&value)
            .map_err(|e| e.to_string())
            .and_then(|v| ServiceDefinition::from_json(&v))
            .and_then(|d| d.validate("registration").map_err(message))
            .and_then(|s| {
                if config.services.iter().any(|f| f.id == s.id) {
                    return Err("the config files now define this id".to_string());
                }
                let mut all = config.services.clone();
                all.push(s.clone());
                crate::config::definition::check_all(&all, &config.ports)?;
                Ok(s)
            });
        match fitted {
            Ok(s) => {
                config.services.push(s.clone());
                config.registered.insert(s.id.clone());
                registered.insert(s.id.clone(), s);
            }
            Err(e) => {
                tracing::error!(
                    id = %id,
                    error = %e,
                    "dropped a service registered through the API: it does not fit the configuration"
                );
                store.remove(TreeName::Services, &key)?;
            }
        }
    }
    store.flush()?;
    if !registered.is_empty() {
        tracing::info!(
            count = registered.len(),
            "services registered through the API loaded from the store"
        );
    }
    Ok(registered)
}
