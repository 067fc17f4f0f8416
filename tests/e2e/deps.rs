//! What a namespace needs from outside it (issue 20): the cluster RBAC of its service
//! accounts, OpenShift SCCs, statically provisioned PVs and owned objects, against the lab's
//! real RBAC.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use mtcd_tests::Lab;
use serde_json::{Value, json};

fn desired(lab: &Lab, namespace: &str, extra: &str) -> std::path::PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"deps\"\nnamespaces = [\"{namespace}\"]\nnamespace_map = {{ {namespace} = \"{namespace}-new\" }}\nvolumes = \"skip\"\n{extra}"
        ),
    )
}

fn plan_json(lab: &Lab, file: &std::path::Path) -> (i32, Value) {
    let run = lab.mtcd(&["--output", "json", "plan", file.to_str().unwrap()]);
    let v =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{}\n{}", run.stdout, run.stderr));
    (run.code, v)
}

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

fn crb() -> ApiResource {
    ar("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings")
}

fn scc() -> ApiResource {
    ar("security.openshift.io", "v1", "SecurityContextConstraints", "securitycontextconstraints")
}

async fn get(lab: &Lab, ctx: &str, r: &ApiResource, ns: Option<&str>, name: &str) -> Option<Value> {
    let client = lab.client(ctx).await;
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client, ns, r),
        None => Api::all_with(client, r),
    };
    api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
}

/// Whether the lab's RBAC lets service account `ns/sa` do `verb` on `resource` (in
/// `namespace`, or cluster-wide), asked as kube-apiserver would be.
async fn can(lab: &Lab, ctx: &str, ns: &str, sa: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": format!("system:serviceaccount:{ns}:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}}}))
    .unwrap();
    let api: Api<SubjectAccessReview> = Api::all(lab.client(ctx).await);
    api.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed
}

