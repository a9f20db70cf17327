//! A real Kubernetes control plane for tests: etcd and kube-apiserver (obtained by
//! `make kube-apiserver`, see `integration/kube/obtain.sh`) on 127.0.0.1, on free ports,
//! with a temporary data directory and their own PKI (a CA, the server's serving
//! certificate, an admin client certificate in `system:masters`, a service-account signing
//! key). [`ControlPlane::start`] waits (bounded) for `/readyz`; dropping the value kills
//! both processes by PID and waits for them.
//!
//! Without the binaries, [`binaries_or_skip`] prints one `SKIPPED ...` line naming what is
//! missing and how to get it, and the test returns.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the control plane's programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The kube-apiserver binary.
    pub apiserver: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
}

/// The cargo target directory this test binary runs from (`<target>/debug/deps/<test>`).
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_path_buf())
}

/// The binaries from `$KUBE_APISERVER` / `$ETCD`, else from `<target>/kube/env` (written
/// by `integration/kube/obtain.sh`). `Err` says what is missing.
pub fn binaries() -> Result<Binaries, String> {
    let mut apiserver = std::env::var_os("KUBE_APISERVER").map(PathBuf::from);
    let mut etcd = std::env::var_os("ETCD").map(PathBuf::from);
    let env_file = target_dir().map(|t| t.join("kube/env"));
    if let Some(text) = env_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
    {
        for line in text.lines() {
            match line.split_once('=') {
                Some(("KUBE_APISERVER", v)) if apiserver.is_none() => {
                    apiserver = Some(v.into());
                }
                Some(("ETCD", v)) if etcd.is_none() => etcd = Some(v.into()),
                _ => {}
            }
        }
    }
    let where_ = env_file.map_or_else(|| "<target>/kube/env".into(), |f| f.display().to_string());
    let found = |what: &str, var: &str, path: Option<PathBuf>| match path {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(format!(
            "no {what} at {} (from ${var} or {where_})",
            p.display()
        )),
        None => Err(format!("no {what} (${var} unset, none in {where_})")),
    };
    let apiserver = found("kube-apiserver", "KUBE_APISERVER", apiserver)?;
    let etcd = found("etcd", "ETCD", etcd)?;
    Ok(Binaries { apiserver, etcd })
}

/// [`binaries`], or `None` after printing one `SKIPPED file:line: ...` line.
#[track_caller]
pub fn binaries_or_skip() -> Option<Binaries> {
    match binaries() {
        Ok(b) => Some(b),
        Err(missing) => {
            let at = std::panic::Location::caller();
            println!(
                "SKIPPED {}:{}: {missing}; build etcd and kube-apiserver with \
                 `make kube-apiserver` (as root: installs etcd-server and golang-go from apt)",
                at.file(),
                at.line()
            );
            None
        }
    }
}

use crate::proxy_support::free_port;

/// A child process killed (by PID) and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Proc { name, child, log }
    }

    /// The last lines of the process's output, for failure messages.
    fn tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "{} ({}):\n{}",
            self.name,
            self.log.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test PKI: PEM texts.
pub struct Pki {
    /// The CA that signed the serving and admin certificates (and verifies clients).
    pub ca_pem: String,
    serving_pem: String,
    serving_key: String,
    admin_pem: String,
    admin_key: String,
    service_account_key: String,
    service_account_public: String,
}

impl Pki {
    fn generate() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "rhizome-test-kubernetes-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, &ca_key);

        let serving_key = KeyPair::generate().unwrap();
        let mut serving = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer).unwrap();

        // The API server's x509 authenticator: CN is the user, O the groups.
        let admin_key = KeyPair::generate().unwrap();
        let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
        admin
            .distinguished_name
            .push(DnType::CommonName, "rhizome-test-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer).unwrap();

        let sa_key = KeyPair::generate().unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            serving_pem: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_pem: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: sa_key.serialize_pem(),
            service_account_public: sa_key.public_key_pem(),
        }
    }
}

