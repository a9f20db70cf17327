//! What the real-API-server tests of `kube.rs` do with the shipped manifests: apply them
//! server-side, play the kubelet (pods and their status), obtain the shipped ServiceAccount's
//! token, prove its RBAC, and build the agent config the DaemonSet would run with.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use super::*;

pub(crate) const SA_NAMESPACE: &str = "rhizome-system";
pub(crate) const SA_NAME: &str = "rhizome";

/// Every object of every `examples/kubernetes/*.yaml`, in the order to apply them
/// (namespaces first, then RBAC, then configuration, then workloads).
pub(crate) fn manifest_objects() -> Vec<Value> {
    use serde::Deserialize as _;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes");
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(doc).unwrap());
        }
    }
    let rank = |d: &Value| match d["kind"].as_str().unwrap_or_default() {
        "Namespace" => 0,
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" => 1,
        "Secret" | "ConfigMap" => 2,
        _ => 3,
    };
    docs.sort_by_key(|d| {
        (
            rank(d),
            d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    });
    docs
}

/// Applies every shipped object server-side (printing each when `print`).
pub(crate) async fn apply_manifests(admin: &kube::Client, print: bool) {
    let objects = manifest_objects();
    for doc in &objects {
        let what = format!(
            "{} {}/{}",
            doc["kind"].as_str().unwrap(),
            doc["metadata"]["namespace"].as_str().unwrap_or("-"),
            doc["metadata"]["name"].as_str().unwrap()
        );
        let applied = apply(admin, doc)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {what}: {e}"));
        assert!(applied.metadata.uid.is_some(), "{what}");
        if print {
            println!("applied {what}");
        }
    }
    assert!(objects.len() >= 10, "{} objects", objects.len());
}

/// Applies `doc` server-side (the server validates it against its schema and admission).
pub(crate) async fn apply(admin: &kube::Client, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", doc["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    let resource = ApiResource::from_gvk(&gvk);
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
        None => Api::all_with(admin.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("rhizome-test"),
        &Patch::Apply(doc),
    )
    .await
}

/// A pod of `node` in namespace `shop` as a user would create it (no status): annotated as
/// service `svc` on port 8080 with an upstream to `db` on `upstream_port`.
pub(crate) fn new_pod(name: &str, node: &str, svc: Option<&str>, upstream_port: u16) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(svc) = svc {
        annotations.insert("rhizome.io/service".into(), json!(svc));
        annotations.insert("rhizome.io/port".into(), json!("8080"));
        annotations.insert(
            "rhizome.io/upstreams".into(),
            json!(format!("db:{upstream_port}")),
        );
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "annotations": annotations },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "app", "image": "example/app:1",
                             "ports": [{ "containerPort": 8080 }] }],
        },
    })
}

/// Plays the kubelet: sets the pod's status (Running, Ready or not, its IP) through the
/// status subresource.
pub(crate) async fn set_status(pods: &Api<Pod>, name: &str, ready: bool, ip: &str) {
    let status = json!({ "status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
    } });
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status of pod {name}: {e}"));
}

/// A token of the shipped ServiceAccount from the TokenRequest API.
pub(crate) async fn service_account_token(admin: &kube::Client) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), SA_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![real_kube::SA_ISSUER.to_string()],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(SA_NAME, &PostParams::default(), &request)
        .await
        .unwrap();
    answer.status.unwrap().token
}

/// What the real authorizer answers the agent's identity (the shipped ServiceAccount bound
/// by the shipped RBAC): the reads discovery needs are allowed, everything else refused.
pub(crate) async fn prove_rbac(sa: &kube::Client) {
    let who = format!("system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}");
    let selector = format!("spec.nodeName={NODE}");
    let pods: Api<Pod> = Api::all(sa.clone());
    let list = pods
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap_or_else(|e| panic!("{who} must be allowed to list pods of {NODE}: {e}"));
    let rv = list.metadata.resource_version.clone().unwrap();
    println!(
        "RBAC allowed: {who} GET /api/v1/pods?fieldSelector={selector} -> 200 PodList, {} \
         items, resourceVersion {rv}",
        list.items.len()
    );
    let stream = pods
        .watch(&WatchParams::default().fields(&selector).timeout(1), &rv)
        .await
        .unwrap_or_else(|e| panic!("{who} must be allowed to watch pods of {NODE}: {e}"));
    drop(stream);
    println!(
        "RBAC allowed: {who} GET /api/v1/pods?watch=true&fieldSelector={selector} -> 200 stream"
    );

    let refused = |what: &str, r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{what}: {s:?}");
            println!(
                "RBAC refused: {who} {what} -> {} {}: {}",
                s.code, s.reason, s.message
            );
        }
        other => panic!("{what} must be refused to {who}, got {other:?}"),
    };
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), SA_NAMESPACE);
    refused(
        &format!("list secrets in {SA_NAMESPACE}"),
        secrets.list(&ListParams::default()).await.map(drop),
    );
    let shop: Api<Pod> = Api::namespaced(sa.clone(), "shop");
    let pod: Pod = serde_json::from_value(new_pod("intruder", NODE, None, 1)).unwrap();
    refused(
        "create a pod in shop",
        shop.create(&PostParams::default(), &pod).await.map(drop),
    );
    let nodes: Api<Node> = Api::all(sa.clone());
    refused(
        "list nodes",
        nodes.list(&ListParams::default()).await.map(drop),
    );
}

