//! The objects `mtcd deploy` prints: plain Kubernetes YAML, one document each, in the order
//! `kubectl apply -f -` needs them (the namespace first, RBAC before what uses it).
//!
//! The cluster the Job runs in is one side of the file (`--cluster`): that side's `context`
//! becomes `in-cluster` in the ConfigMap's copy of the file, so the pod uses its service
//! account there; the other side is read from the kubeconfig Secret mounted at
//! [`KUBECONFIG_DIR`].

use serde_json::{Value, json};

use crate::labels;
use crate::spec::{Side, Spec};

/// Where the ConfigMap with the desired file is mounted.
pub const DESIRED_DIR: &str = "/etc/mtcd/desired";
/// The ConfigMap's key (and so the file's name under [`DESIRED_DIR`]).
pub const DESIRED_KEY: &str = "desired.toml";
/// Where the kubeconfig Secret (key [`KUBECONFIG_KEY`]) is mounted.
pub const KUBECONFIG_DIR: &str = "/etc/mtcd/kubeconfig";
/// The kubeconfig Secret's key.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The port of `/metrics` and `/healthz` in `--watch-mode`.
pub const METRICS_PORT: u16 = 9090;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The namespace everything of the deployment lives in.
    pub namespace: String,
    /// The image running mtcd.
    pub image: String,
    /// The CronJobs' schedule (`None` with `watch_mode`).
    pub schedule: Option<String>,
    /// Which side of the file the Job runs in.
    pub cluster: Side,
    /// The Secret holding a kubeconfig for the other side (never generated: it holds
    /// credentials; docs/in-cluster.md shows how to create it).
    pub kubeconfig_secret: String,
    /// One Deployment running `mtcd apply --watch` instead of CronJobs.
    pub watch_mode: bool,
}

/// The names used for a deployment; `mtcd deploy --delete` removes exactly these.
pub const SERVICE_ACCOUNT: &str = "mtcd";
pub const CONFIG_MAP: &str = "mtcd-desired";
pub const WATCH_DEPLOYMENT: &str = "mtcd-watch";

/// The CronJob of a migration.
pub fn cronjob_name(migration: &str) -> String {
    // CronJob names are at most 52 characters (the controller appends 11 for its Jobs).
    let mut name = format!("mtcd-sync-{migration}");
    name.truncate(52);
    name.trim_end_matches('-').to_string()
}

/// The cluster-scoped RBAC objects' names (one deployment per namespace, so the namespace
/// is part of the name).
pub fn cluster_role(namespace: &str, role: &str) -> String {
    format!("mtcd-{namespace}-{role}")
}

fn labels(extra: Option<(&str, &str)>) -> Value {
    let mut l = json!({
        labels::MANAGED_BY: labels::MANAGED_BY_VALUE,
        labels::COMPONENT: labels::COMPONENT_DEPLOY,
        "app.kubernetes.io/name": "mtcd",
    });
    if let Some((k, v)) = extra {
        l[k] = v.into();
    }
    l
}

fn meta(name: &str, namespace: Option<&str>, extra: Option<(&str, &str)>) -> Value {
    let mut m = json!({"name": name, "labels": labels(extra)});
    if let Some(ns) = namespace {
        m["namespace"] = ns.into();
    }
    m
}

/// The desired file as the pod reads it: the side it runs in is `in-cluster`.
pub fn desired_for_pod(text: &str, side: Side) -> Result<String, toml::de::Error> {
    let mut doc: toml::Table = toml::from_str(text)?;
    if let Some(toml::Value::Table(clusters)) = doc.get_mut("clusters")
        && let Some(toml::Value::Table(c)) = clusters.get_mut(side.as_str())
    {
        c.insert("context".into(), toml::Value::String(crate::spec::contexts::IN_CLUSTER.into()));
    }
    Ok(toml::to_string(&doc).expect("a TOML table serializes"))
}

