//! What a reload would change, computed from two loaded configurations (pure: no I/O).

use crate::config::{AgentConfig, Service};
use std::collections::BTreeMap;

/// Top-level settings a reload applies; every other setting needs a restart.
pub const RELOADABLE: [&str; 4] = ["services", "intentions_dir", "operator_dir", "log_level"];

/// The settings that differ between `old` and `new` (both as loaded from the files, before
/// a port 0 is resolved) and cannot change without a restart, by config name. Every
/// top-level setting not in [`RELOADABLE`] is compared, so a setting added later is
/// restart-only until a reload learns to apply it.
pub fn restart_only(old: &AgentConfig, new: &AgentConfig) -> Vec<String> {
    let (a, b) = (settings(old), settings(new));
    let mut differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| !RELOADABLE.contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    // Secrets are not serialized: compare them apart.
    if old.encrypt != new.encrypt {
        differ.push("encrypt".to_string());
    }
    if old.ca.join_token != new.ca.join_token && !differ.iter().any(|k| k == "ca") {
        differ.push("ca".to_string());
    }
    differ.sort();
    differ.dedup();
    differ
}

fn settings(c: &AgentConfig) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
        // An AgentConfig is a struct of plain values: it always serializes to an object.
        _ => BTreeMap::new(),
    }
}

/// One line per service added, changed (with what) or removed, by instance id.
pub fn service_changes(old: &[Service], new: &[Service]) -> Vec<String> {
    let before: BTreeMap<&str, &Service> = old.iter().map(|s| (s.id.as_str(), s)).collect();
    let after: BTreeMap<&str, &Service> = new.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut lines = Vec::new();
    for (id, s) in &after {
        match before.get(id) {
            None => lines.push(format!("service added: {id} ({}/{})", s.namespace, s.name)),
            Some(was) if was != s => {
                let mut what = Vec::new();
                if (&was.name, &was.namespace) != (&s.name, &s.namespace) {
                    what.push("name");
                }
                if (was.address, was.port) != (s.address, s.port) {
                    what.push("address");
                }
                if (&was.tags, &was.meta) != (&s.tags, &s.meta) {
                    what.push("tags/meta");
                }
                if was.checks != s.checks {
                    what.push("checks");
                }
                if was.upstreams != s.upstreams {
                    what.push("upstreams");
                }
                lines.push(format!("service changed: {id} ({})", what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for id in before.keys().filter(|id| !after.contains_key(*id)) {
        lines.push(format!("service removed: {id}"));
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A base file, and `extra` in a second file that overrides it.
    fn load(extra: &str) -> AgentConfig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.hcl"),
            "node_name = \"n1\"\ndata_dir = \"/tmp/n1\"\nbind_addr = \"127.0.0.1\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.hcl"), extra).unwrap();
        AgentConfig::load_dir(dir.path()).unwrap()
    }

    const WEB: &str = "service {\n  name = \"web\"\n  port = 80\n}\n";

    #[test]
    fn reloadable_settings_need_no_restart() {
        let old = load(WEB);
        let new = load(
            "log_level = \"debug\"\nintentions_dir = \"/tmp/i\"\noperator_dir = \"/tmp/o\"\n\
             service {\n  name = \"db\"\n  port = 5432\n}\n",
        );
        assert_eq!(restart_only(&old, &new), Vec::<String>::new());
    }

    #[test]
    fn each_restart_only_setting_is_named() {
        let old = load(WEB);
        let cases = [
            ("node_name = \"n2\"\n", "node_name"),
            ("data_dir = \"/tmp/other\"\n", "data_dir"),
            ("client_addr = \"127.0.0.2\"\n", "client_addr"),
            ("advertise_addr = \"127.0.0.3\"\n", "advertise_addr"),
            ("ports {\n  http = 9000\n}\n", "ports"),
            ("retry_join = [\"10.0.0.1:7946\"]\n", "retry_join"),
            (
                "encrypt = \"pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=\"\n",
                "encrypt",
            ),
            ("ca {\n  join_token = \"t\"\n}\n", "ca"),
            ("gossip {\n  probe_interval = \"2s\"\n}\n", "gossip"),
            ("proxy {\n  max_connections = 5\n}\n", "proxy"),
            ("transport = \"tls\"\n", "transport"),
            (
                "default_intention_policy = \"allow\"\n",
                "default_intention_policy",
            ),
        ];
        for (extra, name) in cases {
            let new = load(&format!("{WEB}{extra}"));
            assert_eq!(restart_only(&old, &new), vec![name.to_string()], "{extra}");
        }
    }

    #[test]
    fn service_changes_name_what_changed() {
        let old = load(&format!(
            "{WEB}service {{\n  name = \"db\"\n  port = 5432\n}}\n"
        ));
        let new = load(
            "service {\n  name = \"web\"\n  port = 81\n}\nservice {\n  name = \"cache\"\n  port = 6379\n}\n",
        );
        assert_eq!(
            service_changes(&old.services, &new.services),
            vec![
                "service added: cache (default/cache)".to_string(),
                "service changed: web (address)".to_string(),
                "service removed: db".to_string(),
            ]
        );
    }
}
