//! Merging the files of a config directory into one validated [`AgentConfig`].

use super::file::{CheckBlock, FileConfig, ServiceBlock};
use super::*;
use std::collections::HashSet;

/// A scalar that remembers which file set it, so validation errors can name the file.
struct Set<T> {
    value: Option<(T, String)>,
}

impl<T> Set<T> {
    fn new() -> Self {
        Set { value: None }
    }
    fn put(&mut self, v: Option<T>, file: &str) {
        if let Some(v) = v {
            self.value = Some((v, file.to_string()));
        }
    }
    fn file(&self) -> String {
        self.value
            .as_ref()
            .map_or_else(|| "<config>".to_string(), |(_, f)| f.clone())
    }
}

fn invalid(file: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.into(),
        message: message.into(),
    }
}

fn ip(set: &Set<String>, key: &str) -> Result<Option<IpAddr>, ConfigError> {
    match &set.value {
        None => Ok(None),
        Some((text, file)) => text
            .parse()
            .map(Some)
            .map_err(|_| invalid(file, format!("{key} = {text:?} is not an IP address"))),
    }
}

pub(super) fn merge(files: Vec<(String, FileConfig)>) -> Result<AgentConfig, ConfigError> {
    let mut node_name = Set::new();
    let mut data_dir = Set::new();
    let mut bind_addr = Set::new();
    let mut advertise_addr = Set::new();
    let mut client_addr = Set::new();
    let mut ports = Ports {
        gossip: DEFAULT_GOSSIP_PORT,
        data: DEFAULT_DATA_PORT,
        http: DEFAULT_HTTP_PORT,
    };
    let mut retry_join = Vec::new();
    let mut encrypt = None;
    let mut log_level = None;
    let mut policy = Set::new();
    let mut mode = Set::new();
    let mut transport = Set::new();
    let mut intentions_dir = None;
    let mut operator_dir = None;
    let mut ca = CaConfig {
        leaf_ttl: Dur(Duration::from_secs(72 * 3600)),
        ..CaConfig::default()
    };
    let mut gossip = GossipConfig::default();
    let mut proxy = ProxyConfig::default();
    let mut kube = KubernetesConfig::default();
    let mut kube_bind = Set::new();
    let mut services = Vec::new();

    for (file, f) in files {
        node_name.put(f.node_name, &file);
        data_dir.put(f.data_dir, &file);
        bind_addr.put(f.bind_addr, &file);
        advertise_addr.put(f.advertise_addr, &file);
        client_addr.put(f.client_addr, &file);
        if let Some(p) = f.ports {
            ports.gossip = p.gossip.unwrap_or(ports.gossip);
            ports.data = p.data.unwrap_or(ports.data);
            ports.http = p.http.unwrap_or(ports.http);
        }
        if let Some(j) = f.retry_join {
            retry_join = j;
        }
        encrypt = f.encrypt.or(encrypt);
        log_level = f.log_level.or(log_level);
        policy.put(f.default_intention_policy, &file);
        mode.put(f.intentions.and_then(|i| i.mode), &file);
        transport.put(f.transport, &file);
        intentions_dir = f.intentions_dir.map(PathBuf::from).or(intentions_dir);
        operator_dir = f.operator_dir.map(PathBuf::from).or(operator_dir);
        if let Some(c) = f.ca {
            ca.dir = c.dir.map(PathBuf::from).or(ca.dir);
            ca.signer = c.signer.unwrap_or(ca.signer);
            ca.root_dir = c.root_dir.map(PathBuf::from).or(ca.root_dir);
            ca.join_token = c
                .join_token
                .filter(|t| !t.trim().is_empty())
                .or(ca.join_token);
            if let Some(addrs) = c.signer_addrs {
                ca.signer_addrs = addrs;
            }
            ca.leaf_ttl = c.leaf_ttl.unwrap_or(ca.leaf_ttl);
        }
        if let Some(g) = f.gossip {
            gossip.probe_interval = g.probe_interval.unwrap_or(gossip.probe_interval);
            gossip.probe_timeout = g.probe_timeout.unwrap_or(gossip.probe_timeout);
            gossip.suspicion_mult = g.suspicion_mult.unwrap_or(gossip.suspicion_mult);
            gossip.gossip_interval = g.gossip_interval.unwrap_or(gossip.gossip_interval);
            gossip.gossip_nodes = g.gossip_nodes.unwrap_or(gossip.gossip_nodes);
            gossip.retransmit_mult = g.retransmit_mult.unwrap_or(gossip.retransmit_mult);
            gossip.push_pull_interval = g.push_pull_interval.unwrap_or(gossip.push_pull_interval);
            gossip.reap_after = g.reap_after.unwrap_or(gossip.reap_after);
        }
        if let Some(p) = f.proxy {
            proxy.connect_timeout = p.connect_timeout.unwrap_or(proxy.connect_timeout);
            proxy.idle_timeout = p.idle_timeout.unwrap_or(proxy.idle_timeout);
            proxy.max_connections = p.max_connections.unwrap_or(proxy.max_connections);
            proxy.drain_timeout = p.drain_timeout.unwrap_or(proxy.drain_timeout);
            proxy.quic_keep_alive = p.quic_keep_alive.unwrap_or(proxy.quic_keep_alive);
            proxy.quic_idle_timeout = p.quic_idle_timeout.unwrap_or(proxy.quic_idle_timeout);
            proxy.max_connection_age = p.max_connection_age.unwrap_or(proxy.max_connection_age);
        }
        if let Some(k) = f.kubernetes {
            kube.enabled = k.enabled.unwrap_or(kube.enabled);
            kube.node_name = k.node_name.filter(|n| !n.is_empty()).or(kube.node_name);
            kube_bind.put(k.upstream_bind_addr, &file);
            kube.kubeconfig = k.kubeconfig.map(PathBuf::from).or(kube.kubeconfig);
        }
        for s in f.service {
            services.push(service(s, &file)?);
        }
    }

    let (node, node_file) = match node_name.value {
        Some(v) => v,
        None => match &kube.node_name {
            Some(n) if kube.enabled => (n.clone(), "<config>".to_string()),
            _ => {
                return Err(invalid(
                    "<config>",
                    "node_name is required (e.g. node_name = \"web-1\")",
                ));
            }
        },
    };
    validate_name("node_name", &node).map_err(|m| invalid(&node_file, m))?;
    let data_dir = match data_dir.value {
        Some((d, _)) => PathBuf::from(d),
        None => {
            return Err(invalid(
                "<config>",
                "data_dir is required (e.g. data_dir = \"/var/lib/rhizome\")",
            ));
        }
    };
    let bind = ip(&bind_addr, "bind_addr")?.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let advertise = match ip(&advertise_addr, "advertise_addr")? {
        Some(a) => a,
        None if bind.is_unspecified() => {
            return Err(invalid(
                bind_addr.file(),
                "advertise_addr is required when bind_addr is 0.0.0.0 (the address other agents reach this one at)",
            ));
        }
        None => bind,
    };
    let client = ip(&client_addr, "client_addr")?.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let default_intention_policy = match policy.value.as_ref().map(|(v, f)| (v.as_str(), f)) {
        None | Some(("deny", _)) => Policy::Deny,
        Some(("allow", _)) => Policy::Allow,
        Some((other, f)) => {
            return Err(invalid(
                f,
                format!("default_intention_policy = {other:?}: expected \"allow\" or \"deny\""),
            ));
        }
    };
    let intention_mode = match mode.value.as_ref().map(|(v, f)| (v.as_str(), f)) {
        None | Some(("enforce", _)) => IntentionMode::Enforce,
        Some(("audit", _)) => IntentionMode::Audit,
        Some((other, f)) => {
            return Err(invalid(
                f,
                format!("intentions {{ mode = {other:?} }}: expected \"enforce\" or \"audit\""),
            ));
        }
    };
    let transport = match transport.value.as_ref().map(|(v, f)| (v.as_str(), f)) {
        None | Some(("quic", _)) => Transport::Quic,
        Some(("tls", _)) => Transport::Tls,
        Some((other, f)) => {
            return Err(invalid(
                f,
                format!("transport = {other:?}: expected \"quic\" or \"tls\""),
            ));
        }
    };
    kube.upstream_bind_addr = ip(&kube_bind, "kubernetes.upstream_bind_addr")?;
    if kube.enabled && kube.node_name.is_none() {
        kube.node_name = Some(node.clone());
    }
    if ca.signer && ca.root_dir.is_none() {
        return Err(invalid(
            "<config>",
            "ca { signer = true } needs root_dir (the directory of `rhizome ca init`)",
        ));
    }
    if ca.leaf_ttl.0 < Duration::from_secs(600) {
        return Err(invalid(
            "<config>",
            format!(
                "ca {{ leaf_ttl = \"{}\" }} is too short: at least 10m (leaves are renewed at 60-90% of their life)",
                ca.leaf_ttl
            ),
        ));
    }
    if proxy.quic_keep_alive.0.is_zero() || proxy.quic_keep_alive.0 >= proxy.quic_idle_timeout.0 {
        return Err(invalid(
            "<config>",
            format!(
                "proxy {{ quic_keep_alive = \"{}\" }} must be above 0 and below quic_idle_timeout (\"{}\")",
                proxy.quic_keep_alive, proxy.quic_idle_timeout
            ),
        ));
    }
    if proxy.max_connection_age.0 < Duration::from_secs(1) {
        return Err(invalid(
            "<config>",
            format!(
                "proxy {{ max_connection_age = \"{}\" }} is too short: at least 1s",
                proxy.max_connection_age
            ),
        ));
    }
    let p = [
        ("gossip", ports.gossip),
        ("data", ports.data),
        ("http", ports.http),
    ];
    if ports.http != 0 && (ports.gossip == ports.http || ports.data == ports.http) {
        return Err(invalid(
            "<config>",
            format!("ports must differ for TCP listeners: {p:?}"),
        ));
    }
    check_services(&services, &ports)?;
    Ok(AgentConfig {
        node_name: node,
        data_dir,
        bind_addr: bind,
        advertise_addr: advertise,
        client_addr: client,
        ports,
        retry_join,
        encrypt,
        log_level,
        default_intention_policy,
        intention_mode,
        intentions_dir,
        operator_dir,
        transport,
        ca,
        gossip,
        proxy,
        kubernetes: kube,
        services,
        registered: Default::default(),
        dev: false,
    })
}

