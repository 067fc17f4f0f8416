//! `pods/exec` on the node: a command run inside a running container, as a kubelet and its
//! container runtime do it.
//!
//! The command runs as `mtcd-lab __exec @<spec>` ([`exec_main`]): that child enters the
//! container process's network, UTS and mount namespaces and its root (`/proc/<pid>/root`,
//! like `nsenter --root`), changes to the container's `workingDir`, and execs the command with
//! exactly the container's environment. The node agent ([`session`]) relays its stdin, stdout
//! and stderr over the client's WebSocket in the `channel.k8s.io` framing (first byte: 0
//! stdin, 1 stdout, 2 stderr, 3 status, 4 resize; with `v5.channel.k8s.io` a client's
//! `[255, 0]` closes stdin) and ends with the exit `Status` on channel 3, as the kubelet does.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use nix::sched::{CloneFlags, setns};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::Node;

/// A container process the node runs, as exec needs it.
#[derive(Clone, Debug)]
pub struct RunningContainer {
    pub pid: u32,
    pub namespace: String,
    pub pod: String,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The pod's scratch directory (exec specs are written there).
    pub pod_dir: PathBuf,
}

/// Registers a running container for exec; dropping it forgets the container again.
pub(crate) struct Registration {
    node: Arc<Node>,
    key: (String, String),
    pid: u32,
}

impl Registration {
    pub(crate) fn new(node: &Arc<Node>, key: (String, String), c: RunningContainer) -> Self {
        let pid = c.pid;
        node.containers.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), c);
        Self { node: node.clone(), key, pid }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut running = self.node.containers.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&self.key).is_some_and(|c| c.pid == self.pid) {
            running.remove(&self.key);
        }
    }
}

/// What `__exec` needs: the container process to join and the command.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    pub pid: u32,
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    /// Where a failure to start the command is written (the exit code alone cannot tell
    /// "could not start" from "the command exited 127").
    pub error_file: PathBuf,
}

/// The subprotocols the node speaks, preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn enter_and_exec(spec: &ExecSpec) -> Result<std::convert::Infallible, String> {
    if spec.argv.is_empty() {
        return Err("no command".into());
    }
    let open = |what: &str| {
        File::open(format!("/proc/{}/{what}", spec.pid))
            .map_err(|e| format!("container process {} is gone ({what}: {e})", spec.pid))
    };
    let (net, uts, mnt, root) = (open("ns/net")?, open("ns/uts")?, open("ns/mnt")?, open("root")?);
    setns(&net, CloneFlags::CLONE_NEWNET).map_err(|e| format!("entering the network namespace: {e}"))?;
    setns(&uts, CloneFlags::CLONE_NEWUTS).map_err(|e| format!("entering the UTS namespace: {e}"))?;
    setns(&mnt, CloneFlags::CLONE_NEWNS).map_err(|e| format!("entering the mount namespace: {e}"))?;
    nix::unistd::fchdir(&root).map_err(|e| format!("changing to the container root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot into the container root: {e}"))?;
    let wd = spec.working_dir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    nix::unistd::chdir(wd).map_err(|e| format!("chdir to {wd}: {e}"))?;
    let path =
        spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(super::container::DEFAULT_PATH);
    let exe = super::container::resolve(&spec.argv[0], path).ok_or_else(|| {
        format!(
            "OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: executable file not found in $PATH: unknown",
            spec.argv[0]
        )
    })?;
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&exe)
        .arg0(&spec.argv[0])
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(format!(
        "OCI runtime exec failed: exec failed: unable to start container process: exec {:?}: {e}: unknown",
        spec.argv[0]
    ))
}

/// Entry point of `mtcd-lab __exec @<spec file>`: becomes the command, or writes why it could
/// not to the spec's `error_file` and returns 126 (must run before any thread exists: entering
/// a mount namespace needs a single-threaded process).
pub fn exec_main(arg: &str) -> i32 {
    let Some(path) = arg.strip_prefix('@') else {
        eprintln!("mtcd-lab __exec: expected @<spec file>");
        return 126;
    };
    let spec: ExecSpec = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mtcd-lab __exec: cannot read spec {path}: {e}");
            return 126;
        }
    };
    // Opened before entering the container: afterwards the path would resolve inside it.
    // (close-on-exec: the command never inherits it.)
    let error_file = std::fs::File::create(&spec.error_file);
    match enter_and_exec(&spec) {
        Ok(never) => match never {},
        Err(msg) => {
            if let Ok(mut f) = error_file {
                use std::io::Write;
                let _ = f.write_all(msg.as_bytes());
            }
            126
        }
    }
}

