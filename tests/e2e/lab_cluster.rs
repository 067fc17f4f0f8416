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
