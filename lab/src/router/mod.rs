//! The cluster's router: Routes (TLS passthrough on 443), passthrough Ingresses and
//! LoadBalancer Services get an address on the lab bridge, and connections are spliced to the
//! backing pod.
//!
//! Like an OpenShift router it reads the TLS ClientHello's server name without terminating
//! TLS, so mutual TLS between the transfer pods stays end to end. It is an API client: it
//! watches Routes/Ingresses/Services and resolves Service → pods on every connection.

pub mod sni;
mod splice;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::netns::LabNetwork;

/// Configuration of one cluster's router.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// "src" or "dst": picks the router and LoadBalancer addresses.
    pub cluster: String,
    /// The lab network the router listens in.
    pub network: LabNetwork,
    /// The hosts file both clusters' routers write and pods see as /etc/hosts
    /// (the node agents use `<lab dir>/hosts`; pass that path).
    pub hosts_file: PathBuf,
    /// Domain of generated route hosts: `<name>-<ns>.<apps_domain>`.
    pub apps_domain: String,
}

/// Errors of the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No Route or Ingress has this host.
    #[error("no route or ingress for host {0:?}")]
    UnknownHost(String),
    /// The backend Service has no running pod with an IP.
    #[error("service {ns}/{name} has no running pod to forward to")]
    NoEndpoints { ns: String, name: String },
    /// The backend port could not be resolved.
    #[error("service {ns}/{name} has no port matching {port}")]
    NoPort { ns: String, name: String, port: String },
    /// An API call failed.
    #[error("reading {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Binding or connecting in the lab network failed.
    #[error(transparent)]
    Net(#[from] crate::netns::NetnsError),
    /// Updating the hosts file failed.
    #[error("updating hosts file {path}")]
    Hosts {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a host's connections go.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// Route `spec.port.targetPort` / Ingress backend port; None = the Service's first port.
    pub port: Option<IntOrString>,
    /// Whether `port` names a Service port (Ingress) rather than a target port (Route).
    pub service_port: bool,
}

#[derive(Default)]
struct Table {
    /// host → backend, per source object key ("route/ns/name").
    by_object: HashMap<String, Vec<(String, Backend)>>,
}

impl Table {
    fn lookup(&self, host: &str) -> Option<Backend> {
        self.by_object.values().flatten().find(|(h, _)| h.eq_ignore_ascii_case(host)).map(|(_, b)| b.clone())
    }
    fn hosts(&self) -> Vec<String> {
        let mut h: Vec<String> = self.by_object.values().flatten().map(|(h, _)| h.clone()).collect();
        h.sort();
        h.dedup();
        h
    }
}

struct Router {
    client: kube::Client,
    cfg: RouterConfig,
    ip: Ipv4Addr,
    table: RwLock<Table>,
}

/// Start the router: listen on `<router ip>:443` in the lab network and watch Routes,
/// Ingresses and LoadBalancer Services until `shutdown`. Returns the router address
/// (`10.210.0.1:443` for src, `10.210.0.2:443` for dst) once it listens.
pub async fn run(client: kube::Client, cfg: RouterConfig, shutdown: CancellationToken) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ip = crate::netns::router_ip(&cfg.cluster)?;
    cfg.network.add_address(ip)?;
    let addr = SocketAddr::from((ip, 443));
    let std_listener = {
        let net = cfg.network.clone();
        tokio::task::spawn_blocking(move || net.listen(addr)).await??
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let router =
        Arc::new(Router { client: client.clone(), cfg: cfg.clone(), ip, table: RwLock::new(Table::default()) });
    router.write_hosts()?;
    {
        let (r, s) = (router.clone(), shutdown.clone());
        tokio::spawn(async move { r.accept_loop(listener, s).await });
    }
    if client
        .list_api_group_resources("route.openshift.io/v1")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == "routes"))
    {
        let (r, s) = (router.clone(), shutdown.clone());
        tokio::spawn(async move { r.watch_routes(s).await });
    }
    {
        let (r, s) = (router.clone(), shutdown.clone());
        tokio::spawn(async move { r.watch_ingresses(s).await });
    }
    {
        let (r, s) = (router.clone(), shutdown.clone());
        tokio::spawn(async move { r.watch_load_balancers(s).await });
    }
    Ok(addr.to_string())
}