/// Who a kubeconfig authenticates as.
pub enum User<'a> {
    /// The admin client certificate (`system:masters`).
    Admin,
    /// A bearer token (a service account's, from the TokenRequest API).
    Token(&'a str),
}

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The test PKI.
    pub pki: Pki,
    /// How long start-up took (until `/readyz` answered `ok`).
    pub started_in: Duration,
    // Fields drop in order: the API server first, then etcd, then the directory.
    apiserver: Proc,
    etcd: Proc,
    dir: tempfile::TempDir,
}

/// The issuer (and audience) of the control plane's service-account tokens.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits (at most 180 s: a cold start on a busy
    /// 2-core machine) until `/readyz` answers `ok`.
    pub async fn start(bin: &Binaries) -> ControlPlane {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pki = Pki::generate();
        let write = |name: &str, text: &str| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = write("ca.pem", &pki.ca_pem);
        let cert = write("serving.pem", &pki.serving_pem);
        let key = write("serving-key.pem", &pki.serving_key);
        let sa = write("service-account-key.pem", &pki.service_account_key);
        let sa_public = write("service-account-public.pem", &pki.service_account_public);

        let (client, peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Proc::spawn(
            "etcd",
            Command::new(&bin.etcd)
                .arg("--name=test")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}")),
            d.join("etcd.log"),
        );

        let port = free_port();
        let apiserver = Proc::spawn(
            "kube-apiserver",
            Command::new(&bin.apiserver)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!("--tls-cert-file={}", cert.display()))
                .arg(format!("--tls-private-key-file={}", key.display()))
                .arg(format!("--client-ca-file={}", ca.display()))
                .arg(format!("--service-account-issuer={SA_ISSUER}"))
                .arg(format!(
                    "--service-account-key-file={}",
                    sa_public.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    sa.display()
                ))
                .arg(format!("--api-audiences={SA_ISSUER}"))
                .arg("--authorization-mode=RBAC")
                // No controller manager runs: nothing would create the token Secrets the
                // ServiceAccount admission plugin waits for before admitting a pod.
                .arg("--disable-admission-plugins=ServiceAccount")
                // The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints
                // validation refuses; the tests do not use that Service.
                .arg("--endpoint-reconciler-type=none")
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg("--allow-privileged=true")
                .arg("--profiling=false"),
            d.join("kube-apiserver.log"),
        );

        let mut plane = ControlPlane {
            url: format!("https://127.0.0.1:{port}"),
            pki,
            started_in: Duration::ZERO,
            apiserver,
            etcd,
            dir,
        };
        plane.wait_ready().await;
        plane.started_in = started.elapsed();
        plane
    }

    async fn wait_ready(&mut self) {
        let admin = self.client(User::Admin).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            for p in [&mut self.etcd, &mut self.apiserver] {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("{} exited ({status}) while starting:\n{}", p.name, p.tail());
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            let last = match admin.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return,
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 180 s: {last}\n{}\n{}",
                self.apiserver.tail(),
                self.etcd.tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A kubeconfig (JSON, which is YAML) for this server as `user`.
    pub fn kubeconfig(&self, user: &User<'_>) -> serde_json::Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let auth = match user {
            User::Admin => serde_json::json!({
                "client-certificate-data": b64(&self.pki.admin_pem),
                "client-key-data": b64(&self.pki.admin_key),
            }),
            User::Token(t) => serde_json::json!({ "token": t }),
        };
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "test", "cluster": {
                "server": self.url,
                "certificate-authority-data": b64(&self.pki.ca_pem),
            } }],
            "users": [{ "name": "user", "user": auth }],
            "contexts": [{ "name": "test", "context": { "cluster": "test", "user": "user" } }],
            "current-context": "test",
        })
    }

    /// Writes [`ControlPlane::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, user: &User<'_>, path: &Path) {
        std::fs::write(path, self.kubeconfig(user).to_string()).unwrap();
    }

    /// A kube client for this server as `user`.
    pub async fn client(&self, user: User<'_>) -> kube::Client {
        let file: kube::config::Kubeconfig =
            serde_json::from_value(self.kubeconfig(&user)).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The server's `gitVersion` (from `/version`).
    pub async fn version(&self) -> String {
        let v = self
            .client(User::Admin)
            .await
            .apiserver_version()
            .await
            .unwrap();
        v.git_version
    }

    /// The temporary directory (logs, data) of this control plane.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
