//! The plugin runtime against the real example and misbehaving plugins in `plugins/`,
//! compiled for wasm32-wasip2 by the first test that needs them.

#[path = "../../tests/support/plugins.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use mtcd::plugins::{
    CacheOutcome, HookContext, NoLookup, PluginError, PluginHost, SourceLookup, TestOptions, TransformContext,
    TransformOutput, default_hook_limits, scaffold, test_plugin_with,
};
use mtcd::spec::{DirGrant, HookPhase, OnError, PluginGrants, PluginRef};
use serde_json::{Value, json};
use support::plugin_wasm;

/// Compiled components shared by the tests (a debug host compiles slowly); the cache test
/// uses its own empty directory.
fn host() -> PluginHost {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/mtcd-test-cache");
    PluginHost::new(Some(dir)).expect("plugin host")
}

fn plugin(name: &str, config: Value) -> PluginRef {
    let mut r = PluginRef::file(plugin_wasm(name));
    r.config = config;
    r
}

fn ctx(namespaces: &[&str]) -> TransformContext {
    TransformContext {
        source_cluster: "old".into(),
        destination_cluster: "new".into(),
        namespace_map: namespaces.iter().map(|n| (n.to_string(), format!("{n}-new"))).collect(),
    }
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": {"k": "v"}})
}

fn kept(out: TransformOutput) -> (Value, Vec<Value>) {
    match out {
        TransformOutput::Keep { object, extra } => (object, extra),
        TransformOutput::Skip => panic!("object was skipped"),
    }
}

