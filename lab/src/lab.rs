//! Lab orchestration: two clusters (`src`, `dst`), their kubeconfig and lab.json, the
//! supervisor process behind `--detach`, and `down`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::auth::{self, StaticToken, UserInfo};
use crate::api::{self, ApiConfig, ApiServer, Query};
use crate::pki::{self, LabCa};
use crate::services;

/// Errors of `up`, `down` and reading a lab directory.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file in the lab directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// lab.json is not what `up` writes.
    #[error("{path} is not a lab.json written by mtcd-lab up: {source}")]
    Info {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Certificates could not be generated.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// An API server could not start.
    #[error(transparent)]
    Serve(#[from] api::ServeError),
    /// Seeding the built-in objects failed (a bug in the lab).
    #[error("seeding {what} in cluster {cluster}: {source}")]
    Seed {
        cluster: String,
        what: String,
        #[source]
        source: Box<api::ApiError>,
    },
    /// The supervisor did not become ready.
    #[error("the lab in {dir} did not become ready within {secs}s; see {dir}/lab.log:\n{log}")]
    NotReady { dir: String, secs: u64, log: String },
    /// Another lab is running in the directory.
    #[error("a lab is already running in {dir} (pid {pid}); run `mtcd-lab down --dir {dir}` first")]
    AlreadyRunning { dir: String, pid: i32 },
    /// The supervisor exited during start-up.
    #[error("the lab supervisor exited during start-up ({status}); {dir}/lab.log says:\n{log}")]
    SupervisorExited { dir: String, status: String, log: String },
    /// Building a client for the services failed.
    #[error("building a client for context {context}: {message}")]
    Client { context: String, message: String },
    /// Node agent, controllers, router or registry failed to start.
    #[error("starting cluster services: {0:#}")]
    Services(anyhow::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io { path: path.to_path_buf(), source }
}

/// Cluster profile: which API groups the cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Openshift,
    Kubernetes,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Openshift => "openshift",
            Profile::Kubernetes => "kubernetes",
        }
    }
}

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub dir: PathBuf,
    pub source_profile: Profile,
    pub destination_profile: Profile,
}

/// One cluster's entry in lab.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub context: String,
    pub api: String,
    pub registry: Option<String>,
    pub router: Option<String>,
    pub service_cidr: String,
    pub storage_root: PathBuf,
    pub state_dir: PathBuf,
    pub profile: String,
    pub apps_domain: String,
    /// The context of the cluster's non-admin user `limited` (`lab-src-limited`): groups
    /// `limited-users` and `system:authenticated`, allowed only what RBAC grants it.
    #[serde(default)]
    pub limited_context: String,
    /// A second context for the admin user of the same cluster, its server written as
    /// `https://localhost:<port>` (src only: `lab-src-alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_context: Option<String>,
}

/// DIR/lab.json: what tests and `seed` need to find each cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabInfo {
    pub clusters: BTreeMap<String, ClusterInfo>,
    /// Prefix of every network namespace this lab creates (`mtcdlab-<6 hex>-`).
    pub prefix: String,
    pub kubeconfig: PathBuf,
    /// Whether node agents, controllers, routers and registries run in this build.
    pub services: bool,
}

impl LabInfo {
    pub fn read(dir: &Path) -> Result<Self, LabError> {
        let path = dir.join("lab.json");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|source| LabError::Info { path, source })
    }

    /// The cluster a kubeconfig context (`lab-src`) or cluster name (`src`) refers to.
    pub fn cluster(&self, context_or_name: &str) -> Option<&ClusterInfo> {
        self.clusters.get(context_or_name).or_else(|| {
            self.clusters.values().find(|c| {
                c.context == context_or_name
                    || c.limited_context == context_or_name
                    || c.alias_context.as_deref() == Some(context_or_name)
            })
        })
    }
}

