//! The order objects are applied in: what others depend on first (crane#266, velero#2443).
//! CRDs before their custom resources, namespaces before their contents, RBAC and service
//! accounts before workloads, Services before Routes, webhooks last so they cannot reject
//! the objects migrated before their backends exist.

/// Lower ranks are applied first; objects of one rank are applied concurrently.
pub fn rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 0,
        ("", "Namespace") => 1,
        (_, "StorageClass") => 2,
        ("", "PersistentVolume") => 3,
        ("rbac.authorization.k8s.io", "ClusterRole") => 4,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => 4,
        // Admission picks a pod's SCC when the pod is created.
        ("security.openshift.io", "SecurityContextConstraints") => 4,
        ("", "ServiceAccount") => 5,
        ("rbac.authorization.k8s.io", "Role") => 6,
        ("rbac.authorization.k8s.io", "RoleBinding") => 7,
        ("", "LimitRange" | "ResourceQuota") => 8,
        ("", "Secret") => 9,
        ("", "ConfigMap") => 10,
        ("image.openshift.io", _) => 11,
        ("", "PersistentVolumeClaim") => 12,
        ("networking.k8s.io", "NetworkPolicy") => 13,
        ("", "Pod") => 14,
        ("apps", _) | ("apps.openshift.io", _) | ("batch", _) | ("", "ReplicationController") => 15,
        ("policy", "PodDisruptionBudget") | ("autoscaling", _) => 16,
        ("", "Service") => 17,
        ("route.openshift.io", "Route") | ("networking.k8s.io", "Ingress") => 18,
        ("admissionregistration.k8s.io", _) => 30,
        _ => 25,
    }
}
