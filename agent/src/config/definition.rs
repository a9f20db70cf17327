//! Service definitions given outside the config directory: the body of
//! `PUT /v1/agent/service/register` and the files of `rhizome services register`.
//!
//! A definition has the fields of a config `service` block and is validated by the same
//! code, so it is refused with the same messages. JSON keys are matched as Consul matches
//! them (ignoring case and `_`), and Consul's shapes that map onto a service block are
//! taken: `Check` and `Checks`, `Connect.SidecarService.Proxy.Upstreams`. Any other field
//! is refused by its path (`Weights`, `Checks[0].Name`): a field silently dropped would be a
//! setting the operator believes in and the agent ignores.

use super::file::ServiceBlock;
use super::{ConfigError, Ports, Service, merge};
use rhizome_intentions::hclsrc::one_or_many;
use serde::Deserialize;
use serde_json::{Map, Value};

/// One service as registered outside the files: a `service` block, not yet validated.
#[derive(Clone, Debug)]
pub struct ServiceDefinition(ServiceBlock);

/// `rhizome services register FILE` in HCL: one or more `service` blocks and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFile {
    #[serde(default, deserialize_with = "one_or_many")]
    service: Vec<ServiceBlock>,
}

/// The same file read loosely, for Consul's HCL shapes (`connect { sidecar_service { ... } }`,
/// `checks = [...]`), which the JSON mapper takes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseFile {
    #[serde(default, deserialize_with = "one_or_many")]
    service: Vec<Value>,
}

/// The fields a definition takes, by their key folded as Consul folds it, and the name of
/// the service block field each one fills.
const SERVICE_FIELDS: [(&str, &str); 10] = [
    ("name", "name"),
    ("id", "id"),
    ("namespace", "namespace"),
    ("port", "port"),
    ("address", "address"),
    ("tags", "tags"),
    ("meta", "meta"),
    ("upstreams", "upstreams"),
    ("check", "check"),
    ("checks", "check"),
];
const UPSTREAM_FIELDS: [(&str, &str); 4] = [
    ("destinationname", "destination_name"),
    ("destinationnamespace", "destination_namespace"),
    ("localbindport", "local_bind_port"),
    ("localbindaddress", "local_bind_address"),
];
const CHECK_FIELDS: [(&str, &str); 6] = [
    ("tcp", "tcp"),
    ("http", "http"),
    ("interval", "interval"),
    ("timeout", "timeout"),
    ("successbeforepassing", "success_before_passing"),
    ("failuresbeforecritical", "failures_before_critical"),
];
const TAKEN: &str = "a service takes name, id, namespace, port, address, tags, meta, \
     upstreams, check/checks (tcp, http, interval, timeout, success_before_passing, \
     failures_before_critical) and \
     connect.sidecar_service.proxy.upstreams (destination_name, destination_namespace, \
     local_bind_port, local_bind_address)";

/// A key as Consul's decoder compares it: lower case, without `_` or `-`.
fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn refuse(path: &str) -> String {
    format!("field {path:?} is unknown or not supported ({TAKEN})")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The object at `path`, or an error naming it.
fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("field {path:?}: expected an object, got {v}"))
}

/// One or many objects at `path` (an object, or a list of objects), each with its path.
fn items<'a>(v: &'a Value, path: &str) -> Vec<(String, &'a Value)> {
    match v {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("{path}[{i}]"), x))
            .collect(),
        other => vec![(path.to_string(), other)],
    }
}

/// Copies the fields of `from` into a new object with their canonical names, refusing any
/// key not in `fields` (nulls count as absent, as Consul's clients send them).
fn rename(
    from: &Map<String, Value>,
    path: &str,
    fields: &[(&str, &str)],
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (key, value) in from {
        if value.is_null() {
            continue;
        }
        let here = join(path, key);
        let Some((_, name)) = fields.iter().find(|(f, _)| *f == fold(key)) else {
            return Err(refuse(&here));
        };
        if out.insert((*name).to_string(), value.clone()).is_some() {
            return Err(format!("field {here:?} is given twice"));
        }
    }
    Ok(out)
}

/// The upstreams of `Connect.SidecarService.Proxy.Upstreams` (an empty `Connect` or
/// `SidecarService` is fine; anything else in them is refused).
fn connect_upstreams(v: &Value, path: &str) -> Result<Vec<(String, Value)>, String> {
    let mut level = (v, path.to_string());
    for step in ["sidecarservice", "proxy", "upstreams"] {
        let map = object(level.0, &level.1)?;
        let mut next = None;
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            if fold(key) != step {
                return Err(refuse(&join(&level.1, key)));
            }
            next = Some((value, join(&level.1, key)));
        }
        match next {
            Some(n) => level = n,
            None => return Ok(Vec::new()),
        }
    }
    Ok(items(level.0, &level.1)
        .into_iter()
        .map(|(p, v)| (p, v.clone()))
        .collect())
}

