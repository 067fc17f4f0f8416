//! Cases ported in our own words from crane-lib's kubernetes_test.go, the OpenShift plugin and
//! Velero's restore actions (service_action_test.go, pvc_action_test.go, job_action_test.go).

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::*;
use crate::transform::{hold, mapping};

fn cleaned(mut obj: Value) -> Value {
    clean(&mut obj, &RuleSettings::default());
    obj
}

fn svc(spec: Value, annotations: Value, managed: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations, "managedFields": managed},
        "spec": spec})
}

#[test]
fn generated_and_owned_objects_are_skipped() {
    let cases = [
        (json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}}), true),
        (json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"}}), true),
        (json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"}}), true),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "ownerReferences": [{"kind": "ReplicaSet", "name": "x"}]}}),
            true,
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r", "ownerReferences": [{"kind": "Deployment", "name": "x"}]}}),
            true,
        ),
        (json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "bare"}}), false),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"}),
            true,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "d"}, "type": "kubernetes.io/dockercfg"}),
            true,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "annotations": {"kubernetes.io/service-account.name": "default"}}}),
            true,
        ),
        (json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}, "type": "Opaque"}), false),
        (json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}), true),
        (json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"}}), true),
        (json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}}), false),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}}), true),
        (json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "openshift-service-ca.crt"}}), true),
        (
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "system:image-pullers"}}),
            true,
        ),
        (json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"}}), true),
        (
            json!({"apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription", "metadata": {"name": "s"}}),
            true,
        ),
        (
            json!({"apiVersion": "authorization.openshift.io/v1", "kind": "RoleBinding", "metadata": {"name": "r"}}),
            true,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"}, "status": {"phase": "Succeeded"}}),
            true,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"}, "status": {"phase": "Running"}}),
            false,
        ),
        (
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
            true,
        ),
        (
            json!({"apiVersion": "image.openshift.io/v1", "kind": "ImageStreamTag", "metadata": {"name": "a:latest"}}),
            true,
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mtcd-transfer-client-tls", "labels": {"mtcd.io/component": "transfer"}}}),
            true,
        ),
    ];
    for (obj, skipped) in cases {
        assert_eq!(skip_reason(&obj).is_some(), skipped, "{obj}");
    }
}

#[test]
fn server_metadata_and_status_are_removed() {
    let obj = cleaned(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "c", "namespace": "shop", "uid": "u", "resourceVersion": "7", "generation": 2,
        "creationTimestamp": "2026-01-01T00:00:00Z", "selfLink": "/x", "managedFields": [],
        "labels": {"app": "a", "controller-uid": "u"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "data": {"k": "v"}, "status": {"x": 1}}));
    assert_eq!(
        obj,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop", "labels": {"app": "a"}}, "data": {"k": "v"}})
    );
}

#[test]
fn cluster_ips_are_dropped_unless_headless() {
    let obj = cleaned(svc(
        json!({"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": [{"port": 80}]}),
        json!({}),
        json!([]),
    ));
    assert_eq!(obj["spec"], json!({"ports": [{"port": 80}]}));
    let obj = cleaned(svc(json!({"clusterIP": "None", "clusterIPs": ["None"]}), json!({}), json!([])));
    assert_eq!(obj["spec"], json!({"clusterIP": "None", "clusterIPs": ["None"]}));
}

