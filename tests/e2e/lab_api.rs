//! The lab's simulated API server through kube-rs (and kubectl), as mtcd sees it.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use mtcd_tests::Lab;
use serde_json::{Value, json};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid test object")
}

fn api_err(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    obj(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
}

async fn create_ns(client: &kube::Client, name: &str) {
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(&PostParams::default(), &obj(json!({"metadata": {"name": name}}))).await.expect("create namespace");
}

#[tokio::test]
async fn discovery_lists_groups_and_a_created_crd() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let d = Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = d.groups().map(|g| g.name().to_string()).collect();
    for g in [
        "",
        "apps",
        "batch",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "velero.io",
        "route.openshift.io",
        "image.openshift.io",
        "apps.openshift.io",
    ] {
        assert!(groups.iter().any(|x| x == g), "group {g:?} missing from {groups:?}");
    }
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let created = crds.create(&PostParams::default(), &obj(crd)).await.unwrap();
    let conds = created.data["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
    let d = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = d.resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")).expect("Widget discovered");
    assert_eq!(ar.plural, "widgets");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"), "status subresource listed");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    widgets.create(&PostParams::default(), &obj(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}}))).await.unwrap();
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
    // Core discovery carries shortNames and the pods/log subresource.
    let core: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList =
        client.list_core_api_resources("v1").await.unwrap();
    let cms = core.resources.iter().find(|r| r.name == "configmaps").unwrap();
    assert_eq!(cms.short_names.as_deref(), Some(&["cm".to_string()][..]));
    assert!(core.resources.iter().any(|r| r.name == "pods/log"));
}

#[tokio::test]
async fn kubernetes_profile_does_not_serve_openshift_groups() {
    let lab = Lab::up_with(("kubernetes", "openshift"));
    let src = Discovery::new(lab.client("lab-src").await).run().await.unwrap();
    assert!(!src.groups().any(|g| g.name() == "route.openshift.io"));
    let dst = Discovery::new(lab.client("lab-dst").await).run().await.unwrap();
    assert!(dst.groups().any(|g| g.name() == "route.openshift.io"));
    assert_eq!(lab.info["clusters"]["src"]["profile"], "kubernetes");
}

#[tokio::test]
async fn crud_paging_and_selectors() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), json!({"tier": tier, "n": i.to_string()})))
            .await
            .unwrap();
    }
    let got = cms.get("cm-3").await.unwrap();
    assert!(
        got.metadata.uid.is_some()
            && got.metadata.creation_timestamp.is_some()
            && got.metadata.resource_version.is_some()
    );
    // Paging: 3 + 3 + 1 with continue tokens.
    let mut names = Vec::new();
    // `n` exists only on these seven: the lab's controllers add their own objects to `default`.
    let mut lp = ListParams::default().limit(3).labels("n");
    let mut pages = 0;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert!(pages >= 3, "{pages} pages of at most 3");
    assert_eq!(names.len(), 7);
    let sel = |s: &str| ListParams::default().labels(s);
    assert_eq!(cms.list(&sel("tier=even")).await.unwrap().items.len(), 4);
    assert_eq!(cms.list(&sel("n,tier!=even")).await.unwrap().items.len(), 3);
    assert_eq!(cms.list(&sel("n in (1,2,9)")).await.unwrap().items.len(), 2);
    assert_eq!(cms.list(&sel("n,n notin (1,2)")).await.unwrap().items.len(), 5);
    assert_eq!(cms.list(&sel("tier")).await.unwrap().items.len(), 7);
    assert_eq!(cms.list(&sel("n,!tier")).await.unwrap().items.len(), 0);
    let by_name = cms.list(&ListParams::default().fields("metadata.name=cm-5")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert!(api_err(cms.list(&ListParams::default().fields("data.k=v")).await).code == 400);
    // Metadata-only views.
    let meta = cms.list_metadata(&ListParams::default().labels("tier=odd")).await.unwrap();
    assert_eq!(meta.items.len(), 3);
    assert_eq!(meta.items[0].types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
    assert_eq!(cms.get_metadata("cm-1").await.unwrap().metadata.name.as_deref(), Some("cm-1"));
    // All-namespaces list.
    create_ns(&client, "other").await;
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(api_err(all.create(&PostParams::default(), &cm("nowhere", json!({}))).await).code, 405);
    // Ours: seven in default, one in other (the lab's controllers add kube-root-ca.crt maps).
    let everything = all.list(&ListParams::default()).await.unwrap().items;
    let ours = everything.iter().filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt")).count();
    assert_eq!(ours, 8);
    let in_other = all
        .list(&ListParams::default().fields("metadata.namespace=other,metadata.name!=kube-root-ca.crt"))
        .await
        .unwrap();
    assert_eq!(in_other.items.len(), 1);
    // Update and delete.
    let mut c = cms.get("cm-0").await.unwrap();
    c.data = Some([("k".to_string(), "new".to_string())].into());
    let updated = cms.replace("cm-0", &PostParams::default(), &c).await.unwrap();
    assert_ne!(updated.metadata.resource_version, c.metadata.resource_version);
    cms.delete("cm-0", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(cms.get("cm-0").await).code, 404);
    // generateName and dryRun.
    let generated: ConfigMap = obj(json!({"metadata": {"generateName": "gen-"}}));
    let made = cms.create(&PostParams::default(), &generated).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("gen-"));
    let dry = cms.create(&PostParams { dry_run: true, ..Default::default() }, &cm("dry", json!({}))).await.unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert_eq!(api_err(cms.get("dry").await).code, 404);
}

