//! Starting one container: the `mtcd-lab __container <json>` re-exec.
//!
//! The node agent spawns the lab binary again with a [`ContainerSpec`]; that child enters the
//! pod's network namespace, makes a private mount namespace, builds a root from the host's
//! directories (overlays, so nothing the container writes reaches the host), mounts the
//! volumes at their mountPaths, chroots and execs the command. Re-executing keeps all of this
//! out of the multi-threaded agent: namespaces and chroot apply to the single-threaded child.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use serde::{Deserialize, Serialize};

/// Everything the child needs; the agent resolves volumes and env before spawning.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Network namespace file to enter (`/run/netns/<name>`); none keeps the current one.
    pub netns: Option<PathBuf>,
    /// An empty directory the container's root is built in.
    pub root: PathBuf,
    /// The pod's private `/tmp`.
    pub tmp: Option<PathBuf>,
    /// Hostname (the pod name) set in a private UTS namespace.
    pub hostname: Option<String>,
    /// File bind-mounted over `/etc/hosts` (the routers' shared hosts file).
    pub hosts_file: Option<PathBuf>,
    /// Volumes to mount, in any order (mounted shortest target first).
    pub mounts: Vec<MountSpec>,
    /// `workingDir`; `/` if unset.
    pub working_dir: Option<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    /// command + args; argv[0] is looked up in the env's PATH inside the root.
    pub argv: Vec<String>,
    /// A tmpfs on `/run` instead of the host's (mounts below `/run` or `/var/run` — the
    /// projected service-account token — must not create directories on the host).
    #[serde(default)]
    pub private_run: bool,
    /// User, groups and capabilities from the securityContext (`None`: root, all of them).
    #[serde(default)]
    pub identity: Option<super::security::Identity>,
}

/// One bind mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Host directories overlaid into the container root (writes land in a tmpfs).
const OVERLAID: &[&str] = &["etc", "usr", "var", "opt", "root", "home", "srv", "mnt", "media"];
/// Host directories bound as they are (kernel interfaces and runtime state).
const BOUND: &[&str] = &["dev", "proc", "sys", "run"];
/// Top-level symlinks of a merged-/usr system (or directories on older layouts).
const LINKS: &[&str] = &["bin", "sbin", "lib", "lib64", "lib32", "libx32"];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), String> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| err(format_args!("bind-mount {} on {}", source.display(), target.display()), e))
}

fn remount_ro(target: &Path) -> Result<(), String> {
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| err(format_args!("remount {} read-only", target.display()), e))
}

/// Join an absolute container path under the root.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn build_root(spec: &ContainerSpec) -> Result<(), String> {
    let root = &spec.root;
    std::fs::create_dir_all(root).map_err(|e| err(format_args!("create {}", root.display()), e))?;
    mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
        .map_err(|e| err(format_args!("mount tmpfs on {}", root.display()), e))?;
    let scratch = root.join(".lab");
    for name in LINKS {
        let host = Path::new("/").join(name);
        if let Ok(target) = std::fs::read_link(&host) {
            std::os::unix::fs::symlink(&target, root.join(name))
                .map_err(|e| err(format_args!("symlink /{name}"), e))?;
        } else if host.is_dir() {
            std::fs::create_dir(root.join(name)).map_err(|e| err(format_args!("mkdir /{name}"), e))?;
            bind(&host, &root.join(name), true)?;
        }
    }
    for name in OVERLAID {
        let host = Path::new("/").join(name);
        if !host.is_dir() || host.is_symlink() {
            continue;
        }
        let (upper, work, target) =
            (scratch.join("upper").join(name), scratch.join("work").join(name), root.join(name));
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d).map_err(|e| err(format_args!("mkdir {}", d.display()), e))?;
        }
        let opts = format!("lowerdir={},upperdir={},workdir={}", host.display(), upper.display(), work.display());
        mount(Some("overlay"), &target, Some("overlay"), MsFlags::empty(), Some(opts.as_str()))
            .map_err(|e| err(format_args!("overlay /{name}"), e))?;
    }
    for name in BOUND {
        let target = root.join(name);
        std::fs::create_dir_all(&target).map_err(|e| err(format_args!("mkdir /{name}"), e))?;
        if *name == "run" && spec.private_run {
            mount(Some("tmpfs"), &target, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
                .map_err(|e| err("mount tmpfs on /run", e))?;
            continue;
        }
        bind(&Path::new("/").join(name), &target, true)?;
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| err("mkdir /tmp", e))?;
    match &spec.tmp {
        Some(dir) => bind(dir, &tmp, false)?,
        None => mount(Some("tmpfs"), &tmp, Some("tmpfs"), MsFlags::empty(), Some("mode=1777"))
            .map_err(|e| err("mount tmpfs on /tmp", e))?,
    }
    if let Some(hosts) = &spec.hosts_file {
        let target = root.join("etc/hosts");
        if !target.exists() {
            File::create(&target).map_err(|e| err("create /etc/hosts", e))?;
        }
        bind(hosts, &target, false)?;
    }
    let mut mounts = spec.mounts.clone();
    mounts.sort_by_key(|m| m.target.len());
    for m in &mounts {
        // `/var/run` is a symlink to the host's `/run` until the chroot: mount on the
        // container's own `/run` instead.
        let target = match m.target.strip_prefix("/var/run/") {
            Some(rest) if spec.private_run => root.join("run").join(rest),
            _ => under(root, &m.target),
        };
        if m.source.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| err(format_args!("create mountPath {}", m.target), e))?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err(format_args!("create mountPath {}", m.target), e))?;
            }
            if !target.exists() {
                File::create(&target).map_err(|e| err(format_args!("create mountPath {}", m.target), e))?;
            }
        }
        bind(&m.source, &target, true)?;
        if m.read_only {
            remount_ro(&target)?;
        }
    }
    Ok(())
}

