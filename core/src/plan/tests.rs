use indexmap::IndexMap;
use serde_json::{Value, json};

use super::*;
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
    compare(desired, live, "shop", true, &|_| false).0
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
    let changes = compare(desired, &live, "shop", true, &|_| false).0;
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
    assert!(compare(desired, &live, "shop", false, &|_| false).0.iter().all(|c| c.action != Action::Prune));
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
