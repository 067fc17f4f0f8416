//! `pods/exec` through the lab API server, as a client sees it on a real cluster: a WebSocket
//! (v5/v4.channel.k8s.io) that the node agent serves by running the command inside the
//! container (its mount and network namespaces, cwd and environment), ending with the
//! kubelet's exit Status; RBAC on `pods/exec`; 400 for a pod that is not running.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, AttachParams, PostParams};
use mtcd_tests::Lab;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "quay.io/konveyor/rsync-transfer:latest";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid test object")
}

type ExecStatus = k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

fn api_err(r: Result<kube::api::AttachedProcess, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(e)) => *e,
        Err(other) => panic!("expected an API error, got {other:?}"),
        Ok(_) => panic!("expected an API error, the upgrade succeeded"),
    }
}

async fn wait_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pods.get(name).await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return p;
        }
        assert!(Instant::now() < deadline, "pod {name} never reached {phase}: {:?}", p.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `command` with kube-rs' AttachedProcess: (stdout, stderr, status).
async fn run(pods: &Api<Pod>, pod: &str, command: Vec<&str>, stdin: Option<&[u8]>) -> (String, String, ExecStatus) {
    let ap = AttachParams::default().stdin(stdin.is_some()).stderr(true);
    let what = format!("{command:?}");
    let mut p = tokio::time::timeout(Duration::from_secs(20), pods.exec(pod, command, &ap))
        .await
        .unwrap_or_else(|_| panic!("exec {what}: no upgrade in time"))
        .expect("exec upgrade");
    let mut out = p.stdout().unwrap();
    let mut err = p.stderr().unwrap();
    let status = p.take_status().unwrap();
    if let Some(input) = stdin {
        let mut w = p.stdin().unwrap();
        w.write_all(input).await.unwrap();
        // EOF (kube-rs sends a v5 close of channel 0). Dropping the writer is not enough:
        // the simplex pipe behind it ends only on shutdown.
        w.shutdown().await.unwrap();
    }
    let (mut o, mut e) = (String::new(), String::new());
    let (ro, re) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e))
    })
    .await
    .unwrap_or_else(|_| panic!("exec {what}: output never ended"));
    ro.unwrap();
    re.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(20), status).await.expect("status in time").expect("a status");
    p.join().await.unwrap();
    (o, e, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_inside_the_container_and_reports_the_exit_status() {
    let lab = Lab::up();
    let admin = lab.client("lab-src").await;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &obj(json!({"metadata": {"name": "ex"}})))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "ex");
    pods.create(&PostParams::default(), &obj(json!({"metadata": {"name": "box"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "main", "image": IMAGE, "workingDir": "/data",
            "env": [{"name": "GREETING", "value": "hello from the container"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "command": ["bash", "-c", "echo written-by-main > /data/marker; echo private > /etc/only-in-container; exec sleep 300"]}]}})))
        .await
        .unwrap();
    let p = wait_phase(&pods, "box", "Running").await;
    let pod_ip = p.status.unwrap().pod_ip.unwrap();
    // Wait for the container's own writes (it is Running from its first instruction).
    let deadline = Instant::now() + Duration::from_secs(10);
    let script = "pwd; echo \"$GREETING\"; cat marker /etc/only-in-container; hostname; ip -o -4 addr show eth0; echo oops >&2; exit 3";
    let (out, err, st) = loop {
        let r = run(&pods, "box", vec!["bash", "-c", script], None).await;
        if r.0.contains("private") || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(out.starts_with("/data\nhello from the container\nwritten-by-main\nprivate\nbox\n"), "{out}");
    assert!(out.contains(&format!("inet {pod_ip}/")), "same network namespace: {out}");
    assert_eq!(err, "oops\n");
    assert_eq!(st.status.as_deref(), Some("Failure"));
    assert_eq!(st.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &st.details.as_ref().unwrap().causes.as_ref().unwrap()[0];
    assert_eq!((cause.reason.as_deref(), cause.message.as_deref()), (Some("ExitCode"), Some("3")));
    assert!(!std::path::Path::new("/etc/only-in-container").exists(), "the container's writes stay in it");

    // Success, and stdin to the command until the client closes it.
    let (out, _, st) = run(&pods, "box", vec!["cat"], Some(b"piped through\n")).await;
    assert_eq!(out, "piped through\n");
    assert_eq!(st.status.as_deref(), Some("Success"));
    // A command that does not exist: the runtime's error, as an InternalError Status.
    let (_, _, st) = run(&pods, "box", vec!["no-such-command"], None).await;
    assert_eq!((st.reason.as_deref(), st.code), (Some("InternalError"), Some(500)));
    let msg = st.message.unwrap_or_default();
    assert!(msg.contains("\"no-such-command\": executable file not found in $PATH"), "{msg}");

    // Errors before the upgrade, as the API server answers them.
    let e = api_err(pods.exec("box", vec!["true"], &AttachParams::default().container("nope")).await);
    assert_eq!((e.code, e.message.as_str()), (400, "container nope is not valid for pod box"));
    let e = api_err(pods.exec("missing", vec!["true"], &AttachParams::default()).await);
    assert_eq!((e.code, e.message.as_str()), (404, "pods \"missing\" not found"));
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "cannot-pull"}, "spec": {
        "containers": [{"name": "main", "image": "docker.io/library/nginx:1.27"}]}})),
    )
    .await
    .unwrap();
    let e = api_err(pods.exec("cannot-pull", vec!["true"], &AttachParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(e.message, "unable to upgrade connection: container not found (\"main\")");
    pods.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "done"}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": IMAGE, "command": ["true"]}]}})),
    )
    .await
    .unwrap();
    wait_phase(&pods, "done", "Succeeded").await;
    let e = api_err(pods.exec("done", vec!["true"], &AttachParams::default()).await);
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "cannot exec into a container in a completed pod; current phase is Succeeded")
    );

    // RBAC: the WebSocket upgrade (GET) needs `get` and `create` on pods/exec.
    let limited: Api<Pod> = Api::namespaced(lab.client("lab-src-limited").await, "ex");
    let e = api_err(limited.exec("box", vec!["true"], &AttachParams::default()).await);
    assert_eq!(e.code, 403);
    assert!(e.message.contains("cannot get resource \"pods/exec\""), "{}", e.message);
    let roles: Api<Role> = Api::namespaced(admin.clone(), "ex");
    roles
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "exec"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}]})),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "ex")
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "exec"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]})),
        )
        .await
        .unwrap();
    let e = api_err(limited.exec("box", vec!["true"], &AttachParams::default()).await);
    assert_eq!(
        e.message,
        "pods \"box\" is forbidden: User \"limited\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"ex\""
    );
    let mut role = roles.get("exec").await.unwrap();
    role.rules.as_mut().unwrap()[0].verbs = vec!["get".into(), "create".into()];
    roles.replace("exec", &PostParams::default(), &role).await.unwrap();
    let (out, _, st) = run(&limited, "box", vec!["echo", "allowed"], None).await;
    assert_eq!((out.as_str(), st.status.as_deref()), ("allowed\n", Some("Success")));

    // kubectl exec, when kubectl is installed (WebSocket since kubectl 1.30).
    let Ok(_) = std::process::Command::new("kubectl").arg("version").arg("--client").output() else {
        eprintln!("NOTE: kubectl not installed; the kubectl exec assertion is skipped");
        return;
    };
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--cache-dir")
        .arg(lab.dir.join("kubectl-cache"))
        .args([
            "--context",
            "lab-src",
            "-n",
            "ex",
            "exec",
            "box",
            "--",
            "bash",
            "-c",
            "echo from-kubectl \"$GREETING\"; exit 4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "from-kubectl hello from the container\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(4),
        "kubectl exits with the command's code: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
