//! Cutover you can trust: every check before the source is touched, the source put back by
//! itself when anything fails before the destination starts (or on SIGTERM), the wait for the
//! source's pods to be gone, and verification that the destination runs.

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject};
use kube::discovery::ApiResource;
use mtcd_tests::{Lab, repo_root};
use serde_json::Value;

fn ar(group: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
    ApiResource { group: group.into(), version: "v1".into(), api_version, kind: kind.into(), plural: plural.into() }
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(lab.client(ctx).await, ns, r);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

async fn shop(lab: &Lab) {
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
}

fn desired(lab: &Lab, top: &str, migration: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n{top}[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"skip\"\n{migration}"
        ),
    )
}

async fn source_runs_as_before(lab: &Lab) {
    let web = get(lab, "lab-src", &ar("apps", "Deployment", "deployments"), "shop", "web").await;
    assert_eq!(web["spec"]["replicas"], 3, "{web}");
    assert!(web["metadata"]["annotations"].get("mtcd.io/original-replicas").is_none(), "{web}");
    let cj = get(lab, "lab-src", &ar("batch", "CronJob", "cronjobs"), "shop", "nightly-report").await;
    assert_eq!(cj["spec"]["suspend"], false, "{cj}");
}

/// A pod of the source's `web` that does not go away: it belongs to a ReplicaSet, and a
/// finalizer holds it once deleted.
async fn stuck_pod(lab: &Lab) {
    lab.seed_yaml(
        "lab-src",
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-stuck
  namespace: shop
  labels: {app: web}
  finalizers: [example.com/hold]
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8f, uid: 6a1f0e2c-0000-4000-8000-000000000001, controller: true}]
spec:
  containers: [{name: web, image: registry.example.com/simulated/shop-web:1.4}]
"#,
    )
    .await
    .unwrap();
    let pods: Api<DynamicObject> = Api::namespaced_with(lab.client("lab-src").await, "shop", &ar("", "Pod", "pods"));
    pods.delete("web-stuck", &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_preflight_stops_the_cutover_before_the_source_is_touched() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "", "resources = \"velero\"\n[migration.velero]\nstorage_location = \"nope\"\n");
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("FAIL velero on the source") && plan.stdout.contains("velero/nope does not exist"),
        "{}",
        plan.stdout
    );
    let run = lab.mtcd(&["cutover", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("preflight check(s) failed") && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    source_runs_as_before(&lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiesce_that_cannot_finish_puts_the_source_back_and_names_the_stuck_pod() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "[cutover]\nquiesce_timeout = \"3s\"\n", "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    stuck_pod(&lab).await;
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Pod/shop/web-stuck (terminating, held by finalizer(s) example.com/hold)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("The source was restored"), "{}", run.stderr);
    assert!(
        run.stderr.contains("the destination is held at 0") && run.stderr.contains("run `mtcd cutover` again"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("waiting for"), "a live line while it waited: {}", run.stderr);
    source_runs_as_before(&lab).await;
    let dst = get(&lab, "lab-dst", &ar("apps", "Deployment", "deployments"), "shop-prod", "web").await;
    assert_eq!(dst["spec"]["replicas"], 0);

    // Asked to keep it quiesced, it stays quiesced and says how to go on.
    let run = lab.mtcd(&["cutover", "--keep-source-quiesced", f]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("stays quiesced (--keep-source-quiesced)"), "{}", run.stderr);
    let web = get(&lab, "lab-src", &ar("apps", "Deployment", "deployments"), "shop", "web").await;
    assert_eq!(web["spec"]["replicas"], 0);
    let status = lab.mtcd(&["--output", "json", "status", f]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(v["migrations"][0]["source_quiesced"].to_string().contains("Deployment.apps/shop/web"), "{v}");
    assert_eq!(lab.mtcd(&["rollback", f]).code, 0);
    source_runs_as_before(&lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_cutover_puts_the_source_back() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "[cutover]\nquiesce_timeout = \"2m\"\n", "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    stuck_pod(&lab).await;
    let child = std::process::Command::new(mtcd_tests::bin("mtcd"))
        .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "cutover", f])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the source is quiesced (the cutover then waits on the stuck pod).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let web = get(&lab, "lab-src", &ar("apps", "Deployment", "deployments"), "shop", "web").await;
        if web["spec"]["replicas"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never quiesced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted") && stderr.contains("The source was restored"), "{stderr}");
    source_runs_as_before(&lab).await;
}

/// SIGTERM while the quiesce's scale-down is still on its way to the API server (a slow
/// admission webhook holds the source's Deployment writes for 3 s): mtcd lets the write land
/// before it puts the source back, so the scale-down cannot arrive after the restore and leave
/// the application stopped.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_the_scale_down_is_in_flight_still_leaves_the_source_running() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "", "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    lab.slow_writes("lab-src", "deployments", 3000).await;
    let log = lab.dir.join("lab.log");
    let seen = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let child = lab.spawn_mtcd(&["cutover", f]);
    // Until the lab holds the scale-down of web.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(&text[seen.min(text.len())..]).to_string();
        if new.lines().any(|l| l.contains("admission delay: holding a write") && l.contains("deployments/web")) {
            break;
        }
        assert!(Instant::now() < deadline, "the scale-down never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run = mtcd_tests::stop_with(child, "TERM");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("interrupted") && run.stderr.contains("The source was restored"), "{}", run.stderr);
    // Whatever was on its way has landed by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    source_runs_as_before(&lab).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_does_not_become_available_is_reported_with_the_way_back() {
    let lab = Lab::up();
    shop(&lab).await;
    lab.seed_yaml(
        "lab-src",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers: [{name: app, image: registry.example.com/app/not-pullable:1}]
"#,
    )
    .await
    .unwrap();
    let file = desired(&lab, "[cutover]\nverify_timeout = \"3s\"\n", "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("did not become available"), "{}", run.stderr);
    assert!(run.stderr.contains("Deployment.apps/shop-prod/broken (0/1 available)"), "{}", run.stderr);
    assert!(run.stderr.contains("mtcd rollback"), "the way back: {}", run.stderr);

    // With --rollback-on-failure the way back is taken.
    let run = lab.mtcd(&["cutover", "--rollback-on-failure", f]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Rolled back"), "{}", run.stderr);
    source_runs_as_before(&lab).await;
    let dst = get(&lab, "lab-dst", &ar("apps", "Deployment", "deployments"), "shop-prod", "web").await;
    assert_eq!(dst["spec"]["replicas"], 0, "destination held again");
}
