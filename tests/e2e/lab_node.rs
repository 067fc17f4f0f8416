//! The lab's node half: network namespaces, the registry launcher, and (once the lab runs)
//! a real rsync + stunnel transfer between pods of the two clusters through a Route.

use std::time::Duration;

use mtcd_lab::netns::{LabNetwork, cleanup_prefix, list_prefix, netns_path, netns_pids, pod_ip};

fn test_prefix(tag: &str) -> String {
    format!("mtcd{tag}{:06x}-", rand_suffix())
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
}

#[test]
fn cleanup_kills_pod_processes_and_removes_every_namespace() {
    let prefix = test_prefix("n");
    let net = LabNetwork::create(&prefix).expect("create lab network");
    let a = net.add_pod("src", "11111111-aaaa", pod_ip("src", 20).unwrap()).unwrap();
    let b = net.add_pod("dst", "22222222-bbbb", pod_ip("dst", 20).unwrap()).unwrap();
    assert_eq!(list_prefix(&prefix).len(), 3);
    // A long-running process inside a pod namespace, as a container would be.
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &a.name, "sleep", "300"])
        .spawn()
        .expect("start a process in the pod namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while netns_pids(&netns_path(&a.name)).is_empty() {
        assert!(std::time::Instant::now() < deadline, "process never entered the namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The two pods reach each other over the bridge.
    let ping = std::process::Command::new("ip")
        .args(["netns", "exec", &b.name, "bash", "-c", &format!("exec 3<>/dev/tcp/{}/9 && echo open || true", a.ip)])
        .output()
        .unwrap();
    // Nothing listens on port 9: "connection refused" proves the packet got there (no timeout).
    assert!(String::from_utf8_lossy(&ping.stderr).contains("refused"), "{ping:?}");

    cleanup_prefix(&prefix).expect("cleanup");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the pod process was not killed");
    assert!(list_prefix(&prefix).is_empty(), "namespaces left: {:?}", list_prefix(&prefix));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&prefix), "mounts left behind");
    // Idempotent, and fine when nothing exists.
    cleanup_prefix(&prefix).expect("second cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_starts_answers_v2_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (reg, mut child) = mtcd_lab::registry::start(dir.path()).await.expect("start registry");
    let took = started.elapsed();
    assert!(reg.address.starts_with("127.0.0.1:"), "{}", reg.address);
    let addr = reg.address.clone();
    assert!(tokio::task::spawn_blocking(move || mtcd_lab::registry::answers_v2(&addr)).await.unwrap());
    eprintln!("registry ready in {took:?}");
    child.kill().await.unwrap();
    let addr = reg.address.clone();
    assert!(!tokio::task::spawn_blocking(move || mtcd_lab::registry::answers_v2(&addr)).await.unwrap());
}

/// The headline scenario, written against two API clients so that it runs on any lab:
/// an rsync daemon + stunnel server pod in the destination receives a directory from an
/// rsync + stunnel client pod in the source, through a passthrough Route whose host the
/// router generates, with mutual TLS from freshly generated certificates. Returns the
/// client pod's log (as served by `pods/log`).
pub(crate) mod transfer {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::{
        ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    };
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    use serde_json::{Value, json};

    pub const IMAGE: &str = "quay.io/konveyor/rsync-transfer:latest";

    async fn create<K>(client: &kube::Client, ns: &str, v: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let obj: K = serde_json::from_value(v).expect("valid object");
        Api::<K>::namespaced(client.clone(), ns).create(&PostParams::default(), &obj).await.expect("create object")
    }

    async fn namespace(client: &kube::Client, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    }