#[test]
fn load_balancer_external_ips_are_dropped() {
    let obj = cleaned(svc(json!({"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}), json!({}), json!([])));
    assert!(obj["spec"].get("externalIPs").is_none());
}

#[test]
fn node_ports_not_chosen_by_the_user_are_dropped() {
    let ports = json!([{"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}, {"port": 8080, "nodePort": 30808}]);
    // No record of intent: every nodePort was allocated by the cluster.
    let obj = cleaned(svc(json!({"type": "NodePort", "ports": ports.clone()}), json!({}), json!([])));
    assert!(obj["spec"]["ports"].as_array().unwrap().iter().all(|p| p.get("nodePort").is_none()));
    // A named port in last-applied-configuration keeps its nodePort; others lose theirs.
    let last = json!({"spec": {"ports": [{"name": "https", "port": 443, "nodePort": 30443}]}}).to_string();
    let obj = cleaned(svc(
        json!({"type": "NodePort", "ports": ports.clone()}),
        json!({"kubectl.kubernetes.io/last-applied-configuration": last}),
        json!([]),
    ));
    let kept: Vec<_> = obj["spec"]["ports"].as_array().unwrap().iter().filter_map(|p| p.get("nodePort")).collect();
    assert_eq!(kept, [&json!(30443)]);
    // An unnamed port is matched by number.
    let last = json!({"spec": {"ports": [{"port": 8080, "nodePort": 30808}]}}).to_string();
    let obj = cleaned(svc(
        json!({"type": "NodePort", "ports": ports.clone()}),
        json!({"kubectl.kubernetes.io/last-applied-configuration": last}),
        json!([]),
    ));
    assert_eq!(obj["spec"]["ports"][2]["nodePort"], 30808);
    assert!(obj["spec"]["ports"][0].get("nodePort").is_none());
    // Server-side apply records intent in managedFields only.
    let managed = json!([{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {"f:nodePort": {}}}}}}]);
    let obj = cleaned(svc(json!({"type": "NodePort", "ports": ports}), json!({}), managed));
    assert_eq!(obj["spec"]["ports"][0]["nodePort"], 30080);
    assert!(obj["spec"]["ports"][1].get("nodePort").is_none());
}

#[test]
fn health_check_node_port_follows_the_same_rule() {
    let obj = cleaned(svc(json!({"type": "LoadBalancer", "healthCheckNodePort": 31000}), json!({}), json!([])));
    assert!(obj["spec"].get("healthCheckNodePort").is_none());
    let managed = json!([{"manager": "m", "fieldsV1": {"f:spec": {"f:healthCheckNodePort": {}}}}]);
    let obj = cleaned(svc(json!({"type": "LoadBalancer", "healthCheckNodePort": 31000}), json!({}), managed));
    assert_eq!(obj["spec"]["healthCheckNodePort"], 31000);
}

#[test]
fn jobs_lose_generated_selectors_and_standalone_jobs_are_suspended() {
    let job = |manual: bool, annotations: Value| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "annotations": annotations},
            "spec": {"manualSelector": manual, "selector": {"matchLabels": {"controller-uid": "u", "app": "a"}},
                "template": {"metadata": {"labels": {"controller-uid": "u", "job-name": "j", "app": "a"}}, "spec": {"containers": []}}}})
    };
    let auto = cleaned(job(false, json!({})));
    assert!(auto["spec"].get("selector").is_none());
    assert_eq!(auto["spec"]["template"]["metadata"]["labels"], json!({"app": "a"}));
    assert_eq!(auto["spec"]["suspend"], true);
    let manual = cleaned(job(true, json!({})));
    assert_eq!(manual["spec"]["selector"], json!({"matchLabels": {"app": "a"}}));
    let idempotent = cleaned(job(false, json!({"crane.konveyor.io/job-idempotent": "true"})));
    assert!(idempotent["spec"].get("suspend").is_none());
}

#[test]
fn service_accounts_lose_generated_secrets() {
    let obj = cleaned(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"},
        "secrets": [{"name": "app-token-x"}], "imagePullSecrets": [{"name": "app-dockercfg-x"}, {"name": "quay"}]}));
    assert!(obj.get("secrets").is_none());
    assert_eq!(obj["imagePullSecrets"], json!([{"name": "quay"}]));
}

#[test]
fn generated_route_hosts_are_dropped_and_chosen_ones_kept() {
    let route = |generated: &str| {
        json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
        "metadata": {"name": "r", "annotations": {"openshift.io/host.generated": generated}}, "spec": {"host": "r-shop.apps.src"}})
    };
    assert!(cleaned(route("true"))["spec"].get("host").is_none());
    assert_eq!(cleaned(route("false"))["spec"]["host"], "r-shop.apps.src");
}

#[test]
fn pvcs_lose_their_binding_and_take_mapped_class_modes_and_names() {
    let settings = RuleSettings {
        storage_class_map: IndexMap::from([("standard".into(), "fast".into())]),
        access_mode_map: IndexMap::from([("ReadWriteOnce".into(), "ReadWriteMany".into())]),
        pvc_name_map: IndexMap::from([("data".into(), "data-v2".into())]),
    };
    let mut pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "annotations": {
        "pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/selected-node": "n1", "keep": "me"}},
        "spec": {"volumeName": "pvc-123", "storageClassName": "standard", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    clean(&mut pvc, &settings);
    assert_eq!(pvc["metadata"], json!({"name": "data-v2", "annotations": {"keep": "me"}}));
    assert_eq!(
        pvc["spec"],
        json!({"storageClassName": "fast", "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}})
    );
    let mut deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}}});
    clean(&mut deploy, &settings);
    assert_eq!(deploy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-v2");
    let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {"volumeClaimTemplates": [
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"]}, "status": {"phase": "Pending"}}]}});
    clean(&mut sts, &settings);
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0],
        json!({"metadata": {"name": "data-v2"}, "spec": {"storageClassName": "fast", "accessModes": ["ReadWriteMany"]}})
    );
}

