//! Direct resource migration against the lab: plan → apply → plan, mapping, CRDs, updates,
//! prunes and objects the destination rejects.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use mtcd_tests::{Lab, repo_root};
use serde_json::{Value, json};

fn desired(lab: &Lab, extra: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"skip\"\n{extra}"
        ),
    )
}

fn plan_json(lab: &Lab, file: &std::path::Path) -> (i32, Value) {
    let run = lab.mtcd(&["--output", "json", "plan", file.to_str().unwrap()]);
    let v =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}\n{}", run.stdout, run.stderr));
    (run.code, v)
}

fn actions(plan: &Value) -> Vec<(String, String, String)> {
    plan["migrations"][0]["resources"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "unchanged")
        .map(|c| {
            (
                c["action"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
                c["name"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(lab.client(ctx).await, ns, r);
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_apply_plan_moves_a_namespace_with_mapping_and_holds_workloads() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let file = desired(&lab, "");
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 2, "changes pending: {plan}");
    let acts = actions(&plan);
    for (kind, name) in [
        ("Namespace", "shop-prod"),
        ("ConfigMap", "shop-config"),
        ("Deployment", "web"),
        ("RoleBinding", "shop-app-reads-config"),
        ("Service", "web"),
    ] {
        assert!(
            acts.iter().any(|(a, k, n)| a == "create" && k == kind && n == name),
            "{kind}/{name} not created in {acts:?}"
        );
    }
    assert!(
        !acts.iter().any(|(_, k, n)| k == "ConfigMap" && n == "kube-root-ca.crt"),
        "generated objects are not copied"
    );
    // Secrets never appear with their values in a plan.
    assert!(!plan.to_string().contains("correct-horse"), "secret value leaked into the plan");

    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 0, "second plan must be empty: {:?}", actions(&plan));

    let web = get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web")
        .await
        .expect("web on destination");
    assert_eq!(web["spec"]["replicas"], 0, "held until cutover");
    assert_eq!(web["metadata"]["annotations"]["mtcd.io/original-replicas"], "3");
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
    assert_ne!(svc["spec"]["clusterIP"], src_svc["spec"]["clusterIP"], "the destination allocates its own clusterIP");
    let cj =
        get(&lab, "lab-dst", &ar("batch", "v1", "CronJob", "cronjobs"), "shop-prod", "nightly-report").await.unwrap();
    assert_eq!(cj["spec"]["suspend"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn source_changes_show_as_updates_and_deletions_as_prunes() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let file = desired(&lab, "");
    assert_eq!(lab.mtcd(&["apply", file.to_str().unwrap()]).code, 0);
    let client = lab.client("lab-src").await;
    let cms: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "shop", &ar("", "v1", "ConfigMap", "configmaps"));
    cms.patch("shop-config", &PatchParams::default(), &Patch::Merge(json!({"data": {"SHOP_CURRENCY": "USD"}})))
        .await
        .unwrap();
    let svcs: Api<DynamicObject> = Api::namespaced_with(client, "shop", &ar("", "v1", "Service", "services"));
    svcs.delete("db", &Default::default()).await.unwrap();
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 2);
    let acts = actions(&plan);
    assert_eq!(
        acts,
        [
            ("update".to_string(), "ConfigMap".to_string(), "shop-config".to_string()),
            ("prune".to_string(), "Service".to_string(), "db".to_string())
        ]
    );
    let change = plan["migrations"][0]["resources"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update")
        .unwrap();
    assert_eq!(change["diff"][0], "data.SHOP_CURRENCY: \"EUR\" → \"USD\"");
    assert_eq!(lab.mtcd(&["apply", file.to_str().unwrap()]).code, 0);
    assert!(get(&lab, "lab-dst", &ar("", "v1", "Service", "services"), "shop-prod", "db").await.is_none(), "pruned");
    assert_eq!(plan_json(&lab, &file).0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crd_and_its_custom_resources_migrate() {
    let lab = Lab::up();
    lab.seed_yaml(
        "lab-src",
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: sprocket, namespace: shop}
spec: {size: 3}
"#,
    )
    .await
    .unwrap();
    let file = desired(&lab, "");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let w = get(&lab, "lab-dst", &ar("example.com", "v1", "Widget", "widgets"), "shop-prod", "sprocket")
        .await
        .expect("widget migrated");
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(plan_json(&lab, &file).0, 0);
}

/// A Deployment of the same name that mtcd did not create, with an immutable selector the
/// source's differs from: shown as adopt + replace, refused before any write, and taken over
/// only when the user says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_object_with_an_immutable_conflict_is_adopted_and_replaced_only_when_allowed() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    // The destination already has a Deployment `web` with a different (immutable) selector.
    lab.seed_yaml(
        "lab-dst",
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop-prod}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop-prod}
spec:
  replicas: 1
  selector: {matchLabels: {app: legacy-web}}
  template:
    metadata: {labels: {app: legacy-web}}
    spec:
      containers: [{name: web, image: registry.example.com/simulated/legacy:1}]
"#,
    )
    .await
    .unwrap();
    let file = desired(&lab, "");
    let f = file.to_str().unwrap();
    let plan = lab.mtcd(&["plan", f]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("* web (adopt)"), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("blocked: Deployment.apps/shop-prod/web: exists on the destination and mtcd did not create it"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("spec.selector") && plan.stdout.contains("immutable"),
        "the field is named: {}",
        plan.stdout
    );

    let run = lab.mtcd(&["apply", f]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nothing was changed") && run.stderr.contains("--adopt"), "{}", run.stderr);
    assert!(
        get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.is_none(),
        "refused before the first write"
    );
    let legacy =
        get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web").await.unwrap();
    assert_eq!(legacy["spec"]["selector"]["matchLabels"]["app"], "legacy-web", "untouched");

    let run = lab.mtcd(&["apply", "--adopt", "--allow-replace", f]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let web = get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web").await.unwrap();
    assert_eq!(web["metadata"]["labels"]["mtcd.io/migration"], "shop", "{web}");
    assert_ne!(web["metadata"]["uid"], legacy["metadata"]["uid"], "replaced, not patched");
    assert_ne!(web["spec"]["selector"]["matchLabels"]["app"], "legacy-web");
    assert!(get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.is_some());
    assert_eq!(plan_json(&lab, &file).0, 0, "adopted and replaced: nothing left to do");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_namespace_fails_before_any_write() {
    let lab = Lab::up();
    let file = desired(&lab, "");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("namespace \"shop\" does not exist"), "{}", run.stderr);
    let namespaces: Api<DynamicObject> =
        Api::all_with(lab.client("lab-dst").await, &ar("", "v1", "Namespace", "namespaces"));
    assert!(namespaces.get_opt("shop-prod").await.unwrap().is_none(), "nothing was written");
}

/// Drift on the destination is seen through managedFields and repaired by apply; values the
/// API server normalises (quantities, int-or-string ports, defaulted fields) are not drift.
#[tokio::test(flavor = "multi_thread")]
async fn destination_drift_shows_in_the_plan_and_apply_repairs_it() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    lab.seed_yaml(
        "lab-src",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: registry.example.com/simulated/api:1
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {port: http, path: /ready}}
        resources: {requests: {cpu: "0.5", memory: 512Mi}, limits: {cpu: 1, memory: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: http}]
"#,
    )
    .await
    .unwrap();
    let file = desired(&lab, "");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 0, "no false drift after apply: {:?}", actions(&plan));

    // Someone edits a migrated ConfigMap and scales a held Deployment on the destination.
    let client = lab.client("lab-dst").await;
    let cms: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "shop-prod", &ar("", "v1", "ConfigMap", "configmaps"));
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    cms.patch("shop-config", &edit, &Patch::Merge(&json!({"data": {"SHOP_CURRENCY": "XXX"}}))).await.unwrap();
    let deploys: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "shop-prod", &ar("apps", "v1", "Deployment", "deployments"));
    let scale = PatchParams { field_manager: Some("kubectl-scale".into()), ..Default::default() };
    deploys.patch("web", &scale, &Patch::Merge(&json!({"spec": {"replicas": 5}}))).await.unwrap();
    // A label nobody from mtcd set is not drift: mtcd does not manage it.
    cms.patch("shop-config", &edit, &Patch::Merge(&json!({"metadata": {"labels": {"team": "ops"}}}))).await.unwrap();

    let run = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("data.SHOP_CURRENCY: \"XXX\" → "), "the drift and its value: {}", run.stdout);
    assert!(run.stdout.contains("spec.replicas: 5 → 0"), "{}", run.stdout);
    let (_, plan) = plan_json(&lab, &file);
    let mut acts = actions(&plan);
    acts.sort();
    assert_eq!(
        acts,
        [
            ("update".into(), "ConfigMap".into(), "shop-config".into()),
            ("update".into(), "Deployment".into(), "web".into())
        ]
    );

    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let cm = get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.unwrap();
    assert_ne!(cm["data"]["SHOP_CURRENCY"], "XXX");
    assert_eq!(cm["metadata"]["labels"]["team"], "ops", "fields mtcd does not manage are left alone");
    let web = get(&lab, "lab-dst", &ar("apps", "v1", "Deployment", "deployments"), "shop-prod", "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 0, "held again");
    assert_eq!(plan_json(&lab, &file).0, 0);
}