/// Where the kubelet would mount `path` (an absolute path in the container) under `root`.
pub(crate) fn mounted(root: &std::path::Path, path: &std::path::Path) -> std::path::PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The agent config the shipped DaemonSet runs, read back from the API server: the operator
/// fills in the Secrets (a real operator credential, a gossip key), the test plays the
/// kubelet (volumes written under `dir`, env() values from the downward API and Secrets),
/// then changes only what a loopback test must (addresses, ports, no retry_join, the agent
/// CA from a test root instead of a join token, the token's kubeconfig instead of the
/// in-cluster account of the same ServiceAccount).
pub(crate) async fn shipped_agent_config(
    admin: &kube::Client,
    dir: &std::path::Path,
    plane: &ControlPlane,
    token: &str,
) -> AgentConfig {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::ConfigMap;
    let ca = rhizome_agent::testkit::TestCa::new("test.mesh").unwrap();
    let operator = ca.operator_dir(dir, "k8s-intentions").unwrap();
    let read = |f: &str| std::fs::read_to_string(operator.join(f)).unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), SA_NAMESPACE);
    let fill = |name: &str, data: Value| {
        json!({ "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": name, "namespace": SA_NAMESPACE },
                "stringData": data })
    };
    let operator_secret = fill(
        "rhizome-operator",
        json!({ "chain.pem": read("chain.pem"), "key.pem": read("key.pem") }),
    );
    let gossip_key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let mesh_secret = fill(
        "rhizome",
        json!({ "bundle.pem": ca.root.cert_pem(), "gossip-key": gossip_key }),
    );
    for doc in [operator_secret, mesh_secret] {
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        secrets
            .patch(
                &name,
                &PatchParams::apply("operator").force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("filling in Secret {name}: {e}"));
    }

    // The kubelet's part: the pod's volumes and environment.
    let ds = Api::<DaemonSet>::namespaced(admin.clone(), SA_NAMESPACE)
        .get("rhizome")
        .await
        .unwrap();
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), SA_NAMESPACE)
        .get("rhizome")
        .await
        .unwrap();
    let cm_data = cm.data.unwrap_or_default();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let root = dir.join("pod");
    for m in container.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        let at = mounted(&root, std::path::Path::new(&m.mount_path));
        std::fs::create_dir_all(&at).unwrap();
        if let Some(c) = &volume.config_map {
            for item in c.items.iter().flatten() {
                std::fs::write(at.join(&item.path), &cm_data[&item.key]).unwrap();
            }
        }
        if let Some(s) = &volume.secret {
            let secret = secrets
                .get(s.secret_name.as_deref().unwrap())
                .await
                .unwrap();
            let data = secret.data.unwrap_or_default();
            for item in s.items.iter().flatten() {
                std::fs::write(at.join(&item.path), &data[&item.key].0).unwrap();
            }
        }
    }
    let mut src = cm_data["agent.hcl"].clone();
    for e in container.env.iter().flatten() {
        let from = e.value_from.as_ref().unwrap();
        let value = if let Some(f) = &from.field_ref {
            match f.field_path.as_str() {
                "spec.nodeName" => NODE.to_string(),
                "status.hostIP" => "127.0.0.1".to_string(),
                other => panic!("downward API field {other} not played by the test"),
            }
        } else {
            let k = from.secret_key_ref.as_ref().unwrap();
            let secret = secrets.get(&k.name).await.unwrap();
            let data = secret.data.unwrap_or_default();
            String::from_utf8(data[&k.key].0.clone()).unwrap()
        };
        src = src.replace(&format!("env(\"{}\")", e.name), &json!(value).to_string());
    }
    assert!(
        !src.contains("env("),
        "an env() the DaemonSet does not set: {src}"
    );
    let mut config = AgentConfig::from_str(&src, "configmap agent.hcl").unwrap();
    assert_eq!(config.node_name, NODE, "node_name from the downward API");

    // What a loopback test must change.
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    config.bind_addr = loopback;
    config.advertise_addr = loopback;
    config.ports.gossip = 0;
    config.ports.data = 0;
    config.ports.http = 0;
    config.retry_join.clear();
    config.ca.join_token = None;
    config.ca.dir = Some(ca.agent_dir(dir, NODE).unwrap());
    config.data_dir = mounted(&root, &config.data_dir);
    config.intentions_dir = config.intentions_dir.map(|d| mounted(&root, &d));
    config.operator_dir = config.operator_dir.map(|d| mounted(&root, &d));
    let kubeconfig = dir.join("kubeconfig");
    plane.write_kubeconfig(&User::Token(token), &kubeconfig);
    config.kubernetes.kubeconfig = Some(kubeconfig);
    config
}