#[tokio::test]
async fn already_exists_conflict_and_not_found_are_status_objects() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let e = api_err(cms.create(&PostParams::default(), &cm("a", json!({}))).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "configmaps \"a\" already exists");
    let mut stale = first.clone();
    let mut fresh = first.clone();
    fresh.data = Some([("k".into(), "1".into())].into());
    cms.replace("a", &PostParams::default(), &fresh).await.unwrap();
    stale.data = Some([("k".into(), "2".into())].into());
    let e = api_err(cms.replace("a", &PostParams::default(), &stale).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"), "{}", e.message);
    let e = api_err(cms.get("missing").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"missing\" not found");
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let e = api_err(deploys.get("missing").await);
    assert_eq!(e.message, "deployments.apps \"missing\" not found");
    // Unknown patch and body types: 415 UnsupportedMediaType; protobuf only for built-in kinds
    // (not for the Velero kinds, which are custom resources on a real cluster).
    let raw = |method: &str, uri: &str, ct: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    for (method, uri, ct) in [
        ("PATCH", "/api/v1/namespaces/default/configmaps/a", "application/xml"),
        ("POST", "/apis/velero.io/v1/namespaces/default/backups", "application/vnd.kubernetes.protobuf"),
    ] {
        let e = api_err(deploys.clone().into_client().request_text(raw(method, uri, ct, "{}")).await);
        assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"), "{method} {ct}");
    }
    let e = api_err(
        deploys
            .clone()
            .into_client()
            .request_text(raw("POST", "/apis/velero.io/v1/namespaces/default/backups", "text/plain", "{}"))
            .await,
    );
    assert_eq!(
        e.message,
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
    );
    // A protobuf body without the `k8s\0` prefix: 400.
    let e = api_err(
        deploys
            .clone()
            .into_client()
            .request_text(raw(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/vnd.kubernetes.protobuf",
                "{}",
            ))
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    // A verb a path does not serve (PUT on a collection): 405.
    let put = http::Request::builder()
        .method("PUT")
        .uri("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    let e = api_err(deploys.into_client().request_text(put).await);
    assert_eq!((e.code, e.reason.as_str()), (405, "MethodNotAllowed"));
}

async fn expect_invalid<T: std::fmt::Debug>(r: Result<T, kube::Error>, field: &str) {
    let e = api_err(r);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{}", e.message);
    assert!(e.message.contains(field), "message {:?} should name {field}", e.message);
}

#[tokio::test]
async fn validation_errors_match_the_real_api_server() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // resourceVersion set on create.
    let mut with_rv = cm("rv", json!({}));
    with_rv.metadata.resource_version = Some("12".into());
    expect_invalid(cms.create(&pp, &with_rv).await, "metadata.resourceVersion").await;
    // Invalid names: subdomain for ConfigMaps, label for Namespaces, DNS-1035 for Services.
    expect_invalid(cms.create(&pp, &cm("Bad_Name", json!({}))).await, "metadata.name").await;
    let nss: Api<Namespace> = Api::all(client.clone());
    expect_invalid(nss.create(&pp, &obj(json!({"metadata": {"name": "a.b"}}))).await, "metadata.name").await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = |name: &str, spec: Value| -> Service { obj(json!({"metadata": {"name": name}, "spec": spec})) };
    expect_invalid(svcs.create(&pp, &svc("1svc", json!({"ports": [{"port": 80}]}))).await, "metadata.name").await;
    // Missing namespace: 404 NotFound naming the namespace.
    let e = api_err(Api::<ConfigMap>::namespaced(client.clone(), "nope").create(&pp, &cm("x", json!({}))).await);
    assert_eq!((e.code, e.reason.as_str(), e.message.as_str()), (404, "NotFound", "namespaces \"nope\" not found"));
    // Terminating namespace: 403 Forbidden (held open by an object with a finalizer).
    create_ns(&client, "dying").await;
    let held: Api<ConfigMap> = Api::namespaced(client.clone(), "dying");
    let mut f = cm("held", json!({}));
    f.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    held.create(&pp, &f).await.unwrap();
    nss.delete("dying", &DeleteParams::default()).await.unwrap();
    let e = api_err(held.create(&pp, &cm("late", json!({}))).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(e.message.contains("being terminated"));
    // Service clusterIP outside the CIDR, taken; nodePort out of range, taken.
    expect_invalid(
        svcs.create(&pp, &svc("outside", json!({"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}))).await,
        "spec.clusterIPs",
    )
    .await;
    let a = svcs.create(&pp, &svc("a", json!({"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}))).await.unwrap();
    assert_eq!(a.spec.unwrap().cluster_ip.as_deref(), Some("10.96.5.5"));
    expect_invalid(
        svcs.create(&pp, &svc("b", json!({"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}))).await,
        "already allocated",
    )
    .await;
    expect_invalid(
        svcs.create(&pp, &svc("np", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}))).await,
        "spec.ports[0].nodePort",
    )
    .await;
    let n1 = svcs
        .create(&pp, &svc("n1", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})))
        .await
        .unwrap();
    assert_eq!(n1.spec.unwrap().ports.unwrap()[0].node_port, Some(30080));
    expect_invalid(
        svcs.create(&pp, &svc("n2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await,
        "already allocated",
    )
    .await;
    let lb = svcs.create(&pp, &svc("lb", json!({"type": "LoadBalancer", "ports": [{"port": 443}]}))).await.unwrap();
    let np = lb.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&np));
    assert!(lb.spec.as_ref().unwrap().cluster_ip.as_deref().unwrap().starts_with("10.96."));
    // Switching a LoadBalancer to ClusterIP drops its allocated node ports.
    let back =
        svcs.patch("lb", &PatchParams::default(), &Patch::Merge(json!({"spec": {"type": "ClusterIP"}}))).await.unwrap();
    assert_eq!(back.spec.unwrap().ports.unwrap()[0].node_port, None);
    // Service clusterIP is immutable.
    expect_invalid(
        svcs.patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"clusterIP": "10.96.5.6"}}))).await,
        "spec.clusterIPs[0]",
    )
    .await;
    // PVC: spec immutable except a storage increase.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pvc: PersistentVolumeClaim = obj(
        json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    let made = pvcs.create(&pp, &pvc).await.unwrap();
    assert_eq!(
        made.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("standard"),
        "default storage class applied"
    );
    expect_invalid(
        pvcs.patch("data", &PatchParams::default(), &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}})))
            .await,
        "spec is immutable",
    )
    .await;
    // A larger request is for bound claims (the provisioner binds this one at once).
    let bound = |p: Option<&PersistentVolumeClaim>| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Bound")
    };
    tokio::time::timeout(Duration::from_secs(10), kube::runtime::wait::await_condition(pvcs.clone(), "data", bound))
        .await
        .expect("bound")
        .unwrap();
    pvcs.patch(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
    )
    .await
    .unwrap();
    // The resizer marks it Resizing, and the capacity follows (controllers/resizer.rs).
    let capacity = |p: Option<&PersistentVolumeClaim>| {
        p.and_then(|p| p.status.as_ref()?.capacity.as_ref()?.get("storage").map(|q| q.0.clone()))
    };
    let grown = move |p: Option<&PersistentVolumeClaim>| capacity(p).as_deref() == Some("2Gi");
    tokio::time::timeout(Duration::from_secs(10), kube::runtime::wait::await_condition(pvcs.clone(), "data", grown))
        .await
        .expect("grown by the resizer")
        .unwrap();
    expect_invalid(
        pvcs.patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await,
        "less than previous",
    )
    .await;
    // Job selector and template.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = obj(
        json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}}}),
    );
    let made = jobs.create(&pp, &job).await.unwrap();
    let labels = made.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels.get("job-name").map(String::as_str), Some("j"), "job labels are generated");
    expect_invalid(
        jobs.patch(
            "j",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}),
            ),
        )
        .await,
        "spec.template",
    )
    .await;
    expect_invalid(
        jobs.patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"x": "y"}}}})),
        )
        .await,
        "spec.selector",
    )
    .await;
    let e = api_err(jobs.create(&pp, &obj::<Job>(json!({"metadata": {"name": "j2"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}}))).await);
    assert!(e.code == 422 && e.message.contains("restartPolicy"), "{}", e.message);
    // Deployment selector.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&pp, &deployment("web", "nginx:1")).await.unwrap();
    expect_invalid(deploys.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": {"app": "other"}}}}}))).await, "spec.selector").await;
    let mut mismatched = deployment("mis", "nginx:1");
    mismatched.spec.template.metadata.as_mut().unwrap().labels = Some([("app".into(), "nope".into())].into());
    expect_invalid(deploys.create(&pp, &mismatched).await, "does not match").await;
    // StatefulSet serviceName and volumeClaimTemplates.
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), "default");
    sts.create(&pp, &obj(json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}))).await.unwrap();
    expect_invalid(
        sts.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"serviceName": "db2"}}))).await,
        "statefulset spec",
    )
    .await;
    sts.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    // Immutable Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(&pp, &obj(json!({"metadata": {"name": "s"}, "immutable": true, "stringData": {"a": "b"}})))
        .await
        .unwrap();
    let s = secrets.get("s").await.unwrap();
    assert_eq!(s.data.unwrap()["a"].0, b"b", "stringData is folded into data");
    expect_invalid(
        secrets.patch("s", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "Yw=="}}))).await,
        "data",
    )
    .await;
    // Pods: only images (and a few scheduling fields) may change.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&pp, &obj(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}})))
        .await
        .unwrap();
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "x:2"}]}})),
    )
    .await
    .unwrap();
    expect_invalid(
        pods.patch("p", &PatchParams::default(), &Patch::Merge(json!({"spec": {"restartPolicy": "Never"}}))).await,
        "pod updates may not change fields",
    )
    .await;
}