#[test]
fn add_label_sets_labels_through_a_patch() {
    let host = host();
    let mut chain = host
        .load_transforms(&[plugin("add-label", json!({"labels": {"mtcd.io/migrated": "yes", "team": "a"}}))])
        .unwrap();
    let (object, extra) = kept(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object["metadata"]["labels"], json!({"mtcd.io/migrated": "yes", "team": "a"}));
    assert_eq!(object["data"], json!({"k": "v"}), "the rest of the object is untouched");
    assert!(extra.is_empty());

    let mut labelled = cm("two");
    labelled["metadata"]["labels"] = json!({"team": "a", "other": "x"});
    let (object, _) = kept(chain.run(labelled, &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object["metadata"]["labels"], json!({"team": "a", "other": "x", "mtcd.io/migrated": "yes"}));
}

#[test]
fn add_label_without_config_is_a_reported_error_naming_plugin_and_object() {
    let mut chain = host().load_transforms(&[plugin("add-label", Value::Null)]).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::Reported { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("add_label.wasm") && text.contains("ConfigMap/shop/one") && text.contains("`labels`"),
        "{text}"
    );
}

#[test]
fn image_rewrite_maps_registry_prefixes_in_pod_templates() {
    let mut chain = host()
        .load_transforms(&[plugin(
            "image-rewrite",
            json!({"prefixes": {"registry.old:5000/": "registry.new/", "registry.old:5000/shop/": "registry.new/apps/"}}),
        )])
        .unwrap();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "registry.old:5000/tools/init:1"}],
            "containers": [{"name": "web", "image": "registry.old:5000/shop/web:2"}, {"name": "side", "image": "docker.io/nginx"}]}}}});
    let (object, _) = kept(chain.run(deployment, &ctx(&["shop"]), &NoLookup).unwrap());
    let spec = &object["spec"]["template"]["spec"];
    assert_eq!(spec["initContainers"][0]["image"], "registry.new/tools/init:1");
    assert_eq!(spec["containers"][0]["image"], "registry.new/apps/web:2", "longest prefix wins");
    assert_eq!(spec["containers"][1]["image"], "docker.io/nginx");
    let (svc, _) =
        kept(chain.run(json!({"kind": "Service", "metadata": {"name": "s"}}), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(svc, json!({"kind": "Service", "metadata": {"name": "s"}}));
}

#[test]
fn strip_openshift_drops_generated_objects_and_references() {
    let mut chain = host().load_transforms(&[plugin("strip-openshift", json!({}))]).unwrap();
    let c = ctx(&["shop"]);
    let builder =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder", "namespace": "shop"}});
    assert_eq!(chain.run(builder, &c, &NoLookup).unwrap(), TransformOutput::Skip);
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "system:image-pullers", "namespace": "shop"}});
    assert_eq!(chain.run(rb, &c, &NoLookup).unwrap(), TransformOutput::Skip);
    let route = json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"openshift.io/host.generated": "true"}},
        "spec": {"host": "web-shop.apps.old.example", "to": {"kind": "Service", "name": "web"}}});
    let (route, _) = kept(chain.run(route, &c, &NoLookup).unwrap());
    assert_eq!(route["spec"], json!({"to": {"kind": "Service", "name": "web"}}));
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"},
        "secrets": [{"name": "app-dockercfg-abcde"}, {"name": "app-creds"}], "imagePullSecrets": [{"name": "app-dockercfg-abcde"}]});
    let (sa, _) = kept(chain.run(sa, &c, &NoLookup).unwrap());
    assert_eq!(sa["secrets"], json!([{"name": "app-creds"}]));
    assert_eq!(sa["imagePullSecrets"], json!([]));
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {"imagePullSecrets": [{"name": "default-dockercfg-x"}, {"name": "mine"}], "containers": []}}}});
    let (dep, _) = kept(chain.run(dep, &c, &NoLookup).unwrap());
    assert_eq!(dep["spec"]["template"]["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
}

#[test]
fn drop_by_label_skips_matching_objects_only() {
    let mut chain =
        host().load_transforms(&[plugin("drop-by-label", json!({"label": "mtcd.io/skip", "value": "true"}))]).unwrap();
    let mut skip = cm("skip-me");
    skip["metadata"]["labels"] = json!({"mtcd.io/skip": "true"});
    assert_eq!(chain.run(skip, &ctx(&["shop"]), &NoLookup).unwrap(), TransformOutput::Skip);
    let mut other_value = cm("keep-me");
    other_value["metadata"]["labels"] = json!({"mtcd.io/skip": "false"});
    kept(chain.run(other_value, &ctx(&["shop"]), &NoLookup).unwrap());
    kept(chain.run(cm("plain"), &ctx(&["shop"]), &NoLookup).unwrap());
}

#[test]
fn chain_runs_in_order_and_each_plugin_sees_the_previous_output() {
    let host = host();
    let add = plugin("add-label", json!({"labels": {"drop": "yes"}}));
    let drop = plugin("drop-by-label", json!({"label": "drop"}));
    let mut add_then_drop = host.load_transforms(&[add.clone(), drop.clone()]).unwrap();
    assert_eq!(add_then_drop.run(cm("a"), &ctx(&["shop"]), &NoLookup).unwrap(), TransformOutput::Skip);
    let mut drop_then_add = host.load_transforms(&[drop, add]).unwrap();
    let (object, _) = kept(drop_then_add.run(cm("a"), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object["metadata"]["labels"]["drop"], "yes");
}

#[test]
fn infinite_loop_is_stopped_at_its_time_limit_and_the_run_continues() {
    let host = host();
    let mut looping = plugin("infinite-loop", json!({}));
    looping.limits.timeout = Duration::from_millis(300);
    let mut chain = host.load_transforms(std::slice::from_ref(&looping)).unwrap();
    let started = Instant::now();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, PluginError::Timeout { limit, .. } if limit == Duration::from_millis(300)), "{err:?}");
    assert!(err.to_string().contains("ConfigMap/shop/one") && err.to_string().contains("infinite_loop.wasm"), "{err}");
    assert!(elapsed >= Duration::from_millis(290), "stopped before its limit: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "not stopped near its limit: {elapsed:?}");

    // Same run: with keep-original the looping plugin's failure is a warning, and the
    // healthy plugin after it still processes this and the next object.
    looping.on_error = OnError::KeepOriginal;
    let mut chain = host.load_transforms(&[looping, plugin("add-label", json!({"labels": {"ok": "1"}}))]).unwrap();
    for name in ["first", "second"] {
        let (object, _) = kept(chain.run(cm(name), &ctx(&["shop"]), &NoLookup).unwrap());
        assert_eq!(object["metadata"]["labels"]["ok"], "1", "{name}");
    }
    let warnings = chain.take_warnings();
    assert_eq!(warnings.len(), 2);
    assert!(warnings.iter().all(|w| matches!(w, PluginError::Timeout { .. })));
}

#[test]
fn infinite_loop_is_stopped_by_its_fuel_limit() {
    let mut looping = plugin("infinite-loop", json!({}));
    looping.limits.fuel = Some(5_000_000);
    looping.limits.timeout = Duration::from_secs(30);
    let mut chain = host().load_transforms(&[looping]).unwrap();
    let started = Instant::now();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::OutOfFuel { limit: 5_000_000, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn memory_bomb_is_stopped_at_its_memory_limit_and_the_next_object_is_processed() {
    let host = host();
    let mut bomb = plugin("memory-bomb", json!({}));
    bomb.limits.memory = 16 * 1024 * 1024;
    let mut chain = host.load_transforms(std::slice::from_ref(&bomb)).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::MemoryLimit { limit, .. } if limit == 16 * 1024 * 1024), "{err:?}");
    assert!(err.to_string().contains("memory limit") && err.to_string().contains("ConfigMap/shop/one"), "{err}");

    bomb.on_error = OnError::SkipObject;
    let mut chain = host.load_transforms(&[plugin("add-label", json!({"labels": {"ok": "1"}})), bomb]).unwrap();
    assert_eq!(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap(), TransformOutput::Skip);
    assert!(matches!(chain.take_warnings().as_slice(), [PluginError::MemoryLimit { .. }]));
    // The host is unharmed: a fresh chain of a healthy plugin works on the next object.
    let mut healthy = host.load_transforms(&[plugin("add-label", json!({"labels": {"ok": "1"}}))]).unwrap();
    kept(healthy.run(cm("two"), &ctx(&["shop"]), &NoLookup).unwrap());
}

#[test]
fn a_trap_names_the_panic_and_the_same_plugin_handles_the_next_object() {
    let mut chain = host().load_transforms(&[plugin("trap", json!({}))]).unwrap();
    let err = chain.run(cm("boom"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    eprintln!("{err}");
    let PluginError::Trap { reason, subject, .. } = &err else { panic!("{err:?}") };
    assert_eq!(subject, "ConfigMap/shop/boom");
    assert!(reason.contains("deliberate trap for object boom"), "{reason}");
    let (object, _) = kept(chain.run(cm("fine"), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object, cm("fine"));
}

#[test]
fn malformed_json_and_invalid_patches_are_errors() {
    let host = host();
    let cases = [
        ("json", "invalid JSON"),
        ("not-object", "must be a JSON object, got a string"),
        ("patch", "not an RFC 6902 patch"),
        ("bad-path", "invalid patch"),
    ];
    for (mode, expected) in cases {
        let mut chain = host.load_transforms(&[plugin("bad-json", json!({"mode": mode}))]).unwrap();
        let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(expected) && text.contains("bad_json.wasm") && text.contains("ConfigMap/shop/one"),
            "{mode}: {text}"
        );
        match mode {
            "json" | "not-object" => {
                assert!(matches!(err, PluginError::InvalidJson { .. }), "{err:?}")
            }
            _ => assert!(matches!(err, PluginError::InvalidPatch { .. }), "{err:?}"),
        }
    }
}

#[test]
fn extra_objects_errors_and_on_error_policies() {
    let host = host();
    let mut chain = host.load_transforms(&[plugin("echo", json!({"mode": "with-extra"}))]).unwrap();
    let (object, extra) = kept(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object, cm("one"));
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0]["metadata"], json!({"name": "one-extra", "namespace": "shop"}));

    let mut failing = plugin("echo", json!({"mode": "error"}));
    let mut chain = host.load_transforms(std::slice::from_ref(&failing)).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(&err, PluginError::Reported { message, .. } if message == "refusing one"), "{err:?}");

    failing.on_error = OnError::SkipObject;
    let mut chain = host.load_transforms(std::slice::from_ref(&failing)).unwrap();
    assert_eq!(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap(), TransformOutput::Skip);
    failing.on_error = OnError::KeepOriginal;
    let mut chain = host.load_transforms(&[failing]).unwrap();
    assert_eq!(kept(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap()).0, cm("one"));
    assert_eq!(chain.take_warnings().len(), 1);
}