/// The rules mtcd needs on the side it runs in. Generated, not hand-written: planning reads
/// every listable type cluster-wide (discovery, the cluster identity, storage classes, PVs,
/// CRDs); the destination is written (namespaces, every copied kind, RBAC it copies — which
/// RBAC only allows to someone holding those rights —, Leases, run records, Events); the
/// source gets transfer pods, Services, Secrets and Routes in its namespaces during a
/// volume copy, and its workloads scaled at cutover.
pub fn rules(side: Side) -> Value {
    let read = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]});
    match side {
        Side::Destination => json!([
            read,
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "clusterroles"], "verbs": ["escalate", "bind"]},
        ]),
        Side::Source => json!([
            read,
            {"apiGroups": [""], "resources": ["pods", "pods/exec", "services", "secrets", "configmaps", "persistentvolumeclaims"],
             "verbs": ["create", "update", "patch", "delete"]},
            {"apiGroups": ["route.openshift.io"], "resources": ["routes", "routes/custom-host"], "verbs": ["create", "update", "patch", "delete"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["create", "update", "patch", "delete"]},
            {"apiGroups": ["apps", "apps.openshift.io"], "resources": ["deployments", "statefulsets", "replicasets", "deploymentconfigs", "deployments/scale", "statefulsets/scale", "deploymentconfigs/scale"],
             "verbs": ["update", "patch"]},
            {"apiGroups": ["batch"], "resources": ["cronjobs"], "verbs": ["update", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "update", "patch", "delete"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ]),
    }
}

fn container(plan: &Plan, args: Vec<String>, needs_kubeconfig: bool) -> Value {
    let mut mounts = vec![json!({"name": "desired", "mountPath": DESIRED_DIR, "readOnly": true})];
    let mut env = vec![json!({"name": "RUST_LOG", "value": "warn"})];
    if needs_kubeconfig {
        mounts.push(json!({"name": "kubeconfig", "mountPath": KUBECONFIG_DIR, "readOnly": true}));
        env.push(json!({"name": "MTCD_KUBECONFIG", "value": format!("{KUBECONFIG_DIR}/{KUBECONFIG_KEY}")}));
    }
    json!({
        "name": "mtcd",
        "image": plan.image,
        "command": ["mtcd"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "1Gi"},
        },
    })
}

fn pod_spec(plan: &Plan, container: Value, needs_kubeconfig: bool, restart: &str) -> Value {
    let mut volumes = vec![json!({"name": "desired", "configMap": {"name": CONFIG_MAP}})];
    if needs_kubeconfig {
        volumes.push(json!({"name": "kubeconfig", "secret": {"secretName": plan.kubeconfig_secret}}));
    }
    json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": true,
        "restartPolicy": restart,
        "containers": [container],
        "volumes": volumes,
    })
}

/// Every object of the deployment, in apply order.
pub fn objects(plan: &Plan, spec: &Spec, desired_text: &str) -> Result<Vec<Value>, toml::de::Error> {
    let ns = plan.namespace.as_str();
    let file = format!("{DESIRED_DIR}/{DESIRED_KEY}");
    let other = match plan.cluster {
        Side::Source => &spec.destination,
        Side::Destination => &spec.source,
    };
    let needs_kubeconfig = !crate::spec::contexts::is_in_cluster(&other.context);
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, None)}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(SERVICE_ACCOUNT, Some(ns), None)}),
    ];
    let role = cluster_role(ns, plan.cluster.as_str());
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta(&role, None, None),
        "rules": rules(plan.cluster),
    }));
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta(&role, None, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": ns}],
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(CONFIG_MAP, Some(ns), None),
        "data": {DESIRED_KEY: desired_for_pod(desired_text, plan.cluster)?},
    }));
    if plan.watch_mode {
        let args = vec![
            "apply".into(),
            file.clone(),
            "--watch".into(),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
        ];
        let mut c = container(plan, args, needs_kubeconfig);
        c["ports"] = json!([{"name": "metrics", "containerPort": METRICS_PORT}]);
        c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 30});
        out.push(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(WATCH_DEPLOYMENT, Some(ns), None),
            "spec": {
                "replicas": 1,
                // Never two loops at once (the Lease would make the second wait anyway).
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": "mtcd", "app.kubernetes.io/component": "watch"}},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": "mtcd", "app.kubernetes.io/component": "watch"},
                        "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": METRICS_PORT.to_string()},
                    },
                    "spec": pod_spec(plan, c, needs_kubeconfig, "Always"),
                },
            },
        }));
        return Ok(out);
    }
    let schedule = plan.schedule.clone().unwrap_or_default();
    for m in &spec.migrations {
        let args = vec![
            "apply".into(),
            file.clone(),
            "--migration".into(),
            m.name.clone(),
            "--schedule".into(),
            schedule.clone(),
        ];
        let c = container(plan, args, needs_kubeconfig);
        let pod_labels = json!({"app.kubernetes.io/name": "mtcd", labels::MIGRATION: m.name});
        out.push(json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta(&cronjob_name(&m.name), Some(ns), Some((labels::MIGRATION, &m.name))),
            "spec": {
                "schedule": schedule,
                "timeZone": "Etc/UTC",
                // A run still going when the next is due: the next is skipped, not stacked.
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 300,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": labels(Some((labels::MIGRATION, &m.name)))},
                    "spec": {
                        // A failed sync is retried by the next schedule, not at once.
                        "backoffLimit": 0,
                        "ttlSecondsAfterFinished": 86400,
                        "template": {
                            "metadata": {"labels": pod_labels},
                            "spec": pod_spec(plan, c, needs_kubeconfig, "Never"),
                        },
                    },
                },
            },
        }));
    }
    Ok(out)
}