pub(super) fn service(s: ServiceBlock, file: &str) -> Result<Service, ConfigError> {
    let namespace = s.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let ctx = |m: String| invalid(file, format!("service {:?}: {m}", s.name));
    validate_name("service name", &s.name).map_err(ctx)?;
    validate_name("namespace", &namespace).map_err(ctx)?;
    let address = match &s.address {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(a) => a
            .parse()
            .map_err(|_| ctx(format!("address {a:?} is not an IP address")))?,
    };
    if s.port == 0 {
        return Err(ctx("port must be 1-65535".into()));
    }
    let mut upstreams = Vec::new();
    for u in s.upstreams {
        let destination_namespace = u.destination_namespace.unwrap_or_else(|| namespace.clone());
        validate_name("destination_name", &u.destination_name).map_err(ctx)?;
        let local_bind_address = match &u.local_bind_address {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(a) => a
                .parse()
                .map_err(|_| ctx(format!("local_bind_address {a:?} is not an IP address")))?,
        };
        if u.local_bind_port == 0 {
            return Err(ctx(format!(
                "upstream {:?}: local_bind_port must be 1-65535",
                u.destination_name
            )));
        }
        upstreams.push(Upstream {
            destination_name: u.destination_name,
            destination_namespace,
            local_bind_port: u.local_bind_port,
            local_bind_address,
        });
    }
    let checks = s
        .check
        .into_iter()
        .map(|c| check(c, &s.name, file))
        .collect::<Result<_, _>>()?;
    let id = s.id.unwrap_or_else(|| s.name.clone());
    if let Err(e) = id.parse::<rhizome_gossip::state::Segment>() {
        return Err(ctx(format!("id {id:?} is not a valid instance id: {e}")));
    }
    Ok(Service {
        id,
        name: s.name,
        namespace,
        port: s.port,
        address,
        tags: s.tags,
        meta: s.meta,
        upstreams,
        checks,
    })
}