#[test]
fn context_and_config_reach_the_plugin() {
    let mut chain = host().load_transforms(&[plugin("echo", json!({"mode": "context", "x": [1, 2]}))]).unwrap();
    let (object, _) = kept(chain.run(cm("one"), &ctx(&["shop", "db"]), &NoLookup).unwrap());
    let a = &object["metadata"]["annotations"];
    assert_eq!(a["source"], "old");
    assert_eq!(a["destination"], "new");
    assert_eq!(a["namespaces"], r#"[["shop","shop-new"],["db","db-new"]]"#);
    assert_eq!(a["config"], r#"{"mode":"context","x":[1,2]}"#);
}

struct Objects(Vec<Value>);

impl SourceLookup for Objects {
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        SourceLookup::get(&self.0, kind, namespace, name)
    }
}

#[test]
fn lookup_reads_source_objects_only_in_migrated_namespaces() {
    let source = Objects(vec![
        cm("settings"),
        json!({"kind": "ConfigMap", "metadata": {"name": "secret-ish", "namespace": "kube-system"}}),
    ]);
    let host = host();
    let mut inside = host
        .load_transforms(&[plugin("echo", json!({"mode": "lookup", "lookup": ["ConfigMap", "shop", "settings"]}))])
        .unwrap();
    let (object, _) = kept(inside.run(cm("one"), &ctx(&["shop"]), &source).unwrap());
    let found: Value = serde_json::from_str(object["metadata"]["annotations"]["looked-up"].as_str().unwrap()).unwrap();
    assert_eq!(found, cm("settings"));

    let mut outside = host
        .load_transforms(&[plugin(
            "echo",
            json!({"mode": "lookup", "lookup": ["ConfigMap", "kube-system", "secret-ish"]}),
        )])
        .unwrap();
    let (object, _) = kept(outside.run(cm("one"), &ctx(&["shop"]), &source).unwrap());
    assert_eq!(object["metadata"]["annotations"]["looked-up"], "none");
}

fn hook_ref(config: Value) -> PluginRef {
    let mut r = PluginRef::file(plugin_wasm("require-annotation"));
    r.config = config;
    r.limits = default_hook_limits();
    r
}

fn namespace(name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
}

fn hook_ctx<'a>(lookup: &'a dyn SourceLookup, namespaces: &[&str]) -> HookContext<'a> {
    HookContext {
        migration: "shop".into(),
        source_cluster: "old".into(),
        destination_cluster: "new".into(),
        namespace_map: namespaces.iter().map(|n| (n.to_string(), n.to_string())).collect::<IndexMap<_, _>>(),
        lookup,
    }
}

