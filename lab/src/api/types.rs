//! The table of resource types a lab cluster serves, plus the ones CRDs add at runtime.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// One served resource (one row of discovery).
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub has_status: bool,
    /// Set when the type came from a CustomResourceDefinition (its name).
    pub crd: Option<String>,
    /// A review the server answers without storing anything (SelfSubjectAccessReview,
    /// TokenReview, ...): `create` is its only verb.
    pub create_only: bool,
    /// Served by an aggregated API server behind an APIService (`metrics.k8s.io`): only
    /// `get` and `list`, and only while the APIService is registered and available.
    pub aggregated: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `configmaps` or `deployments.apps`, as real error messages name resources.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn gr(&self) -> Gr {
        (self.group.clone(), self.plural.clone())
    }

    /// Whether `/scale` is served (the workload kinds `kubectl scale` works on).
    pub fn scalable(&self) -> bool {
        matches!(
            (self.group.as_str(), self.plural.as_str()),
            ("apps", "deployments" | "statefulsets" | "replicasets") | ("apps.openshift.io", "deploymentconfigs")
        )
    }

    fn discovery(&self) -> Vec<Value> {
        let verbs: &[&str] = if self.create_only {
            &["create"]
        } else if self.aggregated {
            &["get", "list"]
        } else {
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        };
        let mut v = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "shortNames": self.short_names,
        })];
        let all = matches!(
            (self.group.as_str(), self.plural.as_str()),
            ("", "pods" | "services" | "replicationcontrollers")
                | ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets")
                | ("batch", "jobs" | "cronjobs")
                | ("apps.openshift.io", "deploymentconfigs")
                | ("image.openshift.io", "imagestreams")
                | ("route.openshift.io", "routes")
        );
        if all {
            v[0]["categories"] = json!(["all"]);
        }
        if self.short_names.is_empty() {
            v[0].as_object_mut().map(|m| m.remove("shortNames"));
        }
        if self.has_status {
            v.push(
                json!({"name": format!("{}/status", self.plural), "singularName": "", "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if self.scalable() {
            v.push(json!({"name": format!("{}/scale", self.plural), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if self.group.is_empty() && self.plural == "pods" {
            v.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}),
            );
            v.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions",
                "verbs": ["create", "get"]}));
        }
        if self.group.is_empty() && self.plural == "serviceaccounts" {
            v.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
        v
    }
}

/// (group, plural): the storage key of a resource, independent of version.
pub type Gr = (String, String);

/// Every served type, by (group, version, plural), and the group order for discovery.
#[derive(Default)]
pub struct TypeTable {
    by_gvr: BTreeMap<(String, String, String), Arc<ResourceType>>,
    group_order: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn t(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        has_status: status,
        crd: None,
        create_only: false,
        aggregated: false,
    }
}

