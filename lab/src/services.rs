//! The per-cluster programs that are API *clients* (node agent, controllers, router) and the
//! registries, started after the API servers. They live in the lab-node modules; the
//! `node` cargo feature switches them on once those modules are built, so the API server and
//! orchestration can be developed and tested on their own.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

/// What the orchestration knows about one cluster when starting its services.
pub struct ClusterSpec {
    pub name: String,
    pub profile: String,
    pub state_dir: PathBuf,
    pub storage_root: PathBuf,
    pub client: kube::Client,
    pub apps_domain: String,
    /// The API server's port on 127.0.0.1 (pods reach it at the bridge address, same port).
    pub api_port: u16,
}

/// Addresses the services report, recorded in lab.json.
#[derive(Default, Debug, Clone)]
pub struct Started {
    pub registry: Option<String>,
    pub router: Option<String>,
}

/// Handles to stop and await everything that was started.
#[derive(Default)]
pub struct Running {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub children: Vec<tokio::process::Child>,
}

impl Running {
    /// Waits (bounded) for tasks to notice the cancellation, then kills child processes.
    pub async fn stop(mut self) {
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        for mut c in self.children.drain(..) {
            let _ = c.start_kill();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), c.wait()).await;
        }
    }
}

/// Whether this build runs node agents, controllers, routers and registries.
pub const ENABLED: bool = cfg!(feature = "node");

#[cfg(not(feature = "node"))]
pub async fn start(
    _dir: &Path,
    _prefix: &str,
    _clusters: Vec<ClusterSpec>,
    _shutdown: CancellationToken,
    _running: &mut Running,
) -> anyhow::Result<Vec<Started>> {
    Ok(vec![Started::default(), Started::default()])
}

#[cfg(not(feature = "node"))]
pub fn cleanup(_prefix: &str) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(feature = "node")]
pub async fn start(
    dir: &Path,
    prefix: &str,
    clusters: Vec<ClusterSpec>,
    shutdown: CancellationToken,
    running: &mut Running,
) -> anyhow::Result<Vec<Started>> {
    use anyhow::Context;
    let network = crate::netns::LabNetwork::create(prefix).context("creating the lab network namespace")?;
    let mut out = Vec::new();
    for c in clusters {
        let (registry, child) = crate::registry::start(&c.state_dir.join("registry"))
            .await
            .with_context(|| format!("starting the registry of cluster {}", c.name))?;
        running.children.push(child);
        let ctl_cfg = crate::controllers::ControllerConfig {
            cluster: c.name.clone(),
            storage_root: c.storage_root.clone(),
            profile: c.profile.clone(),
            apps_domain: c.apps_domain.clone(),
            // Both clusters share one directory, as two Velero installs share a bucket.
            velero_storage: Some(dir.join("velero-storage")),
        };
        let (client, token) = (c.client.clone(), shutdown.clone());
        let name = c.name.clone();
        running.tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::controllers::run(client, ctl_cfg, token).await {
                tracing::error!(cluster = %name, error = %format!("{e:#}"), "controllers stopped");
            }
        }));
        let node_cfg = crate::node::NodeConfig {
            cluster: c.name.clone(),
            prefix: prefix.to_string(),
            state_dir: c.state_dir.clone(),
            storage_root: c.storage_root.clone(),
            network: network.clone(),
            simulated_images: Vec::new(),
            api_service: Some(std::net::SocketAddr::from((crate::netns::BRIDGE_IP, c.api_port))),
        };
        running.tasks.push(
            api_forwarder(&network, c.api_port, shutdown.clone())
                .with_context(|| format!("forwarding the API server of cluster {} into the lab network", c.name))?,
        );
        let (client, token) = (c.client.clone(), shutdown.clone());
        let name = c.name.clone();
        running.tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::node::run(client, node_cfg, token).await {
                tracing::error!(cluster = %name, error = %format!("{e:#}"), "node agent stopped");
            }
        }));
        let router_cfg = crate::router::RouterConfig {
            cluster: c.name.clone(),
            network: network.clone(),
            hosts_file: dir.join(format!("{}-hosts", c.name)),
            apps_domain: c.apps_domain.clone(),
        };
        let router = crate::router::run(c.client.clone(), router_cfg, shutdown.clone())
            .await
            .with_context(|| format!("starting the router of cluster {}", c.name))?;
        out.push(Started { registry: Some(registry.address.clone()), router: Some(router) });
    }
    Ok(out)
}

/// What a pod's `KUBERNETES_SERVICE_HOST:PORT` reaches: a TCP forwarder on the bridge
/// address, API server port, to the API server on the host's 127.0.0.1 (pods live in their
/// own network namespaces; a real cluster routes the `kubernetes` Service's IP instead).
#[cfg(feature = "node")]
fn api_forwarder(
    network: &crate::netns::LabNetwork,
    port: u16,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = network.listen(std::net::SocketAddr::from((crate::netns::BRIDGE_IP, port)))?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}

#[cfg(feature = "node")]
pub fn cleanup(prefix: &str) -> anyhow::Result<()> {
    crate::netns::cleanup_prefix(prefix)
}