#[test]
fn require_annotation_hook_stops_pre_cutover_until_the_marker_is_set() {
    let host = host();
    let mut hook =
        host.load_hook(&hook_ref(json!({"annotation": "mtcd.io/cutover-approved", "value": "true"}))).unwrap();
    let missing =
        Objects(vec![namespace("shop", json!({"mtcd.io/cutover-approved": "true"})), namespace("db", json!({}))]);
    let err = hook.run(HookPhase::PreCutover, &hook_ctx(&missing, &["shop", "db"])).unwrap_err();
    let PluginError::HookFailed { phase, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*phase, "pre-cutover");
    assert!(message.contains("Namespace db") && message.contains("mtcd.io/cutover-approved"), "{message}");
    assert!(err.to_string().contains("require_annotation.wasm"), "{err}");

    let wrong_value = Objects(vec![namespace("shop", json!({"mtcd.io/cutover-approved": "later"}))]);
    let err = hook.run(HookPhase::PreCutover, &hook_ctx(&wrong_value, &["shop"])).unwrap_err();
    assert!(err.to_string().contains("expected `true`"), "{err}");

    let approved = Objects(vec![
        namespace("shop", json!({"mtcd.io/cutover-approved": "true"})),
        namespace("db", json!({"mtcd.io/cutover-approved": "true"})),
    ]);
    hook.run(HookPhase::PreCutover, &hook_ctx(&approved, &["shop", "db"])).unwrap();
}

#[test]
fn hook_lookups_outside_migrated_namespaces_find_nothing() {
    let host = host();
    let config = json!({"annotation": "ok", "object": {"kind": "ConfigMap", "namespace": "other", "name": "release"}});
    let mut hook = host.load_hook(&hook_ref(config)).unwrap();
    let source = Objects(vec![
        json!({"kind": "ConfigMap", "metadata": {"name": "release", "namespace": "other", "annotations": {"ok": "1"}}}),
    ]);
    let err = hook.run(HookPhase::PreCutover, &hook_ctx(&source, &["shop"])).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    hook.run(HookPhase::PreCutover, &hook_ctx(&source, &["shop", "other"])).unwrap();
}

#[test]
fn plugins_of_the_wrong_kind_fail_clearly() {
    let host = host();
    let mut as_transform = host.load_transforms(&[hook_ref(json!({}))]).unwrap();
    let err = as_transform.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(err.to_string().contains("is a hook, not a transform plugin"), "{err}");
    let mut as_hook = host.load_hook(&plugin("add-label", json!({}))).unwrap();
    let err = as_hook.run(HookPhase::PreCutover, &hook_ctx(&NoLookup, &["shop"])).unwrap_err();
    assert!(err.to_string().contains("a transform plugin, not a hook"), "{err}");
    let not_wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_wasm.path(), b"not wasm").unwrap();
    let r = PluginRef::file(not_wasm.path());
    let err = host.load_transforms(&[r]).err().expect("garbage must not load");
    assert!(matches!(err, PluginError::NotAComponent { .. }), "{err:?}");
}