/// The Status the kubelet sends on channel 3 (JSON of a `metav1.Status`, no kind/apiVersion).
pub fn exit_status(code: i32, error: Option<&str>) -> Value {
    if let Some(err) = error {
        let msg = format!("error executing command in container: {err}");
        return json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError", "details": {"causes": [{"message": msg}]}, "code": 500});
    }
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({"metadata": {}, "status": "Failure",
        "message": format!("command terminated with non-zero exit code: command terminated with exit code {code}"),
        "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
}

/// Close code 1000: clients (client-go) treat any other close as an error.
fn normal_closure() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

async fn read_some<R: AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Whether the container's process has become its command (its setup as `__container` done),
/// so exec enters the finished container rather than one being built.
fn container_started(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.split(|b| *b == 0).any(|a| a == b"__container"))
}

/// One exec: run the command in `target` and relay it over `ws` until it exits.
pub(crate) async fn session<S>(
    node: Arc<Node>,
    mut ws: WebSocketStream<S>,
    v5: bool,
    target: RunningContainer,
    opts: crate::api::exec::ExecOptions,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let id = format!("{:016x}", rand::random::<u64>());
    let spec_path = target.pod_dir.join(format!("exec-{id}.json"));
    let error_file = target.pod_dir.join(format!("exec-{id}.err"));
    let spec = ExecSpec {
        pid: target.pid,
        working_dir: target.working_dir.clone(),
        env: target.env.clone(),
        argv: opts.command.clone(),
        error_file: error_file.clone(),
    };
    let finish = |code: i32, error: Option<String>| exit_status(code, error.as_deref());
    for _ in 0..100 {
        if container_started(target.pid) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Root-only: the environment may carry Secret values.
    let written = serde_json::to_vec(&spec).map_err(std::io::Error::other).and_then(|bytes| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&spec_path)?;
        f.write_all(&bytes)
    });
    let pipe = |on: bool| if on { std::process::Stdio::piped() } else { std::process::Stdio::null() };
    let child = written.and_then(|_| {
        tokio::process::Command::new(&node.exe)
            .arg("__exec")
            .arg(format!("@{}", spec_path.display()))
            .stdin(pipe(opts.stdin))
            .stdout(pipe(opts.stdout))
            .stderr(pipe(opts.stderr))
            .kill_on_drop(true)
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let st = finish(0, Some(format!("starting the exec process: {e}")));
            let _ = ws.send(frame(3, &serde_json::to_vec(&st).unwrap_or_default())).await;
            let _ = ws.close(Some(normal_closure())).await;
            let _ = std::fs::remove_file(&spec_path);
            return;
        }
    };
    // An empty frame on the lowest writable channel tells the client the streams are ready.
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    if ws.send(frame(first, &[])).await.is_err() {
        return;
    }
    let (mut stdin, mut stdout, mut stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut exit = None;
    let client_gone = loop {
        if stdout.is_none() && stderr.is_none() && exit.is_some() {
            break false;
        }
        tokio::select! {
            r = read_some(&mut stdout, &mut out_buf) => match r {
                Ok(n) if n > 0 => if ws.send(frame(1, &out_buf[..n])).await.is_err() { break true },
                _ => stdout = None,
            },
            r = read_some(&mut stderr, &mut err_buf) => match r {
                Ok(n) if n > 0 => if ws.send(frame(2, &err_buf[..n])).await.is_err() { break true },
                _ => stderr = None,
            },
            st = child.wait(), if exit.is_none() => {
                exit = Some(st.map(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                }).unwrap_or(128));
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    0 => {
                        if let Some(w) = stdin.as_mut()
                            && w.write_all(&b[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    // v5: the client closed one of its streams; only stdin is the client's.
                    255 if v5 && b.len() == 2 && b[1] == 0 => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break true,
                Some(Ok(_)) => {}
            },
        }
    };
    if client_gone {
        let _ = child.kill().await;
    } else {
        let error = std::fs::read_to_string(&error_file).ok().filter(|e| !e.is_empty());
        let st = finish(exit.unwrap_or(128), error);
        let _ = ws.send(frame(3, &serde_json::to_vec(&st).unwrap_or_default())).await;
        let _ = ws.close(Some(normal_closure())).await;
    }
    let _ = std::fs::remove_file(&spec_path);
    let _ = std::fs::remove_file(&error_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_the_kubelets() {
        assert_eq!(exit_status(0, None), json!({"metadata": {}, "status": "Success"}));
        let s = exit_status(3, None);
        assert_eq!(
            (s["reason"].as_str(), s["details"]["causes"][0]["reason"].as_str()),
            (Some("NonZeroExitCode"), Some("ExitCode"))
        );
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(126, Some("boom"))["reason"], "InternalError");
    }
}
