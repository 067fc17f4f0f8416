//! OpenShift's SecurityContextConstraints (`security.openshift.io/v1`) on the `openshift`
//! profile. OpenShift 4 serves them through a CustomResourceDefinition the cluster version
//! operator installs, so the lab does the same: the CRD and the default SCCs every cluster
//! starts with (`restricted-v2` for everyone, `anyuid`, `nonroot-v2`, `privileged` for
//! administrators). Admission does not consult them: the lab has no pod security.

use serde_json::{Value, json};

use crate::api::{ApiError, Query, State};

/// Creates the SCC CRD and the default SCCs. Errors name what failed.
pub fn seed(st: &State) -> Result<(), (String, Box<ApiError>)> {
    let crd_ty = st.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crd type");
    st.create(&crd_ty, None, crd(), &Query::new(), "cluster-version-operator").map_err(|e| {
        ("customresourcedefinition securitycontextconstraints.security.openshift.io".to_string(), Box::new(e))
    })?;
    let ty = st.resource("security.openshift.io", "v1", "securitycontextconstraints").expect("scc type");
    for scc in defaults() {
        let what = format!("securitycontextconstraints/{}", scc["metadata"]["name"].as_str().unwrap_or_default());
        st.create(&ty, None, scc, &Query::new(), "cluster-version-operator").map_err(|e| (what, Box::new(e)))?;
    }
    Ok(())
}

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "securitycontextconstraints.security.openshift.io",
            "annotations": {"api-approved.openshift.io": "https://github.com/openshift/api/pull/470",
                "include.release.openshift.io/self-managed-high-availability": "true"}},
        "spec": {"group": "security.openshift.io", "scope": "Cluster",
            "names": {"kind": "SecurityContextConstraints", "listKind": "SecurityContextConstraintsList",
                "plural": "securitycontextconstraints", "singular": "securitycontextconstraints", "shortNames": ["scc"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn scc(
    name: &str,
    priority: Option<i64>,
    run_as_user: &str,
    users: &[&str],
    groups: &[&str],
    privileged: bool,
) -> Value {
    json!({"apiVersion": "security.openshift.io/v1", "kind": "SecurityContextConstraints",
        "metadata": {"name": name, "annotations": {"include.release.openshift.io/self-managed-high-availability": "true"}},
        "priority": priority, "allowPrivilegedContainer": privileged, "allowPrivilegeEscalation": true,
        "allowHostDirVolumePlugin": privileged, "allowHostIPC": privileged, "allowHostNetwork": privileged,
        "allowHostPID": privileged, "allowHostPorts": privileged, "readOnlyRootFilesystem": false,
        "requiredDropCapabilities": if privileged { json!(null) } else { json!(["KILL", "MKNOD", "SETUID", "SETGID"]) },
        "runAsUser": {"type": run_as_user}, "seLinuxContext": {"type": if privileged { "RunAsAny" } else { "MustRunAs" }},
        "fsGroup": {"type": if privileged { "RunAsAny" } else { "MustRunAs" }},
        "supplementalGroups": {"type": "RunAsAny"},
        "volumes": if privileged { json!(["*"]) } else { json!(["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"]) },
        "users": users, "groups": groups})
}

fn defaults() -> Vec<Value> {
    vec![
        scc("restricted-v2", None, "MustRunAsRange", &[], &["system:authenticated"], false),
        scc("nonroot-v2", None, "MustRunAsNonRoot", &[], &[], false),
        scc("anyuid", Some(10), "RunAsAny", &[], &["system:cluster-admins"], false),
        scc(
            "privileged",
            None,
            "RunAsAny",
            &["system:admin"],
            &["system:cluster-admins", "system:nodes", "system:masters"],
            true,
        ),
    ]
}
