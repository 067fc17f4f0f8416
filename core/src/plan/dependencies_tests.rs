use serde_json::{Value, json};

use super::*;
use crate::plan::{Action, NoTransforms, build};
use crate::snapshot::{ApiType, Catalog, Unread};
use crate::spec::{Spec, parse};

const FILE: &str = "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\n";

fn spec(extra: &str) -> Spec {
    parse(&format!("{FILE}{extra}"), std::path::Path::new("d.toml")).unwrap()
}

fn all_kinds() -> Vec<(String, String)> {
    CLUSTER_KINDS.iter().map(|(g, k)| (g.to_string(), k.to_string())).collect()
}

fn scc_type() -> ApiType {
    ApiType {
        group: SCC_GROUP.into(),
        version: "v1".into(),
        api_version: "security.openshift.io/v1".into(),
        kind: SCC_KIND.into(),
        plural: "securitycontextconstraints".into(),
        namespaced: false,
        verbs: vec![],
    }
}

fn snapshot(source: Vec<Value>, cluster: Vec<Value>, live: Vec<Value>) -> Snapshot {
    Snapshot {
        destination_catalog: Catalog { types: vec![scc_type()], unavailable: vec![] },
        migrations: vec![MigrationSnapshot {
            name: "shop".into(),
            source,
            source_cluster: cluster,
            destination_cluster: live,
            cluster_types: all_kinds(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn derive_with(extra: &str, s: &Snapshot) -> Derived {
    let spec = spec(extra);
    derive(&spec.migrations[0], &s.migrations[0], s)
}

fn crb(name: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "uid": "u-1", "resourceVersion": "7"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

fn role(name: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]})
}

fn named<'v>(objs: &'v [Value], kind: &str, name: &str) -> Option<&'v Value> {
    objs.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[test]
fn a_binding_of_migrated_accounts_only_is_copied_with_its_subjects_mapped() {
    let sa = json!({"kind": "ServiceAccount", "name": "reader", "namespace": "shop"});
    let group =
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts:shop"});
    let user =
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:serviceaccount:shop:web"});
    let s = snapshot(
        vec![],
        vec![
            crb("node-reader", "node-reader", json!([sa, user])),
            crb("shop-views", "view", json!([group])),
            crb("unrelated", "node-reader", json!([{"kind": "ServiceAccount", "name": "x", "namespace": "other"}])),
            role("node-reader"),
        ],
        vec![],
    );
    let d = derive_with("", &s);
    assert!(d.blocked.is_empty() && d.warnings.is_empty(), "{:?} {:?}", d.blocked, d.warnings);
    let b = named(&d.desired, "ClusterRoleBinding", "node-reader").expect("copied under its own name");
    assert_eq!(b["subjects"][0]["namespace"], "shop-prod");
    assert_eq!(b["subjects"][1]["name"], "system:serviceaccount:shop-prod:web");
    assert!(b["metadata"].get("uid").is_none() && b["metadata"].get("resourceVersion").is_none());
    assert_eq!(b["metadata"]["labels"]["mtcd.io/migration"], "shop");
    let v = named(&d.desired, "ClusterRoleBinding", "shop-views").expect("a binding to a built-in role is copied");
    assert_eq!(v["subjects"][0]["name"], "system:serviceaccounts:shop-prod");
    assert!(named(&d.desired, "ClusterRoleBinding", "unrelated").is_none());
    assert!(named(&d.desired, "ClusterRole", "node-reader").is_some(), "the role it references comes along");
    assert!(named(&d.desired, "ClusterRole", "view").is_none(), "built-in roles are never copied");
    let view = d.dependencies.iter().find(|x| x.key.name == "view").unwrap();
    assert!(view.outcome.starts_with("built in"), "{view:?}");
    assert_eq!(view.needed_by, "referenced by ClusterRoleBinding shop-views");
}

#[test]
fn a_shared_binding_is_never_overwritten_mtcd_writes_its_own() {
    let subjects = json!([
        {"kind": "ServiceAccount", "name": "reader", "namespace": "shop"},
        {"kind": "ServiceAccount", "name": "agent", "namespace": "monitoring"},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
    ]);
    let s = snapshot(vec![], vec![crb("readers", "node-reader", subjects), role("node-reader")], vec![]);
    let d = derive_with("", &s);
    assert!(named(&d.desired, "ClusterRoleBinding", "readers").is_none(), "the shared name is not written");
    let own = named(&d.desired, "ClusterRoleBinding", "mtcd:shop:readers").expect("mtcd's own binding");
    assert_eq!(own["subjects"], json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "shop-prod"}]));
    assert_eq!(own["roleRef"]["name"], "node-reader");
    let note = d.dependencies.iter().find(|x| x.key.name == "readers").unwrap();
    assert!(note.outcome.contains("shared with 2 subject(s)"), "{note:?}");

    // One cluster (a namespace clone): never the source's own name, even when exclusive.
    let mut s = snapshot(
        vec![],
        vec![crb("solo", "node-reader", json!([{"kind": "ServiceAccount", "name": "r", "namespace": "shop"}]))],
        vec![],
    );
    s.same_cluster = true;
    let d = derive_with("", &s);
    assert!(named(&d.desired, "ClusterRoleBinding", "solo").is_none());
    assert!(named(&d.desired, "ClusterRoleBinding", "mtcd:shop:solo").is_some());
}