#[test]
fn missing_grant_directory_is_reported_at_first_use() {
    let mut r = plugin("add-label", json!({"labels": {"a": "b"}}));
    r.grants = PluginGrants {
        dirs: vec![DirGrant { host: PathBuf::from("/nonexistent/mtcd-grant"), guest: "/data".into(), writable: false }],
        env: vec![],
        clock: false,
    };
    let mut chain = host().load_transforms(&[r]).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::Grant { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/mtcd-grant"), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let r = plugin("strip-openshift", json!({}));

    let cold = PluginHost::new(Some(dir.path().to_path_buf())).unwrap();
    let chain = cold.load_transforms(std::slice::from_ref(&r)).unwrap();
    let first = chain.load_reports()[0].clone();
    assert_eq!(first.outcome, CacheOutcome::Compiled);
    assert_eq!(first.digest.len(), 64, "{first:?}");
    let again = cold.load_transforms(std::slice::from_ref(&r)).unwrap();
    assert_eq!(again.load_reports()[0].outcome, CacheOutcome::MemoryHit);
    let files = walk(dir.path());
    assert!(!files.is_empty(), "nothing written to the cache directory");

    // A new host (a new mtcd run) loads the machine code from disk instead of compiling.
    let warm = PluginHost::new(Some(dir.path().to_path_buf())).unwrap();
    let mut chain = warm.load_transforms(std::slice::from_ref(&r)).unwrap();
    let second = chain.load_reports()[0].clone();
    assert_eq!(second.outcome, CacheOutcome::DiskHit);
    assert_eq!(second.digest, first.digest);
    eprintln!("strip-openshift: compile {:?}, cached load {:?}", first.elapsed, second.elapsed);
    // And the cached component works.
    let sa =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "shop"}});
    assert_eq!(chain.run(sa, &ctx(&["shop"]), &NoLookup).unwrap(), TransformOutput::Skip);
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn plugin_test_renders_a_diff_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: builder\n  namespace: shop\n---\n\
         apiVersion: route.openshift.io/v1\nkind: Route\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    openshift.io/host.generated: \"true\"\nspec:\n  host: web.apps.old\n  to:\n    kind: Service\n    name: web\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: plain\n    namespace: shop\n",
    )
    .unwrap();
    let host = host();
    let plain = TestOptions { config: json!({}), ..Default::default() };
    let out = test_plugin_with(&host, &plugin_wasm("strip-openshift"), &objects, &plain).unwrap();
    assert!(out.contains("── ServiceAccount/shop/builder: skipped"), "{out}");
    assert!(out.contains("── Route/shop/web: changed"), "{out}");
    assert!(out.contains("-  host: web.apps.old"), "{out}");
    assert!(out.contains("── ConfigMap/shop/plain: unchanged"), "{out}");
    assert!(!out.contains('\u{1b}'), "no color codes when color is off");
    let colored = test_plugin_with(
        &host,
        &plugin_wasm("strip-openshift"),
        &objects,
        &TestOptions { color: true, ..plain.clone() },
    )
    .unwrap();
    assert!(colored.contains('\u{1b}'));

    let failing = TestOptions { config: json!({"mode": "error"}), ..Default::default() };
    let err = test_plugin_with(&host, &plugin_wasm("echo"), &objects, &failing).unwrap_err();
    let PluginError::TestFailed { failed, total, report } = &err else { panic!("{err:?}") };
    assert_eq!((*failed, *total), (3, 3));
    assert!(report.contains("refusing builder"), "{report}");
}