#[test]
fn pods_lose_node_binding_token_volumes_and_generated_pull_secrets() {
    let obj = cleaned(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "nodeName": "n1", "nodeSelector": {"a": "b"}, "priority": 5,
        "imagePullSecrets": [{"name": "default-dockercfg-abc"}, {"name": "quay"}],
        "volumes": [{"name": "tok", "secret": {"secretName": "default-token-xyz"}}, {"name": "data", "emptyDir": {}}],
        "containers": [{"name": "c", "volumeMounts": [{"name": "tok", "mountPath": "/var/run/secrets"}, {"name": "data", "mountPath": "/d"}]}]}}));
    assert_eq!(
        obj["spec"],
        json!({"imagePullSecrets": [{"name": "quay"}], "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]})
    );
}

#[test]
fn namespaces_lose_openshift_uid_ranges() {
    let obj = cleaned(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {
        "openshift.io/sa.scc.uid-range": "1000/10000", "openshift.io/sa.scc.mcs": "s0:c1", "team": "a"}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}));
    assert_eq!(
        obj,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "annotations": {"team": "a"}}})
    );
}

#[test]
fn namespace_mapping_rewrites_references_into_migrated_namespaces() {
    let map = IndexMap::from([("shop".to_string(), "shop-prod".to_string())]);
    let mut rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "r", "namespace": "shop"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}, {"kind": "ServiceAccount", "name": "x", "namespace": "other"},
            {"kind": "Group", "name": "system:serviceaccounts:shop"}, {"kind": "User", "name": "system:serviceaccount:shop:app"}]});
    mapping::map_namespace(&mut rb, &map);
    assert_eq!(rb["metadata"]["namespace"], "shop-prod");
    assert_eq!(
        rb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "app", "namespace": "shop-prod"}, {"kind": "ServiceAccount", "name": "x", "namespace": "other"},
        {"kind": "Group", "name": "system:serviceaccounts:shop-prod"}, {"kind": "User", "name": "system:serviceaccount:shop-prod:app"}])
    );
    let mut np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n", "namespace": "shop"},
        "spec": {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]}]}});
    mapping::map_namespace(&mut np, &map);
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "shop-prod"
    );
    let mut ext = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"}, "spec": {"type": "ExternalName", "externalName": "pg.shop.svc.cluster.local"}});
    mapping::map_namespace(&mut ext, &map);
    assert_eq!(ext["spec"]["externalName"], "pg.shop-prod.svc.cluster.local");
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    mapping::map_namespace(&mut ns, &map);
    assert_eq!(ns["metadata"]["name"], "shop-prod");
}

#[test]
fn workloads_are_held_with_their_original_values_and_released_at_cutover() {
    let mut d =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
    hold::hold(&mut d);
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["metadata"]["annotations"]["mtcd.io/original-replicas"], "3");
    // A source already quiesced by a cutover carries the original; holding it again keeps 3.
    let mut again = d.clone();
    hold::hold(&mut again);
    assert_eq!(again, d);
    hold::release(&mut d);
    assert_eq!(
        d,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}})
    );
    let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"schedule": "* * * * *"}});
    hold::hold(&mut cj);
    assert_eq!(cj["spec"]["suspend"], true);
    assert_eq!(cj["metadata"]["annotations"]["mtcd.io/original-suspend"], "false");
    hold::release(&mut cj);
    assert_eq!(cj["spec"]["suspend"], false);
}

#[test]
fn annotations_controllers_own_are_not_copied() {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop",
        "annotations": {"deployment.kubernetes.io/revision": "7", "pv.kubernetes.io/bound-by-controller": "yes", "team": "a"}}});
    clean(&mut d, &RuleSettings::default());
    assert_eq!(d["metadata"]["annotations"], json!({"team": "a"}));
    let mut only = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web",
        "annotations": {"deployment.kubernetes.io/revision": "7"}}});
    clean(&mut only, &RuleSettings::default());
    assert!(only["metadata"].get("annotations").is_none(), "no empty map left: {only}");
}

#[test]
fn the_api_server_s_own_service_is_never_copied() {
    let svc =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"}});
    assert_eq!(skip_reason(&svc), Some("the cluster's own API server Service"));
    let app = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "shop"}});
    assert_eq!(skip_reason(&app), None, "an application's Service of that name elsewhere is copied");
}

#[test]
fn mtcds_run_records_and_deployment_are_never_copied() {
    let record = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mtcd-run-shop", "namespace": "shop", "labels": {"mtcd.io/component": "run-record"}}});
    assert_eq!(skip_reason(&record), Some("mtcd's own run record or deployment"));
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "mtcd-sync-shop", "namespace": "mtcd", "labels": {"mtcd.io/component": "deploy"}}});
    assert!(skip_reason(&cron).is_some());
    let transfer = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "shop", "labels": {"mtcd.io/component": "other"}}});
    assert_eq!(skip_reason(&transfer), None);
}