/// The host a Route answers to: `spec.host`, or `<name>-<ns>.<apps_domain>` as OpenShift
/// generates it.
pub fn route_host(route: &Value, name: &str, ns: &str, apps_domain: &str) -> String {
    route
        .pointer("/spec/host")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| format!("{name}-{ns}.{apps_domain}"))
}

impl Router {
    fn write_hosts(&self) -> Result<(), RouterError> {
        let hosts = self.table.read().expect("table").hosts();
        publish_hosts(&self.cfg.network.prefix, &self.cfg.cluster, &self.cfg.hosts_file, self.ip, hosts)
            .map_err(|source| RouterError::Hosts { path: self.cfg.hosts_file.display().to_string(), source })
    }

    fn set_entries(&self, key: String, entries: Vec<(String, Backend)>) {
        let changed = {
            let mut t = self.table.write().expect("table");
            let before = t.hosts();
            if entries.is_empty() {
                t.by_object.remove(&key);
            } else {
                t.by_object.insert(key, entries);
            }
            before != t.hosts()
        };
        if changed && let Err(e) = self.write_hosts() {
            tracing::warn!(error = %e, "hosts file");
        }
    }

    async fn watch_routes(self: Arc<Self>, shutdown: CancellationToken) {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("route.openshift.io", "v1", "Route"), "routes");
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        loop {
            let ev = tokio::select! { _ = shutdown.cancelled() => return, ev = events.next() => ev };
            let (o, deleted) = match ev {
                None => return,
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => (o, false),
                Some(Ok(Event::Delete(o))) => (o, true),
                _ => continue,
            };
            let (Some(ns), Some(name)) = (o.metadata.namespace.clone(), o.metadata.name.clone()) else {
                continue;
            };
            let key = format!("route/{ns}/{name}");
            if deleted || o.metadata.deletion_timestamp.is_some() {
                self.set_entries(key, Vec::new());
                continue;
            }
            let host = route_host(&o.data, &name, &ns, &self.cfg.apps_domain);
            let backend = Backend {
                namespace: ns.clone(),
                service: o.data.pointer("/spec/to/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                port: o.data.pointer("/spec/port/targetPort").and_then(|v| serde_json::from_value(v.clone()).ok()),
                service_port: false,
            };
            self.set_entries(key, vec![(host.clone(), backend)]);
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
            if o.data.pointer("/spec/host").and_then(Value::as_str).is_none_or(str::is_empty) {
                // OpenShift fills in the generated host and marks it as generated, which is
                // how migration tools know to drop it (the destination generates its own).
                let patch = json!({
                    "metadata": {"annotations": {"openshift.io/host.generated": "true"}},
                    "spec": {"host": host},
                });
                let _ = api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await;
            }
            let admitted = o.data.pointer("/status/ingress/0/host").and_then(Value::as_str) == Some(host.as_str());
            if !admitted {
                let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let status = json!({"status": {"ingress": [{
                    "host": host, "routerName": "default", "wildcardPolicy": "None",
                    "routerCanonicalHostname": format!("router-default.{}", self.cfg.apps_domain),
                    "conditions": [{"type": "Admitted", "status": "True", "lastTransitionTime": t}],
                }]}});
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
                    tracing::debug!(route = %format!("{ns}/{name}"), error = %e, "route status");
                }
            }
        }
    }

    async fn watch_ingresses(self: Arc<Self>, shutdown: CancellationToken) {
        let api: Api<Ingress> = Api::all(self.client.clone());
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        loop {
            let ev = tokio::select! { _ = shutdown.cancelled() => return, ev = events.next() => ev };
            let (o, deleted) = match ev {
                None => return,
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => (o, false),
                Some(Ok(Event::Delete(o))) => (o, true),
                _ => continue,
            };
            let (Some(ns), Some(name)) = (o.metadata.namespace.clone(), o.metadata.name.clone()) else {
                continue;
            };
            let key = format!("ingress/{ns}/{name}");
            if deleted || o.metadata.deletion_timestamp.is_some() {
                self.set_entries(key, Vec::new());
                continue;
            }
            let spec = o.spec.clone().unwrap_or_default();
            let passthrough = o
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.iter().any(|(k, v)| k.ends_with("ssl-passthrough") && v == "true"));
            let tls_hosts: Vec<String> =
                spec.tls.iter().flatten().flat_map(|t| t.hosts.clone().unwrap_or_default()).collect();
            let to_backend = |b: &k8s_openapi::api::networking::v1::IngressBackend| {
                b.service.as_ref().map(|s| Backend {
                    namespace: ns.clone(),
                    service: s.name.clone(),
                    port: s.port.as_ref().and_then(|p| {
                        p.number.map(IntOrString::Int).or_else(|| p.name.clone().map(IntOrString::String))
                    }),
                    service_port: true,
                })
            };
            let mut entries = Vec::new();
            for rule in spec.rules.iter().flatten() {
                let Some(host) = rule.host.clone() else {
                    continue;
                };
                if !passthrough && !tls_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
                    continue;
                }
                let backend = rule
                    .http
                    .as_ref()
                    .and_then(|h| h.paths.first())
                    .and_then(|p| to_backend(&p.backend))
                    .or_else(|| spec.default_backend.as_ref().and_then(to_backend));
                if let Some(b) = backend {
                    entries.push((host.to_ascii_lowercase(), b));
                }
            }
            let has_entries = !entries.is_empty();
            self.set_entries(key, entries);
            let ip = self.ip.to_string();
            let current = o.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            let admitted = current.and_then(|i| i.first()).and_then(|i| i.ip.as_deref()) == Some(ip.as_str());
            if has_entries && !admitted {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ns);
                let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
                    tracing::debug!(ingress = %format!("{ns}/{name}"), error = %e, "ingress status");
                }
            }
        }
    }

    async fn watch_load_balancers(self: Arc<Self>, shutdown: CancellationToken) {
        let api: Api<Service> = Api::all(self.client.clone());
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        // service uid → (address index, listener stop)
        let mut active: HashMap<String, (u8, CancellationToken, Vec<i32>)> = HashMap::new();
        loop {
            let ev = tokio::select! { _ = shutdown.cancelled() => break, ev = events.next() => ev };
            let (svc, deleted) = match ev {
                None => break,
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => (o, false),
                Some(Ok(Event::Delete(o))) => (o, true),
                _ => continue,
            };
            let (Some(ns), Some(name), Some(uid)) =
                (svc.metadata.namespace.clone(), svc.metadata.name.clone(), svc.metadata.uid.clone())
            else {
                continue;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let is_lb =
                !deleted && svc.metadata.deletion_timestamp.is_none() && spec.type_.as_deref() == Some("LoadBalancer");
            let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
            if let Some((n, stop, old_ports)) = active.get(&uid) {
                if is_lb && *old_ports == ports {
                    continue;
                }
                stop.cancel();
                if let Ok(addr) = crate::netns::lb_ip(&self.cfg.cluster, *n) {
                    let _ = self.cfg.network.remove_address(addr);
                }
                active.remove(&uid);
            }
            if !is_lb {
                continue;
            }
            let used: Vec<u8> = active.values().map(|(n, _, _)| *n).collect();
            let Some(n) = (1u8..=254).find(|n| !used.contains(n)) else {
                continue;
            };
            let Ok(addr) = crate::netns::lb_ip(&self.cfg.cluster, n) else {
                continue;
            };
            if let Err(e) = self.cfg.network.add_address(addr) {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "load balancer address");
                continue;
            }
            let stop = shutdown.child_token();
            for p in &ports {
                let sa = SocketAddr::from((addr, *p as u16));
                let net = self.cfg.network.clone();
                let listener = match tokio::task::spawn_blocking(move || net.listen(sa)).await {
                    Ok(Ok(l)) => l,
                    other => {
                        tracing::warn!(service = %format!("{ns}/{name}"), port = p, result = ?other.map(|r| r.err()), "load balancer listen");
                        continue;
                    }
                };
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    continue;
                };
                let backend = Backend {
                    namespace: ns.clone(),
                    service: name.clone(),
                    port: Some(IntOrString::Int(*p)),
                    service_port: true,
                };
                let (r, s) = (self.clone(), stop.clone());
                tokio::spawn(async move { r.lb_accept_loop(listener, backend, s).await });
            }
            active.insert(uid, (n, stop, ports));
            let current = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            if current.and_then(|i| i.first()).and_then(|i| i.ip.clone()) != Some(addr.to_string()) {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
                let status =
                    json!({"status": {"loadBalancer": {"ingress": [{"ip": addr.to_string(), "ipMode": "VIP"}]}}});
                if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
                    tracing::debug!(service = %format!("{ns}/{name}"), error = %e, "service status");
                }
            }
        }
        for (_, (n, stop, _)) in active {
            stop.cancel();
            if let Ok(addr) = crate::netns::lb_ip(&self.cfg.cluster, n) {
                let _ = self.cfg.network.remove_address(addr);
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
        loop {
            let conn = tokio::select! { _ = shutdown.cancelled() => return, c = listener.accept() => c };
            let Ok((stream, peer)) = conn else { continue };
            let r = self.clone();
            tokio::spawn(async move {
                if let Err(e) = r.handle_tls(stream).await {
                    tracing::info!(cluster = %r.cfg.cluster, %peer, error = %e, "router connection");
                }
            });
        }
    }

    async fn lb_accept_loop(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        backend: Backend,
        shutdown: CancellationToken,
    ) {
        loop {
            let conn = tokio::select! { _ = shutdown.cancelled() => return, c = listener.accept() => c };
            let Ok((stream, _)) = conn else { continue };
            let (r, b) = (self.clone(), backend.clone());
            tokio::spawn(async move {
                if let Err(e) = r.splice(stream, &b, Vec::new()).await {
                    tracing::info!(error = %e, "load balancer connection");
                }
            });
        }
    }

    async fn handle_tls(&self, stream: tokio::net::TcpStream) -> anyhow::Result<()> {
        let (stream, host, first) = read_server_name(stream).await?;
        let backend =
            self.table.read().expect("table").lookup(&host).ok_or_else(|| RouterError::UnknownHost(host.clone()))?;
        self.splice(stream, &backend, first).await
    }

    /// Connect to a pod behind `backend` and copy both ways, replaying `first` bytes.
    async fn splice(&self, stream: tokio::net::TcpStream, backend: &Backend, first: Vec<u8>) -> anyhow::Result<()> {
        let target = resolve_backend(&self.client, backend).await?;
        forward(stream, &self.cfg.network, target, first).await
    }
}