fn deployment(name: &str, image: &str) -> Deployment {
    obj(json!({"metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image}, {"name": "side", "image": "busybox:1"}]}}}}))
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let lab = Lab::up();
    let kc = kube::config::Kubeconfig::read_from(&lab.kubeconfig).unwrap();
    let opts = kube::config::KubeConfigOptions { context: Some("lab-src".into()), ..Default::default() };
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.unwrap();
    cfg.auth_info.token = None;
    let anon = kube::Client::try_from(cfg.clone()).unwrap();
    let e = api_err(Api::<Namespace>::all(anon).list(&ListParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    cfg.auth_info.token = Some("wrong".to_string().into());
    let wrong = kube::Client::try_from(cfg).unwrap();
    assert_eq!(api_err(Api::<Namespace>::all(wrong).list(&ListParams::default()).await).code, 401);
}

#[tokio::test]
async fn json_merge_strategic_and_apply_patches() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("web", "nginx:1")).await.unwrap();
    let pp = PatchParams::default();
    // Strategic: containers merge by name.
    let d = deploys
        .patch(
            "web",
            &pp,
            &Patch::Strategic(
                json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}}),
            ),
        )
        .await
        .unwrap();
    let cs = d.spec.template.spec.as_ref().unwrap().containers.clone();
    assert_eq!(cs.len(), 2, "the other container is kept");
    assert_eq!(cs[0].image.as_deref(), Some("nginx:2"));
    // Merge patch replaces lists.
    let d = deploys.patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}}))).await.unwrap();
    assert_eq!(d.spec.template.spec.as_ref().unwrap().containers.len(), 1);
    assert_eq!(d.metadata.labels.as_ref().unwrap()["a"], "1");
    // JSON patch.
    let p: json_patch::Patch = serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 4}, {"op": "remove", "path": "/metadata/labels/a"}])).unwrap();
    let d = deploys.patch("web", &pp, &Patch::<()>::Json(p)).await.unwrap();
    assert_eq!(d.spec.replicas, Some(4));
    assert!(d.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("a")));
    // Server-side apply creates when absent and records a managedFields entry.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ap = PatchParams::apply("mtcd");
    let made = cms.patch("applied", &ap, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1", "b": "2"}}))).await.unwrap();
    let mf = made.metadata.managed_fields.clone().unwrap();
    assert!(mf.iter().any(|e| e.manager.as_deref() == Some("mtcd") && e.operation.as_deref() == Some("Apply")));
    // Re-applying the same configuration is a no-op (same resourceVersion).
    let again = cms.patch("applied", &ap, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1", "b": "2"}}))).await.unwrap();
    assert_eq!(again.metadata.resource_version, made.metadata.resource_version);
    // Dropping a field from the applied configuration removes it.
    let less = cms
        .patch(
            "applied",
            &ap,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(less.data.unwrap().len(), 1);
    // Apply without a field manager is rejected; unknown patch types get 415.
    let e = api_err(
        cms.patch(
            "applied",
            &PatchParams::default(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}})),
        )
        .await,
    );
    assert_eq!(e.code, 400);
    let e = api_err(cms.patch("missing", &pp, &Patch::Merge(json!({"data": {"a": "b"}}))).await);
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let cfg = |replicas: i32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}}})
    };
    deploys.patch("web", &PatchParams::apply("first"), &Patch::Apply(cfg(1))).await.unwrap();
    let e = api_err(deploys.patch("web", &PatchParams::apply("second"), &Patch::Apply(cfg(3))).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"first\"") && e.message.contains(".spec.replicas"), "{}", e.message);
    // Same values: shared ownership, no conflict.
    deploys.patch("web", &PatchParams::apply("second"), &Patch::Apply(cfg(1))).await.unwrap();
    let forced = deploys.patch("web", &PatchParams::apply("third").force(), &Patch::Apply(cfg(5))).await.unwrap();
    assert_eq!(forced.spec.replicas, Some(5));
    // An Update by another manager takes ownership; the first applier now conflicts.
    deploys.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}}))).await.unwrap();
    let e = api_err(deploys.patch("web", &PatchParams::apply("third"), &Patch::Apply(cfg(5))).await);
    assert_eq!(e.code, 409);
    // A list item the applier stops sending is removed whole.
    let two = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pair"}, "spec": {
        "selector": {"matchLabels": {"app": "pair"}}, "template": {"metadata": {"labels": {"app": "pair"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                                {"name": "side", "image": "busybox:1"}]}}}});
    deploys.patch("pair", &PatchParams::apply("mtcd"), &Patch::Apply(two)).await.unwrap();
    let one = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pair"}, "spec": {
        "selector": {"matchLabels": {"app": "pair"}}, "template": {"metadata": {"labels": {"app": "pair"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}}}});
    let d = deploys.patch("pair", &PatchParams::apply("mtcd"), &Patch::Apply(one)).await.unwrap();
    let cs = d.spec.template.spec.unwrap().containers;
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0].env.as_ref().unwrap().len(), 1);
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    // An image the lab's nodes run: the deployment controller reports it ready (1 replica),
    // the same status this test writes, so its writes cannot race the assertions.
    let created = deploys
        .create(&PostParams::default(), &deployment("web", "registry.example.com/simulated/nginx:1"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Status in the main resource is ignored.
    let d = deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"readyReplicas": 7}})))
        .await
        .unwrap();
    // (The lab's deployment controller may have set readyReplicas itself, never to 7.)
    assert!(d.status.as_ref().is_none_or(|s| s.ready_replicas != Some(7)));
    // The status subresource changes only status.
    let d = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"readyReplicas": 1, "replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    assert_eq!(d.spec.replicas, Some(1));
    assert_eq!(d.metadata.generation, Some(1), "status writes do not bump generation");
    // The lab's Deployment controller may rewrite status between two writes: the spec write is
    // made on the exact version the status write returned (a 409 means the controller came
    // first: write the status again), so what it returns is that status, kept.
    let mut at = d.metadata.resource_version.clone();
    let mut tries = 0;
    let d = loop {
        tries += 1;
        assert!(tries < 20, "the controller won every race");
        let spec = json!({"metadata": {"resourceVersion": at}, "spec": {"replicas": 2}});
        match deploys.patch("web", &PatchParams::default(), &Patch::Merge(spec)).await {
            Ok(d) => break d,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let status = json!({"status": {"readyReplicas": 1, "replicas": 1}});
                at = deploys
                    .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .unwrap()
                    .metadata
                    .resource_version;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(d.metadata.generation, Some(2));
    assert_eq!(d.status.unwrap().ready_replicas, Some(1), "status kept across spec writes");
}

#[tokio::test]
async fn watchers_receive_events() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("before", json!({"w": "yes"}))).await.unwrap();
    let cfg = kube::runtime::watcher::Config::default().labels("w=yes");
    let mut stream = kube::runtime::watcher(cms.clone(), cfg).boxed();
    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cms.create(&PostParams::default(), &cm("after", json!({"w": "yes"}))).await.unwrap();
            cms.create(&PostParams::default(), &cm("unrelated", json!({"w": "no"}))).await.unwrap();
            cms.delete("before", &DeleteParams::default()).await.unwrap();
        })
    };
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&"delete:before".to_string()) {
        let ev =
            tokio::time::timeout_at(deadline, stream.try_next()).await.expect("watch events in time").unwrap().unwrap();
        match ev {
            kube::runtime::watcher::Event::InitApply(o) | kube::runtime::watcher::Event::Apply(o) => {
                seen.push(format!("apply:{}", o.metadata.name.unwrap()))
            }
            kube::runtime::watcher::Event::Delete(o) => seen.push(format!("delete:{}", o.metadata.name.unwrap())),
            _ => {}
        }
    }
    writer.await.unwrap();
    assert!(seen.contains(&"apply:before".to_string()) && seen.contains(&"apply:after".to_string()), "{seen:?}");
    assert!(!seen.iter().any(|s| s.ends_with("unrelated")), "label selector filters watch events: {seen:?}");
    // A resourceVersion that is not in the history yet still streams; a raw watch returns lines.
    let wp = kube::api::WatchParams::default().timeout(2);
    let rv = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut raw = cms.watch(&wp, &rv).await.unwrap().boxed();
    cms.create(&PostParams::default(), &cm("later", json!({}))).await.unwrap();
    match raw.try_next().await.unwrap() {
        Some(kube::core::WatchEvent::Added(o)) => {
            assert_eq!(o.metadata.name.as_deref(), Some("later"))
        }
        other => panic!("expected ADDED later, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_logs_are_served_from_the_node_log_files() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = obj(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "x:1"}]}}),
    );
    let made = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(made.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    let uid = made.metadata.uid.unwrap();
    let dir = std::path::PathBuf::from(lab.info["clusters"]["src"]["state_dir"].as_str().unwrap())
        .join("pod-logs")
        .join(format!("default_p_{uid}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.log"), "one\ntwo\nthree\n").unwrap();
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running"}})))
        .await
        .unwrap();
    let lp = |c: &str| kube::api::LogParams { container: Some(c.into()), ..Default::default() };
    assert_eq!(pods.logs("p", &lp("a")).await.unwrap(), "one\ntwo\nthree\n");
    let tail = kube::api::LogParams { container: Some("a".into()), tail_lines: Some(1), ..Default::default() };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "three\n");
    let e = api_err(pods.logs("p", &Default::default()).await);
    assert!(e.code == 400 && e.message.contains("a container name must be specified"), "{}", e.message);
    // follow streams appended lines and ends when the pod is terminal.
    let follow = kube::api::LogParams { container: Some("a".into()), follow: true, ..Default::default() };
    let stream = pods.log_stream("p", &follow).await.unwrap();
    let appender = {
        let pods = pods.clone();
        let dir = dir.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("a.log")).unwrap();
            f.write_all(b"four\n").unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            pods.patch_status("p", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Succeeded"}})))
                .await
                .unwrap();
        })
    };
    use futures::AsyncReadExt;
    let mut all = String::new();
    let mut stream = stream;
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut all))
        .await
        .expect("follow ends when the pod is terminal")
        .unwrap();
    appender.await.unwrap();
    assert_eq!(all, "one\ntwo\nthree\nfour\n");
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    create_ns(&client, "gone").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(&PostParams::default(), &cm("c", json!({}))).await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = nss.delete("gone", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nss.get_opt("gone").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "namespace still exists");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Api::<ConfigMap>::all(client)
            .list(&ListParams::default().fields("metadata.namespace=gone"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn seed_creates_objects_and_fills_bound_volumes() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let storage = lab.info["clusters"]["src"]["storage_root"].as_str().unwrap().to_string();
    let manual_dir = format!("{storage}/app/data-manual");
    // With the node services the lab's provisioner binds the claim; without them, bind by
    // hand the way the provisioner would.
    let binder = (lab.info["services"] != true).then(|| {
        std::fs::create_dir_all(&manual_dir).unwrap();
        let client = client.clone();
        let volume_dir = manual_dir.clone();
        tokio::spawn(async move {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "app");
            loop {
                if let Ok(Some(pvc)) = pvcs.get_opt("data").await {
                    if lab_bound(&pvc) {
                        return;
                    }
                    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
                    let _ = pvs.create(&PostParams::default(), &obj(json!({"metadata": {"name": "pv-data"}, "spec": {"capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"], "hostPath": {"path": volume_dir}, "storageClassName": "standard",
                        "claimRef": {"namespace": "app", "name": "data", "uid": pvc.metadata.uid}}}))).await;
                    pvcs.patch("data", &PatchParams::default(), &Patch::Merge(json!({"spec": {"volumeName": "pv-data"}}))).await.unwrap();
                    pvcs.patch_status("data", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await.unwrap();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: app}
data: {a: b}
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: app}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: lab.mtcd.io/v1
kind: VolumeData
namespace: app
claim: data
files:
  - {path: hello.txt, content: "hi\n", mode: "0600", mtime: 1700000000}
  - {path: sub/blob.bin, size: 10000, seed: 3}
  - {path: link, symlink: hello.txt}
  - {path: hard, hardlink_to: hello.txt}
"#;
    let report = lab.seed_yaml("lab-src", yaml).await.unwrap();
    if let Some(b) = binder {
        b.await.unwrap();
    }
    // The directory the claim is bound to, as the seeder found it.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "app").get("data").await.unwrap();
    let pv = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone())
        .get(pvc.spec.unwrap().volume_name.as_deref().unwrap())
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    let volume_dir = spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).unwrap();
    assert!(volume_dir.starts_with(&storage), "{volume_dir} under {storage}");
    assert_eq!(report.created.len(), 3, "{:?}", report.created);
    assert_eq!(report.created[0], "Namespace/app", "namespaces first");
    let root = std::path::Path::new(&volume_dir);
    assert_eq!(std::fs::read_to_string(root.join("hello.txt")).unwrap(), "hi\n");
    assert_eq!(std::fs::read(root.join("sub/blob.bin")).unwrap(), mtcd_lab::seed::generated_bytes(3, 10000));
    assert_eq!(std::fs::read_link(root.join("link")).unwrap(), std::path::PathBuf::from("hello.txt"));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root.join("hello.txt")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.mtime(), meta.nlink()), (0o600, 1700000000, 2));
    // Images go to the cluster's own registry (when the node services run).
    if lab.info["clusters"]["src"]["registry"].is_string() {
        let report = lab
            .seed_yaml("lab-src", "apiVersion: lab.mtcd.io/v1\nkind: Image\nrepository: app/web\ntag: v1\nlayers: [{size: 1000, seed: 1}]\n")
            .await
            .unwrap();
        assert!(report.images[0].starts_with("app/web:v1@sha256:"), "{:?}", report.images);
    }
    // Unknown kinds are named in the error.
    let err =
        lab.seed_yaml("lab-src", "apiVersion: example.com/v1\nkind: Nope\nmetadata: {name: x}\n").await.unwrap_err();
    assert!(err.to_string().contains("Nope"), "{err}");
}

