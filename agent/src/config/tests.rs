#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const GOOD: &str = r#"
node_name = "web-1"
data_dir  = "/var/lib/rhizome"
bind_addr = "10.0.0.5"
retry_join = ["10.0.0.6:7946", "10.0.0.7:7946"]
ports {
  gossip = 8301
  data   = 8302
  http   = 8500
}
service {
  name = "web"
  port = 8080
  tags = ["v1"]
  meta = { team = "edge" }
  upstreams {
    destination_name = "db"
    local_bind_port  = 9191
  }
  upstreams {
    destination_name = "cache"
    local_bind_port  = 9192
  }
  check {
    http     = "http://127.0.0.1:8080/health"
    interval = "5s"
    timeout  = "1s"
    success_before_passing   = 2
    failures_before_critical = 1
  }
}
service {
  name      = "db"
  namespace = "data"
  port      = 5432
  check {
    tcp = "127.0.0.1:5432"
  }
}
"#;

#[test]
fn good_config_parses_with_defaults() {
    let c = AgentConfig::from_str(GOOD, "agent.hcl").unwrap();
    assert_eq!(c.node_name, "web-1");
    assert_eq!(
        c.ports,
        Ports {
            gossip: 8301,
            data: 8302,
            http: 8500
        }
    );
    assert_eq!(
        c.advertise_addr.to_string(),
        "10.0.0.5",
        "advertise defaults to bind"
    );
    assert_eq!(
        c.client_addr.to_string(),
        "127.0.0.1",
        "API stays on loopback by default"
    );
    assert_eq!(c.retry_join.len(), 2);
    assert_eq!(
        c.default_intention_policy,
        Policy::Deny,
        "deny unless told otherwise"
    );
    assert_eq!(c.transport, Transport::Quic);
    assert_eq!(c.services.len(), 2);
    let web = &c.services[0];
    assert_eq!(web.namespace, "default");
    assert_eq!(web.upstreams.len(), 2);
    assert_eq!(web.upstreams[1].destination_name, "cache");
    assert_eq!(web.upstreams[0].destination_namespace, "default");
    assert_eq!(web.meta.get("team").map(String::as_str), Some("edge"));
    assert_eq!(web.checks[0].interval.0, Duration::from_secs(5));
    assert!(matches!(web.checks[0].kind, CheckKind::Http { .. }));
    assert_eq!(web.checks[0].success_before_passing, 2);
    assert_eq!(web.checks[0].failures_before_critical, 1);
    let db = &c.services[1];
    assert_eq!(db.namespace, "data");
    assert_eq!(
        db.checks[0].interval.0,
        Duration::from_secs(10),
        "default interval"
    );
    assert_eq!(
        (
            db.checks[0].success_before_passing,
            db.checks[0].failures_before_critical
        ),
        (0, 3),
        "one success passes, three failures in a row turn critical"
    );
    assert_eq!(c.gossip.probe_interval.0, Duration::from_secs(1));
}

fn err(src: &str) -> String {
    AgentConfig::from_str(src, "agent.hcl")
        .unwrap_err()
        .to_string()
}

#[test]
fn typo_in_key_names_file_line_column() {
    let e = err("node_name = \"a\"\ndata_dir = \"/tmp/x\"\nbind_adr = \"127.0.0.1\"\n");
    assert!(e.starts_with("agent.hcl:3:1:"), "{e}");
    assert!(e.contains("unknown field `bind_adr`"), "{e}");
}