#[test]
fn roles_of_role_bindings_come_along_and_a_destination_role_is_used_as_it_is() {
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "reads", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shop-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]});
    let mut theirs = role("shop-reader");
    theirs["rules"][0]["verbs"] = json!(["get"]);
    let s = snapshot(vec![rb.clone()], vec![role("shop-reader")], vec![theirs]);
    let d = derive_with("", &s);
    assert!(d.desired.is_empty(), "an existing role mtcd did not create is not adopted: {:?}", d.desired);
    let note = &d.dependencies[0];
    assert_eq!(note.needed_by, "referenced by RoleBinding shop/reads");
    assert!(note.outcome.contains("used as it is; differs: rules[0].verbs"), "{note:?}");
    assert_eq!(d.warnings.len(), 1);
    // Absent on the destination: copied.
    let s = snapshot(vec![rb], vec![role("shop-reader")], vec![]);
    assert!(named(&derive_with("", &s).desired, "ClusterRole", "shop-reader").is_some());
}

fn scc(name: &str, users: Value, groups: Value) -> Value {
    json!({"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints",
        "metadata": {"name": name, "uid": "s-1"}, "allowPrivilegedContainer": false,
        "runAsUser": {"type": "RunAsAny"}, "users": users, "groups": groups})
}

#[test]
fn an_existing_scc_gains_the_mapped_accounts_and_a_missing_one_is_created_with_them_only() {
    let source = vec![
        scc("anyuid", json!(["system:serviceaccount:shop:web", "system:admin"]), json!(["system:cluster-admins"])),
        scc(
            "shop-scc",
            json!(["system:serviceaccount:shop:db", "system:serviceaccount:other:x"]),
            json!(["system:serviceaccounts:shop"]),
        ),
        scc("restricted-v2", json!([]), json!(["system:authenticated"])),
    ];
    let live = vec![
        scc("anyuid", json!(["system:admin"]), json!(["system:cluster-admins"])),
        scc("restricted-v2", json!([]), json!([])),
    ];
    let d = derive_with("", &snapshot(vec![], source.clone(), live));
    // anyuid is not mtcd's: one change with the union, never stamped.
    assert_eq!(d.changes.len(), 1);
    let c = &d.changes[0];
    assert_eq!((c.action, c.key.name.as_str()), (Action::Update, "anyuid"));
    assert_eq!(c.object["users"], json!(["system:admin", "system:serviceaccount:shop-prod:web"]));
    assert_eq!(c.object["groups"], json!(["system:cluster-admins"]), "both lists, always");
    assert_eq!(c.diff, ["users: + system:serviceaccount:shop-prod:web"]);
    assert!(c.object["metadata"].get("labels").is_none(), "never stamped");
    assert!(named(&d.desired, SCC_KIND, "anyuid").is_none());
    // shop-scc does not exist there: created with the migrated accounts only.
    let created = named(&d.desired, SCC_KIND, "shop-scc").unwrap();
    assert_eq!(created["users"], json!(["system:serviceaccount:shop-prod:db"]));
    assert_eq!(created["groups"], json!(["system:serviceaccounts:shop-prod"]));
    assert_eq!(created["runAsUser"]["type"], "RunAsAny");
    assert_eq!(created["metadata"]["labels"]["mtcd.io/migration"], "shop");
    assert!(named(&d.desired, SCC_KIND, "restricted-v2").is_none(), "names no migrated account");

    // Applied: nothing more to do.
    let mut applied = c.object.clone();
    applied["allowPrivilegedContainer"] = json!(false);
    let mut ours = created.clone();
    ours["users"] = json!(["system:serviceaccount:shop-prod:old", "system:serviceaccount:team:x"]);
    let d = derive_with("", &snapshot(vec![], source, vec![applied, ours]));
    assert_eq!(d.changes[0].action, Action::Unchanged);
    // mtcd's own SCC: its stale account goes, another migration's stays.
    let again = named(&d.desired, SCC_KIND, "shop-scc").unwrap();
    assert_eq!(again["users"], json!(["system:serviceaccount:team:x", "system:serviceaccount:shop-prod:db"]));
}

