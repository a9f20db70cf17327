//! The Kubernetes manifests of `examples/kubernetes/` parse into the `k8s-openapi` types
//! their `kind` claims, with no field lost on the way (a misspelt field would be), and say
//! what the deployment needs: pods-only read RBAC, host networking, NODE_NAME from the
//! downward API, probes on the agent's health endpoint, a grace period longer than the
//! proxy's drain, an agent config and intentions that load, and a VM config that joins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use rhizome_agent::config::AgentConfig;
use serde::Deserialize as _;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes")
}

/// Parses `doc` as `T`, and checks that writing it back gives the same document.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    diff("", doc, &back, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{what}: lost or changed in parsing: {diffs:?}"
    );
    t
}

/// JSON paths where `a` and `b` differ (a misspelt field shows as missing from `b`).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let null = Value::Null;
                diff(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} != {b}")),
        _ => {}
    }
}

/// Every object of every manifest, parsed into its type.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    deployments: Vec<Deployment>,
}

fn load() -> Objects {
    let mut o = Objects::default();
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let doc = Value::deserialize(doc).unwrap();
            let what = format!("{}#{i}", file.display());
            match doc["kind"].as_str().unwrap_or_default() {
                "Namespace" => o.namespaces.push(typed(&doc, &what)),
                "ServiceAccount" => o.accounts.push(typed(&doc, &what)),
                "ClusterRole" => o.roles.push(typed(&doc, &what)),
                "ClusterRoleBinding" => o.bindings.push(typed(&doc, &what)),
                "Secret" => o.secrets.push(typed(&doc, &what)),
                "ConfigMap" => o.config_maps.push(typed(&doc, &what)),
                "DaemonSet" => o.daemon_sets.push(typed(&doc, &what)),
                "Deployment" => o.deployments.push(typed(&doc, &what)),
                other => panic!("{what}: unexpected kind {other:?}"),
            }
        }
    }
    o
}

/// The ConfigMap's agent config, loaded as the agent would with these environment values.
fn agent_config(cm: &ConfigMap) -> AgentConfig {
    let env: BTreeMap<&str, &str> = [
        ("NODE_NAME", "\"k8s-node-1\""),
        ("HOST_IP", "\"10.0.0.11\""),
        ("RHIZOME_JOIN_TOKEN", "\"token\""),
        ("RHIZOME_GOSSIP_KEY", "\"key\""),
    ]
    .into();
    // Tests cannot set process environment variables safely; substitute the calls instead.
    let mut src = cm.data.as_ref().unwrap()["agent.hcl"].clone();
    for (name, value) in &env {
        src = src.replace(&format!("env(\"{name}\")"), value);
    }
    assert!(
        !src.contains("env("),
        "an env() the DaemonSet does not set: {src}"
    );
    AgentConfig::from_str(&src, "configmap agent.hcl").unwrap()
}

#[test]
fn kube_manifests_parse_into_their_types() {
    let o = load();
    assert_eq!(
        o.namespaces.len(),
        2,
        "rhizome-system and the example app's shop"
    );
    assert_eq!(o.accounts.len(), 1);
    assert_eq!(o.roles.len(), 1);
    assert_eq!(o.bindings.len(), 1);
    assert_eq!(o.secrets.len(), 2, "rhizome and rhizome-operator");
    assert_eq!(o.config_maps.len(), 1);
    assert_eq!(o.daemon_sets.len(), 1);
    let sa = &o.accounts[0].metadata;
    assert!(
        o.namespaces.iter().any(|n| n.metadata.name == sa.namespace),
        "the ServiceAccount's namespace is shipped"
    );
    let app_ns = o.deployments[0].metadata.namespace.clone();
    assert!(
        o.namespaces.iter().any(|n| n.metadata.name == app_ns),
        "the example app's namespace is shipped"
    );

    // RBAC: pods, get/list/watch, nothing else; bound to the agent's ServiceAccount.
    let rules = o.roles[0].rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let b = &o.bindings[0];
    assert_eq!(b.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&b.role_ref.name), o.roles[0].metadata.name.as_ref());
    let subject = &b.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), Some(&subject.name)),
        ("ServiceAccount", sa.name.as_ref())
    );
    assert_eq!(subject.namespace, sa.namespace);
}

/// The pod template of the shipped DaemonSet.
fn daemon_pod(o: &Objects) -> k8s_openapi::api::core::v1::PodSpec {
    let ds = o.daemon_sets[0].spec.as_ref().unwrap();
    ds.template.spec.clone().unwrap()
}

/// The keys of the shipped Secret `name`.
fn secret_keys(o: &Objects, name: &str) -> Vec<String> {
    let secret = o
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Secret {name} in the manifests"));
    secret
        .string_data
        .iter()
        .flat_map(|d| d.keys().cloned())
        .chain(secret.data.iter().flat_map(|d| d.keys().cloned()))
        .collect()
}