/// The objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).expect("JSON values serialize as YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"version = 1
# the source is read through a kubeconfig Secret
[clusters.source]
context = "lab-src"
[clusters.destination]
context = "lab-dst"
[[migration]]
name = "shop"
namespaces = ["shop"]
[[migration]]
name = "blog"
namespaces = ["blog"]
"#;

    fn plan(watch_mode: bool) -> Plan {
        Plan {
            namespace: "mtcd".into(),
            image: "registry.example.com/mtcd:0.1.0".into(),
            schedule: Some("*/15 * * * *".into()),
            cluster: Side::Destination,
            kubeconfig_secret: "mtcd-kubeconfig".into(),
            watch_mode,
        }
    }

    fn parse(yaml: &str) -> Vec<Value> {
        yaml.split("\n---\n")
            .map(|d| d.trim_start_matches("---\n"))
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn prints_plain_yaml_kubectl_accepts() {
        let spec = crate::spec::parse(FILE, std::path::Path::new("d.toml")).unwrap();
        let yaml = to_yaml(&objects(&plan(false), &spec, FILE).unwrap());
        let docs = parse(&yaml);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "CronJob", "CronJob"]
        );
        for d in &docs {
            // What kubectl needs of every document: apiVersion, kind, a DNS name, labels.
            assert!(d["apiVersion"].is_string(), "{d}");
            let name = d["metadata"]["name"].as_str().unwrap();
            assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert_eq!(d["metadata"]["labels"]["mtcd.io/component"], "deploy");
            let namespaced = !matches!(d["kind"].as_str(), Some("Namespace" | "ClusterRole" | "ClusterRoleBinding"));
            assert_eq!(d["metadata"]["namespace"].as_str().is_some(), namespaced, "{d}");
        }
        let cj = &docs[5];
        assert_eq!(cj["metadata"]["name"], "mtcd-sync-shop");
        assert_eq!(cj["spec"]["schedule"], "*/15 * * * *");
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 3);
        let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "mtcd");
        assert_eq!(pod["restartPolicy"], "Never");
        let c = &pod["containers"][0];
        assert_eq!(
            c["args"],
            json!(["apply", "/etc/mtcd/desired/desired.toml", "--migration", "shop", "--schedule", "*/15 * * * *"])
        );
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        assert_eq!(c["env"][1]["value"], "/etc/mtcd/kubeconfig/kubeconfig");
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "mtcd-kubeconfig");
        // The pod's copy of the file: the destination is the cluster it runs in.
        let desired = docs[4]["data"]["desired.toml"].as_str().unwrap();
        let pod_spec = crate::spec::parse(desired, std::path::Path::new("d.toml")).unwrap();
        assert_eq!(pod_spec.destination.context, "in-cluster");
        assert_eq!(pod_spec.source.context, "lab-src");
        assert_eq!(docs[3]["subjects"][0], json!({"kind": "ServiceAccount", "name": "mtcd", "namespace": "mtcd"}));
    }

    #[test]
    fn watch_mode_is_one_deployment_with_metrics_and_a_probe() {
        let spec = crate::spec::parse(FILE, std::path::Path::new("d.toml")).unwrap();
        let docs = parse(&to_yaml(&objects(&plan(true), &spec, FILE).unwrap()));
        let d = docs.last().unwrap();
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][2], "--watch");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        );
        assert!(!docs.iter().any(|d| d["kind"] == "CronJob"));
    }

    #[test]
    fn long_migration_names_fit_a_cronjob_name() {
        assert_eq!(cronjob_name("shop"), "mtcd-sync-shop");
        assert!(cronjob_name(&"a".repeat(63)).len() <= 52);
    }
}