const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: deps}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: deps}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: monitoring}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-reader}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pv-reader}
rules: [{apiGroups: [""], resources: [persistentvolumes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: deps-node-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-reader}
subjects: [{kind: ServiceAccount, name: reader, namespace: deps}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: deps-accounts-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:serviceaccounts:deps"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: shared-pv-readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pv-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: deps}
- {kind: ServiceAccount, name: agent, namespace: monitoring}
---
apiVersion: security.openshift.io/v1
kind: SecurityContextConstraints
metadata: {name: deps-scc}
runAsUser: {type: RunAsAny}
seLinuxContext: {type: MustRunAs}
users: ["system:serviceaccount:deps:reader", "system:admin"]
groups: []
"#;

/// The destination's own shared binding (the platform team's): never overwritten.
const DESTINATION_SHARED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pv-reader}
rules: [{apiGroups: [""], resources: [persistentvolumes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: shared-pv-readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pv-reader}
subjects: [{kind: ServiceAccount, name: agent, namespace: monitoring}]
"#;

/// A service account bound by a ClusterRoleBinding (and through its namespace's group) can
/// do on the destination what it could on the source; a shared binding is left alone and
/// mtcd writes its own; an existing SCC gains the mapped user and a missing one is created.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_rbac_and_sccs_follow_the_migrated_service_accounts() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", RBAC).await.unwrap();
    lab.seed_yaml("lab-dst", DESTINATION_SHARED).await.unwrap();
    // The source's anyuid admits the account too.
    let sccs: Api<DynamicObject> = Api::all_with(lab.client("lab-src").await, &scc());
    sccs.patch(
        "anyuid",
        &PatchParams::default(),
        &Patch::Merge(json!({"users": ["system:serviceaccount:deps:reader"]})),
    )
    .await
    .unwrap();

    let checks: [(&str, &str, &str, Option<&str>); 3] = [
        ("reader", "list", "nodes", None),
        ("reader", "list", "persistentvolumes", None),
        ("anyone", "get", "configmaps", Some("default")),
    ];
    for (sa, verb, resource, ns) in checks {
        assert!(can(&lab, "lab-src", "deps", sa, verb, resource, ns).await, "source: {sa} {verb} {resource}");
        assert!(
            !can(&lab, "lab-dst", "deps-new", sa, verb, resource, ns).await,
            "destination before: {sa} {verb} {resource}"
        );
    }

    let file = desired(&lab, "deps", "");
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 2, "{plan}");
    let deps = plan["migrations"][0]["resources"]["dependencies"].as_array().expect("dependencies in the plan").clone();
    let outcome = |name: &str| {
        deps.iter().find(|d| d["name"] == name).map(|d| d["outcome"].as_str().unwrap().to_string()).unwrap_or_default()
    };
    assert!(outcome("shared-pv-readers").contains("mtcd:deps:shared-pv-readers"), "{deps:?}");
    assert!(outcome("view").starts_with("built in"), "{deps:?}");
    assert!(outcome("pv-reader").contains("used as it is"), "{deps:?}");
    assert!(outcome("anyuid").contains("gains system:serviceaccount:deps-new:reader"), "{deps:?}");
    let human = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(human.stdout.contains("cluster-scoped dependencies:"), "{}", human.stdout);

    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for (sa, verb, resource, ns) in checks {
        let ns = ns.map(|_| "deps-new");
        assert!(
            can(&lab, "lab-dst", "deps-new", sa, verb, resource, ns).await,
            "destination after: {sa} {verb} {resource}"
        );
    }
    assert!(!can(&lab, "lab-dst", "deps-new", "reader", "delete", "nodes", None).await, "no more than the source");

    let b = get(&lab, "lab-dst", &crb(), None, "deps-node-reader").await.expect("copied under its name");
    assert_eq!(b["subjects"], json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "deps-new"}]));
    assert!(get(&lab, "lab-dst", &crb(), None, "deps-accounts-view").await.is_some(), "a binding to view is copied");
    assert!(
        get(
            &lab,
            "lab-dst",
            &ar("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles"),
            None,
            "node-reader"
        )
        .await
        .is_some()
    );
    let shared = get(&lab, "lab-dst", &crb(), None, "shared-pv-readers").await.unwrap();
    assert_eq!(shared["subjects"], json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "monitoring"}]));
    assert!(shared["metadata"]["labels"].get("mtcd.io/migration").is_none(), "not stamped");
    let own = get(&lab, "lab-dst", &crb(), None, "mtcd:deps:shared-pv-readers").await.expect("mtcd's own binding");
    assert_eq!(own["subjects"], json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "deps-new"}]));

    let anyuid = get(&lab, "lab-dst", &scc(), None, "anyuid").await.unwrap();
    assert_eq!(anyuid["users"], json!(["system:serviceaccount:deps-new:reader"]));
    assert_eq!(anyuid["groups"], json!(["system:cluster-admins"]), "what was there stays");
    assert!(anyuid["metadata"].get("labels").is_none(), "an SCC mtcd did not create is never stamped");
    let created = get(&lab, "lab-dst", &scc(), None, "deps-scc").await.expect("created");
    assert_eq!(created["users"], json!(["system:serviceaccount:deps-new:reader"]), "not the source's other users");
    assert_eq!(created["metadata"]["labels"]["mtcd.io/migration"], "deps");

    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 0, "nothing left to do: {}", plan["migrations"][0]["resources"]["changes"]);

    // The account leaves the shared binding on the source: mtcd's own binding is pruned,
    // the destination's shared one stays.
    let bindings: Api<DynamicObject> = Api::all_with(lab.client("lab-src").await, &crb());
    bindings
        .patch(
            "shared-pv-readers",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "monitoring"}]}),
            ),
        )
        .await
        .unwrap();
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(get(&lab, "lab-dst", &crb(), None, "mtcd:deps:shared-pv-readers").await.is_none(), "pruned");
    assert!(get(&lab, "lab-dst", &crb(), None, "shared-pv-readers").await.is_some());
    assert!(!can(&lab, "lab-dst", "deps-new", "reader", "list", "persistentvolumes", None).await);
}

const VAULT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: vault}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: databases.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Database, listKind: DatabaseList, plural: databases, singular: database}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
---
apiVersion: example.com/v1
kind: Database
metadata: {name: db, namespace: vault}
spec: {engine: postgres}
---
apiVersion: v1
kind: Pod
metadata: {name: worker, namespace: vault}
spec: {containers: [{name: worker, image: "registry.example.com/worker:1"}]}
"#;

fn static_volume(dir: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: shared-data}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: ""
  hostPath: {{path: "{}"}}
  claimRef: {{namespace: vault, name: data}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: vault}}
spec:
  storageClassName: ""
  volumeName: shared-data
  accessModes: [ReadWriteMany]
  resources: {{requests: {{storage: 1Gi}}}}
"#,
        dir.display()
    )
}

