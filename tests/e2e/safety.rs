//! Resource-path safety against the lab: never act on what could not be read, never write
//! the source, refuse the cluster's own namespaces, and do not stall on a dead aggregated API.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use mtcd_tests::{Lab, repo_root};
use serde_json::{Value, json};

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(lab.client(ctx).await, ns, r);
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

fn desired(lab: &Lab, source: &str, destination: &str, migration: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"{source}\"\n[clusters.destination]\ncontext = \"{destination}\"\n[[migration]]\nname = \"shop\"\nvolumes = \"skip\"\n{migration}"
        ),
    )
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: sprocket, namespace: shop}
spec: {size: 3}
"#;

/// What a namespace-scoped migration user typically has: read on the core and apps groups
/// in `shop`, and its namespace object; nothing on `widgets.example.com`.
const LIMITED_READER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: migration-reader, namespace: shop}
rules: [{apiGroups: ["", "apps"], resources: ["*"], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: migration-reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: migration-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: limited}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: read-shop-namespace}
rules: [{apiGroups: [""], resources: [namespaces], resourceNames: [shop], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: limited-reads-shop-namespace}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read-shop-namespace}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: limited}]
"#;

/// A source user who may not list widgets: the plan says so and exits 1, apply writes
/// nothing, and the destination's widgets — copied earlier by a user who could — are not
/// pruned. Leaving the kind out of the migration makes it work, and prunes nothing either.
#[tokio::test(flavor = "multi_thread")]
async fn a_type_the_source_may_not_list_is_never_pruned() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    lab.seed_yaml("lab-src", WIDGETS).await.unwrap();
    lab.seed_yaml("lab-src", LIMITED_READER).await.unwrap();
    let body = "namespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\n";
    let admin = desired(&lab, "lab-src", "lab-dst", body);
    let run = lab.mtcd(&["apply", admin.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let widget = ar("example.com", "v1", "Widget", "widgets");
    assert!(get(&lab, "lab-dst", &widget, "shop-prod", "sprocket").await.is_some(), "copied by the admin");

    // The source changes; the limited user runs the next sync.
    let cms: Api<DynamicObject> =
        Api::namespaced_with(lab.client("lab-src").await, "shop", &ar("", "v1", "ConfigMap", "configmaps"));
    cms.patch("shop-config", &PatchParams::default(), &Patch::Merge(&json!({"data": {"SHOP_CURRENCY": "JPY"}})))
        .await
        .unwrap();
    let limited = desired(&lab, "lab-src-limited", "lab-dst", body);
    let plan = lab.mtcd(&["plan", limited.to_str().unwrap()]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("not read completely"), "{}", plan.stdout);
    assert!(plan.stdout.contains("source widgets.example.com in shop"), "{}", plan.stdout);
    assert!(plan.stdout.contains("forbidden"), "the API server's reason: {}", plan.stdout);
    assert!(!plan.stdout.contains("sprocket (prune)"), "{}", plan.stdout);

    let run = lab.mtcd(&["apply", limited.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("could not be read completely") && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    assert!(get(&lab, "lab-dst", &widget, "shop-prod", "sprocket").await.is_some(), "never pruned");
    let cm = get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.unwrap();
    assert_ne!(cm["data"]["SHOP_CURRENCY"], "JPY", "nothing written from a partial read");

    // Only the kinds this user may read: works, and the widget stays.
    let narrowed = desired(
        &lab,
        "lab-src-limited",
        "lab-dst",
        &format!("{body}include_kinds = [\"ConfigMap\", \"Deployment\"]\n"),
    );
    let run = lab.mtcd(&["apply", narrowed.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let cm = get(&lab, "lab-dst", &ar("", "v1", "ConfigMap", "configmaps"), "shop-prod", "shop-config").await.unwrap();
    assert_eq!(cm["data"]["SHOP_CURRENCY"], "JPY");
    assert!(get(&lab, "lab-dst", &widget, "shop-prod", "sprocket").await.is_some(), "a kind left out is not pruned");
}

/// Two context names for one cluster: a namespace mapped onto itself is refused, naming both
/// contexts; a clone into another namespace of the same cluster works.
#[tokio::test(flavor = "multi_thread")]
async fn source_and_destination_are_never_the_same_objects() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let same = desired(&lab, "lab-src", "lab-src-alias", "namespaces = [\"shop\"]\n");
    for cmd in ["plan", "apply", "cutover"] {
        let run = lab.mtcd(&[cmd, same.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{cmd}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("contexts \"lab-src\" and \"lab-src-alias\" reach the same cluster")
                && run.stderr.contains("kube-system")
                && run.stderr.contains("maps namespace \"shop\" onto itself"),
            "{cmd}: {}",
            run.stderr
        );
    }
    let web = get(&lab, "lab-src", &ar("apps", "v1", "Deployment", "deployments"), "shop", "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 3, "the source was not touched");
    assert!(web["metadata"]["annotations"].get("mtcd.io/original-replicas").is_none());

    let clone = desired(
        &lab,
        "lab-src",
        "lab-src-alias",
        "namespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-copy\" }\n",
    );
    let run = lab.mtcd(&["apply", clone.to_str().unwrap()]);
    assert_eq!(run.code, 0, "a namespace clone on one cluster: {}\n{}", run.stdout, run.stderr);
    assert!(get(&lab, "lab-src", &ar("", "v1", "ConfigMap", "configmaps"), "shop-copy", "shop-config").await.is_some());
    let web = get(&lab, "lab-src", &ar("apps", "v1", "Deployment", "deployments"), "shop", "web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 3, "the source still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_s_own_namespaces_are_refused_at_their_line() {
    let lab = Lab::up();
    let file = desired(&lab, "lab-src", "lab-dst", "namespaces = [\"kube-system\"]\n");
    let run = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("desired.toml:9:15: \"kube-system\" is one of the cluster's own namespaces"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("allow_system_namespaces = true"), "{}", run.stderr);
    assert!(run.stderr.contains("has 1 problem;"), "once, not as source and destination: {}", run.stderr);
}

/// metrics-server down (its APIService answers 503): one short attempt, one warning, and the
/// plan goes on — no five-minute silent retry.
#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_aggregated_api_does_not_stall_the_plan() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    for ctx in ["lab-src", "lab-dst"] {
        let apiservices: Api<DynamicObject> =
            Api::all_with(lab.client(ctx).await, &ar("apiregistration.k8s.io", "v1", "APIService", "apiservices"));
        let down = json!({"metadata": {"annotations": {"lab.mtcd.io/unavailable": "true"}}});
        apiservices.patch("v1beta1.metrics.k8s.io", &PatchParams::default(), &Patch::Merge(&down)).await.unwrap();
    }
    let file =
        desired(&lab, "lab-src", "lab-dst", "namespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\n");
    let started = Instant::now();
    let run = lab.mtcd(&["--output", "json", "plan", file.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(run.code, 2, "metrics are never copied: changes pending, not an error\n{}\n{}", run.stdout, run.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let warnings = plan["migrations"][0]["resources"]["warnings"].to_string();
    assert!(warnings.contains("cannot discover metrics.k8s.io/v1beta1"), "{warnings}");
}

/// A transform that returns a ClusterRoleBinding to cluster-admin, a hostPath `/`
/// PersistentVolume or a Secret in kube-system is refused at plan time, naming the plugin
/// and the object; nothing reaches the destination.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_write_outside_the_migration() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &std::fs::read_to_string(repo_root().join("examples/lab/seed.yaml")).unwrap())
        .await
        .unwrap();
    let plugin = mtcd_tests::plugins::plugin_wasm("escalate");
    for (attack, object, why) in [
        ("crb", "ClusterRoleBinding.rbac.authorization.k8s.io/pwned", "cluster-scoped objects are refused"),
        ("pv", "PersistentVolume/root", "cluster-scoped objects are refused"),
        (
            "elsewhere",
            "Secret/kube-system/planted",
            "namespace \"kube-system\" is not one of the migration's namespaces",
        ),
    ] {
        let file = desired(
            &lab,
            "lab-src",
            "lab-dst",
            &format!(
                "namespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\n[[migration.transform]]\nplugin = \"{}\"\nconfig = {{ attack = \"{attack}\" }}\n",
                plugin.display()
            ),
        );
        let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{attack}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("escalate.wasm returned") && run.stderr.contains(object) && run.stderr.contains(why),
            "{attack}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    }
    let dst = lab.client("lab-dst").await;
    let crbs: Api<DynamicObject> =
        Api::all_with(dst.clone(), &ar("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings"));
    assert!(crbs.get_opt("pwned").await.unwrap().is_none());
    let pvs: Api<DynamicObject> = Api::all_with(dst.clone(), &ar("", "v1", "PersistentVolume", "persistentvolumes"));
    assert!(pvs.get_opt("root").await.unwrap().is_none());
    let namespaces: Api<DynamicObject> = Api::all_with(dst, &ar("", "v1", "Namespace", "namespaces"));
    assert!(namespaces.get_opt("shop-prod").await.unwrap().is_none(), "nothing at all was written");
}