/// Read a connection's ClientHello far enough to know its server name; returns the bytes
/// read so far, which must be replayed to the backend.
pub async fn read_server_name(
    mut stream: tokio::net::TcpStream,
) -> anyhow::Result<(tokio::net::TcpStream, String, Vec<u8>)> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(2048);
    loop {
        match sni::parse(&buf) {
            sni::Sni::Name(h) => return Ok((stream, h, buf)),
            sni::Sni::Incomplete if buf.len() < 64 * 1024 => {}
            other => {
                anyhow::bail!("cannot route a connection without a TLS server name ({other:?})")
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "client closed before sending a ClientHello");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Connect to `target` from inside the lab network, replay `first`, then copy both ways
/// until either side closes.
pub async fn forward(
    stream: tokio::net::TcpStream,
    network: &LabNetwork,
    target: SocketAddr,
    first: Vec<u8>,
) -> anyhow::Result<()> {
    let net = network.clone();
    let upstream = tokio::task::spawn_blocking(move || net.connect(target)).await??;
    let mut upstream = tokio::net::TcpStream::from_std(upstream)?;
    upstream.write_all(&first).await?;
    let _ = upstream.set_nodelay(true);
    splice::bidirectional(&stream, &upstream).await?;
    Ok(())
}

/// Service → a running pod's IP and the target port.
pub async fn resolve_backend(client: &kube::Client, b: &Backend) -> Result<SocketAddr, RouterError> {
    let ns = &b.namespace;
    let api_err = |what: String| move |source| RouterError::Api { what, source };
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = services.get(&b.service).await.map_err(api_err(format!("service {ns}/{}", b.service)))?;
    let spec = svc.spec.unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    let no_port = || RouterError::NoPort {
        ns: ns.clone(),
        name: b.service.clone(),
        port: b.port.as_ref().map(|p| format!("{p:?}")).unwrap_or_else(|| "(first)".into()),
    };
    // The port on the pod, possibly still a container port name.
    let target: IntOrString = match &b.port {
        None => {
            let p = ports.first().ok_or_else(no_port)?;
            p.target_port.clone().unwrap_or(IntOrString::Int(p.port))
        }
        Some(IntOrString::Int(n)) if b.service_port => {
            let p = ports.iter().find(|p| p.port == *n).ok_or_else(no_port)?;
            p.target_port.clone().unwrap_or(IntOrString::Int(p.port))
        }
        Some(IntOrString::String(s)) if b.service_port => {
            let p = ports.iter().find(|p| p.name.as_deref() == Some(s)).ok_or_else(no_port)?;
            p.target_port.clone().unwrap_or(IntOrString::Int(p.port))
        }
        // Route targetPort: a target port number, or a Service port name / container port name.
        Some(IntOrString::Int(n)) => {
            let p = ports
                .iter()
                .find(|p| p.target_port == Some(IntOrString::Int(*n)) || (p.target_port.is_none() && p.port == *n));
            p.and_then(|p| p.target_port.clone()).unwrap_or(IntOrString::Int(*n))
        }
        Some(IntOrString::String(s)) => match ports.iter().find(|p| p.name.as_deref() == Some(s)) {
            Some(p) => p.target_port.clone().unwrap_or(IntOrString::Int(p.port)),
            None => IntOrString::String(s.clone()),
        },
    };
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        return Err(RouterError::NoEndpoints { ns: ns.clone(), name: b.service.clone() });
    }
    let label_selector = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&label_selector))
        .await
        .map_err(api_err(format!("pods of service {ns}/{}", b.service)))?;
    let pod = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| p.status.as_ref().is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()))
        .ok_or_else(|| RouterError::NoEndpoints { ns: ns.clone(), name: b.service.clone() })?;
    let ip: Ipv4Addr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RouterError::NoEndpoints { ns: ns.clone(), name: b.service.clone() })?;
    let port = match target {
        IntOrString::Int(n) => n,
        IntOrString::String(name) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| RouterError::NoPort { ns: ns.clone(), name: b.service.clone(), port: name.clone() })?,
    };
    Ok(SocketAddr::from((ip, port as u16)))
}