    async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory of a bound PVC, read from its PV like the node agent does.
    pub async fn pvc_dir(client: &kube::Client, ns: &str, name: &str) -> PathBuf {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let pv_name =
            wait(&format!("persistentvolumeclaim {ns}/{name} to be Bound"), Duration::from_secs(20), || async {
                let c = claims.get(name).await.ok()?;
                (c.status?.phase.as_deref() == Some("Bound")).then_some(())?;
                c.spec?.volume_name
            })
            .await;
        let pv = Api::<PersistentVolume>::all(client.clone()).get(&pv_name).await.expect("bound PV");
        let spec = pv.spec.unwrap();
        PathBuf::from(spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).expect("PV path"))
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA, a server certificate for `host`, and a client certificate.
    fn certs(dir: &Path, host: &str) -> BTreeMap<&'static str, String> {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut a =
            vec!["req", "-x509", "-days", "2", "-subj", "/CN=mtcd-test-ca", "-keyout", "ca.key", "-out", "ca.crt"];
        a.extend(ec);
        openssl(dir, &a);
        for (name, cn) in [("server", host), ("client", "rsync-client")] {
            let subj = format!("/CN={cn}");
            let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
            let mut a = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
            a.extend(ec);
            openssl(dir, &a);
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(&ext, format!("subjectAltName=DNS:{cn}\n")).unwrap();
            let ext = ext.display().to_string();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
        ["ca.crt", "server.crt", "server.key", "client.crt", "client.key"]
            .into_iter()
            .map(|f| (f, std::fs::read_to_string(dir.join(f)).unwrap()))
            .collect()
    }