#[test]
fn an_scc_used_through_rbac_is_created_when_missing_and_not_served_is_a_warning() {
    let mut use_role = role("system:openshift:scc:custom");
    use_role["rules"] = json!([{"apiGroups": ["security.openshift.io"], "resources": ["securitycontextconstraints"],
        "resourceNames": ["custom"], "verbs": ["use"]}]);
    let b = crb(
        "web-custom",
        "system:openshift:scc:custom",
        json!([{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]),
    );
    let source = vec![b, use_role, scc("custom", json!(["system:admin"]), json!([]))];
    let d = derive_with("", &snapshot(vec![], source.clone(), vec![]));
    let custom = named(&d.desired, SCC_KIND, "custom").expect("created");
    assert_eq!(custom["users"], json!([]), "not the source's other users");
    let note = d.dependencies.iter().find(|x| x.key.name == "custom").unwrap();
    assert_eq!(note.needed_by, "may be used through ClusterRole system:openshift:scc:custom");

    let mut s = snapshot(vec![], source, vec![]);
    s.destination_catalog = Catalog::default();
    let d = derive_with("", &s);
    assert!(named(&d.desired, SCC_KIND, "custom").is_none());
    assert!(d.warnings.iter().any(|w| w.contains("does not serve security.openshift.io/v1")), "{:?}", d.warnings);
}

fn pvc(name: &str, pv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "shop",
        "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": pv, "storageClassName": "", "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
}

fn nfs_pv(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "uid": "p-1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "", "nfs": {"server": "nfs.example.com", "path": "/exports/shop"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": claim, "uid": "c-1", "resourceVersion": "3"}},
        "status": {"phase": "Bound"}})
}