/// An agent with `intentions_dir` must have `operator_dir` (else it cannot sign the files:
/// it logs an ERROR and enforces default deny, so the example mesh denies everything).
fn assert_intentions_signable(config: &AgentConfig, what: &str) {
    if config.intentions_dir.is_some() {
        assert!(
            config.operator_dir.is_some(),
            "{what}: intentions_dir is set without operator_dir: its files cannot be signed \
             and the agent runs on default deny"
        );
    }
}

#[test]
fn kube_intentions_dir_comes_with_operator_credentials() {
    let o = load();
    let config = agent_config(&o.config_maps[0]);
    assert!(
        config.intentions_dir.is_some(),
        "the example ships intentions"
    );
    assert_intentions_signable(&config, "configmap agent.hcl");

    // operator_dir is a read-only mount of a Secret that carries an operator credential.
    let pod = daemon_pod(&o);
    let c = &pod.containers[0];
    let operator_dir = config.operator_dir.unwrap();
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| std::path::Path::new(&m.mount_path) == operator_dir)
        .unwrap_or_else(|| panic!("nothing mounted at operator_dir {}", operator_dir.display()));
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("operator_dir must come from a Secret: {volume:?}"));
    let keys = secret_keys(&o, secret.secret_name.as_deref().unwrap());
    let items = secret.items.clone().unwrap();
    let path_of = |file: &str| items.iter().find(|i| i.path == file).map(|i| i.key.clone());
    let cert = path_of("chain.pem").or_else(|| path_of("cert.pem"));
    for (file, key) in [
        ("chain.pem or cert.pem", cert),
        ("key.pem", path_of("key.pem")),
    ] {
        let key = key.unwrap_or_else(|| panic!("operator_dir has no {file}: {items:?}"));
        assert!(keys.contains(&key), "{key} not in the Secret: {keys:?}");
    }
    assert_eq!(
        secret.default_mode,
        Some(0o400),
        "the key is readable by the agent only"
    );

    let src = std::fs::read_to_string(dir().join("vm-agent.hcl")).unwrap();
    let vm = AgentConfig::from_str(&src, "vm-agent.hcl").unwrap();
    assert_intentions_signable(&vm, "vm-agent.hcl");
}

#[test]
fn kube_intentions_check_catches_a_missing_operator_dir() {
    let unsigned = AgentConfig::from_str(
        "node_name = \"n\"\ndata_dir = \"/tmp/x\"\nbind_addr = \"127.0.0.1\"\nintentions_dir = \"/etc/rhizome/intentions\"\n",
        "unsigned.hcl",
    )
    .unwrap();
    let caught = std::panic::catch_unwind(|| assert_intentions_signable(&unsigned, "unsigned"));
    assert!(
        caught.is_err(),
        "intentions_dir without operator_dir must be caught"
    );
}

#[test]
fn kube_daemonset_fits_the_agent_config() {
    let o = load();
    let ds = &o.daemon_sets[0];
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let config = agent_config(&o.config_maps[0]);
    assert!(config.kubernetes.enabled);
    assert_eq!(
        config.node_name, "k8s-node-1",
        "node_name from kubernetes.node_name"
    );
    assert!(!config.retry_join.is_empty(), "joins node addresses");
    assert!(config.ca.join_token.is_some());

    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, o.accounts[0].metadata.name);
    let grace = u64::try_from(pod.termination_grace_period_seconds.unwrap()).unwrap();
    assert!(
        grace > config.proxy.drain_timeout.0.as_secs(),
        "grace {grace}s must exceed drain_timeout {:?}",
        config.proxy.drain_timeout.0
    );

    let c = &pod.containers[0];
    let env = c.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node_name
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    for e in env {
        if let Some(k) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            assert!(
                secret_keys(&o, &k.name).contains(&k.key),
                "{} not in the Secret {}",
                k.key,
                k.name
            );
        }
    }

    // Probes reach the API where the config binds it: loopback, under host networking.
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/v1/health"));
        assert_eq!(
            get.host.as_deref(),
            Some(config.client_addr.to_string().as_str())
        );
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(
                config.ports.http
            ))
        );
    }
    let resources = c.resources.as_ref().unwrap();
    for key in ["cpu", "memory"] {
        assert!(resources.requests.as_ref().unwrap().contains_key(key));
        assert!(resources.limits.as_ref().unwrap().contains_key(key));
    }

    // The config directory mount holds agent.hcl, the intentions mount the intentions.
    let mount = |name: &str| {
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .mount_path
            .clone()
    };
    let volume = |name: &str| {
        pod.volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == name)
            .unwrap()
    };
    let args = c.args.as_ref().unwrap();
    assert_eq!(
        args[args.iter().position(|a| a == "--config-dir").unwrap() + 1],
        mount("config")
    );
    assert_eq!(
        Some(PathBuf::from(mount("intentions"))),
        config.intentions_dir
    );
    let items = volume("config")
        .config_map
        .as_ref()
        .unwrap()
        .items
        .clone()
        .unwrap();
    assert_eq!(
        items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        ["agent.hcl"]
    );
    assert!(config.data_dir.starts_with(mount("data")));
}

