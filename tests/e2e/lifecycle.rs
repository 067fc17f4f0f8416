//! The migration lifecycle in the lab: stage sync → cutover → rollback, an interrupted
//! cutover finished by a re-run, `apply --watch` picking up drift, and plugins (a transform
//! in the plan, a failing transform that writes nothing, a pre-cutover hook that says no).

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use mtcd_tests::plugins::plugin_wasm;
use mtcd_tests::{Lab, repo_root};
use serde_json::{Value, json};

fn ar(group: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
    ApiResource { group: group.into(), version: "v1".into(), api_version, kind: kind.into(), plural: plural.into() }
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(lab.client(ctx).await, ns, r);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

async fn shop(lab: &Lab) {
    for f in ["examples/lab/seed.yaml", "examples/lab/volume-data.yaml"] {
        lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join(f)).unwrap()).await.unwrap();
    }
}

fn desired(lab: &Lab, extra: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\n{extra}"
        ),
    )
}

fn replicas(v: &Value) -> i64 {
    v["spec"]["replicas"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_cutover_and_rollback() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0, "stage sync");
    let deploy = ar("apps", "Deployment", "deployments");
    assert_eq!(
        replicas(&get(&lab, "lab-src", &deploy, "shop", "web").await),
        3,
        "the source keeps running during stage syncs"
    );
    assert_eq!(replicas(&get(&lab, "lab-dst", &deploy, "shop-prod", "web").await), 0);

    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("cutover done"), "{}", run.stdout);
    let src_web = get(&lab, "lab-src", &deploy, "shop", "web").await;
    assert_eq!(replicas(&src_web), 0);
    assert_eq!(src_web["metadata"]["annotations"]["mtcd.io/original-replicas"], "3");
    let cj = get(&lab, "lab-src", &ar("batch", "CronJob", "cronjobs"), "shop", "nightly-report").await;
    assert_eq!(cj["spec"]["suspend"], true);
    assert_eq!(
        replicas(&get(&lab, "lab-dst", &deploy, "shop-prod", "web").await),
        3,
        "destination runs with the original count"
    );
    let dst_cj = get(&lab, "lab-dst", &ar("batch", "CronJob", "cronjobs"), "shop-prod", "nightly-report").await;
    assert_eq!(dst_cj["spec"]["suspend"], false);
    // After cutover, the plan is quiet: a quiesced source is not drift.
    let plan = lab.mtcd(&["plan", f]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    let status = lab.mtcd(&["--output", "json", "status", f]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["migrations"][0]["cutover"], true);
    assert_eq!(status["migrations"][0]["source_state"], "quiesced", "{status}");
    assert_eq!(status["migrations"][0]["destination_state"], "verified", "{status}");

    // A rollback waits for the migration's lock like any run: while another run holds it
    // (a re-sync, a cutover), the source is not started under it.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let held = serde_json::from_value(json!({
        "metadata": {"name": "mtcd-shop", "namespace": "shop-prod"},
        "spec": {"holderIdentity": "other-host/7", "leaseDurationSeconds": 30, "acquireTime": now, "renewTime": now},
    }))
    .unwrap();
    leases.create(&Default::default(), &held).await.unwrap();
    let run = lab.mtcd(&["rollback", "--lock-wait", "1s", f]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("other-host/7 (lease shop-prod/mtcd-shop"), "the holder is named: {}", run.stderr);
    assert_eq!(replicas(&get(&lab, "lab-src", &deploy, "shop", "web").await), 0, "the source was not started");
    assert_eq!(replicas(&get(&lab, "lab-dst", &deploy, "shop-prod", "web").await), 3, "the destination still runs");
    leases.delete("mtcd-shop", &Default::default()).await.unwrap();

    let run = lab.mtcd(&["rollback", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(leases.get_opt("mtcd-shop").await.unwrap().is_none(), "the rollback released its lock");
    let src_web = get(&lab, "lab-src", &deploy, "shop", "web").await;
    assert_eq!(replicas(&src_web), 3);
    assert!(src_web["metadata"]["annotations"].get("mtcd.io/original-replicas").is_none());
    assert_eq!(
        get(&lab, "lab-src", &ar("batch", "CronJob", "cronjobs"), "shop", "nightly-report").await["spec"]["suspend"],
        false
    );
    assert_eq!(replicas(&get(&lab, "lab-dst", &deploy, "shop-prod", "web").await), 0, "destination held again");
    // A rolled-back destination is what the plan wants: no bogus updates.
    let plan = lab.mtcd(&["plan", f]);
    assert_eq!(plan.code, 0, "nothing to do after a rollback:\n{}\n{}", plan.stdout, plan.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cutover_interrupted_after_quiesce_is_finished_by_running_it_again() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "");
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    // The state a cutover killed right after quiescing leaves: source at 0, originals recorded,
    // no final sync.
    let deploys: Api<DynamicObject> =
        Api::namespaced_with(lab.client("lab-src").await, "shop", &ar("apps", "Deployment", "deployments"));
    deploys
        .patch(
            "web",
            &PatchParams::apply("mtcd-cutover"),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mtcd.io/original-replicas": "3"}}, "spec": {"replicas": 0}}),
            ),
        )
        .await
        .unwrap();
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let dst = get(&lab, "lab-dst", &ar("apps", "Deployment", "deployments"), "shop-prod", "web").await;
    assert_eq!(replicas(&dst), 3, "the recorded original, not the quiesced 0");
    let src = get(&lab, "lab-src", &ar("apps", "Deployment", "deployments"), "shop", "web").await;
    assert_eq!(src["metadata"]["annotations"]["mtcd.io/original-replicas"], "3");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_picks_up_a_source_change_within_one_interval() {
    let lab = Lab::up();
    shop(&lab).await;
    let file = desired(&lab, "[sync]\ninterval = \"2s\"\n");
    let mut child = std::process::Command::new(mtcd_tests::bin("mtcd"))
        .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "apply", "--watch", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cms = ar("", "ConfigMap", "configmaps");
    let dst: Api<DynamicObject> = Api::namespaced_with(lab.client("lab-dst").await, "shop-prod", &cms);
    let deadline = Instant::now() + Duration::from_secs(120);
    while dst.get_opt("shop-config").await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "first cycle never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let src: Api<DynamicObject> = Api::namespaced_with(lab.client("lab-src").await, "shop", &cms);
    src.patch("shop-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"SHOP_CURRENCY": "CHF"}})))
        .await
        .unwrap();
    let changed = Instant::now();
    loop {
        let cm = serde_json::to_value(dst.get("shop-config").await.unwrap()).unwrap();
        if cm["data"]["SHOP_CURRENCY"] == "CHF" {
            break;
        }
        assert!(changed.elapsed() < Duration::from_secs(60), "watch never synced the change");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each cycle ends with one summary line; wait for the second, then stop the watch.
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("cycle 2:");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.is_finished() {
        assert!(Instant::now() < deadline, "no second cycle line");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = lines.join().unwrap();
    assert!(
        seen.iter().any(|l| l.starts_with("cycle 1: ")) && seen.iter().any(|l| l.starts_with("cycle 2: ")),
        "one summary line per cycle: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transforms_run_in_the_plan_and_a_failing_one_writes_nothing() {
    let lab = Lab::up();
    shop(&lab).await;
    let add_label = plugin_wasm("add-label");
    let file = desired(
        &lab,
        &format!(
            "[[migration.transform]]\nplugin = \"{}\"\nconfig = {{ labels = {{ migrated-by = \"mtcd\" }} }}\n",
            add_label.display()
        ),
    );
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let cm = get(&lab, "lab-dst", &ar("", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await;
    assert_eq!(cm["metadata"]["labels"]["migrated-by"], "mtcd");

    // A plugin that traps: the plan stops, naming plugin and object; nothing is written.
    let lab2 = Lab::up();
    shop(&lab2).await;
    // The test plugin traps on objects named `boom`.
    lab2.seed_yaml(
        "lab-src",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: boom, namespace: shop}\ndata: {a: b}\n",
    )
    .await
    .unwrap();
    let trap = plugin_wasm("trap");
    let file = desired(&lab2, &format!("[[migration.transform]]\nplugin = \"{}\"\n", trap.display()));
    let run = lab2.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("transform failed on ConfigMap/shop/boom")
            && run.stderr.contains("trap")
            && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    let namespaces: Api<DynamicObject> =
        Api::all_with(lab2.client("lab-dst").await, &ar("", "Namespace", "namespaces"));
    assert!(namespaces.get_opt("shop-prod").await.unwrap().is_none(), "nothing reached the destination");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_cutover_hook_that_fails_stops_the_cutover_before_the_source_is_touched() {
    let lab = Lab::up();
    shop(&lab).await;
    let hook = plugin_wasm("require-annotation");
    let file = desired(
        &lab,
        &format!(
            "[[migration.hook]]\nphase = \"pre-cutover\"\nplugin = \"{}\"\nconfig = {{ annotation = \"shop.example.com/ready\" }}\n",
            hook.display()
        ),
    );
    let f = file.to_str().unwrap();
    assert_eq!(lab.mtcd(&["apply", f]).code, 0);
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("pre-cutover") && run.stderr.contains("shop.example.com/ready"), "{}", run.stderr);
    assert_eq!(
        replicas(&get(&lab, "lab-src", &ar("apps", "Deployment", "deployments"), "shop", "web").await),
        3,
        "source untouched"
    );
    // Marked ready: the cutover goes through.
    let ns: Api<DynamicObject> = Api::all_with(lab.client("lab-src").await, &ar("", "Namespace", "namespaces"));
    ns.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"shop.example.com/ready": "yes"}}})),
    )
    .await
    .unwrap();
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

/// `status` reads what the clusters hold (stamps, cutover markers, the source's quiesce
/// annotations): it loads no plugin, so a plugin that no longer loads does not stop it.
#[tokio::test(flavor = "multi_thread")]
async fn status_loads_no_plugin_and_shows_a_quiesced_source() {
    let lab = Lab::up();
    shop(&lab).await;
    let plugin = lab.dir.join("transform.wasm");
    std::fs::copy(plugin_wasm("add-label"), &plugin).unwrap();
    let file = desired(
        &lab,
        &format!(
            "[[migration.transform]]\nplugin = \"{}\"\nconfig = {{ labels = {{ migrated-by = \"mtcd\" }} }}\n",
            plugin.display()
        ),
    );
    let f = file.to_str().unwrap();
    let run = lab.mtcd(&["apply", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // The transform is replaced by a component of another world: it no longer loads.
    std::fs::copy(plugin_wasm("require-annotation"), &plugin).unwrap();
    let plan = lab.mtcd(&["plan", f]);
    assert_eq!(plan.code, 1, "the plan loads the plugin and fails: {}\n{}", plan.stdout, plan.stderr);
    let status = lab.mtcd(&["--output", "json", "status", f]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    let m = &v["migrations"][0];
    assert!(m["managed_objects"].as_u64().unwrap() >= 5, "{m}");
    assert_eq!(m["volumes"], 1, "{m}");
    assert_eq!(m["cutover"], false);
    assert_eq!(m["source_quiesced"], json!([]));
    assert!(m["source_running"].as_array().unwrap().iter().any(|w| w == "Deployment.apps/shop/web"), "{m}");
    assert_eq!(m["source_state"], "running");
    assert_eq!(m["destination_state"], "held");

    // A source quiesced by hand the way cutover does it shows as quiesced.
    let deploys: Api<DynamicObject> =
        Api::namespaced_with(lab.client("lab-src").await, "shop", &ar("apps", "Deployment", "deployments"));
    let patch = json!({"metadata": {"annotations": {"mtcd.io/original-replicas": "3"}}, "spec": {"replicas": 0}});
    deploys.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = lab.mtcd(&["--output", "json", "status", f]);
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        v["migrations"][0]["source_quiesced"].as_array().unwrap().iter().any(|w| w == "Deployment.apps/shop/web"),
        "{v}"
    );
    assert_eq!(v["migrations"][0]["source_state"], "partially quiesced", "the StatefulSet still runs: {v}");
    let human = lab.mtcd(&["status", f]);
    assert!(human.stdout.contains("source (lab-src): partially quiesced"), "{}", human.stdout);
}