#[test]
fn a_static_pv_blocks_the_plan_until_pv_policy_says_copy_or_dvm() {
    let dynamic = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-123", "annotations": {"pv.kubernetes.io/provisioned-by": "lab.mtcd.io/local-path"}},
        "spec": {"hostPath": {"path": "/x"}}});
    let source = vec![pvc("data", "nfs-data"), pvc("cache", "pvc-123")];
    let s = snapshot(source, vec![nfs_pv("nfs-data", "data"), dynamic], vec![]);
    let d = derive_with("volumes = \"skip\"\n", &s);
    assert_eq!(d.blocked.len(), 1, "{:?}", d.blocked);
    let b = &d.blocked[0];
    for want in [
        "PersistentVolumeClaim/shop/data",
        "PersistentVolume/nfs-data",
        "(nfs)",
        "pv_policy = \"copy\"",
        "pv_policy = \"dvm\"",
    ] {
        assert!(b.contains(want), "{want} in {b}");
    }
    assert!(d.desired.is_empty());

    let d = derive_with("volumes = \"skip\"\npv_policy = \"copy\"\npvc_name_map = { data = \"data-v2\" }\n", &s);
    assert!(d.blocked.is_empty());
    let pv = named(&d.desired, "PersistentVolume", "nfs-data").unwrap();
    assert_eq!(
        pv["spec"]["claimRef"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop-prod", "name": "data-v2"}),
        "remapped, no uid or resourceVersion"
    );
    assert_eq!(
        pv["spec"]["persistentVolumeReclaimPolicy"], "Retain",
        "shared storage is never deleted by the destination"
    );
    assert_eq!(pv["spec"]["nfs"]["server"], "nfs.example.com");
    assert!(pv.get("status").is_none() && pv["metadata"].get("uid").is_none());
    let claim = ObjectKey::of(&pvc("data", "nfs-data"));
    assert_eq!(d.volume_names.get(&claim).map(String::as_str), Some("nfs-data"));
    assert!(named(&d.desired, "PersistentVolume", "pvc-123").is_none(), "dynamic PVs are provisioned");

    let d = derive_with("volumes = \"skip\"\npv_policy = \"dvm\"\n", &s);
    assert!(d.blocked.is_empty() && d.desired.is_empty() && d.volume_names.is_empty());
    assert!(d.warnings[0].contains("new, empty volume"), "{:?}", d.warnings);

    let mut one = s.clone();
    one.same_cluster = true;
    let d = derive_with("pv_policy = \"copy\"\n", &one);
    assert!(d.blocked[0].contains("one cluster"), "{:?}", d.blocked);
}

#[test]
fn owned_objects_of_kept_kinds_are_copied_and_relinked_when_their_owner_moves() {
    let m = &spec("keep_owned = [\"Secret\"]\n").migrations[0];
    let db = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "db", "namespace": "shop", "uid": "d-1"}});
    let creds = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-creds", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "d-1", "controller": true}]},
        "data": {"password": "c2VjcmV0"}});
    let orphan = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rs-secret", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r-1"}]}});
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gen", "namespace": "shop",
        "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "d-1"}]}});
    let source = vec![db, creds, orphan, cm];
    let mut keep = |o: Value| Ok(crate::plan::Transformed::Keep(o, Vec::new()));
    let (desired, skipped) = crate::plan::desired(source.clone(), m, &Default::default(), false, &mut keep).unwrap();
    let s = named(&desired, "Secret", "db-creds").expect("kept");
    assert!(s["metadata"].get("ownerReferences").is_none(), "the source's owner UID would get it collected");
    assert!(skipped.iter().any(|x| x.key.name == "gen"), "other kinds stay skipped");
    let kept = kept(m, &source, &desired, &[]);
    let got: Vec<(String, bool, bool)> = kept.iter().map(|k| (k.key.to_string(), k.relink, k.pending())).collect();
    assert_eq!(
        got,
        [
            ("Secret/shop-prod/db-creds".to_string(), true, true),
            ("Secret/shop-prod/rs-secret".to_string(), false, false)
        ]
    );
    assert_eq!(kept[0].owners[0].controller, Some(true));

    // Once the destination carries the owner's destination UID, nothing is pending.
    let live_db = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "db", "namespace": "shop-prod", "uid": "new"}});
    let mut live_secret = desired.iter().find(|o| o["metadata"]["name"] == "db-creds").unwrap().clone();
    live_secret["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "example.com/v1", "kind": "Database", "name": "db", "uid": "new"}]);
    let k = super::kept(m, &source, &desired, &[live_db.clone(), live_secret.clone()]);
    assert!(k[0].linked && !k[0].pending());
    live_secret["metadata"]["ownerReferences"][0]["uid"] = json!("d-1");
    assert!(super::kept(m, &source, &desired, &[live_db, live_secret])[0].pending(), "a stale UID is re-linked");
}

