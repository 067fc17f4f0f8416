//! The node agent: a kubelet stand-in that is an ordinary API client.
//!
//! It watches Pods through the API (never the server's memory) and, for the transfer image,
//! runs each container as a real host process in the pod's own network namespace and a
//! private mount namespace (see [`container`]). Simulated images run as "Running, no
//! process"; unknown images wait in ErrImagePull like a real node that cannot pull.
//! Status goes back through the `status` subresource; logs go to
//! `<state_dir>/pod-logs/<ns>_<pod>_<uid>/<container>.log`, which the API server serves.

pub mod container;
pub mod exec;
mod kubelet;
mod pod;
pub use pod::PULL_DELAY;
pub mod security;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

pub use container::{ContainerSpec, MountSpec, container_main};
pub use exec::exec_main;

/// The image mtcd's DVM pods use; the lab runs it with the host's rsync and stunnel.
pub const TRANSFER_IMAGE: &str = "quay.io/konveyor/rsync-transfer:latest";

/// Configuration of one cluster's node agent.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// "src" or "dst": picks the pod address range.
    pub cluster: String,
    /// The lab's namespace-name prefix.
    pub prefix: String,
    /// Per-cluster state: pod logs under `pod-logs/`, pod scratch under `pods/`.
    pub state_dir: PathBuf,
    /// The provisioner's storage root (PV directories live below it).
    pub storage_root: PathBuf,
    /// The shared lab network pods join.
    pub network: crate::netns::LabNetwork,
    /// App images that run "simulated": Running, no process.
    pub simulated_images: Vec<String>,
    /// Where pods reach the API server: their `KUBERNETES_SERVICE_HOST`/`PORT`.
    pub api_service: Option<std::net::SocketAddr>,
}

/// The mtcd binary an [`ImageKind::Mtcd`] container runs: `MTCD_LAB_MTCD`, else `mtcd`
/// next to the lab's own binary (cargo builds both into the same directory).
pub fn mtcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MTCD_LAB_MTCD") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("mtcd")).filter(|p| p.is_file())
}

/// Errors of the node agent that a caller may act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The pod watch failed for good.
    #[error("watching pods of cluster {cluster}")]
    Watch {
        cluster: String,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// Creating the node's state directories failed.
    #[error("creating node state directory {dir}")]
    StateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the lab runs an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Real processes from the host's binaries.
    Transfer,
    /// mtcd itself (a repository named `mtcd`, e.g. `registry.example.com/mtcd:0.1.0`): the
    /// host's binaries plus the mtcd binary at `/usr/local/bin/mtcd`, the service-account
    /// token projected.
    Mtcd,
    /// Running with no process.
    Simulated,
    /// Not known: ErrImagePull.
    Unknown,
}

/// Classify an image reference for this node.
pub fn classify_image(image: &str, simulated: &[String]) -> ImageKind {
    if image == TRANSFER_IMAGE || image.contains("rsync-transfer") {
        return ImageKind::Transfer;
    }
    let repo_of = |s: &str| {
        let s = s.split('@').next().unwrap_or(s);
        match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => s[..i].to_string(),
            _ => s.to_string(),
        }
    };
    if repo_of(image).rsplit('/').next() == Some("mtcd") {
        return ImageKind::Mtcd;
    }
    let simulated_match = simulated.iter().any(|s| s == image || (!s.contains(':') && repo_of(image) == *s));
    if simulated_match || image.contains("/simulated/") { ImageKind::Simulated } else { ImageKind::Unknown }
}

/// The path of the hosts file the routers maintain: `<lab dir>/hosts`, where the lab dir
/// is the parent of a cluster's state dir (the integrator passes the same path to the
/// routers' `RouterConfig::hosts_file`).
pub fn hosts_file_for(state_dir: &std::path::Path) -> PathBuf {
    state_dir.parent().unwrap_or(state_dir).join("hosts")
}

/// Pod IPs in use on this node, and the last one handed out.
#[derive(Default)]
pub(crate) struct IpPool(Mutex<(BTreeSet<u8>, u8)>);

impl IpPool {
    /// The next free address after the last one handed out, round the pool: an address just
    /// given back is the last to be reused. A deleted pod's namespace (its veth, its address)
    /// is destroyed by the kernel some time after `ip netns del`, and the router's ARP entry
    /// for the address still names the old veth: a new pod given the same address at once
    /// was unreachable for a minute (a stalled transfer in the DVM benchmark), as on a
    /// network that hands a released address out again before the caches forget it.
    fn take(&self) -> Option<u8> {
        let mut pool = self.0.lock().expect("ip pool");
        let (used, last) = &mut *pool;
        let mut after_last = (last.saturating_add(1).max(2)..=254).chain(2..=*last);
        let n = after_last.find(|n| !used.contains(n))?;
        used.insert(n);
        *last = n;
        Some(n)
    }
    fn give(&self, n: u8) {
        self.0.lock().expect("ip pool").0.remove(&n);
    }
}

pub(crate) struct Node {
    pub client: kube::Client,
    pub cfg: NodeConfig,
    pub ips: IpPool,
    pub hosts_file: PathBuf,
    pub exe: PathBuf,
    /// Running container processes by (pod uid, container name), for `pods/exec`.
    pub containers: Mutex<HashMap<(String, String), exec::RunningContainer>>,
}