/// Issue 16, point 11: `mtcd plugin new` (transform and `--hook`) makes crates whose unit
/// tests run natively with plain `cargo test`, that build for wasm32-wasip2 and run in the
/// host, and whose README snippet is a desired.toml the parser accepts.
#[test]
fn scaffolded_plugins_test_natively_build_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = scaffold("team-label", dir.path(), false).unwrap();
    assert!(scaffold("team-label", dir.path(), false).is_err(), "existing crate is not overwritten");
    assert!(scaffold("Bad_Name", dir.path(), false).is_err());
    let hook_root = scaffold("ready-gate", dir.path(), true).unwrap();
    assert!(root.join("objects.yaml").is_file() && hook_root.join("objects.yaml").is_file());
    // Shared target dir: the SDK's dependencies compile once across test runs.
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/scaffold-test");
    // The crate lives outside the repo, so pin the repo's toolchain (it has the wasm target).
    let toolchain =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml")).unwrap();
    let channel = toolchain.lines().find_map(|l| l.strip_prefix("channel = ")).unwrap().trim_matches('"').to_string();
    let cargo = |root: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("cargo")
            .args(args)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTUP_TOOLCHAIN", &channel)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} in {}: {}{}",
            root.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for crate_root in [&root, &hook_root] {
        let tests = cargo(crate_root, &["test", "--quiet"]);
        assert!(tests.contains("1 passed"), "the example unit test did not run: {tests}");
        cargo(crate_root, &["build", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    }
    let release = target.join("wasm32-wasip2/release");

    // The README's snippet, with the component where it says, is a valid desired.toml.
    for (crate_root, artifact) in [(&root, "team_label.wasm"), (&hook_root, "ready_gate.wasm")] {
        let readme = std::fs::read_to_string(crate_root.join("README.md")).unwrap();
        let snippet = readme.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
        let built = crate_root.join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(&built).unwrap();
        std::fs::copy(release.join(artifact), built.join(artifact)).unwrap();
        let desired = format!(
            "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n\
             [[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\n{snippet}"
        );
        if let Err(e) = mtcd::spec::parse(&desired, &dir.path().join("desired.toml")) {
            panic!("README snippet of {}:\n{snippet}\n{e}", crate_root.display());
        }
    }

    let host = host();
    let mut r = PluginRef::file(release.join("team_label.wasm"));
    r.config = json!({"label": "team", "value": "payments"});
    let mut chain = host.load_transforms(&[r]).unwrap();
    let (object, _) = kept(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap());
    assert_eq!(object["metadata"]["labels"]["team"], "payments");

    let mut gate = PluginRef::file(release.join("ready_gate.wasm"));
    gate.limits = default_hook_limits();
    let objects = TestOptions { phase: Some(HookPhase::PreCutover), ..Default::default() };
    let report =
        test_plugin_with(&host, &release.join("ready_gate.wasm"), &hook_root.join("objects.yaml"), &objects).unwrap();
    assert!(report.contains("hook pre-cutover: ok"), "{report}");
    let mut hook = host.load_hook(&gate).unwrap();
    let bare = vec![namespace("shop", json!({}))];
    let err = hook.run(HookPhase::PreCutover, &hook_ctx(&bare, &["shop"])).unwrap_err();
    assert!(err.to_string().contains("lacks the annotation"), "{err}");
}

/// Issue 16, point 13: the SDK vendors the contract (no symlink out of plugins/), and the
/// copy is the contract.
#[test]
fn the_sdk_carries_its_own_copy_of_the_contract() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wit = repo.join("plugins/sdk/wit");
    assert!(!std::fs::symlink_metadata(&wit).unwrap().file_type().is_symlink(), "plugins/sdk/wit is a symlink");
    assert_eq!(
        std::fs::read_to_string(wit.join("mtcd.wit")).unwrap(),
        std::fs::read_to_string(repo.join("wit/mtcd.wit")).unwrap(),
        "plugins/sdk/wit/mtcd.wit differs from wit/mtcd.wit: copy it over"
    );
    let manifest = std::fs::read_to_string(repo.join("plugins/sdk/Cargo.toml")).unwrap();
    assert!(manifest.contains("\"wit/**\""), "the packaged crate must include wit/");
}

#[test]
fn nothing_but_computation_unless_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "from the host").unwrap();
    // A variable every test process has (setting one would race with other test threads).
    let var = "PATH";
    let value = std::env::var(var).unwrap();
    let config = json!({"mode": "sandbox", "env": var, "read": "/data/input.txt", "write": "/data/output.txt"});
    let probe = |grants: PluginGrants| {
        let mut r = plugin("echo", config.clone());
        r.grants = grants;
        let mut chain = host().load_transforms(&[r]).unwrap();
        let (object, _) = kept(chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap());
        object["metadata"]["annotations"].clone()
    };

    let denied = probe(PluginGrants::default());
    assert_eq!(denied["env"], "unset");
    assert_eq!(denied["clock"], "0", "the clock is frozen without the grant");
    assert!(denied["read"].as_str().unwrap().starts_with("error"), "{denied}");
    assert!(denied["write"].as_str().unwrap().starts_with("error"), "{denied}");

    let read_only = probe(PluginGrants {
        dirs: vec![DirGrant { host: dir.path().to_path_buf(), guest: "/data".into(), writable: false }],
        env: vec![var.to_string()],
        clock: true,
    });
    assert_eq!(read_only["env"], value.as_str());
    assert!(read_only["clock"].as_str().unwrap().parse::<u64>().unwrap() > 1_700_000_000);
    assert_eq!(read_only["read"], "from the host");
    assert!(read_only["write"].as_str().unwrap().starts_with("error"), "read-only grant allowed a write: {read_only}");
    assert!(!dir.path().join("output.txt").exists());

    let writable = probe(PluginGrants {
        dirs: vec![DirGrant { host: dir.path().to_path_buf(), guest: "/data".into(), writable: true }],
        env: vec![],
        clock: false,
    });
    assert_eq!(writable["write"], "ok");
    assert_eq!(std::fs::read_to_string(dir.path().join("output.txt")).unwrap(), "one");
    assert_eq!(writable["env"], "unset", "env is granted by name only");
}

/// Collects formatted log lines for one test (the subscriber is thread-local).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_log_messages_reach_the_host_log_tagged_with_the_plugin() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let mut chain = host().load_transforms(&[plugin("echo", json!({"mode": "log"}))]).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        kept(chain.run(cm("logged-object"), &ctx(&["shop"]), &NoLookup).unwrap());
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("INFO") && text.contains("saw logged-object") && text.contains("echo.wasm"), "{text}");
}