/// Per lab (network prefix): the hosts files the routers were given and every router's
/// current names. Each file gets both clusters' names, so pods resolve the other cluster's
/// routes even if the orchestration hands each router a file of its own.
#[derive(Default)]
struct SharedHosts {
    files: Vec<PathBuf>,
    entries: BTreeMap<String, (Ipv4Addr, Vec<String>)>,
}

static SHARED_HOSTS: std::sync::Mutex<BTreeMap<String, SharedHosts>> = std::sync::Mutex::new(BTreeMap::new());

fn publish_hosts(prefix: &str, cluster: &str, file: &Path, ip: Ipv4Addr, hosts: Vec<String>) -> std::io::Result<()> {
    let mut all = SHARED_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let shared = all.entry(prefix.to_string()).or_default();
    if !shared.files.iter().any(|f| f == file) {
        shared.files.push(file.to_path_buf());
    }
    shared.entries.insert(cluster.to_string(), (ip, hosts));
    for f in &shared.files {
        for (c, (ip, hosts)) in &shared.entries {
            update_hosts_file(f, c, *ip, hosts)?;
        }
    }
    Ok(())
}

/// The hosts file pods of this lab should see as /etc/hosts: the first one a router of the
/// lab (same network prefix) in this process was given.
pub fn shared_hosts_file(prefix: &str) -> Option<PathBuf> {
    let all = SHARED_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    all.get(prefix).and_then(|s| s.files.first().cloned())
}