fn lab_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

#[test]
fn kubectl_get_ns_works_against_the_lab() {
    if std::process::Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let lab = Lab::up();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--cache-dir")
        .arg(lab.dir.join("kubectl-cache")) // no discovery cached from an earlier lab on the same port
        .args(["--context", "lab-src", "get", "ns"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("default") && stdout.contains("kube-system") && stdout.contains("Active"), "{stdout}");
    // Categories ("all") come from discovery.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .arg("--cache-dir")
        .arg(lab.dir.join("kubectl-cache")) // no discovery cached from an earlier lab on the same port
        .args(["--context", "lab-src", "get", "all", "-n", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn down_stops_the_supervisor_and_is_idempotent() {
    let lab = Lab::up();
    let pid = lab.pid().expect("lab.pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let started = std::time::Instant::now();
    assert_eq!(lab.down().code, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"));
    assert!(!alive, "supervisor {pid} still running after down");
    assert_eq!(lab.down().code, 0, "down twice is fine");
}

#[tokio::test]
async fn scale_subresource_route_hosts_and_image_stream_status() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("web", "nginx:1")).await.unwrap();
    let scale = deploys
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(0));
    assert_eq!(deploys.get("web").await.unwrap().spec.replicas, Some(0));
    assert_eq!(deploys.get_scale("web").await.unwrap().status.unwrap().selector.as_deref(), Some("app=web"));
    let route_ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("route.openshift.io", "v1", "Route"), "routes");
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &route_ar);
    let r = routes
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "web"},
            "spec": {"to": {"kind": "Service", "name": "web"}, "tls": {"termination": "passthrough"}}})),
        )
        .await
        .unwrap();
    assert_eq!(r.data["spec"]["host"], "web-default.apps.src.lab.mtcd.io");
    let is_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("image.openshift.io", "v1", "ImageStream"),
        "imagestreams",
    );
    let streams: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &is_ar);
    let s = streams
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": {"name": "app"},
            "spec": {"tags": [{"name": "v1", "from": {"kind": "DockerImage", "name": "quay.io/x/app:v1"}}]}})),
        )
        .await
        .unwrap();
    assert_eq!(s.data["status"]["tags"][0]["items"][0]["dockerImageReference"], "quay.io/x/app:v1");
    // With the node services the cluster's registry is known and reported.
    if let Some(registry) = lab.info["clusters"]["src"]["registry"].as_str() {
        assert_eq!(s.data["status"]["dockerImageRepository"], format!("{registry}/default/app"));
    }
}