#[test]
fn a_memory_cap_below_the_plugins_initial_memory_is_a_memory_error() {
    let mut r = plugin("add-label", json!({"labels": {"a": "b"}}));
    r.limits.memory = 64 * 1024;
    let mut chain = host().load_transforms(&[r]).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::MemoryLimit { limit: 65536, .. }), "{err:?}");
}

#[test]
fn run_hooks_runs_only_the_phase_and_stops_at_the_first_failure() {
    use mtcd::spec::HookRef;
    let host = host();
    let gate = |annotation: &str| hook_ref(json!({"annotation": annotation}));
    let hooks = [
        HookRef { phase: HookPhase::PreBackup, kind: mtcd::spec::HookKind::Plugin(Box::new(gate("never-set"))) },
        HookRef { phase: HookPhase::PreCutover, kind: mtcd::spec::HookKind::Plugin(Box::new(gate("approved"))) },
    ];
    let approved = vec![namespace("shop", json!({"approved": "yes"}))];
    host.run_hooks(&hooks, HookPhase::PreCutover, &hook_ctx(&approved, &["shop"])).unwrap();
    host.run_hooks(&hooks, HookPhase::PostCutover, &hook_ctx(&approved, &["shop"])).unwrap();
    let err = host.run_hooks(&hooks, HookPhase::PreBackup, &hook_ctx(&approved, &["shop"])).unwrap_err();
    assert!(
        matches!(&err, PluginError::HookFailed { phase: "pre-backup", message, .. } if message.contains("never-set")),
        "{err:?}"
    );
    let not_approved = vec![namespace("shop", json!({}))];
    let err = host.run_hooks(&hooks, HookPhase::PreCutover, &hook_ctx(&not_approved, &["shop"])).unwrap_err();
    assert!(matches!(err, PluginError::HookFailed { phase: "pre-cutover", .. }), "{err:?}");
}

/// Issue 16, point 1: a transform blocked in a host call (a WASI sleep, no wasm running, so
/// no epoch check) stops at its time limit, and the error names plugin, object and limit.
#[test]
fn a_transform_sleeping_for_ever_stops_at_its_time_limit() {
    let host = host();
    let sleeper = plugin("sleep-forever", json!({}));
    let mut chain = host.load_transforms(std::slice::from_ref(&sleeper)).unwrap();
    let started = Instant::now();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, PluginError::Timeout { limit, .. } if limit == Duration::from_secs(1)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("sleep_forever.wasm") && text.contains("ConfigMap/shop/one") && text.contains("time limit of 1s"),
        "{text}"
    );
    assert!(elapsed >= Duration::from_millis(990), "stopped before its limit: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "not stopped within limit + 1 s: {elapsed:?}");

    // A 3 s sleep under a 1 s limit is stopped at 1 s, not noticed when it returns.
    let mut three = plugin("sleep-forever", json!({"seconds": 3}));
    three.limits.timeout = Duration::from_millis(500);
    let mut chain = host.load_transforms(&[three]).unwrap();
    let started = Instant::now();
    let err = chain.run(cm("two"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

/// Issue 16, point 1: a hook's `timeout` holds while it sleeps, and the error names the
/// phase.
#[test]
fn a_hook_sleeping_for_ever_stops_at_its_time_limit() {
    let mut r = PluginRef::file(plugin_wasm("sleep-forever-hook"));
    r.limits = default_hook_limits();
    r.limits.timeout = Duration::from_secs(1);
    let mut hook = host().load_hook(&r).unwrap();
    let started = Instant::now();
    let err = hook.run(HookPhase::PreCutover, &hook_ctx(&NoLookup, &["shop"])).unwrap_err();
    let elapsed = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
    assert!(
        text.contains("sleep_forever_hook.wasm") && text.contains("pre-cutover") && text.contains("time limit of 1s"),
        "{text}"
    );
    assert!(elapsed < Duration::from_secs(2), "not stopped within limit + 1 s: {elapsed:?}");
}

/// Issue 16, point 1: the time limit also holds inside a tokio runtime (how mtcd calls
/// plugins), on a multi-threaded and on a current-thread runtime.
#[test]
fn the_time_limit_holds_when_called_from_async_code() {
    let host = std::sync::Arc::new(host());
    for multi in [true, false] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
        };
        let host = host.clone();
        let err = rt.block_on(async move {
            let mut r = plugin("sleep-forever", json!({}));
            r.limits.timeout = Duration::from_millis(300);
            let mut chain = host.load_transforms(&[r]).unwrap();
            let started = Instant::now();
            let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(1300), "{:?}", started.elapsed());
            err
        });
        assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
    }
}

