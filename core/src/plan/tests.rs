use indexmap::IndexMap;
use serde_json::{Value, json};

use super::*;
use crate::snapshot::{MigrationSnapshot, Snapshot, Unread};
use crate::spec::parse;
use crate::transform::object;

fn migration(extra: &str) -> Migration {
    let text = format!(
        "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\n{extra}"
    );
    parse(&text, std::path::Path::new("d.toml")).unwrap().migrations.remove(0)
}

fn keep(o: Value) -> Result<Transformed, TransformFailure> {
    Ok(Transformed::Keep(o, Vec::new()))
}

fn source() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop", "uid": "1"}, "data": {"a": "1"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 3}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "shop"}}),
    ]
}

fn plan(live: &[Value]) -> Vec<ResourceChange> {
    let m = migration("");
    let (desired, skipped) = desired(source(), &m, &Default::default(), false, &mut keep).unwrap();
    assert_eq!(skipped.len(), 1);
    compare(desired, live, "shop", true, &|_| false, &|_| true).0
}

#[test]
fn an_empty_destination_gets_creates_in_dependency_order_with_mapped_namespaces() {
    let changes = plan(&[]);
    let got: Vec<_> = changes.iter().map(|c| (c.action, c.key.to_string())).collect();
    assert_eq!(
        got,
        [
            (Action::Create, "ConfigMap/shop-prod/cfg".to_string()),
            (Action::Create, "Deployment.apps/shop-prod/web".to_string())
        ]
    );
    let web = &changes[1].object;
    assert_eq!(web["spec"]["replicas"], 0, "held until cutover");
    assert_eq!(web["metadata"]["labels"]["mtcd.io/migration"], "shop");
}

#[test]
fn applied_objects_are_unchanged_and_a_source_change_is_one_update() {
    let live: Vec<Value> = plan(&[]).into_iter().map(|c| c.object).collect();
    assert!(plan(&live).iter().all(|c| c.action == Action::Unchanged));
    let m = migration("");
    let mut src = source();
    src[0]["data"]["a"] = json!("2");
    let (desired, _) = desired(src, &m, &Default::default(), false, &mut keep).unwrap();
    let changes = compare(desired, &live, "shop", true, &|_| false, &|_| true).0;
    let updates: Vec<_> = changes.iter().filter(|c| c.action == Action::Update).collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].diff, ["data.a: \"1\" → \"2\""]);
}

#[test]
fn only_objects_this_migration_stamped_are_pruned() {
    let mut live: Vec<Value> = plan(&[]).into_iter().map(|c| c.object).collect();
    let mut gone = live[0].clone();
    gone["metadata"]["name"] = json!("old");
    let mut foreign = gone.clone();
    foreign["metadata"]["name"] = json!("theirs");
    foreign["metadata"]["labels"]["mtcd.io/migration"] = json!("other");
    let unmanaged =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local", "namespace": "shop-prod"}});
    live.extend([gone, foreign, unmanaged]);
    let pruned: Vec<_> = plan(&live).into_iter().filter(|c| c.action == Action::Prune).map(|c| c.key.name).collect();
    assert_eq!(pruned, ["old"]);
    let m = migration("prune = false");
    let (desired, _) = desired(source(), &m, &Default::default(), false, &mut keep).unwrap();
    assert!(compare(desired, &live, "shop", false, &|_| false, &|_| true).0.iter().all(|c| c.action != Action::Prune));
}

#[test]
fn a_failing_transform_stops_the_plan() {
    let m = migration("");
    let mut failing = |o: Value| -> Result<Transformed, TransformFailure> {
        if o["kind"] == "Deployment" {
            Err(TransformFailure { object: object::display(&o), message: "trap".into() })
        } else {
            keep(o)
        }
    };
    let err = desired(source(), &m, &Default::default(), false, &mut failing).unwrap_err();
    assert_eq!(err.to_string(), "Deployment.apps/shop/web: trap");
}

#[test]
fn start_workloads_copies_replicas_as_they_are() {
    let m = migration("start_workloads = true");
    let (desired, _) = desired(source(), &m, &Default::default(), false, &mut keep).unwrap();
    let web = desired.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(web["spec"]["replicas"], 3);
    let _ = IndexMap::<String, String>::new();
}

#[test]
fn a_pvc_reads_from_a_snapshot_when_the_migration_or_its_own_setting_says_so() {
    let text = "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"m\"\nnamespaces = [\"shop\"]\n[migration.dvm]\npvc_source = { db = \"snapshot\", \"shop/cache\" = \"live\" }\n";
    let m = crate::spec::parse(text, std::path::Path::new("d.toml")).unwrap().migrations.remove(0);
    let pvc = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "shop"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    };
    let plan = crate::plan::volumes::plan_volumes(&m, &[pvc("db"), pvc("cache"), pvc("logs")]);
    let from: Vec<_> = plan.transfers.iter().map(|t| (t.claim.as_str(), t.read_from)).collect();
    use crate::spec::VolumeSource::*;
    assert_eq!(from, vec![("db", Snapshot), ("cache", Live), ("logs", Live)]);
}