/// Find an executable for argv[0] the way a shell would, inside the (already chrooted) root.
pub(crate) fn resolve(cmd: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    path.split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn setup_and_exec(spec: &ContainerSpec) -> Result<std::convert::Infallible, String> {
    if spec.argv.is_empty() {
        return Err("the container has no command: the lab runs images without an entrypoint, set command".into());
    }
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS).map_err(|e| err("unshare mount+uts namespaces", e))?;
    // Nothing mounted from here on may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| err("make / private", e))?;
    if let Some(ns) = &spec.netns {
        let f = File::open(ns).map_err(|e| err(format_args!("open {}", ns.display()), e))?;
        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| err(format_args!("enter {}", ns.display()), e))?;
    }
    if let Some(h) = &spec.hostname {
        nix::unistd::sethostname(h).map_err(|e| err("sethostname", e))?;
    }
    build_root(spec)?;
    nix::unistd::chroot(&spec.root).map_err(|e| err("chroot", e))?;
    let wd = spec.working_dir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    if std::fs::create_dir_all(wd).is_err() || nix::unistd::chdir(wd).is_err() {
        return Err(format!("cannot change to workingDir {wd}"));
    }
    if let Some(id) = &spec.identity {
        super::security::become_identity(id)?;
    }
    let path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let exe = resolve(&spec.argv[0], path)
        .ok_or_else(|| format!("executable file {:?} not found in $PATH ({path})", spec.argv[0]))?;
    // std's exec (not a raw execve): it restores SIGPIPE to its default and clears the
    // signal mask first. The Rust runtime of this process ignores SIGPIPE, and an ignored
    // signal would survive execve into the container's shell scripts and daemons.
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&exe)
        .arg0(&spec.argv[0])
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(err(format_args!("exec {:?}", spec.argv[0]), e))
}