#[test]
fn typo_inside_nested_block_is_located() {
    let src = "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\nservice {\n  name = \"web\"\n  port = 80\n  upstreams {\n    destination = \"db\"\n    local_bind_port = 1\n  }\n}\n";
    let e = err(src);
    assert!(e.starts_with("agent.hcl:8:5:"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err("node_name = \"a\"\ndata_dir = \"/x\"\nports {\n  http = \"eighty\"\n}\n");
    assert!(e.starts_with("agent.hcl:4:3:"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn bad_duration_is_located() {
    let src = "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\ngossip {\n  probe_interval = \"fast\"\n}\n";
    let e = err(src);
    assert!(e.starts_with("agent.hcl:5:3:"), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
}

#[test]
fn semantic_errors_are_explained() {
    let base = "data_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
    assert!(err(base).contains("node_name is required"));
    assert!(err(&format!("node_name = \"Bad Name\"\n{base}")).contains("not a valid name"));
    assert!(err("node_name = \"a\"\ndata_dir = \"/x\"\n").contains("advertise_addr is required"));
    assert!(
        err(&format!(
            "node_name = \"a\"\n{base}default_intention_policy = \"maybe\"\n"
        ))
        .contains("expected \"allow\" or \"deny\"")
    );
    let two_checks = format!(
        "node_name = \"a\"\n{base}service {{\n name = \"w\"\n port = 1\n check {{\n tcp = \"127.0.0.1:1\"\n http = \"http://x\"\n }}\n}}\n"
    );
    assert!(err(&two_checks).contains("exactly one of tcp or http"));
    let clash = format!(
        "node_name = \"a\"\n{base}service {{\n name = \"w\"\n port = 1\n upstreams {{\n destination_name = \"x\"\n local_bind_port = 7948\n }}\n}}\n"
    );
    assert!(err(&clash).contains("collides with an agent port"));
}

#[test]
fn directory_merges_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("00-agent.hcl"),
        "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("10-web.hcl"),
        "service {\n  name = \"web\"\n  port = 80\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("20-db.hcl"),
        "service {\n  name = \"db\"\n  port = 81\n}\nnode_name = \"b\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.txt"), "not config").unwrap();
    let c = AgentConfig::load_dir(dir.path()).unwrap();
    assert_eq!(c.node_name, "b", "later files override scalars");
    let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "db"], "services accumulate");
}

#[test]
fn directory_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.hcl"), "node_name = \"a\"\n").unwrap();
    std::fs::write(dir.path().join("b.hcl"), "service {\n  nme = \"web\"\n}\n").unwrap();
    let e = AgentConfig::load_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("b.hcl:2:3:"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(
        AgentConfig::load_dir(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no *.hcl files")
    );
}

#[test]
fn env_function_reads_the_environment() {
    // cargo sets CARGO_PKG_NAME for the test process; an unset variable reads as "".
    let src = "node_name = env(\"CARGO_PKG_NAME\")\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
    let c = AgentConfig::from_str(src, "agent.hcl").unwrap();
    assert_eq!(c.node_name, "rhizome-agent");
    let unset = "node_name = env(\"RHIZOME_TEST_SURELY_UNSET_VARIABLE\")\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
    assert!(err(unset).contains("not a valid name"));
}

#[test]
fn ca_block_takes_signer_addrs_and_refuses_short_leaf_ttl() {
    let base = "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
    let cfg = AgentConfig::from_str(
        &format!("{base}ca {{\n join_token = \"rhz1.x.y\"\n signer_addrs = [\"10.0.0.1:7947\"]\n leaf_ttl = \"24h\"\n}}\n"),
        "ca.hcl",
    )
    .unwrap();
    assert_eq!(cfg.ca.signer_addrs, ["10.0.0.1:7947"]);
    assert_eq!(cfg.ca.leaf_ttl.0, std::time::Duration::from_secs(24 * 3600));
    assert!(err(&format!("{base}ca {{\n leaf_ttl = \"5m\"\n}}\n")).contains("too short"));
    let empty =
        AgentConfig::from_str(&format!("{base}ca {{\n join_token = \"\"\n}}\n"), "e.hcl").unwrap();
    assert_eq!(empty.ca.join_token, None, "env(\"UNSET\") gives no token");
    assert!(err(&format!("{base}ca {{\n signer = true\n}}\n")).contains("needs root_dir"));
}

#[test]
fn dev_defaults_take_a_config_dir_merged_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plain = AgentConfig::load_dev("dev", &data, None).unwrap();
    let reference = AgentConfig::dev("dev", data.clone());
    assert!(plain.dev);
    assert_eq!(plain.node_name, reference.node_name);
    assert_eq!(plain.data_dir, reference.data_dir);
    assert_eq!(plain.bind_addr, reference.bind_addr);
    assert_eq!(plain.advertise_addr, reference.advertise_addr);
    assert_eq!(plain.client_addr, reference.client_addr);
    assert_eq!(plain.ports, reference.ports);
    assert_eq!(plain.default_intention_policy, Policy::Allow);

    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("svc.hcl"),
        "ports {\n  http = 18500\n}\nservice {\n  name = \"echo\"\n  port = 7000\n}\n",
    )
    .unwrap();
    let source = ConfigSource::Dev {
        node: "laptop".into(),
        data_dir: data.clone(),
        dir: Some(conf.clone()),
    };
    let merged = source.load().unwrap();
    assert!(merged.dev);
    assert_eq!(merged.node_name, "laptop");
    assert_eq!(merged.ports.http, 18500);
    assert_eq!(merged.ports.gossip, DEFAULT_GOSSIP_PORT);
    assert_eq!(merged.services.len(), 1);
    assert_eq!(merged.default_intention_policy, Policy::Allow);
    assert_eq!(source.dir(), Some(conf.as_path()));

    std::fs::write(conf.join("bad.hcl"), "service {\n  nme = \"x\"\n}\n").unwrap();
    let err = source.load().unwrap_err().to_string();
    assert!(err.contains("bad.hcl:2:"), "{err}");
}