impl ServiceDefinition {
    /// Reads a definition from JSON: a service object with Consul's or the config's field
    /// spellings. Errors name the field by its path.
    pub fn from_json(v: &Value) -> Result<ServiceDefinition, String> {
        let map = object(v, "service")?;
        let mut out = Map::new();
        let mut upstreams: Vec<(String, Value)> = Vec::new();
        let mut checks: Vec<(String, Value)> = Vec::new();
        for (key, value) in map {
            if value.is_null() {
                continue;
            }
            let folded = fold(key);
            if folded == "connect" {
                upstreams.extend(connect_upstreams(value, key)?);
                continue;
            }
            let Some((_, name)) = SERVICE_FIELDS.iter().find(|(f, _)| *f == folded) else {
                return Err(refuse(key));
            };
            match *name {
                "upstreams" => {
                    upstreams.extend(items(value, key).into_iter().map(|(p, v)| (p, v.clone())))
                }
                "check" => {
                    checks.extend(items(value, key).into_iter().map(|(p, v)| (p, v.clone())))
                }
                // Consul's clients send `"Address": ""` for "the agent's address"; here
                // that is the default (127.0.0.1).
                "address" if value.as_str() == Some("") => {}
                _ => {
                    if out.insert((*name).to_string(), value.clone()).is_some() {
                        return Err(format!("field {key:?} is given twice"));
                    }
                }
            }
        }
        let upstreams = upstreams
            .iter()
            .map(|(p, u)| rename(object(u, p)?, p, &UPSTREAM_FIELDS).map(Value::Object))
            .collect::<Result<Vec<_>, _>>()?;
        let checks = checks
            .iter()
            .map(|(p, c)| rename(object(c, p)?, p, &CHECK_FIELDS).map(Value::Object))
            .collect::<Result<Vec<_>, _>>()?;
        if !upstreams.is_empty() {
            out.insert("upstreams".into(), Value::Array(upstreams));
        }
        if !checks.is_empty() {
            out.insert("check".into(), Value::Array(checks));
        }
        serde_path_to_error::deserialize(Value::Object(out))
            .map(ServiceDefinition)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.into_inner().to_string()
                } else {
                    format!("field {path:?}: {}", e.into_inner())
                }
            })
    }

    /// The definition as JSON with the config's field names (what the store keeps and the
    /// CLI sends).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.0).unwrap_or(Value::Null)
    }

    /// Validates the definition as the config validates a `service` block (same messages,
    /// `where` in place of the file name).
    pub fn validate(&self, r#where: &str) -> Result<Service, ConfigError> {
        merge::service(self.0.clone(), r#where)
    }

    /// The definitions of a `rhizome services register` file: HCL `service` blocks (the
    /// config's syntax, errors at file:line:column; Consul's `connect { sidecar_service
    /// { proxy { upstreams ... } } }` and `checks` taken too), or JSON (`{"service": {...}}`,
    /// `{"services": [...]}` or one service object, Consul's spellings taken).
    pub fn from_file(src: &str, file: &str) -> Result<Vec<ServiceDefinition>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        let json = file.ends_with(".json") || src.trim_start().starts_with('{');
        let defs = if json {
            let v: Value = serde_json::from_str(src)
                .map_err(|e| invalid(format!("{}:{}: {e}", e.line(), e.column())))?;
            let map = object(&v, "file").map_err(&invalid)?;
            let wrapped: Vec<(String, &Value)> = match map.iter().next() {
                Some((k, inner))
                    if map.len() == 1 && matches!(fold(k).as_str(), "service" | "services") =>
                {
                    items(inner, k)
                }
                _ => vec![(String::new(), &v)],
            };
            wrapped
                .into_iter()
                .map(|(path, v)| {
                    ServiceDefinition::from_json(v).map_err(|m| {
                        invalid(if path.is_empty() {
                            m
                        } else {
                            format!("{path}: {m}")
                        })
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            match super::parse_hcl::<DefinitionFile>(src, file) {
                Ok(parsed) => parsed.service.into_iter().map(ServiceDefinition).collect(),
                // Not the config's shape: Consul's shape is taken as the API takes it; if it
                // is not that either, the error is the config reader's (file:line:column).
                Err(typed) => super::parse_hcl::<LooseFile>(src, file)
                    .ok()
                    .and_then(|loose| {
                        loose
                            .service
                            .iter()
                            .map(|v| ServiceDefinition::from_json(v).ok())
                            .collect::<Option<Vec<_>>>()
                    })
                    .filter(|defs| !defs.is_empty())
                    .ok_or(typed)?,
            }
        };
        if defs.is_empty() {
            return Err(invalid("no service definition in the file".into()));
        }
        Ok(defs)
    }
}

/// Checks the agent's services as a whole, as the config does: ids unique, no two
/// upstreams on one local address, none on an agent port.
pub fn check_all(services: &[Service], ports: &Ports) -> Result<(), String> {
    merge::check_services(services, ports).map_err(|e| match e {
        ConfigError::Invalid { message, .. } => message,
        other => other.to_string(),
    })
}