/// A create-only review type (answered by the server, never stored).
fn review(group: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceType {
    ResourceType { create_only: true, ..t(group, "v1", kind, plural, namespaced, &[], false) }
}

impl TypeTable {
    /// The built-in types for a cluster profile (`openshift` adds the OpenShift groups).
    pub fn builtin(profile: &str) -> Self {
        let mut types = vec![
            t("", "v1", "Namespace", "namespaces", false, &["ns"], true),
            t("", "v1", "ConfigMap", "configmaps", true, &["cm"], false),
            t("", "v1", "Secret", "secrets", true, &[], false),
            t("", "v1", "Service", "services", true, &["svc"], true),
            t("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false),
            t("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"], true),
            t("", "v1", "PersistentVolume", "persistentvolumes", false, &["pv"], true),
            t("", "v1", "Pod", "pods", true, &["po"], true),
            t("", "v1", "Endpoints", "endpoints", true, &["ep"], false),
            t("", "v1", "Event", "events", true, &["ev"], false),
            t("", "v1", "Node", "nodes", false, &["no"], true),
            t("", "v1", "ReplicationController", "replicationcontrollers", true, &["rc"], true),
            t("", "v1", "LimitRange", "limitranges", true, &["limits"], false),
            t("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], true),
            t("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, &[], false),
            t("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], true),
            t("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, &["hpa"], true),
            t("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, &[], false),
            t("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, &["pc"], false),
            t("events.k8s.io", "v1", "Event", "events", true, &["ev"], false),
            t("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false),
            t("apps", "v1", "Deployment", "deployments", true, &["deploy"], true),
            t("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true),
            t("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true),
            t("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], true),
            t("batch", "v1", "Job", "jobs", true, &[], true),
            t("batch", "v1", "CronJob", "cronjobs", true, &["cj"], true),
            t("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], true),
            t("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false),
            t("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false),
            t("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false),
            t("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false),
            t("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, &[], false),
            t("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, &["sc"], false),
            t(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                &["crd", "crds"],
                true,
            ),
            t("velero.io", "v1", "Backup", "backups", true, &[], true),
            t("velero.io", "v1", "Restore", "restores", true, &[], true),
            t("velero.io", "v1", "BackupStorageLocation", "backupstoragelocations", true, &["bsl"], true),
            t("velero.io", "v1", "DownloadRequest", "downloadrequests", true, &[], true),
            review("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews", false),
            review("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews", false),
            review("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", false),
            review("authorization.k8s.io", "LocalSubjectAccessReview", "localsubjectaccessreviews", true),
            review("authentication.k8s.io", "TokenReview", "tokenreviews", false),
            review("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", false),
            t("apiregistration.k8s.io", "v1", "APIService", "apiservices", false, &[], true),
            ResourceType {
                aggregated: true,
                singular: String::new(),
                ..t("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", false, &[], false)
            },
            ResourceType {
                aggregated: true,
                singular: String::new(),
                ..t("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", true, &[], false)
            },
        ];
        if profile == "openshift" {
            types.extend([
                t("route.openshift.io", "v1", "Route", "routes", true, &[], true),
                t("image.openshift.io", "v1", "ImageStream", "imagestreams", true, &["is"], true),
                t("image.openshift.io", "v1", "ImageStreamTag", "imagestreamtags", true, &["istag"], false),
                t("apps.openshift.io", "v1", "DeploymentConfig", "deploymentconfigs", true, &["dc"], true),
            ]);
        }
        let mut table = TypeTable::default();
        for ty in types {
            table.insert(ty);
        }
        table
    }

    pub fn insert(&mut self, ty: ResourceType) {
        if !self.group_order.contains(&ty.group) {
            self.group_order.push(ty.group.clone());
        }
        self.by_gvr.insert((ty.group.clone(), ty.version.clone(), ty.plural.clone()), Arc::new(ty));
    }

    /// Removes every type a CRD served.
    pub fn remove_crd(&mut self, crd_name: &str) {
        self.by_gvr.retain(|_, t| t.crd.as_deref() != Some(crd_name));
        let groups: Vec<String> = self.by_gvr.values().map(|t| t.group.clone()).collect();
        self.group_order.retain(|g| groups.contains(g));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.by_gvr.get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// Any version of a (group, plural), for cross-version lookups such as namespace cleanup.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.by_gvr.values()
    }

    fn versions(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for t in self.by_gvr.values().filter(|t| t.group == group) {
            if !v.contains(&t.version) {
                v.push(t.version.clone());
            }
        }
        v
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.by_gvr.values().any(|t| t.group == group && t.version == version)
    }

    /// `/apis` (APIGroupList).
    pub fn group_list(&self) -> Value {
        let groups: Vec<Value> = self.group_order.iter().filter(|g| !g.is_empty()).map(|g| self.group(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/{group}` (APIGroup).
    pub fn group(&self, group: &str) -> Value {
        let versions: Vec<Value> = self
            .versions(group)
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first().cloned().unwrap_or(Value::Null);
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": preferred})
    }

    /// `/api/v1` or `/apis/{group}/{version}` (APIResourceList).
    pub fn resource_list(&self, group: &str, version: &str) -> Value {
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        let resources: Vec<Value> = self
            .by_gvr
            .values()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(|t| t.discovery())
            .collect();
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }
}

/// The types a CRD object declares (one per served version).
pub fn types_from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let singular = names["singular"].as_str().map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    let short: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    spec["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["served"].as_bool().unwrap_or(true))
                .filter_map(|v| {
                    Some(ResourceType {
                        group: group.clone(),
                        version: v["name"].as_str()?.to_string(),
                        kind: kind.clone(),
                        plural: plural.clone(),
                        singular: singular.clone(),
                        namespaced,
                        short_names: short.clone(),
                        has_status: v["subresources"].get("status").is_some(),
                        crd: Some(name.clone()),
                        create_only: false,
                        aggregated: false,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}
