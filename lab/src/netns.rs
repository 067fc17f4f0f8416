//! The lab network: one network namespace holding a Linux bridge, and one network namespace
//! per pod with a veth into that bridge.
//!
//! Everything lives in namespaces the lab creates, so pods can listen on the same port, get
//! their own IP, and nothing touches the host's interfaces. Namespaces are named with a
//! per-lab prefix (`mtcdlab-<6 hex>-`), which is all `cleanup_prefix` needs to find and remove
//! them even after a crash.
//!
//! Addressing (one /16 on one bridge, so every address is on-link and no routes are needed):
//! routers at 10.210.0.1 (src) and 10.210.0.2 (dst), the bridge itself at 10.210.0.254,
//! src pods in 10.210.1.0/24, dst pods in 10.210.2.0/24, LoadBalancer addresses in
//! 10.210.3.0/24 (src) and 10.210.4.0/24 (dst).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::{CloneFlags, setns};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The prefix length of every lab address: the whole lab is one L2 segment.
pub const PREFIX_LEN: u8 = 16;
const BRIDGE: &str = "br0";
/// The bridge's address: pods reach the API servers here (the `kubernetes` Service's
/// stand-in: a forwarder per cluster on the API server's own port, `services::start`).
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 254);

/// Errors of the lab network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// An `ip` command failed; the message names the command and its stderr.
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    /// `ip` could not be run at all (iproute2 missing?).
    #[error("cannot run `ip` (is iproute2 installed?)")]
    Spawn(#[source] std::io::Error),
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// A socket operation inside a namespace failed.
    #[error("socket {op} {addr} in network namespace {name}")]
    Socket {
        op: &'static str,
        addr: SocketAddr,
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The address pool of a cluster is exhausted.
    #[error("no free pod address left for cluster {0}")]
    Exhausted(String),
    /// The cluster name is not one the lab knows (src or dst).
    #[error("unknown cluster {0:?}: expected \"src\" or \"dst\"")]
    UnknownCluster(String),
}

/// Which /24 a cluster's pods (and LoadBalancers) take their addresses from.
fn cluster_index(cluster: &str) -> Result<u8, NetnsError> {
    match cluster {
        "src" => Ok(0),
        "dst" => Ok(1),
        other => Err(NetnsError::UnknownCluster(other.to_string())),
    }
}

/// The router address of a cluster (on the bridge, inside the lab namespace).
pub fn router_ip(cluster: &str) -> Result<Ipv4Addr, NetnsError> {
    Ok(Ipv4Addr::new(10, 210, 0, 1 + cluster_index(cluster)?))
}

/// The n-th pod address of a cluster (n in 2..=254).
pub fn pod_ip(cluster: &str, n: u8) -> Result<Ipv4Addr, NetnsError> {
    Ok(Ipv4Addr::new(10, 210, 1 + cluster_index(cluster)?, n))
}

/// The n-th LoadBalancer address of a cluster (n in 1..=254).
pub fn lb_ip(cluster: &str, n: u8) -> Result<Ipv4Addr, NetnsError> {
    Ok(Ipv4Addr::new(10, 210, 3 + cluster_index(cluster)?, n))
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip").args(args).output().map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip { args: args.join(" "), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// `ip` that tolerates "already exists" / "does not exist" answers, for idempotent steps.
fn ip_tolerant(args: &[&str]) -> Result<(), NetnsError> {
    match ip(args) {
        Err(NetnsError::Ip { stderr, .. })
            if stderr.contains("File exists")
                || stderr.contains("already")
                || stderr.contains("No such file")
                || stderr.contains("Cannot find device")
                || stderr.contains("Cannot assign requested address") =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The shared lab network namespace and bridge that both clusters' pods and routers join.
#[derive(Clone, Debug)]
pub struct LabNetwork {
    /// The per-lab prefix of every namespace name.
    pub prefix: String,
    /// The name of the lab namespace holding the bridge (`<prefix>net`).
    pub name: String,
}

/// A pod's network namespace and address.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    /// Namespace name (`<prefix><cluster>-<uid8>`).
    pub name: String,
    /// The pod IP.
    pub ip: Ipv4Addr,
}

/// The lab network's MTU: loopback's. Every "node" of the lab is this one machine, so the
/// virtual network costs what loopback costs, and the DVM benchmark compares mtcd with tools
/// started by hand on loopback like for like. At Ethernet's 1500 a TLS record of 16 KiB
/// arrived in 12 segments and woke stunnel up to 12 times; a real cluster network is
/// whatever it is, for mtcd and any other tool alike.
const MTU: &str = "65535";

impl LabNetwork {
    /// Create (or reuse) the lab namespace with its bridge up and addressed.
    pub fn create(prefix: &str) -> anyhow::Result<LabNetwork> {
        let net = LabNetwork::open(prefix);
        if !netns_path(&net.name).exists() {
            ip(&["netns", "add", &net.name])?;
        }
        ip(&["-n", &net.name, "link", "set", "lo", "up"])?;
        ip_tolerant(&["-n", &net.name, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &net.name, "link", "set", BRIDGE, "mtu", MTU, "up"])?;
        net.add_address(BRIDGE_IP)?;
        Ok(net)
    }

    /// The handle of an existing lab network (nothing is created).
    pub fn open(prefix: &str) -> LabNetwork {
        LabNetwork { prefix: prefix.to_string(), name: format!("{prefix}net") }
    }

    /// Add an address (router, LoadBalancer) to the bridge; idempotent.
    pub fn add_address(&self, addr: Ipv4Addr) -> Result<(), NetnsError> {
        ip_tolerant(&["-n", &self.name, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", BRIDGE])
    }

    /// Remove an address from the bridge; idempotent.
    pub fn remove_address(&self, addr: Ipv4Addr) -> Result<(), NetnsError> {
        ip_tolerant(&["-n", &self.name, "addr", "del", &format!("{addr}/{PREFIX_LEN}"), "dev", BRIDGE])
    }

    /// The namespace name a pod of `cluster` with this uid gets.
    pub fn pod_netns_name(&self, cluster: &str, uid: &str) -> String {
        let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
        format!("{}{cluster}-{short}", self.prefix)
    }

    /// Create a pod namespace with `eth0` on the bridge at `addr` and loopback up.
    pub fn add_pod(&self, cluster: &str, uid: &str, addr: Ipv4Addr) -> Result<PodNetwork, NetnsError> {
        let name = self.pod_netns_name(cluster, uid);
        // A stale namespace of the same pod (agent restart) is replaced, not reused half-built.
        self.remove_pod_named(&name)?;
        ip(&["netns", "add", &name])?;
        // The host end lives in the lab namespace, so its name only has to be unique there.
        let host_if = format!("v{}", &name[self.prefix.len()..].replace('-', ""));
        let host_if: String = host_if.chars().take(15).collect();
        let setup = || -> Result<(), NetnsError> {
            ip_tolerant(&["-n", &self.name, "link", "del", &host_if])?;
            ip(&[
                "-n", &self.name, "link", "add", &host_if, "mtu", MTU, "type", "veth", "peer", "name", "eth0", "mtu",
                MTU, "netns", &name,
            ])?;
            ip(&["-n", &self.name, "link", "set", &host_if, "master", BRIDGE, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            // What the lab namespace (router, LoadBalancers) still knows of an earlier pod
            // with this address would send its packets to that pod's veth.
            let _ = ip(&["-n", &self.name, "neigh", "flush", "to", &addr.to_string()]);
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = self.remove_pod_named(&name);
            return Err(e);
        }
        Ok(PodNetwork { name, ip: addr })
    }

    /// Kill what still runs in a pod namespace and delete it (its veth goes with it).
    pub fn remove_pod_named(&self, name: &str) -> Result<(), NetnsError> {
        let path = netns_path(name);
        if !path.exists() {
            return Ok(());
        }
        kill_netns_processes(&path);
        ip_tolerant(&["netns", "del", name])
    }

    /// Bind a TCP listener on `addr` inside the lab namespace (router, LoadBalancers).
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        listen_in(&self.name, addr)
    }

    /// Connect to `addr` (a pod IP) from inside the lab namespace.
    pub fn connect(&self, addr: SocketAddr) -> Result<TcpStream, NetnsError> {
        connect_in(&self.name, addr)
    }
}

/// Run `f` on a fresh thread that has entered network namespace `name`; sockets created there
/// keep that namespace for their whole life, whichever thread uses them afterwards.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<std::io::Result<T>, NetnsError> {
    let path = netns_path(name);
    let owned = name.to_string();
    std::thread::spawn(move || {
        let file = File::open(&path).map_err(|source| NetnsError::Enter { name: owned.clone(), source })?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::Enter { name: owned.clone(), source: e.into() })?;
        Ok(f())
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::Enter { name: name.to_string(), source: std::io::Error::other("thread panicked") })
    })
}

/// Bind a std TCP listener inside network namespace `name`.
pub fn listen_in(name: &str, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
    let l = in_netns(name, move || TcpListener::bind(addr))?.map_err(|source| NetnsError::Socket {
        op: "bind",
        addr,
        name: name.to_string(),
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| NetnsError::Socket {
        op: "bind",
        addr,
        name: name.to_string(),
        source,
    })?;
    Ok(l)
}

/// Connect a std TCP stream from inside network namespace `name` (3 s timeout).
pub fn connect_in(name: &str, addr: SocketAddr) -> Result<TcpStream, NetnsError> {
    let s = in_netns(name, move || TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)))?
        .map_err(|source| NetnsError::Socket { op: "connect", addr, name: name.to_string(), source })?;
    let _ = s.set_nodelay(true);
    s.set_nonblocking(true).map_err(|source| NetnsError::Socket {
        op: "connect",
        addr,
        name: name.to_string(),
        source,
    })?;
    Ok(s)
}

/// Pids whose network namespace is the one at `path` (same device and inode).
pub fn netns_pids(path: &Path) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(m) = std::fs::metadata(entry.path().join("ns/net"))
            && m.dev() == target.dev()
            && m.ino() == target.ino()
        {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILL every process in a namespace and wait (up to 2 s) until they are gone.
fn kill_netns_processes(path: &Path) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let pids = netns_pids(path);
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Remove everything a lab with this prefix made: kill every process whose network
/// namespace is one of ours, unmount mounts under our paths, delete every namespace with the
/// prefix. Idempotent; safe when nothing exists.
pub fn cleanup_prefix(prefix: &str) -> anyhow::Result<()> {
    anyhow::ensure!(prefix.len() >= 4, "refusing to clean up with a too-short prefix {prefix:?}");
    let names: Vec<String> = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    };
    // Pods first (their processes), the lab namespace with the bridge last.
    let (labs, pods): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| n == &format!("{prefix}net"));
    for name in pods.iter().chain(labs.iter()) {
        kill_netns_processes(&netns_path(name));
    }
    // Mounts whose path carries the prefix (netns bind mounts `ip` left behind after a crash).
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut targets: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.rsplit('/').next().is_some_and(|last| last.starts_with(prefix)))
            .filter(|t| !t.starts_with(NETNS_DIR))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let mut errors = Vec::new();
    for name in pods.iter().chain(labs.iter()) {
        if let Err(e) = ip_tolerant(&["netns", "del", name]) {
            errors.push(e.to_string());
        }
    }
    anyhow::ensure!(errors.is_empty(), "cleaning up lab network namespaces: {}", errors.join("; "));
    Ok(())
}

/// Namespace names that currently exist with this prefix (for tests and `down`'s check).
pub fn list_prefix(prefix: &str) -> Vec<String> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    }
}
