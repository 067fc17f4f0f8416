//! One pod's life on the node: volumes, network, containers, restarts, status, teardown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::container::{ContainerSpec, DEFAULT_PATH, MountSpec};
use super::{ImageKind, Node, classify_image, finish_delete};

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Clone, Debug)]
enum CState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, started_at: String, finished_at: String },
}

impl CState {
    fn to_json(&self) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({ "waiting": w })
            }
            CState::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
            CState::Terminated { exit_code, reason, started_at, finished_at } => json!({ "terminated": {
                "exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at,
            }}),
        }
    }
}

#[derive(Clone, Debug)]
struct CStatus {
    name: String,
    image: String,
    state: CState,
    last: Option<CState>,
    restarts: i32,
}

impl CStatus {
    fn new(c: &Container, reason: &str) -> CStatus {
        CStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: CState::Waiting { reason: reason.into(), message: None },
            last: None,
            restarts: 0,
        }
    }
    fn running(&self) -> bool {
        matches!(self.state, CState::Running { .. })
    }
    fn to_json(&self, pod_uid: &str) -> Value {
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": format!("lab://{}", self.image),
            "containerID": format!("lab://{}/{}", pod_uid, self.name),
            "ready": self.running(), "started": self.running(), "restartCount": self.restarts,
            "state": self.state.to_json(),
            "lastState": self.last.as_ref().map(CState::to_json).unwrap_or_else(|| json!({})),
        });
        if matches!(self.state, CState::Waiting { .. }) && self.restarts == 0 {
            v.as_object_mut().expect("object").remove("containerID");
        }
        v
    }
}

struct PodState {
    ip: Option<String>,
    start_time: String,
    init: Vec<CStatus>,
    main: Vec<CStatus>,
    /// Init containers all done (or none).
    initialized: bool,
    /// The pod failed for good (init container failed with restartPolicy Never).
    failed: bool,
}

impl PodState {
    fn phase(&self) -> &'static str {
        if self.failed {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        let all_terminated = self.main.iter().all(|c| matches!(c.state, CState::Terminated { .. }));
        if all_terminated && !self.main.is_empty() {
            let ok = self.main.iter().all(|c| matches!(c.state, CState::Terminated { exit_code: 0, .. }));
            return if ok { "Succeeded" } else { "Failed" };
        }
        let any_started =
            self.main.iter().any(|c| c.running() || c.restarts > 0 || matches!(c.state, CState::Terminated { .. }));
        if any_started { "Running" } else { "Pending" }
    }