/// The admin user of each cluster's `lab-<cluster>` context (group `system:masters`).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The non-admin user of each cluster's `lab-<cluster>-limited` context.
pub const LIMITED_USER: &str = "limited";
/// The group of [`LIMITED_USER`] (besides `system:authenticated`).
pub const LIMITED_GROUP: &str = "limited-users";

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), LabError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Objects every fresh cluster has: system namespaces and the lab storage classes.
fn seed_builtin(server: &ApiServer) -> Result<(), LabError> {
    let st = &server.state;
    let cluster = st.cluster.clone();
    let err = |what: &str| {
        let cluster = cluster.clone();
        let what = what.to_string();
        move |source| LabError::Seed { cluster, what, source: Box::new(source) }
    };
    let ns_ty = st.resource("", "v1", "namespaces").expect("namespaces type");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        st.create(
            &ns_ty,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            &Query::new(),
            "mtcd-lab",
        )
        .map_err(err(ns))?;
    }
    let sc_ty = st.resource("storage.k8s.io", "v1", "storageclasses").expect("storageclasses type");
    for (name, default) in [("standard", true), ("fast", false)] {
        let mut sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name}, "provisioner": "lab.mtcd.io/local-path",
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": true});
        if default {
            sc["metadata"]["annotations"] = json!({"storageclass.kubernetes.io/is-default-class": "true"});
        }
        st.create(&sc_ty, None, sc, &Query::new(), "mtcd-lab").map_err(err(name))?;
    }
    // The `kubernetes` Service every cluster has (a migration must leave it alone), with the
    // Endpoints and EndpointSlice the API server keeps pointing at itself.
    let port = server.addr.port();
    let svc_ty = st.resource("", "v1", "services").expect("services type");
    let first_ip = std::net::Ipv4Addr::from(st.cidr.base + 1).to_string();
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    st.create(&svc_ty, Some("default"), svc, &Query::new(), "mtcd-lab").map_err(err("service default/kubernetes"))?;
    let api_ip = server.addr.ip().to_string();
    let ep_ty = st.resource("", "v1", "endpoints").expect("endpoints type");
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": api_ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    st.create(&ep_ty, Some("default"), ep, &Query::new(), "kube-apiserver")
        .map_err(err("endpoints default/kubernetes"))?;
    let eps_ty = st.resource("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices type");
    let eps = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [api_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    st.create(&eps_ty, Some("default"), eps, &Query::new(), "kube-apiserver")
        .map_err(err("endpointslice default/kubernetes"))?;
    // metrics-server's Service and its APIService: the aggregated metrics API every cluster has.
    let ms = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "metrics-server", "namespace": "kube-system", "labels": {"k8s-app": "metrics-server"}},
        "spec": {"selector": {"k8s-app": "metrics-server"},
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}]}});
    st.create(&svc_ty, Some("kube-system"), ms, &Query::new(), "mtcd-lab")
        .map_err(err("service kube-system/metrics-server"))?;
    let apisvc_ty = st.resource("apiregistration.k8s.io", "v1", "apiservices").expect("apiservices type");
    let apisvc = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": api::aggregator::METRICS_APISERVICE, "labels": {"k8s-app": "metrics-server"}},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
            "insecureSkipTLSVerify": true, "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443}}});
    st.create(&apisvc_ty, None, apisvc, &Query::new(), "mtcd-lab").map_err(err("apiservice v1beta1.metrics.k8s.io"))?;
    // CSI snapshots: the external-snapshotter's CRDs and the lab driver's default class.
    let crd_ty = st.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crd type");
    for (kind, plural, scope, short, status) in [
        ("VolumeSnapshotClass", "volumesnapshotclasses", "Cluster", &["vsclass", "vsclasses"][..], false),
        ("VolumeSnapshot", "volumesnapshots", "Namespaced", &["vs"][..], true),
        ("VolumeSnapshotContent", "volumesnapshotcontents", "Cluster", &["vsc", "vscs"][..], true),
    ] {
        let mut version = json!({"name": "v1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        if status {
            version["subresources"] = json!({"status": {}});
        }
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.snapshot.storage.k8s.io"),
                "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter/pull/814"}},
            "spec": {"group": "snapshot.storage.k8s.io", "scope": scope,
                "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": kind.to_lowercase(), "shortNames": short},
                "versions": [version]}});
        st.create(&crd_ty, None, crd, &Query::new(), "mtcd-lab").map_err(err(plural))?;
    }
    let class_ty = st.resource("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses").expect("snapshot class type");
    let class = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "lab-snapclass", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
        "driver": "lab.mtcd.io/local-path", "deletionPolicy": "Delete"});
    st.create(&class_ty, None, class, &Query::new(), "mtcd-lab").map_err(err("volumesnapshotclass lab-snapclass"))?;
    // The bootstrap RBAC policy of a real cluster (cluster-admin, admin, edit, view, ...).
    for (plural, obj) in api::rbac::bootstrap_policy() {
        let ty = st.resource("rbac.authorization.k8s.io", "v1", plural).expect("rbac types");
        let what = format!("{plural}/{}", obj["metadata"]["name"].as_str().unwrap_or_default());
        st.create(&ty, None, obj, &Query::new(), "kube-apiserver").map_err(err(&what))?;
    }
    // OpenShift's SecurityContextConstraints (a CRD on OpenShift 4) and its default SCCs.
    if st.profile == "openshift" {
        crate::scc::seed(st).map_err(|(what, source)| LabError::Seed { cluster: cluster.clone(), what, source })?;
    }
    let node_ty = st.resource("", "v1", "nodes").expect("nodes type");
    let node_name = crate::api::schedule::node_name(&cluster);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name,
        "labels": {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}});
    st.create(&node_ty, None, node, &Query::new(), "mtcd-lab").map_err(err("node"))?;
    Ok(())
}