#[test]
fn proxy_quic_timers_default_to_a_lan_and_are_checked() {
    let base = "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
    let c = AgentConfig::from_str(base, "agent.hcl").unwrap();
    assert_eq!(c.proxy.quic_keep_alive.0, Duration::from_secs(1));
    assert_eq!(c.proxy.quic_idle_timeout.0, Duration::from_secs(5));
    let set =
        format!("{base}proxy {{\n  quic_keep_alive = \"2s\"\n  quic_idle_timeout = \"20s\"\n}}\n");
    let c = AgentConfig::from_str(&set, "agent.hcl").unwrap();
    assert_eq!(c.proxy.quic_idle_timeout.0, Duration::from_secs(20));
    assert_eq!(c.proxy.max_connection_age.0, Duration::from_secs(600));
    let aged = format!("{base}proxy {{\n  max_connection_age = \"30s\"\n}}\n");
    let c = AgentConfig::from_str(&aged, "agent.hcl").unwrap();
    assert_eq!(c.proxy.max_connection_age.0, Duration::from_secs(30));
    let short = format!("{base}proxy {{\n  max_connection_age = \"0s\"\n}}\n");
    assert!(
        err(&short).contains("max_connection_age"),
        "{}",
        err(&short)
    );
    let bad = format!("{base}proxy {{\n  quic_keep_alive = \"10s\"\n}}\n");
    assert!(
        err(&bad).contains("below quic_idle_timeout"),
        "{}",
        err(&bad)
    );
}

/// Regression: a `service = [...]` list beside a `service { }` block kept only the last form,
/// so a service silently disappeared. Both are kept now, in file order; a block that takes one
/// value (`ports`) given twice is refused naming both places.
#[test]
fn repeated_keys_merge_into_lists_or_are_refused_with_both_positions() {
    let src = r#"node_name = "a"
data_dir = "/x"
bind_addr = "127.0.0.1"
service {
  name = "web"
  port = 80
}
service = [
  { name = "db", port = 5432 },
]
service {
  name = "cache"
  port = 6379
  check { tcp = "127.0.0.1:6379" }
  check = [{ tcp = "127.0.0.1:6380" }]
}
"#;
    let c = AgentConfig::from_str(src, "agent.hcl").unwrap();
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "db", "cache"]);
    assert_eq!(c.services[2].checks.len(), 2);

    let e = err(
        "node_name = \"a\"\ndata_dir = \"/x\"\nports {\n  http = 1\n}\nports {\n  data = 2\n}\n",
    );
    assert!(e.starts_with("agent.hcl:6:1:"), "{e}");
    assert!(
        e.contains("`ports` is given 2 times (at 3:1 and 6:1)"),
        "{e}"
    );
    // HCL 2 itself refuses a repeated attribute; both places are named.
    let e = err("node_name = \"a\"\nnode_name = \"b\"\ndata_dir = \"/x\"\n");
    assert!(e.starts_with("agent.hcl:2:1:"), "{e}");
    assert!(
        e.contains("redefined attribute (first defined at 1:1)"),
        "{e}"
    );
}

