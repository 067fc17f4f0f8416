//! A lab cluster's own objects, as a real cluster has them: the `kubernetes` Service with
//! Endpoints and EndpointSlice at the API server, a `kube-system` namespace whose UID
//! identifies the cluster, and the aggregated metrics API that can be down.

use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use mtcd_tests::Lab;

#[tokio::test]
async fn the_kubernetes_service_points_at_the_api_server_and_kube_system_identifies_the_cluster() {
    let lab = Lab::up();
    let src = lab.client("lab-src").await;
    let api_url = lab.info["clusters"]["src"]["api"].as_str().unwrap();
    let port: i32 = api_url.rsplit(':').next().unwrap().parse().unwrap();

    let svc = Api::<Service>::namespaced(src.clone(), "default").get("kubernetes").await.unwrap();
    let labels = svc.metadata.labels.unwrap();
    assert_eq!((labels["component"].as_str(), labels["provider"].as_str()), ("apiserver", "kubernetes"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"), "first IP of the service CIDR");
    let p = &spec.ports.unwrap()[0];
    assert_eq!((p.name.as_deref(), p.port), (Some("https"), 443));

    let ep = Api::<Endpoints>::namespaced(src.clone(), "default").get("kubernetes").await.unwrap();
    let subset = &ep.subsets.unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "127.0.0.1");
    assert_eq!(subset.ports.as_ref().unwrap()[0].port, port);
    let slice = Api::<EndpointSlice>::namespaced(src.clone(), "default").get("kubernetes").await.unwrap();
    assert_eq!(slice.metadata.labels.unwrap()["kubernetes.io/service-name"], "kubernetes");
    assert_eq!(slice.endpoints.as_ref().unwrap()[0].addresses, vec!["127.0.0.1".to_string()]);
    assert_eq!(slice.ports.unwrap()[0].port, Some(port));

    // kube-system's UID: one per cluster, the same through every context of that cluster.
    let uid = |c: kube::Client| async move {
        Api::<Namespace>::all(c).get("kube-system").await.unwrap().metadata.uid.expect("uid")
    };
    let via_src = uid(src.clone()).await;
    let via_alias = uid(lab.client("lab-src-alias").await).await;
    let via_dst = uid(lab.client("lab-dst").await).await;
    assert_eq!(via_src, via_alias);
    assert_ne!(via_src, via_dst);
    assert_eq!(uid(src).await, via_src, "stable");
    // The alias differs textually from lab-src: same port, another host spelling.
    let kc = std::fs::read_to_string(&lab.kubeconfig).unwrap();
    assert!(kc.contains(&format!("https://localhost:{port}")), "{kc}");
    assert_eq!(lab.info["clusters"]["src"]["alias_context"], "lab-src-alias");
}

fn api_err(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn available(svc: &kube::api::DynamicObject) -> (String, String) {
    let c = &svc.data["status"]["conditions"][0];
    assert_eq!(c["type"], "Available");
    (c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
}

/// The metrics APIService switched down with `lab.mtcd.io/unavailable: "true"`: `/apis` still
/// lists the group, its discovery and every request to it answer 503 as kube-aggregator does.
#[tokio::test]
async fn the_metrics_api_answers_503_while_its_apiservice_is_unavailable() {
    use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
    use kube::core::{ApiResource, GroupVersionKind};
    let lab = Lab::up();
    // Without kube-rs' default retries: it retries a 503 15 times (about five minutes) first,
    // which is what an unavailable APIService costs a default kube-rs client.
    let mut cfg = lab.client_config("lab-src").await;
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let apiservices: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
            "apiservices",
        ),
    );
    let pod_metrics: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"), "pods"),
    );
    let node_metrics: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "NodeMetrics"), "nodes"),
    );

    // Available: discovered, lists empty, get and write refused like metrics-server.
    assert_eq!(available(&apiservices.get("v1beta1.metrics.k8s.io").await.unwrap()), ("True".into(), "Passed".into()));
    let d = kube::Discovery::new(client.clone()).run().await.expect("complete discovery");
    assert!(d.groups().any(|g| g.name() == "metrics.k8s.io"));
    let resources = client.list_api_group_resources("metrics.k8s.io/v1beta1").await.unwrap();
    let pods = resources.resources.iter().find(|r| r.name == "pods").unwrap();
    assert_eq!(
        (pods.kind.as_str(), pods.namespaced, pods.verbs.clone()),
        ("PodMetrics", true, vec!["get".to_string(), "list".to_string()])
    );
    assert!(pod_metrics.list(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(node_metrics.list(&ListParams::default()).await.unwrap().items.is_empty());
    let e = api_err(pod_metrics.get("nope").await);
    assert_eq!((e.code, e.message.as_str()), (404, "pods.metrics.k8s.io \"nope\" not found"));

    // Down.
    let down = Patch::Merge(serde_json::json!({"metadata": {"annotations": {"lab.mtcd.io/unavailable": "true"}}}));
    let svc = apiservices.patch("v1beta1.metrics.k8s.io", &PatchParams::default(), &down).await.unwrap();
    assert_eq!(available(&svc), ("False".into(), "FailedDiscoveryCheck".into()));
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "metrics.k8s.io"), "/apis still lists the group");
    let e = api_err(client.list_api_group_resources("metrics.k8s.io/v1beta1").await);
    assert_eq!((e.code, e.message.as_str()), (503, "service unavailable"));
    assert_eq!(api_err(pod_metrics.list(&ListParams::default()).await).code, 503);
    assert_eq!(api_err(node_metrics.get("src-node").await).code, 503);
    assert!(kube::Discovery::new(client.clone()).run().await.is_err(), "a client that needs every group stalls");
    // The group document itself is the aggregator's own answer.
    assert_eq!(client.list_api_group_resources("apps/v1").await.unwrap().group_version, "apps/v1");
    // A client cannot write the status back to Available: the availability controller owns it.
    let forged = Patch::Merge(
        serde_json::json!({"status": {"conditions": [{"type": "Available", "status": "True", "reason": "Passed"}]}}),
    );
    let svc = apiservices.patch_status("v1beta1.metrics.k8s.io", &PatchParams::default(), &forged).await.unwrap();
    assert_eq!(available(&svc).0, "False");

    // Up again.
    let up = Patch::Merge(serde_json::json!({"metadata": {"annotations": {"lab.mtcd.io/unavailable": null}}}));
    apiservices.patch("v1beta1.metrics.k8s.io", &PatchParams::default(), &up).await.unwrap();
    assert!(pod_metrics.list(&ListParams::default()).await.is_ok());

    // An APIService without a backend (left over by an uninstalled adapter): listed, 503.
    let stale: DynamicObject = serde_json::from_value(serde_json::json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
        "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"name": "prometheus-adapter", "namespace": "monitoring"}}})).unwrap();
    let made = apiservices.create(&Default::default(), &stale).await.unwrap();
    assert_eq!(available(&made), ("False".into(), "ServiceNotFound".into()));
    assert!(client.list_api_groups().await.unwrap().groups.iter().any(|g| g.name == "custom.metrics.k8s.io"));
    assert_eq!(api_err(client.list_api_group_resources("custom.metrics.k8s.io/v1beta1").await).code, 503);
    // Deleting the metrics APIService unregisters the group.
    apiservices.delete("v1beta1.metrics.k8s.io", &Default::default()).await.unwrap();
    assert!(!client.list_api_groups().await.unwrap().groups.iter().any(|g| g.name == "metrics.k8s.io"));
    assert_eq!(api_err(pod_metrics.list(&ListParams::default()).await).code, 404);
}
