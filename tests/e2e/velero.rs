//! The Velero path (`resources = "velero"`) against the lab's Velero stand-in: Backup on the
//! source, Restore on the destination with the namespace mapping, per-object results
//! surfaced in mtcd's output, workloads held until cutover.

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use mtcd_tests::{Lab, repo_root};
use serde_json::{Value, json};

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

fn desired(lab: &Lab, velero: &str) -> std::path::PathBuf {
    lab.desired(
        "velero.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nresources = \"velero\"\nvolumes = \"skip\"\n[migration.velero]\ntimeout = \"90s\"\n{velero}"
        ),
    )
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(lab.client(ctx).await, ns, r);
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

async fn create(lab: &Lab, ctx: &str, r: &ApiResource, ns: Option<&str>, obj: Value) {
    let client = lab.client(ctx).await;
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client, ns, r),
        None => Api::all_with(client, r),
    };
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn velero_path_moves_a_namespace_with_mapping_holds_workloads_and_reports_object_results() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    // A conflicting object already in the destination namespace: Velero does not overwrite it
    // (policy none) and says so for that object.
    create(
        &lab,
        "lab-dst",
        &ar("", "v1", "Namespace", "namespaces"),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-prod"}}),
    )
    .await;
    create(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), Some("shop-prod"), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"}, "data": {"LOG_LEVEL": "someone-else"}})).await;

    let file = desired(&lab, "");
    let t0 = std::time::Instant::now();
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(run.code, 0, "warnings are not failures:\n{}\n{}", run.stdout, run.stderr);
    let summary: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary:\n{}", run.stdout));
    let v = &summary["migrations"][0]["velero"];
    eprintln!("velero apply took {secs:.1}s: {v}");
    assert_eq!(v["backup_phase"], "Completed", "{v}");
    assert_eq!(v["restore_phase"], "Completed", "{v}");
    assert!(v["backup"].as_str().unwrap().starts_with("mtcd-shop-"), "{v}");
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w["scope"] == "shop-prod"
            && w["message"].as_str().unwrap().contains("ConfigMap \"shop-config\" already exists")),
        "the conflicting object is named in the report: {warnings:?}"
    );
    // The pre-existing object is untouched.
    let cm = get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.unwrap();
    assert_eq!(cm["data"]["LOG_LEVEL"], "someone-else");

    // Objects arrived in the mapped namespace, cleaned and labelled by the restore.
    let web = get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web")
        .await
        .expect("web restored");
    assert_eq!(web["metadata"]["labels"]["velero.io/restore-name"], v["restore"]);
    assert_eq!(web["spec"]["replicas"], 0, "held until cutover");
    assert_eq!(web["metadata"]["annotations"]["mtcd.io/original-replicas"], "3");
    let cj =
        get(&lab, "lab-dst", &ar("batch", "v1", "CronJob", "cronjobs"), "shop-prod", "nightly-report").await.unwrap();
    assert_eq!(cj["spec"]["suspend"], true);
    let rb = get(
        &lab,
        "lab-dst",
        &ar("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        "shop-prod",
        "shop-app-reads-config",
    )
    .await
    .unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "shop-prod");
    let svc = get(&lab, "lab-dst", &ar("", "v1", "Service", "services"), "shop-prod", "web").await.unwrap();
    let src_svc = get(&lab, "lab-src", &ar("", "v1", "Service", "services"), "shop", "web").await.unwrap();
    assert_ne!(svc["spec"]["clusterIP"], src_svc["spec"]["clusterIP"], "clusterIP re-allocated");
    // PVC data is DVM's: the backup excluded claims.
    assert!(
        get(&lab, "lab-dst", &ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"), "shop-prod", "uploads")
            .await
            .is_none()
    );
    // The source keeps running.
    let src_web = get(&lab, "lab-src", &ar("apps", "v1", "Deployment", "deployments"), "shop", "web").await.unwrap();
    assert_eq!(src_web["spec"]["replicas"], 3);

    // Human output names the object too.
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("warning [shop-prod]: could not restore, ConfigMap \"shop-config\" already exists"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_storage_location_is_a_clear_error_and_nothing_is_restored() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let file = desired(&lab, "storage_location = \"nope\"\n");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("backupstoragelocation velero/nope does not exist"), "{}", run.stderr);
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    // A preflight failure: found before the first write, reported once as the JSON error.
    let error: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("preflight") && text.contains("velero/nope does not exist"), "{error}");
    assert!(get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_the_destination_refuses_are_per_object_errors_and_fail_the_apply() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    // The mapped namespace is stuck terminating (an object in it holds a finalizer): every
    // create in it is refused, as on a real cluster.
    let ns_ty = ar("", "v1", "Namespace", "namespaces");
    create(
        &lab,
        "lab-dst",
        &ns_ty,
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-prod"}}),
    )
    .await;
    create(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), Some("shop-prod"), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hold", "finalizers": ["example.com/hold"]}})).await;
    let nss: Api<DynamicObject> = Api::all_with(lab.client("lab-dst").await, &ns_ty);
    nss.delete("shop-prod", &Default::default()).await.unwrap();
    for _ in 0..50 {
        let ns = get_cluster(&lab, &ns_ty, "shop-prod").await;
        if ns["status"]["phase"] == "Terminating" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A terminating namespace refuses mtcd's own lock too (a clear error before anything is
    // written); for the restore's per-object errors the lock lives in another namespace.
    let run = lab.mtcd(&["apply", desired(&lab, "").to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("cannot take the lock shop-prod/mtcd-shop") && run.stderr.contains("being terminated"));
    lab.seed_yaml("lab-src", "apiVersion: v1\nkind: Namespace\nmetadata: {name: front}\n").await.unwrap();
    let file = lab.desired(
        "velero-two.toml",
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"front\", \"shop\"]\nnamespace_map = { front = \"front-prod\", shop = \"shop-prod\" }\nresources = \"velero\"\nvolumes = \"skip\"\n[migration.velero]\ntimeout = \"90s\"\n",
    );
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "restore errors fail the apply:\n{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("restore mtcd-shop-") && run.stdout.contains("PartiallyFailed"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.lines().any(|l| l.contains("error [shop-prod]: error restoring deployments.apps/shop-prod/web")
            && l.contains("being terminated")),
        "the refused object is named with the server's reason:\n{}",
        run.stdout
    );
}

