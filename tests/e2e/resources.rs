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

#[tokio::test(flavor = "multi_thread")]
async fn an_object_the_destination_rejects_is_named_and_the_rest_applies() {
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
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "partial failure exits 1:\n{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("Deployment.apps/shop-prod/web"), "{all}");
    assert!(all.contains("immutable"), "the API server's reason is shown: {all}");
    assert!(
        get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.is_some(),
        "the rest applied"
    );
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