struct Handle {
    updates: tokio::sync::watch::Sender<Pod>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Run the node agent until `shutdown`; every pod process is stopped and every pod network
/// namespace removed before it returns.
pub async fn run(client: kube::Client, cfg: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    for d in [cfg.state_dir.join("pod-logs"), cfg.state_dir.join("pods")] {
        std::fs::create_dir_all(&d).map_err(|source| NodeError::StateDir { dir: d.display().to_string(), source })?;
    }
    let hosts_file = hosts_file_for(&cfg.state_dir);
    if !hosts_file.exists() {
        let _ = std::fs::write(&hosts_file, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    }
    // The lab binary re-execs itself as `__container` (through /proc/self/exe, which stays
    // valid even when cargo replaces the file on disk while a lab runs); MTCD_LAB_EXE points
    // at another binary that dispatches `__container` (tests of a library build).
    let exe = std::env::var_os("MTCD_LAB_EXE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let node = Arc::new(Node {
        client: client.clone(),
        cfg: cfg.clone(),
        ips: IpPool::default(),
        hosts_file,
        exe,
        containers: Mutex::new(HashMap::new()),
    });
    let node_name = crate::api::schedule::node_name(&cfg.cluster);
    let port = kubelet::start(node.clone(), node_name.clone(), shutdown.clone()).await?;
    tracing::info!(cluster = %cfg.cluster, port, "kubelet endpoint registered");
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut pods: HashMap<String, Handle> = HashMap::new();
    let mut seen_in_init: HashSet<String> = HashSet::new();
    let result = loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            ev = events.next() => ev,
        };
        let ev = match ev {
            None => break Ok(()),
            Some(Err(e)) => {
                tracing::warn!(cluster = %cfg.cluster, error = %e, "pod watch error; retrying");
                continue;
            }
            Some(Ok(ev)) => ev,
        };
        match ev {
            Event::Init => seen_in_init.clear(),
            Event::InitDone => {
                let gone: Vec<String> = pods.keys().filter(|u| !seen_in_init.contains(*u)).cloned().collect();
                for uid in gone {
                    if let Some(h) = pods.remove(&uid) {
                        h.stop.cancel();
                    }
                }
            }
            Event::Apply(p) | Event::InitApply(p) => {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                seen_in_init.insert(uid.clone());
                if let Some(h) = pods.get(&uid) {
                    if p.metadata.deletion_timestamp.is_some() {
                        h.stop.cancel();
                    }
                    let _ = h.updates.send(p);
                } else if p.metadata.deletion_timestamp.is_some() {
                    // Nothing of it runs here: finish the deletion like a kubelet would.
                    finish_delete(&client, &p).await;
                } else if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node_name.as_str()) {
                    // Not bound to this node (the scheduler found it does not fit): a kubelet
                    // runs only the pods bound to it.
                    continue;
                } else {
                    let (tx, rx) = tokio::sync::watch::channel(p.clone());
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(pod::run_pod(node.clone(), p, rx, stop.clone()));
                    pods.insert(uid, Handle { updates: tx, stop, task });
                }
                pods.retain(|_, h| !h.task.is_finished());
            }
            Event::Delete(p) => {
                if let Some(h) = p.metadata.uid.as_ref().and_then(|u| pods.remove(u)) {
                    h.stop.cancel();
                }
            }
        }
    };
    for h in pods.values() {
        h.stop.cancel();
    }
    for (_, h) in pods {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), h.task).await;
    }
    result
}

/// Delete a pod that has a deletionTimestamp with grace 0, as a kubelet does once the
/// containers are gone.
pub(crate) async fn finish_delete(client: &kube::Client, p: &Pod) {
    if p.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
        return;
    }
    let (Some(ns), Some(name)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut dp = DeleteParams::default().grace_period(0);
    if let Some(uid) = &p.metadata.uid {
        dp.preconditions = Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None });
    }
    let _ = api.delete(name, &dp).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_pod_address_is_the_last_to_be_handed_out_again() {
        let pool = IpPool::default();
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!((a, b), (2, 3));
        pool.give(a);
        assert_eq!(pool.take(), Some(4), "not the address just released");
        let rest: Vec<u8> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(rest.len(), 253 - 2, "every other address, then the released one");
        assert_eq!(rest.last(), Some(&2));
        assert_eq!(pool.take(), None, "the pool is exhausted");
        pool.give(100);
        assert_eq!(pool.take(), Some(100));
    }

    #[test]
    fn classifies_images() {
        let sim = vec!["registry.example/app/web".to_string(), "nginx:1.25".to_string()];
        assert_eq!(classify_image(TRANSFER_IMAGE, &sim), ImageKind::Transfer);
        assert_eq!(classify_image("example.com/x/rsync-transfer:v2", &sim), ImageKind::Transfer);
        assert_eq!(classify_image("registry.example/app/web:v3", &sim), ImageKind::Simulated);
        assert_eq!(classify_image("nginx:1.25", &sim), ImageKind::Simulated);
        assert_eq!(classify_image("nginx:1.26", &sim), ImageKind::Unknown);
        assert_eq!(classify_image("quay.io/simulated/db:1", &sim), ImageKind::Simulated);
        assert_eq!(classify_image("busybox", &sim), ImageKind::Unknown);
        assert_eq!(classify_image("lab.mtcd.io/mtcd:dev", &sim), ImageKind::Mtcd);
        assert_eq!(classify_image("registry.example.com:5000/tools/mtcd@sha256:ab", &sim), ImageKind::Mtcd);
        assert_eq!(classify_image("registry.example.com/mtcd-ui:1", &sim), ImageKind::Unknown);
    }
}
