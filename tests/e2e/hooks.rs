//! Hooks at every phase, of every kind: a WebAssembly plugin, a Job and an exec in a running
//! container, each at its documented place (docs/runbook.md, "Hooks"), in the order the
//! engine reaches the phases; a failing hook stops the run unless it says `on_error = "ignore"`.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use mtcd_tests::plugins::plugin_wasm;
use mtcd_tests::{Lab, repo_root};
use serde_json::{Value, json};

const IMAGE: &str = "quay.io/konveyor/rsync-transfer:latest";

async fn shop_with_a_running_pod(lab: &Lab) {
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    lab.seed_yaml(
        "lab-src",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: hookbox, namespace: shop, labels: {{app: hookbox}}}}\nspec:\n  containers: [{{name: box, image: \"{IMAGE}\", command: [sleep, \"3600\"]}}]\n"
        ),
    )
    .await
    .unwrap();
    let ns: Api<DynamicObject> = Api::all_with(
        lab.client("lab-src").await,
        &ApiResource {
            group: "".into(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Namespace".into(),
            plural: "namespaces".into(),
        },
    );
    let ready = json!({"metadata": {"annotations": {"shop.example.com/ready": "true"}}});
    ns.patch("shop", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
    // The exec target must be running before a hook can exec into it.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(lab.client("lab-src").await, "shop");
    let running = kube::runtime::wait::await_condition(pods, "hookbox", kube::runtime::conditions::is_pod_running());
    tokio::time::timeout(std::time::Duration::from_secs(60), running).await.unwrap().unwrap();
}

fn exec(phase: &str, text: &str) -> String {
    format!(
        "[[migration.hook]]\nphase = \"{phase}\"\nexec = {{ cluster = \"source\", namespace = \"shop\", selector = \"app=hookbox\", command = [\"sh\", \"-c\", \"echo {text} in $(hostname)\"] }}\n"
    )
}

fn job(phase: &str, command: &str, on_error: &str) -> String {
    format!(
        "[[migration.hook]]\nphase = \"{phase}\"\njob = {{ cluster = \"source\", namespace = \"shop\", image = \"{IMAGE}\", command = [\"sh\", \"-c\", \"{command}\"], deadline = \"60s\", on_error = \"{on_error}\" }}\n"
    )
}

fn plugin(phase: &str) -> String {
    format!(
        "[[migration.hook]]\nphase = \"{phase}\"\nplugin = \"{}\"\nconfig = {{ annotation = \"shop.example.com/ready\" }}\n",
        plugin_wasm("require-annotation").display()
    )
}

fn desired(lab: &Lab, hooks: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"skip\"\nexclude_kinds = [\"Pod\"]\n{hooks}"
        ),
    )
}

fn hook_events(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["event"] == "hook").collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_phase_runs_its_hooks_at_its_place_for_each_kind() {
    let lab = Lab::up();
    shop_with_a_running_pod(&lab).await;
    let hooks = [
        plugin("pre-cutover"),
        exec("pre-stage", "stage-begins"),
        job("pre-restore", "echo job before the objects", "fail"),
        exec("post-restore", "objects-applied"),
        exec("pre-backup", "data-copy-begins"),
        job("post-backup", "echo job after the data", "fail"),
        plugin("post-stage"),
        exec("post-cutover", "destination-runs"),
    ]
    .concat();
    let file = desired(&lab, &hooks);
    let f = file.to_str().unwrap();

    let run = lab.mtcd(&["--output", "json", "apply", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let events = hook_events(&run.stdout);
    let phases: Vec<&str> = events.iter().map(|e| e["phase"].as_str().unwrap()).collect();
    assert_eq!(
        phases,
        ["pre-stage", "pre-restore", "post-restore", "pre-backup", "post-backup", "post-stage"],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e["ok"] == true), "{events:?}");
    assert_eq!(events[0]["output"], "hookbox: stage-begins in hookbox", "ran inside the selected pod: {events:?}");
    assert!(events[1]["output"].as_str().unwrap().contains("job before the objects"), "the Job's log: {events:?}");
    assert!(events[1]["hook"].as_str().unwrap().starts_with("job "), "{events:?}");
    assert!(events[5]["hook"].as_str().unwrap().starts_with("plugin "), "{events:?}");

    let run = lab.mtcd(&["--output", "json", "cutover", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let phases: Vec<String> =
        hook_events(&run.stdout).iter().map(|e| e["phase"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        phases,
        [
            "pre-cutover",
            "pre-stage",
            "pre-restore",
            "post-restore",
            "pre-backup",
            "post-backup",
            "post-stage",
            "post-cutover"
        ],
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hook_stops_the_run_unless_it_is_ignored() {
    let lab = Lab::up();
    shop_with_a_running_pod(&lab).await;
    let file = desired(&lab, &job("pre-restore", "echo disk full >&2; exit 3", "fail"));
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("pre-restore hook job") && run.stderr.contains("stopped migration \"shop\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("disk full"), "the hook's own output: {}", run.stderr);
    let cms: Api<DynamicObject> = Api::namespaced_with(
        lab.client("lab-dst").await,
        "shop-prod",
        &ApiResource {
            group: "".into(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
        },
    );
    assert!(cms.get_opt("shop-config").await.unwrap().is_none(), "stopped before the objects");

    let file = desired(&lab, &job("pre-restore", "exit 3", "ignore"));
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(cms.get_opt("shop-config").await.unwrap().is_some());
}