    fn to_json(&self, uid: &str) -> Value {
        let phase = self.phase();
        let ready = phase == "Running" && self.main.iter().all(CStatus::running);
        let t = now();
        let cond = |ty: &str, ok: bool| json!({ "type": ty, "status": if ok { "True" } else { "False" }, "lastTransitionTime": t });
        let mut status = json!({
            "phase": phase,
            "hostIP": "10.210.0.254",
            "startTime": self.start_time,
            "conditions": [cond("PodScheduled", true), cond("Initialized", self.initialized), cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": self.main.iter().map(|c| c.to_json(uid)).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(self.init.iter().map(|c| c.to_json(uid)).collect::<Vec<_>>());
        }
        if let Some(ip) = &self.ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        status
    }
}

struct Ctx {
    node: Arc<Node>,
    ns: String,
    name: String,
    uid: String,
    api: Api<Pod>,
    state: Mutex<PodState>,
    dir: PathBuf,
    log_dir: PathBuf,
}

impl Ctx {
    /// Push the current status (a few attempts; at lab shutdown the API server may already
    /// be gone, so each attempt is bounded).
    async fn report(&self) {
        let st = self.state.lock().await;
        // Bound to this pod's uid, as a kubelet's status writes are: a late update from a
        // deleted pod must never land on a new pod that reuses the name (409 instead).
        let body = json!({ "metadata": {"uid": self.uid}, "status": st.to_json(&self.uid) });
        let (pp, merge) = (PatchParams::default(), Patch::Merge(&body));
        for attempt in 0..3 {
            let patch = self.api.patch_status(&self.name, &pp, &merge);
            match tokio::time::timeout(Duration::from_secs(3), patch).await {
                Ok(Ok(_)) => return,
                // The pod is gone, or the name now belongs to a new pod: nothing to report.
                Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => return,
                Ok(Err(e)) => {
                    tracing::debug!(pod = %format!("{}/{}", self.ns, self.name), attempt, error = %e, "status update failed")
                }
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn set(&self, init: bool, idx: usize, f: impl FnOnce(&mut CStatus)) {
        {
            let mut st = self.state.lock().await;
            let list = if init { &mut st.init } else { &mut st.main };
            f(&mut list[idx]);
        }
        self.report().await;
    }
}

/// The life of one pod until it is deleted or the node stops.
pub(crate) async fn run_pod(node: Arc<Node>, pod: Pod, updates: watch::Receiver<Pod>, stop: CancellationToken) {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let sim = &node.cfg.simulated_images;
    let kinds: Vec<ImageKind> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| classify_image(c.image.as_deref().unwrap_or(""), sim))
        .collect();
    let ctx = Arc::new(Ctx {
        api: Api::namespaced(node.client.clone(), &ns),
        dir: node.cfg.state_dir.join("pods").join(&uid),
        log_dir: node.cfg.state_dir.join("pod-logs").join(format!("{ns}_{name}_{uid}")),
        state: Mutex::new(PodState {
            ip: None,
            start_time: now(),
            init: spec.init_containers.iter().flatten().map(|c| CStatus::new(c, "PodInitializing")).collect(),
            main: spec.containers.iter().map(|c| CStatus::new(c, "ContainerCreating")).collect(),
            initialized: spec.init_containers.as_ref().is_none_or(|v| v.is_empty()),
            failed: false,
        }),
        node,
        ns,
        name,
        uid,
    });
    let span = tracing::info_span!("pod", pod = %format!("{}/{}", ctx.ns, ctx.name), cluster = %ctx.node.cfg.cluster);
    let _ = tracing::Instrument::instrument(drive(ctx.clone(), pod, kinds, stop.clone()), span).await;
    // Deleted (or the node stops): if the API object is being deleted, finish that.
    let latest = updates.borrow().clone();
    if latest.metadata.deletion_timestamp.is_some() {
        finish_delete(&ctx.node.client, &latest).await;
    }
}

async fn drive(ctx: Arc<Ctx>, pod: Pod, kinds: Vec<ImageKind>, stop: CancellationToken) {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    let n_init = inits.len();
    // Unknown images: the node cannot pull; the pod stays Pending until deleted.
    if kinds.contains(&ImageKind::Unknown) {
        {
            let mut st = ctx.state.lock().await;
            for (i, k) in kinds.iter().enumerate() {
                let c = if i < n_init { &mut st.init[i] } else { &mut st.main[i - n_init] };
                if *k == ImageKind::Unknown {
                    c.state = CState::Waiting {
                        reason: "ErrImagePull".into(),
                        message: Some(format!(
                            "the lab cannot pull image {:?}: only the transfer image and simulated images run here",
                            c.image
                        )),
                    };
                }
            }
        }
        ctx.report().await;
        stop.cancelled().await;
        return;
    }
    // A slow pull (a large image, a far registry): the containers stay ContainerCreating.
    if let Some(delay) = pull_delay(&ctx.node.client, &spec).await {
        tracing::info!(ms = delay.as_millis() as u64, "image pull delay: pulling");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let needs_processes = kinds.iter().any(|k| matches!(k, ImageKind::Transfer | ImageKind::Mtcd));
    let Some(n) = ctx.node.ips.take() else {
        tracing::error!("no pod address left");
        stop.cancelled().await;
        return;
    };
    let cluster = ctx.node.cfg.cluster.clone();
    let ip = match crate::netns::pod_ip(&cluster, n) {
        Ok(ip) => ip,
        Err(e) => {
            tracing::error!(error = %e, "pod address");
            ctx.node.ips.give(n);
            stop.cancelled().await;
            return;
        }
    };
    ctx.state.lock().await.ip = Some(ip.to_string());
    if !needs_processes {
        {
            let mut st = ctx.state.lock().await;
            st.initialized = true;
            let t = now();
            for c in st.init.iter_mut() {
                c.state = CState::Terminated {
                    exit_code: 0,
                    reason: "Completed".into(),
                    started_at: t.clone(),
                    finished_at: t.clone(),
                };
            }
            for c in st.main.iter_mut() {
                c.state = CState::Running { started_at: t.clone() };
            }
        }
        ctx.report().await;
        stop.cancelled().await;
        ctx.node.ips.give(n);
        return;
    }
    run_processes(&ctx, &pod, &kinds, ip, &stop).await;
    ctx.node.ips.give(n);
    let _ = std::fs::remove_dir_all(&ctx.dir);
}

/// The ConfigMap that makes image pulls slow: `data.pulls`, lines of `<image> <ms>`, holds a
/// pod using that image in ContainerCreating that long, as pulling a large image from a far
/// registry does. Tests use it to give a pod's start a length.
pub const PULL_DELAY: (&str, &str) = ("kube-system", "mtcd-lab-image-pull-delay");

/// The longest pull delay of the pod's images, if any is configured.
async fn pull_delay(client: &kube::Client, spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<Duration> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), PULL_DELAY.0);
    let data = cms.get_opt(PULL_DELAY.1).await.ok().flatten()?.data?;
    let delays: BTreeMap<&str, u64> = data
        .get("pulls")?
        .lines()
        .filter_map(|l| {
            let (image, ms) = l.trim().split_once(' ')?;
            Some((image, ms.trim().parse().ok()?))
        })
        .collect();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| delays.get(c.image.as_deref()?).copied())
        .max()
        .map(Duration::from_millis)
}

async fn run_processes(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    kinds: &[ImageKind],
    ip: std::net::Ipv4Addr,
    stop: &CancellationToken,
) {
    let spec = pod.spec.clone().unwrap_or_default();
    let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    let n_init = inits.len();
    // Volumes and env can wait on other objects (an unbound PVC, a Secret created later).
    let (volumes, envs) = loop {
        let r = async {
            let mut volumes = resolve_volumes(ctx, pod).await?;
            if kinds.contains(&ImageKind::Mtcd) && spec.automount_service_account_token != Some(false) {
                volumes.insert(SA_VOLUME.into(), project_token(ctx, pod).await?);
            }
            let mut envs = Vec::new();
            for c in inits.iter().chain(spec.containers.iter()) {
                envs.push(build_env(ctx, pod, c, &ip.to_string()).await?);
            }
            Ok::<_, String>((volumes, envs))
        }
        .await;
        match r {
            Ok(v) => break v,
            Err(message) => {
                {
                    let mut guard = ctx.state.lock().await;
                    let st = &mut *guard;
                    for c in st.main.iter_mut().chain(st.init.iter_mut()) {
                        if let CState::Waiting { message: m, .. } = &mut c.state {
                            *m = Some(message.clone());
                        }
                    }
                }
                ctx.report().await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let network = ctx.node.cfg.network.clone();
    let (cl, uid) = (ctx.node.cfg.cluster.clone(), ctx.uid.clone());
    let pod_net = match tokio::task::spawn_blocking(move || network.add_pod(&cl, &uid, ip)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "creating the pod network");
            fail_all(ctx, &format!("creating the pod network: {e}")).await;
            stop.cancelled().await;
            return;
        }
        Err(_) => return,
    };
    let _ = std::fs::create_dir_all(&ctx.log_dir);
    let tmp = ctx.dir.join("tmp");
    let _ = std::fs::create_dir_all(&tmp);
    let _ = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).clamp(0, 5) as u64);
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let make_spec = |i: usize, c: &Container| -> ContainerSpec {
        let env = envs[i].clone();
        let lookup: BTreeMap<String, String> = env.iter().cloned().collect();
        let argv: Vec<String> =
            c.command.iter().flatten().chain(c.args.iter().flatten()).map(|a| expand(a, &lookup)).collect();
        let mut spec = ContainerSpec {
            netns: Some(crate::netns::netns_path(&pod_net.name)),
            root: ctx.dir.join(format!("root-{}", c.name)),
            tmp: Some(tmp.clone()),
            hostname: Some(ctx.name.chars().take(63).collect()),
            hosts_file: Some(
                crate::router::shared_hosts_file(&ctx.node.cfg.network.prefix)
                    .unwrap_or_else(|| ctx.node.hosts_file.clone()),
            )
            .filter(|p| p.exists()),
            mounts: c
                .volume_mounts
                .iter()
                .flatten()
                .filter_map(|m| {
                    let base = volumes.get(&m.name)?;
                    let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                        Some(sp) => base.join(sp),
                        None => base.clone(),
                    };
                    Some(MountSpec { source, target: m.mount_path.clone(), read_only: m.read_only.unwrap_or(false) })
                })
                .collect(),
            working_dir: c.working_dir.clone(),
            env,
            argv,
            private_run: false,
            identity: super::security::identity(pod, c),
        };
        // mtcd's own image: the binary, and the token where every pod has it.
        if classify_image(c.image.as_deref().unwrap_or(""), &ctx.node.cfg.simulated_images) == ImageKind::Mtcd {
            if let Some(bin) = super::mtcd_binary() {
                spec.mounts.push(MountSpec { source: bin, target: "/usr/local/bin/mtcd".into(), read_only: true });
            }
            if let Some(dir) = volumes.get(SA_VOLUME) {
                spec.mounts.push(MountSpec { source: dir.clone(), target: SA_MOUNT.into(), read_only: true });
                spec.private_run = true;
            }
        }
        spec
    };
    // Init containers, in order; each must succeed.
    let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
    for (i, c) in inits.iter().enumerate() {
        if kinds[i] == ImageKind::Simulated {
            ctx.set(true, i, |s| {
                s.state = CState::Terminated {
                    exit_code: 0,
                    reason: "Completed".into(),
                    started_at: now(),
                    finished_at: now(),
                }
            })
            .await;
            continue;
        }
        let code = supervise(ctx.clone(), true, i, make_spec(i, c), init_policy.to_string(), grace, stop.clone()).await;
        if stop.is_cancelled() {
            break;
        }
        if code != Some(0) {
            ctx.state.lock().await.failed = true;
            ctx.report().await;
            stop.cancelled().await;
            break;
        }
    }
    if !stop.is_cancelled() {
        ctx.state.lock().await.initialized = true;
        let mut tasks = tokio::task::JoinSet::new();
        for (j, c) in spec.containers.iter().enumerate() {
            if kinds[n_init + j] == ImageKind::Simulated {
                ctx.set(false, j, |s| s.state = CState::Running { started_at: now() }).await;
                continue;
            }
            tasks.spawn(supervise(
                ctx.clone(),
                false,
                j,
                make_spec(n_init + j, c),
                policy.clone(),
                grace,
                stop.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
        // Terminal: keep the pod (and its status) until it is deleted; its processes are gone.
    }
    let network = ctx.node.cfg.network.clone();
    let name = pod_net.name.clone();
    let _ = tokio::task::spawn_blocking(move || network.remove_pod_named(&name)).await;
    if !stop.is_cancelled() {
        stop.cancelled().await;
    }
}

async fn fail_all(ctx: &Ctx, message: &str) {
    {
        let mut st = ctx.state.lock().await;
        for c in st.main.iter_mut() {
            c.state = CState::Waiting { reason: "CreateContainerError".into(), message: Some(message.to_string()) };
        }
    }
    ctx.report().await;
}

/// Run one container with its restart policy; returns its last exit code (None if stopped
/// before it ever ran).
async fn supervise(
    ctx: Arc<Ctx>,
    init: bool,
    idx: usize,
    spec: ContainerSpec,
    policy: String,
    grace: Duration,
    stop: CancellationToken,
) -> Option<i32> {
    let name = if init {
        ctx.state.lock().await.init[idx].name.clone()
    } else {
        ctx.state.lock().await.main[idx].name.clone()
    };
    let log_path = ctx.log_dir.join(format!("{name}.log"));
    // The spec carries env values from Secrets: pass it as a root-only file, not on the
    // command line where `ps` would show it.
    let spec_path = ctx.dir.join(format!("{}-{name}.json", if init { "init" } else { "container" }));
    let written = serde_json::to_vec(&spec).map_err(std::io::Error::other).and_then(|bytes| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&spec_path)?;
        f.write_all(&bytes)
    });
    if let Err(e) = written {
        let msg = format!("writing container spec {}: {e}", spec_path.display());
        ctx.set(init, idx, |s| s.state = CState::Waiting { reason: "CreateContainerError".into(), message: Some(msg) })
            .await;
        return None;
    }
    let json = format!("@{}", spec_path.display());
    let mut last = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, path = %log_path.display(), "opening container log");
                return last;
            }
        };
        let child = tokio::process::Command::new(&ctx.node.exe)
            .arg("__container")
            .arg(&json)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("starting {}: {e}", ctx.node.exe.display());
                ctx.set(init, idx, |s| {
                    s.state = CState::Waiting { reason: "CreateContainerError".into(), message: Some(msg) }
                })
                .await;
                return last;
            }
        };
        // Known to pods/exec while it runs (the guard forgets it when this iteration ends).
        let _exec_target = child.id().map(|pid| {
            super::exec::Registration::new(
                &ctx.node,
                (ctx.uid.clone(), name.clone()),
                super::exec::RunningContainer {
                    pid,
                    namespace: ctx.ns.clone(),
                    pod: ctx.name.clone(),
                    env: spec.env.clone(),
                    working_dir: spec.working_dir.clone(),
                    pod_dir: ctx.dir.clone(),
                },
            )
        });
        let started = now();
        ctx.set(init, idx, |s| s.state = CState::Running { started_at: started.clone() }).await;
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = stop.cancelled() => {
                terminate(&mut child, grace).await;
                let finished = now();
                ctx.set(init, idx, |s| s.state = CState::Terminated { exit_code: 137, reason: "Error".into(), started_at: started.clone(), finished_at: finished }).await;
                return last;
            }
        };
        let code = status.map(exit_code).unwrap_or(128);
        last = Some(code);
        let terminated = CState::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed".into() } else { "Error".into() },
            started_at: started,
            finished_at: now(),
        };
        let restart = match policy.as_str() {
            "Always" => true,
            "OnFailure" => code != 0,
            _ => false,
        };
        if !restart {
            ctx.set(init, idx, |s| s.state = terminated).await;
            return last;
        }
        ctx.set(init, idx, |s| {
            s.last = Some(terminated);
            s.restarts += 1;
            s.state = CState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!("back-off {}s restarting failed container", backoff.as_secs())),
            };
        })
        .await;
        tokio::select! {
            _ = stop.cancelled() => return last,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// SIGTERM, then SIGKILL after the grace period (capped at 5 s by the caller).
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// `$(VAR)` expansion as the kubelet does for command, args and env values; `$$(VAR)` escapes.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
            && let Some(v) = env.get(&t[..end])
        {
            out.push_str(v);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The volume name and mount path of the projected service-account token.
const SA_VOLUME: &str = "kube-api-access";
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The service-account token projection a kubelet mounts into pods: `token` (a bound token
/// from the TokenRequest API for the pod's `serviceAccountName`, one hour), `ca.crt` (the
/// lab CA) and `namespace`, in a per-pod directory. An account that does not exist yet is
/// an error the caller retries, as a kubelet would.
async fn project_token(ctx: &Ctx, pod: &Pod) -> Result<PathBuf, String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.node.client.clone(), &ctx.ns);
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}}))
        .map_err(|e| format!("token request: {e}"))?;
    let token = api
        .create_token_request(&sa, &kube::api::PostParams::default(), &request)
        .await
        .map_err(|e| format!("serviceaccount {sa:?}: token request: {e}"))?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("serviceaccount {sa:?}: the token request returned no token"))?;
    let lab_dir = ctx.node.cfg.state_dir.parent().unwrap_or(&ctx.node.cfg.state_dir);
    let ca = std::fs::read(lab_dir.join("ca.crt")).map_err(|e| format!("reading the lab CA: {e}"))?;
    let dir = ctx.dir.join("volumes").join(SA_VOLUME);
    let write = |name: &str, data: &[u8]| {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(name), data))
            .map_err(|e| format!("writing {}: {e}", dir.join(name).display()))
    };
    write("token", token.as_bytes())?;
    write("ca.crt", &ca)?;
    write("namespace", ctx.ns.as_bytes())?;
    Ok(dir)
}