/// One kubeconfig context: its name, server URL, user name and that user's token.
struct KcEntry {
    context: String,
    server: String,
    user: String,
    token: String,
}

/// The kubeconfig: one cluster entry per context (named like it), one user entry per user.
fn kubeconfig(ca_pem: &str, entries: &[KcEntry]) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut cs = Vec::new();
    let mut users: Vec<serde_json::Value> = Vec::new();
    let mut ctxs = Vec::new();
    for e in entries {
        cs.push(json!({"name": e.context, "cluster": {"server": e.server, "certificate-authority-data": ca}}));
        if !users.iter().any(|u| u["name"] == e.user) {
            users.push(json!({"name": e.user, "user": {"token": e.token}}));
        }
        ctxs.push(
            json!({"name": e.context, "context": {"cluster": e.context, "user": e.user, "namespace": "default"}}),
        );
    }
    let cfg = json!({"apiVersion": "v1", "kind": "Config", "clusters": cs, "users": users, "contexts": ctxs,
        "current-context": entries.first().map(|c| c.context.clone()).unwrap_or_default(), "preferences": {}});
    serde_yaml::to_string(&cfg).expect("kubeconfig serializes")
}

/// A kube client for one context of a lab kubeconfig.
pub async fn client_for(kubeconfig: &Path, context: &str) -> Result<kube::Client, LabError> {
    pki::init_crypto();
    let cerr = |message: String| LabError::Client { context: context.to_string(), message };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| cerr(e.to_string()))?;
    let opts = kube::config::KubeConfigOptions { context: Some(context.to_string()), ..Default::default() };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| cerr(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| cerr(e.to_string()))
}

/// A running lab (both clusters), owned by the process that started it.
pub struct RunningLab {
    pub info: LabInfo,
    pub servers: Vec<ApiServer>,
    shutdown: CancellationToken,
    services: services::Running,
}

impl RunningLab {
    /// Stops services and servers, then removes network namespaces and mounts.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.services.stop().await;
        if let Err(e) = services::cleanup(&self.info.prefix) {
            tracing::warn!(error = %format!("{e:#}"), "cleaning up lab namespaces");
        }
    }
}

