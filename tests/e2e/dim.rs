//! Direct Image Migration through the lab's two real registries: the image a workload runs
//! from the source's internal registry is copied, the workload on the destination points at
//! the destination registry, and a re-run sends nothing.

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use mtcd_tests::Lab;

fn registry(lab: &Lab, cluster: &str) -> String {
    lab.info["clusters"][cluster]["registry"].as_str().expect("lab registry").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_image_moves_registry_to_registry_and_references_follow() {
    let lab = Lab::up();
    let (src, dst) = (registry(&lab, "src"), registry(&lab, "dst"));
    lab.seed_yaml(
        "lab-src",
        &format!(
            r#"
apiVersion: lab.mtcd.io/v1
kind: Image
repository: shop/web
tag: v1
layers: [{{size: 3000000, seed: 1}}, {{size: 1000000, seed: 2}}, {{size: 20000, seed: 3}}]
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: web, image: "{src}/shop/web:v1"}}
      - {{name: proxy, image: "docker.io/library/nginx:1.27"}}
"#
        ),
    )
    .await
    .unwrap();
    let file = lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\nregistry = {{ address = \"{src}\", tls = \"insecure\" }}\n[clusters.destination]\ncontext = \"lab-dst\"\nregistry = {{ address = \"{dst}\", tls = \"insecure\" }}\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nimages = \"direct\"\nvolumes = \"skip\"\n"
        ),
    );
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains(&format!("{src}/shop/web:v1 → {dst}/shop-prod/web:v1")), "{}", plan.stdout);
    assert!(!plan.stdout.contains("nginx"), "external images are not copied: {}", plan.stdout);

    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let image = &summary["migrations"][0]["images"][0];
    assert_eq!(image["ok"], true, "{image}");
    assert!(image["bytes_sent"].as_u64().unwrap() >= 4_000_000, "{image}");

    // The manifest is in the destination registry under the mapped repository.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{dst}/v2/shop-prod/web/manifests/v1"))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The workload on the destination runs the copy; the external image is untouched.
    let ar = ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        plural: "deployments".into(),
    };
    let web =
        Api::<DynamicObject>::namespaced_with(lab.client("lab-dst").await, "shop-prod", &ar).get("web").await.unwrap();
    let web = serde_json::to_value(web).unwrap();
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], format!("{dst}/shop-prod/web:v1"));
    assert_eq!(web["spec"]["template"]["spec"]["containers"][1]["image"], "docker.io/library/nginx:1.27");

    // A re-run finds the image present and sends nothing.
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(plan.stdout.contains("already present"), "{}", plan.stdout);
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["migrations"][0]["images"][0]["up_to_date"], true, "{summary}");
    assert_eq!(summary["migrations"][0]["images"][0]["bytes_sent"], 0);
}