/// Rewrite this cluster's lines of the shared hosts file in place (pods bind-mount the file,
/// so it must keep its inode), under an exclusive lock against the other cluster's router.
pub fn update_hosts_file(path: &Path, cluster: &str, ip: Ipv4Addr, hosts: &[String]) -> std::io::Result<()> {
    static LOCAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let mut file =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let tag = format!("# router:{cluster}");
    let mut lines: Vec<String> = text.lines().filter(|l| !l.ends_with(&tag)).map(str::to_string).collect();
    if !lines.iter().any(|l| l.split_whitespace().skip(1).any(|h| h == "localhost")) {
        lines.insert(0, "127.0.0.1\tlocalhost".into());
    }
    let mut seen = BTreeMap::new();
    for h in hosts {
        seen.entry(h.clone()).or_insert(());
    }
    for h in seen.keys() {
        lines.push(format!("{ip}\t{h}\t{tag}"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    // Overwrite in place, then cut to length: truncating first left an empty /etc/hosts for
    // any pod resolving at that moment, whose resolver then fell back to DNS and stalled for
    // its timeouts (seen as a 35 s pause before a transfer). The localhost lines lead the
    // file and never change, so a reader always finds them.
    file.rewind()?;
    file.write_all(out.as_bytes())?;
    file.set_len(out.len() as u64)?;
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_pod_reading_the_hosts_file_during_an_update_always_finds_localhost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        let ip = Ipv4Addr::new(10, 210, 0, 1);
        update_hosts_file(&p, "src", ip, &["a.apps.src.lab".into()]).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&p).unwrap();
                    assert!(text.starts_with("127.0.0.1\tlocalhost"), "read {reads}: {text:?}");
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..3000 {
            let hosts: Vec<String> = (0..i % 7).map(|k| format!("h{k}-{i}.apps.src.lab")).collect();
            update_hosts_file(&p, "src", ip, &hosts).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn hosts_file_keeps_other_clusters_lines_and_its_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        update_hosts_file(&p, "src", Ipv4Addr::new(10, 210, 0, 1), &["a.apps.src.lab".into()]).unwrap();
        let ino = std::fs::metadata(&p).unwrap().ino();
        update_hosts_file(&p, "dst", Ipv4Addr::new(10, 210, 0, 2), &["b.apps.dst.lab".into()]).unwrap();
        update_hosts_file(&p, "src", Ipv4Addr::new(10, 210, 0, 1), &["c.apps.src.lab".into()]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("127.0.0.1\tlocalhost"));
        assert!(text.contains("10.210.0.2\tb.apps.dst.lab"));
        assert!(text.contains("10.210.0.1\tc.apps.src.lab"));
        assert!(!text.contains("a.apps.src.lab"));
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    }

    /// Removes a test's lab network even when the test fails.
    struct NetGuard(String);
    impl Drop for NetGuard {
        fn drop(&mut self) {
            let _ = crate::netns::cleanup_prefix(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splices_tls_by_server_name_from_one_pod_namespace_to_another() {
        use crate::netns::{connect_in, listen_in, pod_ip, router_ip};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let prefix = format!("mtcdt{:06x}-", rand::random::<u32>() & 0xff_ffff);
        let guard = NetGuard(prefix.clone());
        let net = LabNetwork::create(&prefix).unwrap();
        let server_pod = net.add_pod("dst", "aaaaaaaa-1111", pod_ip("dst", 9).unwrap()).unwrap();
        let client_pod = net.add_pod("src", "bbbbbbbb-2222", pod_ip("src", 9).unwrap()).unwrap();
        let rip = router_ip("dst").unwrap();
        net.add_address(rip).unwrap();

        // A TLS echo server inside the dst pod's namespace.
        let host = "echo-ns1.apps.dst.lab";
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let server_cfg =
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.clone()], key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let backend = SocketAddr::from((server_pod.ip, 8443));
        let l = tokio::net::TcpListener::from_std(listen_in(&server_pod.name, backend).unwrap()).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(s).await.unwrap();
                    let mut buf = [0u8; 5];
                    tls.read_exact(&mut buf).await.unwrap();
                    tls.write_all(&buf).await.unwrap();
                    tls.shutdown().await.unwrap();
                });
            }
        });

        // The router side: SNI → backend, as `handle_tls` does with the route table.
        let rl = tokio::net::TcpListener::from_std(net.listen(SocketAddr::from((rip, 443))).unwrap()).unwrap();
        let rnet = net.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = rl.accept().await {
                let rnet = rnet.clone();
                tokio::spawn(async move {
                    let (s, name, first) = read_server_name(s).await.unwrap();
                    if name == host {
                        forward(s, &rnet, backend, first).await.unwrap();
                    }
                });
            }
        });

        // A client in the src pod's namespace, verifying the server's certificate end to end.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let connect = |name: &'static str| {
            let (pod, connector) = (client_pod.name.clone(), connector.clone());
            async move {
                let std = tokio::task::spawn_blocking(move || connect_in(&pod, SocketAddr::from((rip, 443))))
                    .await
                    .unwrap()
                    .unwrap();
                let tcp = tokio::net::TcpStream::from_std(std).unwrap();
                let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
                connector.connect(sn, tcp).await
            }
        };
        let mut tls = connect(host).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        tls.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        // An unknown server name is not forwarded anywhere: the handshake fails.
        assert!(connect("other.apps.dst.lab").await.is_err());

        drop(guard);
        assert!(crate::netns::list_prefix(&prefix).is_empty(), "network namespaces left behind");
    }

    #[test]
    fn generated_route_host() {
        let r = json!({"spec": {"to": {"name": "s"}}});
        assert_eq!(route_host(&r, "rsync", "ns1", "apps.dst.lab"), "rsync-ns1.apps.dst.lab");
        let r = json!({"spec": {"host": "X.example"}});
        assert_eq!(route_host(&r, "rsync", "ns1", "apps.dst.lab"), "x.example");
    }
}