    /// Fill a directory with a small tree: nested dirs, an empty file, a 3 MiB file, a
    /// symlink and an executable.
    pub fn write_tree(root: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello from the source cluster\n").unwrap();
        std::fs::write(root.join("a/empty"), b"").unwrap();
        let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(root.join("a/b/c/big.bin"), big).unwrap();
        std::fs::write(root.join("a/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(root.join("a/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../hello.txt", root.join("a/link")).unwrap();
    }

    /// Every entry under `root`: relative path → (mode, content or link target).
    pub fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let content = if m.file_type().is_symlink() {
                    std::fs::read_link(&p).unwrap().display().to_string().into_bytes()
                } else if m.is_dir() {
                    stack.push(p.clone());
                    Vec::new()
                } else {
                    std::fs::read(&p).unwrap()
                };
                out.insert(rel, (m.permissions().mode(), content));
            }
        }
        out
    }

    /// Run the scenario; `ns` must not exist yet in either cluster.
    pub async fn run(src: &kube::Client, dst: &kube::Client, ns: &str) -> String {
        namespace(src, ns).await;
        namespace(dst, ns).await;
        let pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let _: PersistentVolumeClaim = create(src, ns, pvc.clone()).await;
        let _: PersistentVolumeClaim = create(dst, ns, pvc).await;
        let src_dir = pvc_dir(src, ns, "data").await;
        let dst_dir = pvc_dir(dst, ns, "data").await;
        write_tree(&src_dir);

        // Destination: Service + passthrough Route first, so the router assigns the host.
        let _: Service = create(
            dst,
            ns,
            json!({"metadata": {"name": "rsync-server"}, "spec": {
            "selector": {"app": "rsync-server"}, "ports": [{"name": "stunnel", "port": 443, "targetPort": 8443}]}}),
        )
        .await;
        let route_ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("route.openshift.io", "v1", "Route"), "routes");
        let routes: Api<DynamicObject> = Api::namespaced_with(dst.clone(), ns, &route_ar);
        let route: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "rsync-server"},
            "spec": {"to": {"kind": "Service", "name": "rsync-server"}, "port": {"targetPort": "stunnel"}, "tls": {"termination": "passthrough"}},
        }))
        .unwrap();
        routes.create(&PostParams::default(), &route).await.expect("create route");
        let host = wait("the router to admit the route", Duration::from_secs(10), || async {
            let r = routes.get("rsync-server").await.ok()?;
            r.data.pointer("/status/ingress/0/host").and_then(Value::as_str).map(str::to_string)
        })
        .await;
        let admitted = routes.get("rsync-server").await.unwrap();
        assert_eq!(admitted.data.pointer("/spec/host").and_then(Value::as_str), Some(host.as_str()));
        let generated = admitted.metadata.annotations.as_ref().and_then(|a| a.get("openshift.io/host.generated"));
        assert_eq!(generated.map(String::as_str), Some("true"));

        let tmp = tempfile::tempdir().unwrap();
        let c = certs(tmp.path(), &host);
        let _: Secret = create(
            dst,
            ns,
            json!({"metadata": {"name": "rsync-server-tls"}, "stringData": {
            "server.crt": c["server.crt"], "server.key": c["server.key"], "ca.crt": c["ca.crt"]}}),
        )
        .await;
        let _: ConfigMap = create(dst, ns, json!({"metadata": {"name": "rsync-server"}, "data": {
            "rsyncd.conf": "port = 8873\naddress = 127.0.0.1\nuse chroot = no\nnumeric ids = yes\nuid = root\ngid = root\npid file = /tmp/rsyncd.pid\nmunge symlinks = no\n[data]\n  path = /mnt/data\n  read only = false\n",
            "stunnel.conf": "foreground = yes\npid =\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n[rsync]\naccept = 8443\nconnect = 127.0.0.1:8873\ncert = /etc/stunnel/certs/server.crt\nkey = /etc/stunnel/certs/server.key\nCAfile = /etc/stunnel/certs/ca.crt\nverify = 2\n",
        }})).await;
        let _: Pod = create(dst, ns, json!({"metadata": {"name": "rsync-server", "labels": {"app": "rsync-server"}}, "spec": {
            "containers": [
                {"name": "rsyncd", "image": IMAGE, "command": ["rsync", "--daemon", "--no-detach", "--config=/etc/rsyncd/rsyncd.conf"],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/rsyncd"}, {"name": "data", "mountPath": "/mnt/data"}]},
                {"name": "stunnel", "image": IMAGE, "command": ["stunnel", "/etc/stunnel/conf/stunnel.conf"],
                 "ports": [{"name": "stunnel", "containerPort": 8443}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/stunnel/conf"}, {"name": "certs", "mountPath": "/etc/stunnel/certs", "readOnly": true}]},
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "rsync-server"}},
                {"name": "certs", "secret": {"secretName": "rsync-server-tls", "defaultMode": 0o400}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            ]}})).await;
        let pods_dst: Api<Pod> = Api::namespaced(dst.clone(), ns);
        wait("the rsync server pod to run", Duration::from_secs(20), || async {
            let p = pods_dst.get("rsync-server").await.ok()?;
            let s = p.status?;
            (s.phase.as_deref() == Some("Running") && s.pod_ip.is_some()).then_some(())
        })
        .await;

        // Source: stunnel client + rsync, reading the PVC read-only.
        let _: Secret = create(
            src,
            ns,
            json!({"metadata": {"name": "rsync-client-tls"}, "stringData": {
            "client.crt": c["client.crt"], "client.key": c["client.key"], "ca.crt": c["ca.crt"]}}),
        )
        .await;
        let _: ConfigMap = create(src, ns, json!({"metadata": {"name": "stunnel-client"}, "data": {
            "stunnel.conf": format!("foreground = yes\npid =\nclient = yes\n[rsync]\naccept = 127.0.0.1:6443\nconnect = {host}:443\nsni = {host}\ncheckHost = {host}\ncert = /certs/client.crt\nkey = /certs/client.key\nCAfile = /certs/ca.crt\nverify = 2\n"),
        }})).await;
        // Two containers, as MTC's client pods: a stunnel sidecar that stops once the rsync
        // container leaves a marker in a shared emptyDir.
        let rsync = "for i in $(seq 1 50); do rsync -a --stats /data/ rsync://127.0.0.1:6443/data/ && rc=0 && break; rc=$?; sleep 0.2; done; \
            touch /signal/done; exit $rc";
        let stunnel = "stunnel /etc/stunnel/stunnel.conf & while [ ! -f /signal/done ]; do sleep 0.1; done; kill %1; wait; exit 0";
        let _: Pod = create(src, ns, json!({"metadata": {"name": "rsync-client"}, "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "rsync", "image": IMAGE, "command": ["bash", "-c", rsync],
                 "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "signal", "mountPath": "/signal"}]},
                {"name": "stunnel", "image": IMAGE, "command": ["bash", "-c", stunnel],
                 "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/stunnel"},
                    {"name": "certs", "mountPath": "/certs", "readOnly": true},
                    {"name": "signal", "mountPath": "/signal"}]},
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "config", "configMap": {"name": "stunnel-client"}},
                {"name": "certs", "secret": {"secretName": "rsync-client-tls", "defaultMode": 0o400}},
                {"name": "signal", "emptyDir": {}},
            ]}})).await;
        let pods_src: Api<Pod> = Api::namespaced(src.clone(), ns);
        let phase = wait("the rsync client pod to finish", Duration::from_secs(60), || async {
            let p = pods_src.get("rsync-client").await.ok()?;
            let phase = p.status?.phase?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
        })
        .await;
        let lp = kube::api::LogParams { container: Some("rsync".into()), ..Default::default() };
        let log = pods_src.logs("rsync-client", &lp).await.unwrap_or_default();
        assert_eq!(phase, "Succeeded", "client pod log:\n{log}");
        let (want, got) = (snapshot(&src_dir), snapshot(&dst_dir));
        assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
        for (k, v) in &want {
            assert!(got[k] == *v, "{k} differs after the transfer");
        }
        log
    }
}