async fn resolve_volumes(ctx: &Ctx, pod: &Pod) -> Result<BTreeMap<String, PathBuf>, String> {
    let client = ctx.node.client.clone();
    let mut out = BTreeMap::new();
    for v in pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default() {
        let dir = ctx.dir.join("volumes").join(&v.name);
        let path = if let Some(pvc) = &v.persistent_volume_claim {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ctx.ns);
            let claim = claims
                .get_opt(&pvc.claim_name)
                .await
                .map_err(|e| format!("reading persistentvolumeclaim {:?}: {e}", pvc.claim_name))?
                .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", pvc.claim_name))?;
            let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            let pv_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
            let Some(pv_name) = pv_name.filter(|_| bound) else {
                return Err(format!("pod has unbound immediate PersistentVolumeClaims ({:?})", pvc.claim_name));
            };
            let pvs: Api<PersistentVolume> = Api::all(client.clone());
            let pv = pvs
                .get_opt(&pv_name)
                .await
                .map_err(|e| format!("reading persistentvolume {pv_name:?}: {e}"))?
                .ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
            let spec = pv.spec.unwrap_or_default();
            let p = spec
                .host_path
                .map(|h| h.path)
                .or(spec.local.map(|l| l.path))
                .ok_or_else(|| format!("persistentvolume {pv_name:?} has neither spec.hostPath nor spec.local"))?;
            let p = PathBuf::from(p);
            std::fs::create_dir_all(&p)
                .map_err(|e| format!("persistentvolume {pv_name:?} directory {}: {e}", p.display()))?;
            // The kubelet gives a writable volume to the pod's fsGroup.
            let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
            if let Some(g) = sc.and_then(|s| s.fs_group).filter(|_| pvc.read_only != Some(true)) {
                let on_mismatch = sc.and_then(|s| s.fs_group_change_policy.as_deref()) == Some("OnRootMismatch");
                super::security::apply_fs_group(&p, g as u32, on_mismatch)
                    .map_err(|e| format!("applying fsGroup {g} to persistentvolume {pv_name:?}: {e}"))?;
            }
            p
        } else if let Some(cm) = &v.config_map {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ctx.ns);
            let obj = api.get_opt(&cm.name).await.map_err(|e| format!("reading configmap {:?}: {e}", cm.name))?;
            let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            match obj {
                Some(o) => {
                    data.extend(o.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                    data.extend(o.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                }
                None if cm.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", cm.name)),
            }
            materialise(&dir, &data, cm.items.as_deref(), cm.default_mode, &format!("configmap {:?}", cm.name))?;
            dir
        } else if let Some(sec) = &v.secret {
            let sname = sec.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(client.clone(), &ctx.ns);
            let obj = api.get_opt(&sname).await.map_err(|e| format!("reading secret {sname:?}: {e}"))?;
            let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            match obj {
                Some(o) => {
                    data.extend(o.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                    data.extend(o.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                }
                None if sec.optional == Some(true) => {}
                None => return Err(format!("secret {sname:?} not found")),
            }
            materialise(&dir, &data, sec.items.as_deref(), sec.default_mode, &format!("secret {sname:?}"))?;
            dir
        } else if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else {
            // emptyDir, and volume types the lab does not model (projected tokens, downward API).
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {:?}: {e}", v.name))?;
            dir
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Write ConfigMap/Secret keys as files, honouring items (key → path, mode) and defaultMode.
fn materialise(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{what}: {e}"))?;
    let default_mode = default_mode.unwrap_or(0o644) as u32;
    let files: Vec<(String, &Vec<u8>, u32)> = match items {
        Some(items) => items
            .iter()
            .map(|it| {
                data.get(&it.key)
                    .map(|b| (it.path.clone(), b, it.mode.map(|m| m as u32).unwrap_or(default_mode)))
                    .ok_or_else(|| format!("{what} has no key {:?}", it.key))
            })
            .collect::<Result<_, _>>()?,
        None => data.iter().map(|(k, b)| (k.clone(), b, default_mode)).collect(),
    };
    for (rel, bytes, mode) in files {
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            return Err(format!("{what}: item path {rel:?} must be relative without '..'"));
        }
        let p = dir.join(&rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{what}: {e}"))?;
        }
        std::fs::write(&p, bytes).map_err(|e| format!("{what}: writing {rel}: {e}"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

async fn build_env(ctx: &Ctx, pod: &Pod, c: &Container, pod_ip: &str) -> Result<Vec<(String, String)>, String> {
    let client = ctx.node.client.clone();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ctx.ns);
    let secrets: Api<Secret> = Api::namespaced(client, &ctx.ns);
    let mut env: IndexMap<String, String> = IndexMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOSTNAME".into(), ctx.name.clone());
    env.insert("HOME".into(), "/root".into());
    // What the kubelet adds for the `kubernetes` Service; in the lab, the API server's
    // forwarder on the bridge (services::start).
    if let Some(a) = ctx.node.cfg.api_service {
        env.insert("KUBERNETES_SERVICE_HOST".into(), a.ip().to_string());
        env.insert("KUBERNETES_SERVICE_PORT".into(), a.port().to_string());
        env.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), a.port().to_string());
        env.insert("KUBERNETES_PORT".into(), format!("tcp://{a}"));
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match cms.get_opt(&r.name).await.map_err(|e| format!("reading configmap {:?}: {e}", r.name))? {
                Some(o) => env.extend(o.data.unwrap_or_default().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| format!("reading secret {:?}: {e}", r.name))? {
                Some(o) => env.extend(
                    o.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let lookup: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Some(expand(v, &lookup))
        } else if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let obj = cms.get_opt(&r.name).await.map_err(|e| format!("reading configmap {:?}: {e}", r.name))?;
                match obj.and_then(|o| o.data).and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => Some(v),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(format!("env {}: configmap {:?} key {:?} not found", e.name, r.name, r.key));
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                let obj = secrets.get_opt(&r.name).await.map_err(|e| format!("reading secret {:?}: {e}", r.name))?;
                match obj.and_then(|o| o.data).and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => Some(String::from_utf8_lossy(&v.0).into_owned()),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(format!("env {}: secret {:?} key {:?} not found", e.name, r.name, r.key));
                    }
                }
            } else {
                src.field_ref.as_ref().map(|f| field_value(pod, &f.field_path, pod_ip))
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.insert(e.name.clone(), v);
        }
    }
    Ok(env.into_iter().collect())
}

fn field_value(pod: &Pod, path: &str, pod_ip: &str) -> String {
    let m = &pod.metadata;
    let pick = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|l| l.get(key).cloned()).unwrap_or_default()
    };
    match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => "10.210.0.254".into(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "lab-node".into()),
        "spec.serviceAccountName" => {
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into())
        }
        p if p.starts_with("metadata.labels['") => {
            pick(&m.labels, p.trim_start_matches("metadata.labels['").trim_end_matches("']"))
        }
        p if p.starts_with("metadata.annotations['") => {
            pick(&m.annotations, p.trim_start_matches("metadata.annotations['").trim_end_matches("']"))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_dependent_variables_like_the_kubelet() {
        let env: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)/$(B)/$$(A)/$", &env), "x/$(B)/$(A)/$");
    }

    #[test]
    fn materialises_items_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, Vec<u8>> =
            [("tls.crt".to_string(), b"CERT".to_vec()), ("other".to_string(), b"x".to_vec())].into();
        let items = vec![KeyToPath {
            key: "tls.crt".into(),
            path: "certs/server.crt".into(),
            mode: Some(0o400),
            ..Default::default()
        }];
        materialise(dir.path(), &data, Some(&items), Some(0o600), "secret \"s\"").unwrap();
        let p = dir.path().join("certs/server.crt");
        assert_eq!(std::fs::read(&p).unwrap(), b"CERT");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o400);
        assert!(!dir.path().join("other").exists());
        materialise(dir.path(), &data, None, Some(0o600), "secret \"s\"").unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("other")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