fn check(c: CheckBlock, service: &str, file: &str) -> Result<Check, ConfigError> {
    let ctx = |m: &str| invalid(file, format!("service {service:?}: check: {m}"));
    let kind = match (c.tcp, c.http) {
        (Some(target), None) => {
            if target.parse::<SocketAddr>().is_err() && !target.contains(':') {
                return Err(ctx("tcp must be host:port"));
            }
            CheckKind::Tcp { target }
        }
        (None, Some(url)) => {
            if !url.starts_with("http://") {
                return Err(ctx("http must be an http:// URL"));
            }
            CheckKind::Http { url }
        }
        _ => return Err(ctx("set exactly one of tcp or http")),
    };
    let interval = c.interval.unwrap_or(Dur(Duration::from_secs(10)));
    let timeout = c.timeout.unwrap_or(Dur(Duration::from_secs(2)));
    if interval.0.is_zero() || timeout.0.is_zero() {
        return Err(ctx("interval and timeout must be positive"));
    }
    Ok(Check {
        kind,
        interval,
        timeout,
        success_before_passing: c
            .success_before_passing
            .unwrap_or(super::DEFAULT_SUCCESS_BEFORE_PASSING),
        failures_before_critical: c
            .failures_before_critical
            .unwrap_or(super::DEFAULT_FAILURES_BEFORE_CRITICAL),
    })
}

pub(super) fn check_services(services: &[Service], ports: &Ports) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut binds = HashSet::new();
    for s in services {
        if !ids.insert(s.id.as_str()) {
            return Err(invalid(
                "<config>",
                format!("two services share the id {:?}; give one an `id`", s.id),
            ));
        }
        for u in &s.upstreams {
            let bind = (u.local_bind_address, u.local_bind_port);
            if !binds.insert(bind) {
                return Err(invalid(
                    "<config>",
                    format!(
                        "local_bind_port {} is used by two upstreams",
                        u.local_bind_port
                    ),
                ));
            }
            if [ports.data, ports.http, ports.gossip].contains(&u.local_bind_port) {
                return Err(invalid(
                    "<config>",
                    format!(
                        "upstream {:?}: local_bind_port {} collides with an agent port",
                        u.destination_name, u.local_bind_port
                    ),
                ));
            }
        }
    }
    Ok(())
}