/// Starts both clusters in this process and writes kubeconfig, ca.crt and lab.json
/// (lab.json last: its presence means "ready").
pub async fn start(opts: &LabOptions) -> Result<RunningLab, LabError> {
    let t0 = Instant::now();
    pki::init_crypto();
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let _ = std::fs::remove_file(dir.join("lab.json"));
    let id = random_hex(3);
    let prefix = format!("mtcdlab-{id}-");
    let ca = LabCa::generate(&id)?;
    let cert = ca.issue_server("mtcd-lab apiserver", &["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])?;
    let tls = pki::server_config(&cert)?;
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(io(&ca_path))?;
    let shutdown = CancellationToken::new();
    let specs = [("src", opts.source_profile, "10.96.0.0/16"), ("dst", opts.destination_profile, "10.97.0.0/16")];
    let mut servers = Vec::new();
    let mut kc_entries = Vec::new();
    let mut limited_entries = Vec::new();
    let mut clusters = BTreeMap::new();
    for (name, profile, cidr) in specs {
        let state_dir = dir.join(name);
        let storage_root = state_dir.join("storage");
        std::fs::create_dir_all(state_dir.join("pod-logs")).map_err(io(&state_dir))?;
        std::fs::create_dir_all(&storage_root).map_err(io(&storage_root))?;
        let admin_token = random_hex(24);
        let limited_token = random_hex(24);
        let server = api::start(
            ApiConfig {
                cluster: name.into(),
                profile: profile.as_str().into(),
                service_cidr: cidr.into(),
                state_dir: state_dir.clone(),
                tokens: vec![
                    StaticToken {
                        token: admin_token.clone(),
                        user: UserInfo::new(ADMIN_USER, &[auth::MASTERS, auth::AUTHENTICATED]),
                    },
                    StaticToken {
                        token: limited_token.clone(),
                        user: UserInfo::new(LIMITED_USER, &[LIMITED_GROUP, auth::AUTHENTICATED]),
                    },
                ],
                ca_pem: ca.cert_pem().to_string(),
                apps_domain: format!("apps.{name}.lab.mtcd.io"),
                tls: tls.clone(),
                bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            },
            shutdown.child_token(),
        )
        .await?;
        seed_builtin(&server)?;
        let context = format!("lab-{name}");
        let limited_context = format!("lab-{name}-limited");
        let alias_context = (name == "src").then(|| format!("lab-{name}-alias"));
        kc_entries.push(KcEntry {
            context: context.clone(),
            server: server.url(),
            user: context.clone(),
            token: admin_token.clone(),
        });
        limited_entries.push(KcEntry {
            context: limited_context.clone(),
            server: server.url(),
            user: limited_context.clone(),
            token: limited_token,
        });
        if let Some(alias) = &alias_context {
            // The same cluster under another name and another spelling of its address.
            limited_entries.push(KcEntry {
                context: alias.clone(),
                server: format!("https://localhost:{}", server.addr.port()),
                user: context.clone(),
                token: admin_token,
            });
        }
        clusters.insert(
            name.to_string(),
            ClusterInfo {
                context,
                api: server.url(),
                registry: None,
                router: None,
                service_cidr: cidr.into(),
                storage_root,
                state_dir,
                profile: profile.as_str().into(),
                apps_domain: format!("apps.{name}.lab.mtcd.io"),
                limited_context,
                alias_context,
            },
        );
        servers.push(server);
    }
    let kc_path = dir.join("kubeconfig");
    kc_entries.extend(limited_entries);
    write_atomic(&kc_path, kubeconfig(ca.cert_pem(), &kc_entries).as_bytes())?;
    let mut running = services::Running::default();
    let mut specs = Vec::new();
    for c in clusters.values() {
        specs.push(services::ClusterSpec {
            name: c.context.trim_start_matches("lab-").to_string(),
            profile: c.profile.clone(),
            state_dir: c.state_dir.clone(),
            storage_root: c.storage_root.clone(),
            client: client_for(&kc_path, &c.context).await?,
            apps_domain: c.apps_domain.clone(),
        });
    }
    let started =
        services::start(&dir, &prefix, specs, shutdown.clone(), &mut running).await.map_err(LabError::Services)?;
    // `clusters` is ordered by name (dst, src) like `specs` and `started`; servers are not.
    for ((name, c), s) in clusters.iter_mut().zip(started) {
        if let Some(server) = servers.iter().find(|sv| sv.state.cluster == *name) {
            *server.state.registry.write().unwrap_or_else(|e| e.into_inner()) = s.registry.clone();
        }
        c.registry = s.registry;
        c.router = s.router;
    }
    let info = LabInfo { clusters, prefix, kubeconfig: kc_path, services: services::ENABLED };
    write_atomic(&dir.join("lab.json"), serde_json::to_vec_pretty(&info).expect("lab.json serializes").as_slice())?;
    tracing::info!(dir = %dir.display(), elapsed_ms = t0.elapsed().as_millis() as u64, "lab ready");
    Ok(RunningLab { info, servers, shutdown, services: running })
}

/// Runs a lab in the foreground until SIGINT or SIGTERM.
pub async fn run_foreground(opts: &LabOptions) -> Result<(), LabError> {
    refuse_running(&opts.dir)?;
    let lab = start(opts).await?;
    let pid_path = opts.dir.join("lab.pid");
    std::fs::write(&pid_path, std::process::id().to_string()).map_err(io(&pid_path))?;
    println!(
        "lab ready: kubeconfig {} (contexts lab-src, lab-dst, lab-src-limited, lab-dst-limited, lab-src-alias)",
        lab.info.kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io(&opts.dir))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    lab.stop().await;
    let _ = std::fs::remove_file(&pid_path);
    Ok(())
}

/// One lab per directory: a second `up` would orphan the first one's processes.
fn refuse_running(dir: &Path) -> Result<(), LabError> {
    if let Ok(text) = std::fs::read_to_string(dir.join("lab.pid"))
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid != std::process::id() as i32
        && pid_alive(pid)
        && is_lab_process(pid)
    {
        return Err(LabError::AlreadyRunning { dir: dir.display().to_string(), pid });
    }
    Ok(())
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("lab.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `up --detach`: starts a supervisor (`__supervise`) in its own session, waits until both
/// API servers answer /version, and records its pid in DIR/lab.pid.
pub async fn up_detached(opts: &LabOptions) -> Result<LabInfo, LabError> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    refuse_running(&dir)?;
    let _ = std::fs::remove_file(dir.join("lab.json"));
    let log_path = dir.join("lab.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let log2 = log.try_clone().map_err(io(&log_path))?;
    let exe = std::env::current_exe().map_err(io(&dir))?;
    let mut child = std::process::Command::new(exe)
        .arg("__supervise")
        .arg("--dir")
        .arg(&dir)
        .arg("--source-profile")
        .arg(opts.source_profile.as_str())
        .arg("--destination-profile")
        .arg(opts.destination_profile.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io(&dir))?;
    let pid_path = dir.join("lab.pid");
    std::fs::write(&pid_path, child.id().to_string()).map_err(io(&pid_path))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(&pid_path);
            return Err(LabError::SupervisorExited {
                dir: dir.display().to_string(),
                status: status.to_string(),
                log: log_tail(&dir),
            });
        }
        if dir.join("lab.json").exists() {
            let info = LabInfo::read(&dir)?;
            let mut ok = true;
            for c in info.clusters.values() {
                let client = client_for(&info.kubeconfig, &c.context).await?;
                ok &= client.apiserver_version().await.is_ok();
            }
            if ok {
                return Ok(info);
            }
        }
        if Instant::now() > deadline {
            return Err(LabError::NotReady { dir: dir.display().to_string(), secs: 30, log: log_tail(&dir) });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The supervisor body: a new session (so the caller's terminal signals do not reach it),
/// then the foreground lab until SIGTERM.
pub async fn supervise(opts: &LabOptions) -> Result<(), LabError> {
    let _ = nix::unistd::setsid();
    run_foreground(opts).await
}

fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3 (after the parenthesised command) is the state; Z is a zombie.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next().unwrap_or('?'));
    state != Some('Z')
}

/// Whether `pid` is an `mtcd-lab` process running a lab (pid files can outlive their process
/// and the pid be reused).
fn is_lab_process(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"mtcd-lab"))
            && args.iter().any(|a| *a == b"__supervise" || *a == b"up")
    })
}