fn spec() -> Spec {
    let text = "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\nvolumes = \"direct\"\n";
    parse(text, std::path::Path::new("d.toml")).unwrap()
}

/// A snapshot of the shop: source objects, and a destination that already holds what an
/// earlier apply made plus an object a later source change removed.
fn snapshot() -> Snapshot {
    let spec = spec();
    let earlier = plan(&[]);
    let mut live: Vec<Value> = earlier.into_iter().map(|c| c.object).collect();
    let mut removed = live[0].clone();
    removed["metadata"]["name"] = json!("removed-on-source");
    live.push(removed);
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "shop"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "standard", "accessModes": ["ReadWriteOnce"]},
        "status": {"capacity": {"storage": "2Gi"}}});
    Snapshot {
        source_context: "a".into(),
        destination_context: "b".into(),
        migrations: vec![MigrationSnapshot {
            name: spec.migrations[0].name.clone(),
            source: source(),
            pvcs: vec![pvc],
            source_types: vec![("".into(), "ConfigMap".into()), ("apps".into(), "Deployment".into())],
            destination: live,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn unread(kind: &str, ns: &str) -> Unread {
    Unread {
        group: String::new(),
        kind: kind.into(),
        resource: format!("{}s", kind.to_lowercase()),
        namespace: Some(ns.into()),
        reason: "configmaps is forbidden (403 Forbidden)".into(),
    }
}

#[test]
fn a_whole_plan_holds_what_the_actions_need() {
    let p = build(&spec(), &snapshot(), false, &mut NoTransforms).unwrap();
    let m = &p.migrations[0];
    let prunes: Vec<_> = m.resources.changes.iter().filter(|c| c.action == Action::Prune).collect();
    assert_eq!(prunes.len(), 1);
    assert_eq!(prunes[0].key.name, "removed-on-source");
    let v = &m.volumes.transfers[0];
    assert_eq!((v.destination_namespace.as_str(), v.destination_claim.as_str()), ("shop-prod", "data"));
    assert_eq!(v.destination["spec"]["resources"]["requests"]["storage"], "2Gi", "never smaller than the bound volume");
    assert_eq!(v.destination["metadata"]["namespace"], "shop-prod");
    assert_eq!(m.source_namespaces, ["shop"]);
    assert_eq!(m.destination_namespaces, ["shop-prod"]);
    assert!(m.velero.is_none());
}

#[test]
fn a_type_the_source_could_not_read_is_neither_pruned_nor_updated() {
    let mut snap = snapshot();
    snap.migrations[0].source_unread.push(unread("ConfigMap", "shop"));
    // The source list failed, so the snapshot has no ConfigMaps at all.
    snap.migrations[0].source.retain(|o| o["kind"] != "ConfigMap");
    let p = build(&spec(), &snap, false, &mut NoTransforms).unwrap();
    let r = &p.migrations[0].resources;
    assert!(r.changes.iter().all(|c| c.key.kind != "ConfigMap"), "{:?}", r.changes);
    assert_eq!(r.unread.len(), 1);
    assert_eq!(r.unread[0].side, "source");
}

#[test]
fn a_type_the_destination_could_not_read_is_withheld() {
    let mut snap = snapshot();
    snap.migrations[0].destination_unread.push(unread("ConfigMap", "shop-prod"));
    snap.migrations[0].destination.retain(|o| o["kind"] != "ConfigMap");
    let p = build(&spec(), &snap, false, &mut NoTransforms).unwrap();
    let r = &p.migrations[0].resources;
    assert!(r.changes.iter().all(|c| c.key.kind != "ConfigMap"), "no create from partial knowledge");
    assert_eq!(r.withheld.iter().map(|k| k.to_string()).collect::<Vec<_>>(), ["ConfigMap/shop-prod/cfg"]);
}

#[test]
fn a_group_the_source_could_not_discover_protects_all_its_kinds() {
    let mut snap = snapshot();
    snap.migrations[0].source_unread.push(Unread {
        group: String::new(),
        kind: "*".into(),
        resource: "*".into(),
        namespace: None,
        reason: "discovery failed".into(),
    });
    // Nothing of the core group was seen on the source; the apps group was.
    snap.migrations[0].source.retain(|o| o["apiVersion"] != "v1");
    let p = build(&spec(), &snap, false, &mut NoTransforms).unwrap();
    assert!(p.migrations[0].resources.changes.iter().all(|c| c.action != Action::Prune));
    assert!(p.migrations[0].resources.changes.iter().any(|c| c.key.kind == "Deployment"));
}

#[test]
fn a_recorded_cutover_plans_the_workloads_released() {
    let mut snap = snapshot();
    snap.migrations[0].cut_over = true;
    let p = build(&spec(), &snap, false, &mut NoTransforms).unwrap();
    let web = p.migrations[0].resources.changes.iter().find(|c| c.key.kind == "Deployment").unwrap();
    assert_eq!(web.object["spec"]["replicas"], 3);
    let p = build(&spec(), &snapshot(), false, &mut NoTransforms).unwrap();
    let web = p.migrations[0].resources.changes.iter().find(|c| c.key.kind == "Deployment").unwrap();
    assert_eq!(web.object["spec"]["replicas"], 0, "held until cutover");
}

/// A transform that adds `extra` next to every ConfigMap, or rewrites it with `rewrite`.
struct Hostile {
    extra: Vec<Value>,
    rewrite: Option<fn(&mut Value)>,
}

impl Transforms for Hostile {
    fn transform(&mut self, _: &Migration, mut o: Value, _: &[Value]) -> Result<Transformed, TransformFailure> {
        if o["kind"] != "ConfigMap" {
            return Ok(Transformed::Keep(o, Vec::new()));
        }
        if let Some(f) = self.rewrite {
            f(&mut o);
        }
        Ok(Transformed::Keep(o, self.extra.clone()))
    }
}

fn catalog_snapshot() -> Snapshot {
    let ty = |group: &str, kind: &str, plural: &str, namespaced: bool| crate::snapshot::ApiType {
        group: group.into(),
        version: "v1".into(),
        api_version: if group.is_empty() { "v1".into() } else { format!("{group}/v1") },
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
        verbs: vec!["list".into(), "get".into(), "create".into(), "patch".into()],
    };
    let mut s = snapshot();
    s.destination_catalog.types = vec![
        ty("", "ConfigMap", "configmaps", true),
        ty("", "PersistentVolume", "persistentvolumes", false),
        ty("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", false),
    ];
    s
}

fn refused(t: &mut Hostile) -> String {
    let mut spec = spec();
    spec.migrations[0].transforms.push(crate::spec::PluginRef::file("/plugins/evil.wasm"));
    match build(&spec, &catalog_snapshot(), false, t) {
        Err(e @ PlanError::Confinement { .. }) => e.to_string(),
        other => panic!("expected a confinement error, got {other:?}"),
    }
}

#[test]
fn a_transform_may_not_reach_outside_the_migration() {
    let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "pwn"},
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}});
    let e = refused(&mut Hostile { extra: vec![crb], rewrite: None });
    assert!(
        e.contains(
            "evil.wasm returned ClusterRoleBinding.rbac.authorization.k8s.io/pwn: cluster-scoped objects are refused"
        ),
        "{e}"
    );
    assert!(e.ends_with("nothing was changed"), "{e}");
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "root"}, "spec": {"hostPath": {"path": "/"}}});
    assert!(refused(&mut Hostile { extra: vec![pv], rewrite: None }).contains("PersistentVolume/root: cluster-scoped"));
    let elsewhere =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}});
    assert!(
        refused(&mut Hostile { extra: vec![elsewhere], rewrite: None })
            .contains("namespace \"kube-system\" is not one of the migration's namespaces")
    );
    let e = refused(&mut Hostile { extra: vec![], rewrite: Some(|o| o["kind"] = json!("Secret")) });
    assert!(e.contains("not turn it into another kind"), "{e}");
    let e = refused(&mut Hostile { extra: vec![], rewrite: Some(|o| o["metadata"]["namespace"] = json!("other")) });
    assert!(e.contains("may not move an object to another namespace"), "{e}");
    let e = refused(&mut Hostile { extra: vec![], rewrite: Some(|o| o["metadata"]["name"] = json!("../../x")) });
    assert!(e.contains("is not a valid object name"), "{e}");
    let twin = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"}});
    assert!(
        refused(&mut Hostile { extra: vec![twin], rewrite: None }).contains("has the same kind, namespace and name")
    );
    // Adding a namespaced object of the migration is what transforms are for.
    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "added", "namespace": "shop"}});
    assert!(build(&spec(), &catalog_snapshot(), false, &mut Hostile { extra: vec![ok], rewrite: None }).is_ok());
}

#[test]
fn a_kind_left_out_of_the_migration_is_not_pruned() {
    let mut snap = snapshot();
    snap.migrations[0].source_types.retain(|(_, k)| k != "ConfigMap");
    snap.migrations[0].source.retain(|o| o["kind"] != "ConfigMap");
    let p = build(&spec(), &snap, false, &mut NoTransforms).unwrap();
    assert!(p.migrations[0].resources.changes.iter().all(|c| c.action != Action::Prune), "excluded, not deleted");
}