/// Entry point of `mtcd-lab __container <json spec | @file>`: on success it never returns (the process
/// becomes the container's command); on failure it prints why and returns the exit code (127
/// for a missing executable, 128 for setup errors), which the agent reports.
pub fn container_main(spec_json: &str) -> i32 {
    // `@<path>`: the agent's form, keeping secret env values out of the process list.
    let text = match spec_json.strip_prefix('@') {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mtcd-lab __container: cannot read spec {path}: {e}");
                return 128;
            }
        },
        None => spec_json.to_string(),
    };
    let spec: ContainerSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mtcd-lab __container: invalid spec: {e}");
            return 128;
        }
    };
    match setup_and_exec(&spec) {
        Ok(never) => match never {},
        Err(msg) => {
            eprintln!("mtcd-lab: container start failed: {msg}");
            if msg.contains("not found in $PATH") { 127 } else { 128 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Not a test: the child half of `runs_a_command_in_its_own_root_with_volumes`. Libtest
    /// has no other entry point, so the parent re-runs this test binary with the spec in
    /// the environment, as the lab binary's `__container` subcommand does.
    #[test]
    #[ignore = "helper process for the container tests"]
    fn container_child() {
        if let Ok(spec) = std::env::var("MTCD_LAB_TEST_CONTAINER_SPEC") {
            std::process::exit(container_main(&spec));
        }
    }

    fn run_child(spec: &ContainerSpec, log: &Path) -> std::process::ExitStatus {
        let out = File::create(log).unwrap();
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "node::container::tests::container_child",
                "--test-threads=1",
                "--nocapture",
                "-q",
            ])
            .env("MTCD_LAB_TEST_CONTAINER_SPEC", serde_json::to_string(spec).unwrap())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap()
    }

    struct NetGuard(String);
    impl Drop for NetGuard {
        fn drop(&mut self) {
            let _ = crate::netns::cleanup_prefix(&self.0);
        }
    }

    #[test]
    fn runs_a_command_in_its_own_root_with_volumes_network_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pvc");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(data.join("file.txt"), b"payload\n").unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1\tlocalhost\n10.210.0.2\trsync-ns1.apps.dst.lab\n").unwrap();
        let prefix = format!("mtcdc{:06x}-", rand::random::<u32>() & 0xff_ffff);
        // A mountPath whose parent does not exist on the host, like /data in most images.
        let absent = format!("/{prefix}absent");
        let guard = NetGuard(prefix.clone());
        let net = crate::netns::LabNetwork::create(&prefix).unwrap();
        let pod = net.add_pod("src", "cccccccc-3333", crate::netns::pod_ip("src", 7).unwrap()).unwrap();
        let script = r#"set -e
yes | head -c1 >/dev/null; echo "sigpipe-status=${PIPESTATUS[0]}"
cat $ABSENT/data/file.txt > /out/copy.txt
if touch $ABSENT/data/new 2>/dev/null; then echo "READONLY-BROKEN"; exit 3; fi
echo "pwd=$(pwd) foo=$FOO host=$(hostname)"
grep -c rsync-ns1.apps.dst.lab /etc/hosts
ip -o -4 addr show eth0
echo scratch > /etc/written-by-container
"#;
        let spec = ContainerSpec {
            netns: Some(crate::netns::netns_path(&pod.name)),
            root: dir.path().join("root"),
            tmp: None,
            hostname: Some("client-pod".into()),
            hosts_file: Some(hosts),
            mounts: vec![
                MountSpec { source: data.clone(), target: format!("{absent}/data"), read_only: true },
                MountSpec { source: out.clone(), target: "/out".into(), read_only: false },
            ],
            working_dir: Some(format!("{absent}/data")),
            env: vec![
                ("FOO".into(), "bar baz".into()),
                ("ABSENT".into(), absent.clone()),
                ("PATH".into(), DEFAULT_PATH.into()),
            ],
            argv: vec!["bash".into(), "-c".into(), script.into()],
            private_run: false,
            identity: None,
        };
        let log = dir.path().join("c.log");
        let status = run_child(&spec, &log);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(status.success(), "container failed ({status}):\n{text}");
        assert_eq!(std::fs::read(out.join("copy.txt")).unwrap(), b"payload\n");
        assert!(text.contains(&format!("pwd={absent}/data foo=bar baz host=client-pod")), "{text}");
        assert!(text.contains("inet 10.210.1.7/16"), "{text}");
        // SIGPIPE is back to its default inside the container (141 = 128 + SIGPIPE).
        assert!(text.contains("sigpipe-status=141"), "{text}");
        assert!(!data.join("new").exists());
        assert!(!Path::new("/etc/written-by-container").exists(), "container writes reached the host");
        assert!(!Path::new(&absent).exists(), "mountPath created on the host");

        // A missing executable is exit code 127 with a message naming it.
        let spec = ContainerSpec { argv: vec!["no-such-binary".into()], ..spec };
        let status = run_child(&spec, &log);
        assert_eq!(status.code(), Some(127));
        assert!(std::fs::read_to_string(&log).unwrap().contains("\"no-such-binary\" not found"));
        drop(guard);
    }
}