/// Whether `pid` is a `__supervise` process leading its own process group.
fn is_supervisor_leader(pid: i32) -> bool {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command: state ppid pgrp ...
    let pgrp =
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)).and_then(|p| p.parse::<i32>().ok());
    cmd.split(|b| *b == 0).any(|a| a == b"__supervise") && pgrp == Some(pid)
}

/// `down`: SIGTERM the supervisor, SIGKILL after a grace period, then remove every network
/// namespace and mount with this lab's prefix. Safe to run twice.
pub async fn down(dir: &Path) -> Result<(), LabError> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid_path = dir.join("lab.pid");
    if let Ok(text) = std::fs::read_to_string(&pid_path)
        && let Ok(pid) = text.trim().parse::<i32>()
        && pid_alive(pid)
        && is_lab_process(pid)
    {
        let supervisor = is_supervisor_leader(pid);
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if pid_alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            while pid_alive(pid) && Instant::now() < deadline + Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The supervisor leads its own session and process group (setsid): whatever it
        // started and did not stop (a registry after a SIGKILL) goes with the group.
        if supervisor {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Ok(info) = LabInfo::read(dir)
        && let Err(e) = services::cleanup(&info.prefix)
    {
        return Err(LabError::Services(e));
    }
    let _ = std::fs::remove_file(&pid_path);
    Ok(())
}

/// The shared state of a cluster's API server, for in-process tests.
pub fn state_of(lab: &RunningLab, cluster: &str) -> Option<Arc<api::State>> {
    lab.servers.iter().find(|s| s.state.cluster == cluster).map(|s| s.state.clone())
}