/// Throughput of server-side apply at the resource benchmark's shape (10,000 ConfigMaps and
/// Secrets + 500 Deployments, 16 in flight). Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_server_side_apply_throughput() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let n: usize = std::env::var("LAB_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let started = std::time::Instant::now();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let ap = PatchParams::apply("bench");
    futures::stream::iter(0..n)
        .map(|i| {
            let (cms, secrets, ap) = (cms.clone(), secrets.clone(), ap.clone());
            async move {
                if i % 2 == 0 {
                    cms.patch(&format!("cm-{i}"), &ap, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("cm-{i}"), "labels": {"bench": "yes"}}, "data": {"key": "value".repeat(20)}})))
                        .await
                        .map(|_| ())
                } else {
                    secrets.patch(&format!("s-{i}"), &ap, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": format!("s-{i}")}, "data": {"key": "dmFsdWU="}})))
                        .await
                        .map(|_| ())
                }
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let objects = started.elapsed();
    futures::stream::iter(0..500)
        .map(|i| {
            let (deploys, ap) = (deploys.clone(), ap.clone());
            async move {
                let name = format!("d-{i}");
                deploys.patch(&name, &ap, &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "b"}]}]}}}})))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    let total = started.elapsed();
    let list_start = std::time::Instant::now();
    let listed = cms.list(&ListParams::default().labels("bench=yes")).await.unwrap().items.len();
    eprintln!(
        "SSA: {n} ConfigMaps/Secrets in {:.2}s ({:.0}/s), +500 Deployments in {:.2}s; list of {listed} ConfigMaps {:.0}ms",
        objects.as_secs_f64(),
        n as f64 / objects.as_secs_f64(),
        (total - objects).as_secs_f64(),
        list_start.elapsed().as_secs_f64() * 1000.0
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", lab.pid().unwrap())).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    eprintln!("lab supervisor CPU time: {:.2}s", ticks as f64 / 100.0);
    assert_eq!(listed, n / 2);
}