async fn wait_bound(lab: &Lab, ctx: &str, ns: &str, name: &str) -> Value {
    let r = ar("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims");
    for _ in 0..60 {
        if let Some(p) = get(lab, ctx, &r, Some(ns), name).await
            && p["status"]["phase"] == "Bound"
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{ctx}: PersistentVolumeClaim/{ns}/{name} never bound");
}

/// A claim on a statically provisioned volume blocks the plan until `pv_policy` says; with
/// `copy` the PV arrives with its claimRef remapped and the claim binds to it. An
/// operator-generated Secret moves with `keep_owned` and is re-linked to its owner's
/// destination UID.
#[tokio::test(flavor = "multi_thread")]
async fn a_static_pv_moves_with_pv_policy_copy_and_an_owned_secret_with_keep_owned() {
    let lab = Lab::up();
    let shared = lab.dir.join("shared-storage");
    std::fs::create_dir_all(&shared).unwrap();
    lab.seed_yaml("lab-src", VAULT).await.unwrap();
    lab.seed_yaml("lab-src", &static_volume(&shared)).await.unwrap();
    wait_bound(&lab, "lab-src", "vault", "data").await;
    let db = ar("example.com", "v1", "Database", "databases");
    let src_db = get(&lab, "lab-src", &db, Some("vault"), "db").await.unwrap();
    let secrets: Api<DynamicObject> =
        Api::namespaced_with(lab.client("lab-src").await, "vault", &ar("", "v1", "Secret", "secrets"));
    let secret: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-creds", "namespace": "vault", "ownerReferences": [{"apiVersion": "example.com/v1",
            "kind": "Database", "name": "db", "uid": src_db["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
        "stringData": {"password": "s3cret-from-the-operator"}}))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    // No choice written: blocked, naming the claim, the volume and both choices.
    let file = desired(&lab, "vault", "");
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    for want in [
        "PersistentVolumeClaim/vault/data",
        "PersistentVolume/shared-data",
        "pv_policy = \"copy\"",
        "pv_policy = \"dvm\"",
    ] {
        assert!(plan.stdout.contains(want), "{want}: {}", plan.stdout);
    }
    let (_, json_plan) = plan_json(&lab, &file);
    let skipped = &json_plan["migrations"][0]["resources"]["skipped"];
    assert!(
        skipped
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "db-creds" && s["reason"] == "owned by another object, which recreates it"),
        "without keep_owned the operator's Secret is skipped: {skipped}"
    );
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "apply refuses: {}\n{}", run.stdout, run.stderr);

    let file = desired(&lab, "vault", "pv_policy = \"copy\"\nkeep_owned = [\"Secret\"]\n");
    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 2, "{plan}");
    // The pod runs as the new namespace's `default` account, which the destination makes.
    let waits = &plan["migrations"][0]["resources"]["waits"];
    assert_eq!(waits[0]["kind"], "ServiceAccount", "{waits}");
    assert_eq!(waits[0]["namespace"], "vault-new");
    assert_eq!(waits[0]["name"], "default");
    assert_eq!(waits[0]["needed_by"], json!(["Pod/vault-new/worker"]));
    let kept = &plan["migrations"][0]["resources"]["kept"];
    assert_eq!(kept[0]["name"], "db-creds", "{kept}");
    assert_eq!(kept[0]["relink"], true);
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let pv = get(&lab, "lab-dst", &ar("", "v1", "PersistentVolume", "persistentvolumes"), None, "shared-data")
        .await
        .expect("the static PV is copied");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "vault-new");
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["spec"]["hostPath"]["path"], shared.display().to_string());
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let claim = wait_bound(&lab, "lab-dst", "vault-new", "data").await;
    assert_eq!(claim["spec"]["volumeName"], "shared-data", "bound to the copied volume");

    assert!(get(&lab, "lab-dst", &ar("", "v1", "Pod", "pods"), Some("vault-new"), "worker").await.is_some());
    let dst_db = get(&lab, "lab-dst", &db, Some("vault-new"), "db").await.expect("the owner is migrated");
    let creds = get(&lab, "lab-dst", &ar("", "v1", "Secret", "secrets"), Some("vault-new"), "db-creds")
        .await
        .expect("the owned Secret is kept");
    let refs = &creds["metadata"]["ownerReferences"];
    assert_eq!(refs.as_array().map(Vec::len), Some(1), "{creds}");
    assert_eq!(refs[0]["uid"], dst_db["metadata"]["uid"], "re-linked to the destination owner");
    assert_ne!(refs[0]["uid"], src_db["metadata"]["uid"]);
    assert_eq!(refs[0]["controller"], true);

    let (code, plan) = plan_json(&lab, &file);
    assert_eq!(code, 0, "nothing left to do: {}", plan["migrations"][0]["resources"]);
    assert_eq!(plan["migrations"][0]["resources"]["kept"][0]["linked"], true);
}