#[test]
fn a_whole_plan_prunes_mtcd_bindings_withholds_unread_kinds_and_skips_shared_claims() {
    let spec = spec("volumes = \"direct\"\npv_policy = \"copy\"\nkeep_owned = [\"Secret\"]\n");
    let sa = json!({"kind": "ServiceAccount", "name": "reader", "namespace": "shop"});
    let mut old = crb("mtcd:shop:gone", "view", json!([sa]));
    hash::stamp(&mut old, "shop");
    let mut theirs = crb("mtcd:other:x", "view", json!([]));
    hash::stamp(&mut theirs, "other");
    let claim = pvc("data", "nfs-data");
    let mut s = snapshot(
        vec![claim.clone()],
        vec![crb("reader", "view", json!([sa])), nfs_pv("nfs-data", "data")],
        vec![old, theirs],
    );
    s.migrations[0].pvcs = vec![claim];
    s.migrations[0].source_types = vec![("".into(), "PersistentVolumeClaim".into())];
    let p = build(&spec, &s, false, &mut NoTransforms).unwrap();
    let r = &p.migrations[0].resources;
    let got: Vec<(Action, String)> = r.changes.iter().map(|c| (c.action, c.key.to_string())).collect();
    assert_eq!(
        got,
        [
            (Action::Create, "PersistentVolume/nfs-data".to_string()),
            (Action::Prune, "ClusterRoleBinding.rbac.authorization.k8s.io/mtcd:shop:gone".to_string()),
            (Action::Create, "ClusterRoleBinding.rbac.authorization.k8s.io/reader".to_string()),
            (Action::Create, "PersistentVolumeClaim/shop-prod/data".to_string()),
        ]
    );
    let pvc = &r.changes[3].object;
    assert_eq!(pvc["spec"]["volumeName"], "nfs-data", "the claim keeps its volume");
    assert!(pvc["metadata"]["annotations"].get("pv.kubernetes.io/bind-completed").is_none());
    assert!(p.migrations[0].volumes.transfers.is_empty(), "DVM skips a claim on shared storage");
    let text = crate::plan::render::human(r, false);
    assert!(text.contains("cluster-scoped dependencies:"), "{text}");
    assert!(
        text.contains("ClusterRoleBinding.rbac.authorization.k8s.io/reader (binds ServiceAccount shop/reader)"),
        "{text}"
    );

    // The destination's bindings could not be read: nothing of them is written or pruned.
    s.migrations[0].destination_unread.push(Unread {
        group: RBAC_GROUP.into(),
        kind: "ClusterRoleBinding".into(),
        resource: "clusterrolebindings.rbac.authorization.k8s.io".into(),
        namespace: None,
        reason: "forbidden".into(),
    });
    let p = build(&spec, &s, false, &mut NoTransforms).unwrap();
    let r = &p.migrations[0].resources;
    assert!(r.changes.iter().all(|c| c.key.kind != "ClusterRoleBinding"), "{:?}", r.changes);
    assert_eq!(r.withheld.len(), 1);
    assert_eq!(p.unread().count(), 1);

    // Velero brings its own: nothing derived.
    let velero = self::spec("resources = \"velero\"\nvolumes = \"skip\"\n");
    let p = build(&velero, &s, false, &mut NoTransforms).unwrap();
    assert!(p.migrations[0].resources.dependencies.is_empty());
}

#[test]
fn a_destination_binding_of_that_name_with_other_subjects_is_not_adopted_mtcd_writes_its_own() {
    let sa = json!({"kind": "ServiceAccount", "name": "reader", "namespace": "shop"});
    let mut theirs = crb("readers", "node-reader", json!([{"kind": "User", "name": "bob"}]));
    theirs["metadata"] = json!({"name": "readers"});
    let s = snapshot(vec![], vec![crb("readers", "node-reader", json!([sa.clone()]))], vec![theirs]);
    let d = derive_with("", &s);
    assert!(named(&d.desired, "ClusterRoleBinding", "readers").is_none());
    let own = named(&d.desired, "ClusterRoleBinding", "mtcd:shop:readers").unwrap();
    assert_eq!(own["subjects"][0]["namespace"], "shop-prod");
    // The same subjects already there (created by hand): an ordinary adopt.
    let same =
        crb("readers", "node-reader", json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "shop-prod"}]));
    let d = derive_with("", &snapshot(vec![], vec![crb("readers", "node-reader", json!([sa]))], vec![same]));
    assert!(named(&d.desired, "ClusterRoleBinding", "readers").is_some());
}