/// Issue 16, point 2: an error message is cut at 4 KiB, saying how much was cut.
#[test]
fn a_huge_error_message_is_cut() {
    let mut r = plugin("flood", json!({"mode": "error", "bytes": 20_000_000}));
    r.limits.memory = 128 * 1024 * 1024;
    let mut chain = host().load_transforms(&[r]).unwrap();
    let err = chain.run(cm("one"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    let PluginError::Reported { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.len() < mtcd::plugins::MAX_ERROR_MESSAGE + 100, "{}", message.len());
    assert!(message.ends_with("more bytes cut)"), "{}", &message[message.len() - 60..]);
}

/// Issue 16, point 2: at most 100 log lines (or 64 KiB) per call reach the log, each cut at
/// 4 KiB, and one warning says the rest was dropped; stderr floods are kept to a tail.
#[test]
fn log_and_stderr_floods_are_capped() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let mut flood = plugin("flood", json!({"mode": "log", "lines": 20_000}));
    flood.limits.timeout = Duration::from_secs(20); // 160 MB of strings copied out of the guest
    let mut chain = host().load_transforms(&[flood]).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        kept(chain.run(cm("chatty"), &ctx(&["shop"]), &NoLookup).unwrap());
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines = text.lines().filter(|l| l.contains("LLLL")).count();
    assert!(lines <= 16, "{lines} log lines forwarded (64 KiB of 4 KiB messages is 16)");
    assert!(text.len() < 100 * 1024, "{} bytes of log", text.len());
    assert_eq!(text.matches("log limit reached").count(), 1, "{}", &text[text.len().saturating_sub(500)..]);

    let mut r = plugin("flood", json!({"mode": "stderr", "bytes": 30 << 20}));
    r.limits.timeout = Duration::from_secs(10);
    let mut chain = host().load_transforms(&[r]).unwrap();
    kept(chain.run(cm("loud"), &ctx(&["shop"]), &NoLookup).unwrap());
}

/// Issue 16, point 4, the documented guarantee: an instance serves one chain's objects
/// while its calls succeed (so state may carry between them), is replaced after any
/// failure, and is never shared with another chain (another migration or run).
#[test]
fn instances_live_for_one_chain_and_end_at_the_first_failure() {
    let host = host();
    let seen = |chain: &mut mtcd::plugins::TransformChain, name: &str| {
        let (object, _) = kept(chain.run(cm(name), &ctx(&["shop"]), &NoLookup).unwrap());
        object["metadata"]["annotations"]["seen"].as_str().unwrap().to_string()
    };
    let mut chain = host.load_transforms(&[plugin("counter", json!({}))]).unwrap();
    assert_eq!([seen(&mut chain, "a"), seen(&mut chain, "b")], ["1", "2"], "reused within the chain");
    let err = chain.run(cm("boom"), &ctx(&["shop"]), &NoLookup).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
    assert_eq!(seen(&mut chain, "c"), "1", "a failed instance is replaced");
    let mut other = host.load_transforms(&[plugin("counter", json!({}))]).unwrap();
    assert_eq!(seen(&mut other, "a"), "1", "another chain has its own instance");
    assert_eq!(seen(&mut chain, "d"), "2");

    // A call stopped at its time limit (while sleeping in a host call) also ends its instance.
    let mut sleeper = plugin("sleep-forever", json!({}));
    sleeper.limits.timeout = Duration::from_millis(200);
    let mut chain = host.load_transforms(&[plugin("counter", json!({})), sleeper]).unwrap();
    assert!(matches!(chain.run(cm("x"), &ctx(&["shop"]), &NoLookup), Err(PluginError::Timeout { .. })));
    assert!(matches!(chain.run(cm("y"), &ctx(&["shop"]), &NoLookup), Err(PluginError::Timeout { .. })));
}

/// Issue 16, point 3: a plugin path that is a directory, a FIFO, too large, or not a
/// component is refused before it is read whole, named as what it is, never quoted.
#[test]
fn plugin_files_are_checked_before_they_are_read() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let load = |path: PathBuf| host.load_transforms(&[PluginRef::file(path)]).err().expect("must not load");
    assert!(matches!(load(dir.path().to_path_buf()), PluginError::NotAFile { kind: "a directory", .. }));
    let fifo = dir.path().join("fifo.wasm");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = load(fifo);
    assert!(err.to_string().contains("is a FIFO"), "{err}");
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big).unwrap().set_len(mtcd::spec::MAX_COMPONENT_SIZE + 1).unwrap();
    assert!(matches!(load(big), PluginError::TooLarge { .. }));
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$rounds=5000$secret:19000:0:99999:7:::\n").unwrap();
    let text = load(secret).to_string();
    assert!(text.contains("not a WebAssembly component"), "{text}");
    assert!(!text.contains("root") && !text.contains("0x72") && !text.contains("114"), "bytes echoed: {text}");
}