mod definitions {
    use super::*;
    use crate::config::definition::ServiceDefinition;

    fn def(json: &str) -> Result<ServiceDefinition, String> {
        ServiceDefinition::from_json(&serde_json::from_str(json).unwrap())
    }

    fn refused(json: &str) -> String {
        def(json).unwrap_err()
    }

    /// Consul's register body maps onto a service block: its spellings, `Check` and
    /// `Checks`, `Connect.SidecarService.Proxy.Upstreams`, nulls and `"Address": ""`.
    #[test]
    fn consul_body_maps_onto_a_service_block() {
        let d = def(r#"{
            "ID": "web-1", "Name": "web", "Port": 8080, "Address": "", "Tags": ["v1"],
            "Meta": {"Team": "edge"}, "Namespace": null,
            "Check": {"TCP": "127.0.0.1:8080", "Interval": "5s"},
            "Checks": [{"HTTP": "http://127.0.0.1:8080/health", "Timeout": "1s",
                        "SuccessBeforePassing": 2, "FailuresBeforeCritical": 1}],
            "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
                {"DestinationName": "db", "DestinationNamespace": "data", "LocalBindPort": 9191}
            ]}}},
            "upstreams": {"destination_name": "cache", "local_bind_port": 9192}
        }"#)
        .unwrap();
        let s = d.validate("request").unwrap();
        assert_eq!((s.id.as_str(), s.name.as_str()), ("web-1", "web"));
        assert_eq!(s.address.to_string(), "127.0.0.1");
        assert_eq!(s.meta.get("Team").map(String::as_str), Some("edge"));
        assert_eq!(s.checks.len(), 2);
        assert_eq!(s.checks[0].interval.0, Duration::from_secs(5));
        assert!(matches!(s.checks[1].kind, CheckKind::Http { .. }));
        assert_eq!(
            (
                s.checks[1].success_before_passing,
                s.checks[1].failures_before_critical
            ),
            (2, 1)
        );
        let ups: Vec<_> = s
            .upstreams
            .iter()
            .map(|u| {
                (
                    u.destination_namespace.as_str(),
                    u.destination_name.as_str(),
                    u.local_bind_port,
                )
            })
            .collect();
        assert_eq!(ups, [("data", "db", 9191), ("default", "cache", 9192)]);
        // The stored form reads back to the same service.
        let again = ServiceDefinition::from_json(&d.to_json()).unwrap();
        assert_eq!(again.validate("store").unwrap(), s);
        // An empty Connect is fine.
        assert!(def(r#"{"Name": "a", "Port": 1, "Connect": {"SidecarService": {}}}"#).is_ok());
    }

    #[test]
    fn unknown_or_unsupported_fields_are_refused_by_path() {
        for (json, field) in [
            (
                r#"{"Name": "a", "Port": 1, "Weights": {"Passing": 1}}"#,
                "\"Weights\"",
            ),
            (r#"{"Name": "a", "Port": 1, "nmae": "b"}"#, "\"nmae\""),
            (
                r#"{"Name": "a", "Port": 1, "Checks": [{"TCP": "a:1"}, {"Name": "c", "TCP": "a:1"}]}"#,
                "\"Checks[1].Name\"",
            ),
            (
                r#"{"Name": "a", "Port": 1, "Connect": {"SidecarService": {"Port": 2}}}"#,
                "\"Connect.SidecarService.Port\"",
            ),
            (
                r#"{"Name": "a", "Port": 1, "Connect": {"Native": true}}"#,
                "\"Connect.Native\"",
            ),
            (
                r#"{"Name": "a", "Port": 1, "upstreams": [{"destination_name": "b", "local_bind_port": 2, "datacenter": "x"}]}"#,
                "\"upstreams[0].datacenter\"",
            ),
            (r#"{"Name": "a", "name": "b", "Port": 1}"#, "given twice"),
            (r#"{"Name": "a", "Port": "eighty"}"#, "\"port\""),
            (r#"{"Name": "a"}"#, "missing field `port`"),
            (r#"[1]"#, "expected an object"),
        ] {
            let e = refused(json);
            assert!(e.contains(field), "{field} in {e}");
        }
    }

    /// A definition is refused with the config's own message for the same mistake.
    #[test]
    fn validation_says_what_the_config_says() {
        let base = "node_name = \"a\"\ndata_dir = \"/x\"\nbind_addr = \"127.0.0.1\"\n";
        for (json, hcl) in [
            (
                r#"{"Name": "Bad Name", "Port": 1}"#,
                "name = \"Bad Name\"\n port = 1",
            ),
            (r#"{"Name": "a", "Port": 0}"#, "name = \"a\"\n port = 0"),
            (
                r#"{"Name": "a", "ID": "a/b", "Port": 1}"#,
                "name = \"a\"\n id = \"a/b\"\n port = 1",
            ),
            (
                r#"{"Name": "a", "Port": 1, "Check": {"TCP": "a:1", "HTTP": "http://a"}}"#,
                "name = \"a\"\n port = 1\n check {\n tcp = \"a:1\"\n http = \"http://a\"\n }",
            ),
            (
                r#"{"Name": "a", "Port": 1, "Address": "nowhere"}"#,
                "name = \"a\"\n port = 1\n address = \"nowhere\"",
            ),
        ] {
            let from_api = match def(json).unwrap().validate("request").unwrap_err() {
                ConfigError::Invalid { message, .. } => message,
                other => panic!("{other}"),
            };
            let from_file = err(&format!("{base}service {{\n {hcl}\n}}\n"));
            assert_eq!(from_file, format!("agent.hcl: {from_api}"));
        }
    }

    #[test]
    fn definition_files_take_hcl_blocks_or_json() {
        let hcl = "service {\n  name = \"web\"\n  port = 80\n}\nservice {\n  name = \"db\"\n  port = 5432\n}\n";
        let defs = ServiceDefinition::from_file(hcl, "web.hcl").unwrap();
        assert_eq!(defs.len(), 2);
        // Consul's HCL service definition (lower-case keys, connect, checks).
        let consul = r#"service {
  name = "web"
  port = 80
  checks = [{ tcp = "127.0.0.1:80", interval = "5s" }]
  check { http = "http://127.0.0.1:80/h" }
  connect {
    sidecar_service {
      proxy {
        upstreams = [
          { destination_name = "db", local_bind_port = 9191 },
          { destination_name = "cache", local_bind_port = 9192 },
        ]
      }
    }
  }
}
"#;
        let defs = ServiceDefinition::from_file(consul, "consul.hcl").unwrap();
        let s = defs[0].validate("f").unwrap();
        assert_eq!((s.upstreams.len(), s.checks.len()), (2, 2));
        let e =
            ServiceDefinition::from_file("service {\n  name = \"web\"\n  prot = 80\n}\n", "x.hcl")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("x.hcl:3:3:"), "{e}");
        let e = ServiceDefinition::from_file("node_name = \"a\"\n", "x.hcl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `node_name`"), "{e}");
        assert!(
            ServiceDefinition::from_file("", "x.hcl")
                .unwrap_err()
                .to_string()
                .contains("no service definition")
        );
        for json in [
            r#"{"Service": {"Name": "web", "Port": 80}}"#,
            r#"{"services": [{"Name": "web", "Port": 80}]}"#,
            r#"{"Name": "web", "Port": 80}"#,
        ] {
            let defs = ServiceDefinition::from_file(json, "web.json").unwrap();
            assert_eq!(defs[0].validate("f").unwrap().name, "web", "{json}");
        }
        let e = ServiceDefinition::from_file(
            r#"{"Service": {"Name": "web", "Port": 80, "Kind": "x"}}"#,
            "w.json",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("w.json: Service: field \"Kind\""), "{e}");
    }
}