// The headline test of the lab: real rsync and stunnel pods, through a Route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsync_and_stunnel_pods_copy_a_directory_between_clusters_through_a_route() {
    let lab = mtcd_tests::Lab::up();
    let src = lab.client("lab-src").await;
    let dst = lab.client("lab-dst").await;
    let started = std::time::Instant::now();
    let log = transfer::run(&src, &dst, "xfer").await;
    eprintln!("transfer scenario took {:?}", started.elapsed());
    assert!(log.contains("Number of files"), "rsync --stats missing from the pod log:\n{log}");
}

/// Scenarios for the node agent, the controllers and the router against any lab (two API
/// clients and the lab's hosts file); each uses its own namespace.
#[allow(dead_code)]
pub(crate) mod scenarios {
    use std::time::Duration;

    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{
        ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod, Service, ServiceAccount,
    };
    use k8s_openapi::api::networking::v1::Ingress;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use serde_json::{Value, json};

    use super::transfer::IMAGE;

    pub async fn wait<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn make<K>(client: &kube::Client, ns: &str, v: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
    {
        let obj: K = serde_json::from_value(v).expect("valid object");
        Api::<K>::namespaced(client.clone(), ns).create(&PostParams::default(), &obj).await.expect("create object")
    }

    async fn namespace(client: &kube::Client, name: &str) {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    }

    fn pod(name: &str, image: &str, policy: &str, script: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": {"restartPolicy": policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["bash", "-c", script]}]}})
    }

    async fn status_of(pods: &Api<Pod>, name: &str) -> Option<k8s_openapi::api::core::v1::PodStatus> {
        pods.get(name).await.ok()?.status
    }

    /// Pod phases, container states, restarts, exit codes, unknown and simulated images,
    /// and deletion stopping the processes.
    pub async fn pod_lifecycle(client: &kube::Client, ns: &str) {
        namespace(client, ns).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let _: Pod = make(client, ns, pod("fails", IMAGE, "Never", "echo failing; exit 3")).await;
        let _: Pod = make(
            client,
            ns,
            pod("retries", IMAGE, "OnFailure", "test -f /tmp/once && exit 0; touch /tmp/once; exit 1"),
        )
        .await;
        let _: Pod = make(client, ns, pod("unknown", "docker.io/library/nginx:1.27", "Always", "true")).await;
        let _: Pod = make(client, ns, pod("simulated", "registry.example/simulated/web:1", "Always", "true")).await;
        let _: Pod =
            make(client, ns, pod("sleeper", IMAGE, "Always", &format!("exec -a mtcd-sleeper-{ns} sleep 300"))).await;

        let s = wait("pod fails to fail", 20, || async {
            status_of(&pods, "fails").await.filter(|s| s.phase.as_deref() == Some("Failed"))
        })
        .await;
        let t = s.container_statuses.unwrap()[0].state.clone().unwrap().terminated.expect("terminated state");
        assert_eq!(t.exit_code, 3);
        assert_eq!(t.reason.as_deref(), Some("Error"));
        let log = pods.logs("fails", &Default::default()).await.expect("pods/log");
        assert!(log.contains("failing"), "{log}");

        let s = wait("pod retries to succeed", 20, || async {
            status_of(&pods, "retries").await.filter(|s| s.phase.as_deref() == Some("Succeeded"))
        })
        .await;
        assert_eq!(s.container_statuses.unwrap()[0].restart_count, 1);

        let s = wait("ErrImagePull", 10, || async {
            let s = status_of(&pods, "unknown").await?;
            let w = s.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.clone()?;
            (w.reason.as_deref() == Some("ErrImagePull")).then_some(s)
        })
        .await;
        assert_eq!(s.phase.as_deref(), Some("Pending"));

        let s = wait("simulated pod running", 10, || async {
            status_of(&pods, "simulated").await.filter(|s| s.phase.as_deref() == Some("Running"))
        })
        .await;
        assert!(s.pod_ip.is_some());
        assert!(s.container_statuses.unwrap()[0].ready);

        let s = wait("sleeper running", 20, || async {
            status_of(&pods, "sleeper").await.filter(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
        })
        .await;
        assert!(s.pod_ip.unwrap().starts_with("10.210."));
        // The real process: find it by its command line.
        let find = || {
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c == format!("mtcd-sleeper-{ns}\x00300\x00").as_bytes())
            })
        };
        wait("the sleep process", 10, || async { find().then_some(()) }).await;
        pods.delete("sleeper", &DeleteParams::default()).await.expect("delete pod");
        wait("pod object gone", 15, || async { pods.get_opt("sleeper").await.ok()?.is_none().then_some(()) }).await;
        wait("the pod's process gone", 30, || async { (!find()).then_some(()) }).await;
    }

    /// Namespace defaults, provisioning (and its failure event), workload replica status.
    pub async fn controllers(client: &kube::Client, ns: &str) {
        namespace(client, ns).await;
        wait("default serviceaccount", 10, || async {
            Api::<ServiceAccount>::namespaced(client.clone(), ns).get_opt("default").await.ok()?
        })
        .await;
        let cm = wait("kube-root-ca.crt", 10, || async {
            Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt("kube-root-ca.crt").await.ok()?
        })
        .await;
        assert!(cm.data.unwrap()["ca.crt"].contains("BEGIN CERTIFICATE"));

        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let _: PersistentVolumeClaim = make(client, ns, json!({"metadata": {"name": "bad"}, "spec": {
            "storageClassName": "no-such-class", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).await;
        let _: PersistentVolumeClaim = make(
            client,
            ns,
            json!({"metadata": {"name": "good"}, "spec": {
            "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
        let dir = super::transfer::pvc_dir(client, ns, "good").await;
        assert!(dir.is_dir());
        let good = claims.get("good").await.unwrap();
        let st = good.status.unwrap();
        assert_eq!(st.capacity.unwrap()["storage"].0, "2Gi");
        assert_eq!(st.access_modes.unwrap(), vec!["ReadWriteMany".to_string()]);
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        wait("ProvisioningFailed event", 10, || async {
            let l = events.list(&ListParams::default()).await.ok()?;
            l.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("ProvisioningFailed") && e.involved_object.name.as_deref() == Some("bad")
            })
        })
        .await;
        let bad = claims.get("bad").await.unwrap();
        assert_ne!(bad.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
        // Deleting the claim deletes its volume directory (reclaim policy Delete).
        claims.delete("good", &DeleteParams::default()).await.unwrap();
        wait("the volume directory removed", 10, || async { (!dir.exists()).then_some(()) }).await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let tpl = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "registry.example/simulated/web:1"}]}});
        let _: Deployment = make(
            client,
            ns,
            json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}}, "template": tpl}}),
        )
        .await;
        wait("deployment ready", 10, || async {
            let s = deployments.get("web").await.ok()?.status?;
            (s.ready_replicas == Some(3) && s.available_replicas == Some(3)).then_some(())
        })
        .await;
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
            .await
            .unwrap();
        wait("deployment scaled to 0", 10, || async {
            let d = deployments.get("web").await.ok()?;
            let s = d.status?;
            (s.replicas == Some(0) && s.observed_generation == d.metadata.generation).then_some(())
        })
        .await;
        let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
        let _: StatefulSet = make(
            client,
            ns,
            json!({"metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db",
            "selector": {"matchLabels": {"app": "web"}}, "template": tpl}}),
        )
        .await;
        wait("statefulset ready", 10, || async {
            (sts.get("db").await.ok()?.status?.ready_replicas == Some(2)).then_some(())
        })
        .await;

        // DeploymentConfigs, where the cluster serves them (openshift profile).
        let served = client.list_api_group_resources("apps.openshift.io/v1").await;
        if served.is_ok_and(|l| l.resources.iter().any(|r| r.name == "deploymentconfigs")) {
            use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("apps.openshift.io", "v1", "DeploymentConfig"),
                "deploymentconfigs",
            );
            let dcs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let dc: DynamicObject =
                serde_json::from_value(json!({"apiVersion": "apps.openshift.io/v1", "kind": "DeploymentConfig",
                "metadata": {"name": "legacy"}, "spec": {"replicas": 2, "selector": {"app": "web"}, "template": tpl}}))
                .unwrap();
            dcs.create(&PostParams::default(), &dc).await.expect("create deploymentconfig");
            wait("deploymentconfig ready", 10, || async {
                let d = dcs.get("legacy").await.ok()?;
                (d.data.pointer("/status/readyReplicas") == Some(&json!(2))).then_some(())
            })
            .await;
        }

        // Jobs run their pods on the node: one succeeds, one fails past its backoff limit.
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), ns);
        let job = |name: &str, script: &str, backoff: i32| {
            json!({"metadata": {"name": name}, "spec": {"backoffLimit": backoff, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "hook", "image": IMAGE, "command": ["bash", "-c", script]}]}}}})
        };
        let _: k8s_openapi::api::batch::v1::Job = make(client, ns, job("ok", "echo hook ran", 0)).await;
        let _: k8s_openapi::api::batch::v1::Job = make(client, ns, job("bad", "exit 2", 1)).await;
        let cond = |j: &k8s_openapi::api::batch::v1::Job, ty: &str| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == ty && c.status == "True"))
        };
        let ok =
            wait("job ok complete", 20, || async { jobs.get("ok").await.ok().filter(|j| cond(j, "Complete")) }).await;
        assert_eq!(ok.status.unwrap().succeeded, Some(1));
        let bad =
            wait("job bad failed", 30, || async { jobs.get("bad").await.ok().filter(|j| cond(j, "Failed")) }).await;
        assert_eq!(bad.status.unwrap().failed, Some(2));
    }

    /// A LoadBalancer Service gets an address on the lab bridge that pods of the other
    /// cluster reach; a passthrough Ingress gets the router's address and its host resolves
    /// in the other cluster's pods.
    pub async fn load_balancer_and_ingress(src: &kube::Client, dst: &kube::Client, ns: &str) {
        namespace(src, ns).await;
        namespace(dst, ns).await;
        let _: Pod = make(dst, ns, pod("echo", IMAGE, "Always",
            "printf '[m]\\n path = /tmp\\n' > /tmp/r.conf; exec rsync --daemon --no-detach --port=8873 --config=/tmp/r.conf")).await;
        let _: Service = make(
            dst,
            ns,
            json!({"metadata": {"name": "echo"}, "spec": {"type": "LoadBalancer",
            "selector": {"app": "echo"}, "ports": [{"name": "rsync", "port": 873, "targetPort": 8873}]}}),
        )
        .await;
        let services: Api<Service> = Api::namespaced(dst.clone(), ns);
        let ip = wait("load balancer address", 10, || async {
            services.get("echo").await.ok()?.status?.load_balancer?.ingress?.first()?.ip.clone()
        })
        .await;
        assert!(ip.starts_with("10.210.4."), "{ip}");
        let pods_dst: Api<Pod> = Api::namespaced(dst.clone(), ns);
        wait("echo pod running", 20, || async {
            (pods_dst.get("echo").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        let script = format!("for i in $(seq 1 50); do rsync rsync://{ip}:873/ && exit 0; sleep 0.2; done; exit 1");
        let _: Pod = make(src, ns, pod("lister", IMAGE, "Never", &script)).await;
        let pods_src: Api<Pod> = Api::namespaced(src.clone(), ns);
        let phase = wait("lister done", 30, || async {
            let p = pods_src.get("lister").await.ok()?.status?.phase?;
            matches!(p.as_str(), "Succeeded" | "Failed").then_some(p)
        })
        .await;
        let log = pods_src.logs("lister", &Default::default()).await.unwrap_or_default();
        assert_eq!(phase, "Succeeded", "{log}");
        assert!(log.lines().any(|l| l.trim_start().starts_with('m')), "module list missing: {log}");
        // The endpoints controller lists the pod behind the Service.
        let pod_ip = pods_dst.get("echo").await.unwrap().status.unwrap().pod_ip.unwrap();
        let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(dst.clone(), ns);
        let subset = wait("endpoints of service echo", 10, || async {
            endpoints.get("echo").await.ok()?.subsets?.into_iter().find(|s| s.addresses.is_some())
        })
        .await;
        assert_eq!(subset.addresses.unwrap()[0].ip, pod_ip);
        assert_eq!(subset.ports.unwrap()[0].port, 8873);

        let _: Ingress = make(dst, ns, json!({"metadata": {"name": "web", "annotations": {"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}},
            "spec": {"rules": [{"host": "web-ingress.example.lab", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "echo", "port": {"number": 873}}}}]}}]}})).await;
        let ingresses: Api<Ingress> = Api::namespaced(dst.clone(), ns);
        let ip = wait("ingress address", 10, || async {
            ingresses.get("web").await.ok()?.status?.load_balancer?.ingress?.first()?.ip.clone()
        })
        .await;
        assert_eq!(ip, "10.210.0.2");
        // A source pod resolves the ingress host to the destination router (shared hosts file).
        let script = "for i in $(seq 1 50); do getent hosts web-ingress.example.lab && exit 0; sleep 0.2; done; exit 1";
        let _: Pod = make(src, ns, pod("resolver", IMAGE, "Never", script)).await;
        let phase = wait("resolver done", 30, || async {
            let p = pods_src.get("resolver").await.ok()?.status?.phase?;
            matches!(p.as_str(), "Succeeded" | "Failed").then_some(p)
        })
        .await;
        let log = pods_src.logs("resolver", &Default::default()).await.unwrap_or_default();
        assert_eq!(phase, "Succeeded", "{log}");
        assert!(log.starts_with("10.210.0.2 "), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_pods_report_phases_restarts_exit_codes_and_stop_when_deleted() {
    let lab = mtcd_tests::Lab::up();
    scenarios::pod_lifecycle(&lab.client("lab-src").await, "life").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_provision_volumes_default_namespaces_and_report_replicas() {
    let lab = mtcd_tests::Lab::up();
    scenarios::controllers(&lab.client("lab-dst").await, "ctl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_and_passthrough_ingresses_are_reachable_from_the_other_cluster() {
    let lab = mtcd_tests::Lab::up_with(("kubernetes", "kubernetes"));
    let (src, dst) = (lab.client("lab-src").await, lab.client("lab-dst").await);
    scenarios::load_balancer_and_ingress(&src, &dst, "lb").await;
}