#[test]
fn kube_configmap_intentions_and_example_app_load() {
    let o = load();
    let data = o.config_maps[0].data.clone().unwrap();
    let pod = daemon_pod(&o);
    let volumes = pod.volumes.unwrap();
    let intentions = volumes.iter().find(|v| v.name == "intentions").unwrap();
    let items = intentions
        .config_map
        .as_ref()
        .unwrap()
        .items
        .clone()
        .unwrap();
    assert_eq!(
        items.len(),
        data.keys().filter(|k| k.starts_with("intention-")).count()
    );
    for item in items {
        let entry = rhizome_intentions::Entry::parse(&data[&item.key], &item.path)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(item.path.ends_with(".hcl"), "{entry:?}");
    }

    // The example app's annotations register it.
    let app = &o.deployments[0];
    let template = &app.spec.as_ref().unwrap().template;
    let ports: Vec<u16> = template.spec.as_ref().unwrap().containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| u16::try_from(p.container_port).unwrap())
        .collect();
    let a = rhizome_agent::kube::annotations::Annotations::parse(
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap(),
        app.metadata.namespace.as_deref().unwrap(),
        &ports,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (a.service.as_str(), a.namespace.as_str(), a.port),
        ("web", "shop", 8080)
    );
    assert_eq!(a.upstreams[0].destination_name, "db");
}

#[test]
fn kube_vm_agent_config_joins_node_addresses() {
    let src = std::fs::read_to_string(dir().join("vm-agent.hcl")).unwrap();
    let vm = AgentConfig::from_str(&src, "vm-agent.hcl").unwrap();
    assert!(!vm.kubernetes.enabled);
    let cm = load().config_maps.remove(0);
    let k8s = agent_config(&cm);
    assert!(!vm.retry_join.is_empty());
    assert!(
        vm.retry_join.iter().all(|a| k8s.retry_join.contains(a)),
        "the VM joins addresses of the Kubernetes nodes: {:?} vs {:?}",
        vm.retry_join,
        k8s.retry_join
    );
    assert_eq!(vm.services[0].name, "db");
    assert_eq!(
        vm.services[0].namespace, "shop",
        "the namespace the pods' upstream targets"
    );
}

#[test]
fn kube_daemonset_runs_the_image_the_containerfile_builds() {
    use clap::Parser as _;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let containerfile = std::fs::read_to_string(root.join("Containerfile")).unwrap();
    let final_stage = containerfile.rsplit("\nFROM ").next().unwrap();
    let line = |key: &str| {
        final_stage
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the Containerfile's final stage"))
            .trim()
            .to_string()
    };
    let entrypoint: Vec<String> = serde_json::from_str(&line("ENTRYPOINT ")).unwrap();
    let user = line("USER ");
    assert!(
        !user.starts_with('0') && user != "root",
        "non-root by default: {user}"
    );

    let o = load();
    let pod = daemon_pod(&o);
    let c = &pod.containers[0];
    let image = c.image.clone().unwrap();
    assert_eq!(
        image,
        format!("rhizome:{}", env!("CARGO_PKG_VERSION")),
        "the tag `make image` builds"
    );
    assert!(c.command.is_none(), "the image's ENTRYPOINT runs");
    let argv = entrypoint.iter().chain(c.args.iter().flatten());
    let cli = rhizome_agent::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(cli.command, rhizome_agent::cli::Command::Agent(_)),
        "{cli:?}"
    );
}

/// Renders a chart template the way Helm would for the only constructs the chart may use:
/// `{{ .Values.NAME }}` (a string or number of values.yaml) and `{{ .Release.Namespace }}`.
fn render(template: &str, values: &Value, namespace: &str, what: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .unwrap_or_else(|| panic!("{what}: unclosed {{{{"));
        let expr = rest[start + 2..start + end].trim();
        let value = if expr == ".Release.Namespace" {
            namespace.to_string()
        } else if let Some(name) = expr.strip_prefix(".Values.") {
            match &values[name] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{what}: .Values.{name} is {other}, not a string or number"),
            }
        } else {
            panic!("{what}: {expr:?} is more than this minimal chart may use");
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out + rest
}

/// Every document of a YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn kube_helm_chart_renders_the_shipped_objects() {
    let chart = dir().join("chart");
    let meta = documents(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap());
    assert_eq!(meta[0]["appVersion"], env!("CARGO_PKG_VERSION"));
    let values = documents(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()).remove(0);
    let mut templates: Vec<_> = std::fs::read_dir(chart.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    templates.sort();
    let names: Vec<_> = templates
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["configmap.yaml", "daemonset.yaml", "rbac.yaml"]);
    for (path, name) in templates.iter().zip(&names) {
        let text = std::fs::read_to_string(path).unwrap();
        let rendered = render(&text, &values, "rhizome-system", name);
        let shipped = std::fs::read_to_string(dir().join(name)).unwrap();
        assert_eq!(
            documents(&rendered),
            documents(&shipped),
            "chart template {name} with values.yaml must render examples/kubernetes/{name}"
        );
    }
}