/// `Image` seed documents: pushed image is readable by an independent client (skopeo copies
/// it and checks every digest). Uses Debian's docker-registry directly, so it runs without
/// the node feature.
#[tokio::test]
async fn generated_images_push_to_a_real_registry() {
    let have = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("docker-registry") || !have("skopeo") {
        eprintln!("docker-registry or skopeo missing; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = tmp.path().join("config.yml");
    std::fs::write(
        &config,
        format!("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", tmp.path().join("data").display()),
    )
    .unwrap();
    let mut registry =
        tokio::process::Command::new("docker-registry").arg("serve").arg(&config).kill_on_drop(true).spawn().unwrap();
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec: mtcd_lab::seed::ImageSpec =
        serde_yaml::from_str("repository: app/web\ntag: v1\nlayers: [{size: 4096, seed: 1}, {size: 100000, seed: 2}]")
            .unwrap();
    let digest = mtcd_lab::seed::push_image(&addr, &spec).await.unwrap();
    assert!(digest.starts_with("sha256:"));
    let out_dir = tmp.path().join("copy");
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{addr}/app/web:v1"),
            &format!("dir:{}", out_dir.display()),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    registry.kill().await.unwrap();
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let owner = deploys.create(&PostParams::default(), &deployment("web", "nginx:1")).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut child = cm("child", json!({}));
    child.metadata.owner_references = Some(vec![obj(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner.metadata.uid.unwrap()}),
    )]);
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.create(&PostParams::default(), &cm("unrelated", json!({}))).await.unwrap();
    deploys.delete("web", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cms.get_opt("child").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "dependent not collected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cms.get_opt("unrelated").await.unwrap().is_some());
}

#[tokio::test]
async fn uid_preconditions_config_keys_and_crd_deletion() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // A uid copied from another cluster is a failed precondition, on update and on apply.
    cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let foreign = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "uid": "0b4c7c50-0000-0000-0000-000000000000"}, "data": {"k": "x"}});
    let e = api_err(cms.patch("a", &PatchParams::apply("mtcd").force(), &Patch::Apply(foreign.clone())).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("Precondition failed: UID"), "{}", e.message);
    let mut fresh = foreign;
    fresh["metadata"]["name"] = json!("b");
    assert_eq!(api_err(cms.patch("b", &PatchParams::apply("mtcd").force(), &Patch::Apply(fresh)).await).code, 409);
    // ConfigMap keys.
    let bad: ConfigMap = obj(json!({"metadata": {"name": "bad"}, "data": {"no spaces": "x"}}));
    expect_invalid(cms.create(&PostParams::default(), &bad).await, "data[no spaces]").await;
    // Deleting a CRD deletes its objects: recreating it starts empty.
    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let crd = obj::<DynamicObject>(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}}));
    // apiextensions.k8s.io/v1 requires a schema per version.
    let e = api_err(crds.create(&PostParams::default(), &crd).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message.contains("spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"),
        "{}",
        e.message
    );
    let mut crd = crd;
    crd.data["spec"]["versions"][0]["schema"] =
        json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let g_ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Gadget"), "gadgets");
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &g_ar);
    gadgets
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}})),
        )
        .await
        .unwrap();
    crds.delete("gadgets.example.com", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(gadgets.get("g").await).code, 404);
    crds.create(&PostParams::default(), &crd).await.unwrap();
    assert!(gadgets.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn concurrent_writers_lose_nothing_and_defaults_come_back() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &cm("shared", json!({}))).await.unwrap();
    futures::stream::iter(0..32)
        .map(|i| {
            let cms = cms.clone();
            async move {
                cms.patch(
                    "shared",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {format!("l{i}"): "x"}}})),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    assert_eq!(cms.get("shared").await.unwrap().metadata.labels.unwrap().len(), 32);
    // deletecollection with a selector.
    cms.create(&PostParams::default(), &cm("tmp-1", json!({"tmp": "yes"}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("tmp-2", json!({"tmp": "yes"}))).await.unwrap();
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tmp=yes")).await.unwrap();
    assert!(cms.list(&ListParams::default().labels("tmp")).await.unwrap().items.is_empty());
    assert!(cms.get_opt("shared").await.unwrap().is_some());
    // A field an applier stops sending gets its default back.
    let deploys: Api<Deployment> = Api::namespaced(client, "default");
    let cfg = |strategy: Option<&str>| {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}}});
        if let Some(s) = strategy {
            d["spec"]["strategy"] = json!({"type": s});
        }
        d
    };
    let d = deploys.patch("web", &PatchParams::apply("mtcd"), &Patch::Apply(cfg(Some("Recreate")))).await.unwrap();
    assert_eq!(d.spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let d = deploys.patch("web", &PatchParams::apply("mtcd"), &Patch::Apply(cfg(None))).await.unwrap();
    assert_eq!(d.spec.strategy.unwrap().type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(d.spec.template.spec.unwrap().containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
}

fn pinned_pod(name: &str, node: &str) -> Pod {
    obj(json!({"metadata": {"name": name}, "spec": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
        "containers": [{"name": "app", "image": "registry.example.com/simulated/app:1"}]}}))
}

#[tokio::test]
async fn the_scheduler_binds_only_pods_that_fit_the_node_and_the_node_runs_only_those() {
    let lab = Lab::up();
    let client = lab.client("lab-src").await;
    create_ns(&client, "sched").await;
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .remove(0)
        .metadata
        .name
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sched");
    pods.create(&PostParams::default(), &pinned_pod("fits", &node)).await.unwrap();
    pods.create(&PostParams::default(), &pinned_pod("elsewhere", "node-that-does-not-exist")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pods.get("fits").await.unwrap().status.and_then(|s| s.phase).as_deref() != Some("Running") {
        assert!(std::time::Instant::now() < deadline, "the pod that fits never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pods.get("fits").await.unwrap().spec.unwrap().node_name, Some(node));
    let p = pods.get("elsewhere").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name, None, "not bound");
    let status = p.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert!(status.container_statuses.is_none(), "no node started it");
    let c = status.conditions.unwrap().into_iter().find(|c| c.type_ == "PodScheduled").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some("Unschedulable")));
    assert!(c.message.unwrap().contains("didn't match Pod's node affinity/selector"));
    // An unbound pod is deleted at once: no kubelet has anything to stop.
    pods.delete("elsewhere", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pods.get_opt("elsewhere").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the unbound pod was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