async fn get_cluster(lab: &Lab, r: &ApiResource, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::all_with(lab.client("lab-dst").await, r);
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_through_velero_starts_the_destination_at_the_original_counts() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let file = desired(&lab, "");
    let f = file.to_str().unwrap();
    let run = lab.mtcd(&["apply", f]);
    assert_eq!(run.code, 0, "stage:\n{}\n{}", run.stdout, run.stderr);
    let deploy = ar("apps", "v1", "Deployment", "deployments");
    assert_eq!(get(&lab, "lab-dst", &deploy, "shop-prod", "web").await.unwrap()["spec"]["replicas"], 0);
    let run = lab.mtcd(&["cutover", f]);
    assert_eq!(run.code, 0, "cutover:\n{}\n{}", run.stdout, run.stderr);
    let web = get(&lab, "lab-dst", &deploy, "shop-prod", "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 3, "released at the source's count");
    assert!(web["metadata"]["annotations"].get("mtcd.io/original-replicas").is_none(), "{web}");
    assert_eq!(get(&lab, "lab-src", &deploy, "shop", "web").await.unwrap()["spec"]["replicas"], 0, "source quiesced");
    let cj =
        get(&lab, "lab-dst", &ar("batch", "v1", "CronJob", "cronjobs"), "shop-prod", "nightly-report").await.unwrap();
    assert_eq!(cj["spec"]["suspend"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_applies_get_distinct_velero_names_and_kind_filters_reach_velero() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    // Only ConfigMaps: the quickest possible runs, so two fall in the same second.
    let file = desired(&lab, "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("volumes = \"skip\"\n", "volumes = \"skip\"\ninclude_kinds = [\"ConfigMap\"]\n");
    std::fs::write(&file, text).unwrap();
    let mut names = Vec::new();
    for _ in 0..2 {
        let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let summary: Value = run
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap();
        names.push(summary["migrations"][0]["velero"]["backup"].as_str().unwrap().to_string());
    }
    assert_ne!(names[0], names[1]);
    // include_kinds reached Velero as includedResources.
    assert!(get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.is_some());
    assert!(get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_resource_policy_update_overwrites_what_the_destination_has() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    create(
        &lab,
        "lab-dst",
        &ar("", "v1", "Namespace", "namespaces"),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-prod"}}),
    )
    .await;
    create(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), Some("shop-prod"), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"}, "data": {"LOG_LEVEL": "someone-else"}})).await;
    let file = desired(&lab, "existing_resource_policy = \"update\"\n");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("already exists"), "{}", run.stdout);
    let src = get(&lab, "lab-src", &ar("", "v1", "ConfigMap", "configmaps"), "shop", "shop-config").await.unwrap();
    let cm = get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.unwrap();
    assert_eq!(cm["data"], src["data"], "updated to the backed-up version");
    assert!(cm["metadata"]["labels"]["velero.io/restore-name"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_velero_timeout_names_the_object_and_its_last_phase() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let file = desired(&lab, "");
    let text = std::fs::read_to_string(&file).unwrap().replace("timeout = \"90s\"", "timeout = \"1ms\"");
    std::fs::write(&file, text).unwrap();
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    // Which step runs out first depends on the machine (the stand-in is quick); each names
    // its object and the phase it was left in.
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("did not reach a terminal phase within 1ms"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(line.contains(" velero/mtcd-shop-") && line.contains("(last phase "), "{line}");
}
