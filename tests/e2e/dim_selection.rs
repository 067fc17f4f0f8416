//! Which images DIM copies (issue 19): ImageStream tags through `include_tags`/`exclude_tags`
//! and `max_history`; images only a finished pod, a completed Job or an old ReplicaSet use
//! are listed as "not referenced" and skipped unless `not_referenced = "copy"`.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use mtcd_tests::Lab;
use serde_json::{Value, json};

use crate::dim_artifacts::{Reg, registry};

fn api(ctx_client: kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version,
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(ctx_client, "shop", &ar)
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn plan_json(lab: &Lab, file: &std::path::Path) -> Value {
    let plan = lab.mtcd(&["--output", "json", "plan", file.to_str().unwrap()]);
    assert!(plan.code == 0 || plan.code == 2, "{}\n{}", plan.stdout, plan.stderr);
    serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{e}: {}", plan.stdout))
}

fn listed(plan: &Value, key: &str, field: &str) -> Vec<String> {
    let mut v: Vec<String> = plan["migrations"][0][key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_filters_history_depth_and_unreferenced_images_select_what_is_copied() {
    let lab = Lab::up();
    let (src, dst) = (registry(&lab, "src"), registry(&lab, "dst"));
    let mut yaml = String::new();
    for (i, (repo, tag)) in [
        ("shop/app", "v1"),
        ("shop/app", "v2"),
        ("shop/app", "v2-previous"),
        ("shop/app", "dev"),
        ("shop/web", "new"),
        ("shop/web", "old"),
        ("shop/batch", "1"),
        ("shop/report", "1"),
    ]
    .iter()
    .enumerate()
    {
        yaml += &format!(
            "---\napiVersion: lab.mtcd.io/v1\nkind: Image\nrepository: {repo}\ntag: \"{tag}\"\nlayers: [{{size: 200000, seed: {}}}]\n",
            i + 1
        );
    }
    let seeded = lab.seed_yaml("lab-src", &yaml).await.unwrap();
    let digest = |repo_tag: &str| {
        seeded
            .images
            .iter()
            .find(|i| i.starts_with(&format!("{repo_tag}@")))
            .unwrap()
            .rsplit_once('@')
            .unwrap()
            .1
            .to_string()
    };
    let client = lab.client("lab-src").await;
    lab.seed_yaml("lab-src", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n").await.unwrap();

    // ImageStream app: v1, v2 with one older item (v2-previous), dev.
    let item = |tag: &str| {
        json!({"dockerImageReference": format!("{src}/shop/app@{}", digest(&format!("shop/app:{tag}"))),
        "image": digest(&format!("shop/app:{tag}")), "generation": 1, "created": "2026-01-01T00:00:00Z"})
    };
    let streams = api(client.clone(), "image.openshift.io", "v1", "ImageStream", "imagestreams");
    streams
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
            "metadata": {"name": "app", "namespace": "shop"}, "spec": {}})),
        )
        .await
        .unwrap();
    let status = json!({"status": {"dockerImageRepository": format!("{src}/shop/app"), "tags": [
        {"tag": "v1", "items": [item("v1")]},
        {"tag": "v2", "items": [item("v2"), item("v2-previous")]},
        {"tag": "dev", "items": [item("dev")]}
    ]}});
    streams.patch_status("app", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    // Deployment web runs web:new; its old ReplicaSet (0 replicas) still names web:old.
    let deployments = api(client.clone(), "apps", "v1", "Deployment", "deployments");
    let web = deployments
        .create(&PostParams::default(), &obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": format!("{src}/shop/web:new")}]}}}})))
        .await
        .unwrap();
    api(client.clone(), "apps", "v1", "ReplicaSet", "replicasets")
        .create(&PostParams::default(), &obj(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": web.metadata.uid, "controller": true}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": format!("{src}/shop/web:old")}]}}}})))
        .await
        .unwrap();
    // A Job that completed and a pod that finished.
    let jobs = api(client.clone(), "batch", "v1", "Job", "jobs");
    jobs.create(
        &PostParams::default(),
        &obj(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch", "namespace": "shop"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "b", "image": format!("{src}/shop/batch:1")}]}}}})),
    )
    .await
    .unwrap();
    jobs.patch_status(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let pods = api(client.clone(), "", "v1", "Pod", "pods");
    pods.create(
        &PostParams::default(),
        &obj(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "report", "namespace": "shop"},
        "spec": {"nodeName": "node-that-is-gone", "restartPolicy": "Never",
            "containers": [{"name": "r", "image": format!("{src}/shop/report:1")}]}})),
    )
    .await
    .unwrap();
    pods.patch_status("report", &PatchParams::default(), &Patch::Merge(&json!({"status": {"phase": "Succeeded"}})))
        .await
        .unwrap();

    let desired = |dim: &str| {
        lab.desired(
            "desired.toml",
            &format!(
                "version = 1\n[clusters.source]\ncontext = \"lab-src\"\nregistry = {{ address = \"{src}\", tls = \"insecure\" }}\n[clusters.destination]\ncontext = \"lab-dst\"\nregistry = {{ address = \"{dst}\", tls = \"insecure\" }}\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nimages = \"direct\"\nvolumes = \"skip\"\ninclude_kinds = [\"ImageStream\", \"Deployment\", \"ReplicaSet\", \"Job\", \"Pod\"]\n[migration.dim]\n{dim}"
            ),
        )
    };

    // include_tags alone: only v1 of the ImageStream (web:new is a tag too, and not v1).
    let plan = plan_json(&lab, &desired("include_tags = [\"v1\"]\n"));
    assert_eq!(listed(&plan, "images", "source"), [format!("{src}/shop/app:v1@{}", digest("shop/app:v1"))]);

    // exclude_tags + history depth 2 + unreferenced images skipped (the default).
    let file = desired("exclude_tags = [\"dev\"]\nmax_history = 2\n");
    let plan = plan_json(&lab, &file);
    let previous = digest("shop/app:v2-previous");
    assert_eq!(
        listed(&plan, "images", "source"),
        [
            format!("{src}/shop/app:v1@{}", digest("shop/app:v1")),
            format!("{src}/shop/app:v2@{}", digest("shop/app:v2")),
            format!("{src}/shop/app@{previous}"),
            format!("{src}/shop/web:new"),
        ]
    );
    let skipped: Vec<(String, String)> = plan["migrations"][0]["images_skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["image"].as_str().unwrap().to_string(), s["reason"].as_str().unwrap().to_string()))
        .collect();
    let reason = |image: &str| skipped.iter().find(|(i, _)| i.starts_with(image)).map(|(_, r)| r.as_str());
    assert_eq!(reason(&format!("{src}/shop/app:dev")), Some("excluded-tag"), "{skipped:?}");
    assert_eq!(reason(&format!("{src}/shop/web:old")), Some("not-referenced"), "{skipped:?}");
    assert_eq!(reason(&format!("{src}/shop/batch:1")), Some("not-referenced"), "{skipped:?}");
    assert_eq!(reason(&format!("{src}/shop/report:1")), Some("not-referenced"), "{skipped:?}");
    let human = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(
        human.stdout.contains(&format!("skipped {src}/shop/web:old: not referenced"))
            && human.stdout.contains("ReplicaSet shop/web-1 (old revision, 0 replicas)"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("Pod shop/report (Succeeded)"), "{}", human.stdout);

    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let d = Reg::new(&dst);
    for (repo, reference, there) in [
        ("shop/app", "v1".to_string(), true),
        ("shop/app", "v2".to_string(), true),
        ("shop/app", previous.clone(), true),
        ("shop/app", "dev".to_string(), false),
        ("shop/web", "new".to_string(), true),
        ("shop/web", "old".to_string(), false),
        ("shop/batch", "1".to_string(), false),
        ("shop/report", "1".to_string(), false),
    ] {
        assert_eq!(d.get(repo, &reference).await.0 == 200, there, "{repo}:{reference} on the destination");
    }
    // History is copied by digest only: the destination's v2 is the current item.
    assert_eq!(crate::dim_artifacts::sha(&d.get("shop/app", "v2").await.1), digest("shop/app:v2"));

    // Asked for: not_referenced = "copy" copies them too (dev stays excluded).
    let file = desired("exclude_tags = [\"dev\"]\nmax_history = 2\nnot_referenced = \"copy\"\n");
    let plan = plan_json(&lab, &file);
    assert_eq!(listed(&plan, "images_skipped", "reason"), ["excluded-tag"]);
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for (repo, tag) in [("shop/web", "old"), ("shop/batch", "1"), ("shop/report", "1")] {
        assert_eq!(d.get(repo, tag).await.0, 200, "{repo}:{tag} copied when asked");
    }
    assert_eq!(d.get("shop/app", "dev").await.0, 404);
}
