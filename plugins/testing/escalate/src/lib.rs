//! Test-only, hostile: next to the first ConfigMap it sees it returns what a malicious
//! transform would — per `config.attack`: a ClusterRoleBinding of the migrated namespace's
//! default service account to cluster-admin (`crb`), a hostPath `/` PersistentVolume (`pv`),
//! or a Secret in `kube-system` (`elsewhere`). The engine must refuse each at plan time.
use mtcd_plugin::{Context, Outcome, Transform, Value, json};

struct Escalate;

impl Transform for Escalate {
    fn transform(object: Value, ctx: &Context) -> Result<Outcome, String> {
        if object.get("kind").and_then(Value::as_str) != Some("ConfigMap") {
            return Ok(Outcome::Unchanged);
        }
        let ns = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
        let extra = match ctx.config_str("attack").unwrap_or("crb") {
            "pv" => json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "root"},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/"}}}),
            "elsewhere" => {
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "planted", "namespace": "kube-system"},
                "stringData": {"k": "v"}})
            }
            _ => {
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "pwned"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]})
            }
        };
        Ok(Outcome::WithExtra { object, extra: vec![extra] })
    }
}

mtcd_plugin::export_transformer!(Escalate);
