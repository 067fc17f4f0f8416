//! The OpenShift cleanup of crane's OpenShiftPlugin as an mtcd plugin: leaves out objects
//! OpenShift recreates on its own and removes references to generated secrets and hosts.
//!
//! ```toml
//! [[migration.transform]]
//! plugin = "strip-openshift.wasm"
//! ```
//!
//! Rules (crane-plugin-openshift):
//! - skipped: objects in `authorization.openshift.io`; `Build`s; the `builder` and
//!   `deployer` ServiceAccounts; Secrets of the builder/deployer/pipeline accounts; the
//!   RoleBindings `admin`, `system:deployers`, `system:image-builders`,
//!   `system:image-pullers`; the ConfigMap `openshift-service-ca.crt`;
//! - other ServiceAccounts lose their `<sa>-dockercfg-*` entries in `secrets` and
//!   `imagePullSecrets`;
//! - Routes whose host was generated (`openshift.io/host.generated: "true"`) lose
//!   `spec.host`, so the destination router generates one for its own domain;
//! - pod specs lose `imagePullSecrets` named `builder-dockercfg-*`, `default-dockercfg-*`
//!   or `deployer-dockercfg-*`.

use mtcd_plugin::{Context, Outcome, Transform, Value};

struct StripOpenShift;

impl Transform for StripOpenShift {
    fn transform(object: Value, _ctx: &Context) -> Result<Outcome, String> {
        Ok(strip(object))
    }
}

const SKIPPED_ROLEBINDINGS: [&str; 4] = ["admin", "system:deployers", "system:image-builders", "system:image-pullers"];
const GENERATED_SECRET_PREFIXES: [&str; 3] = ["builder-dockercfg-", "default-dockercfg-", "deployer-dockercfg-"];

fn strip(mut object: Value) -> Outcome {
    let kind = str_at(&object, "/kind").to_string();
    let api_version = str_at(&object, "/apiVersion").to_string();
    let name = str_at(&object, "/metadata/name").to_string();
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let skip = group == "authorization.openshift.io"
        || kind == "Build"
        || (kind == "ServiceAccount" && (name == "builder" || name == "deployer"))
        || (kind == "Secret"
            && matches!(
                str_at(&object, "/metadata/annotations/kubernetes.io~1service-account.name"),
                "builder" | "deployer" | "pipeline"
            ))
        || (kind == "RoleBinding" && SKIPPED_ROLEBINDINGS.contains(&name.as_str()))
        || (kind == "ConfigMap" && name == "openshift-service-ca.crt");
    if skip {
        return Outcome::Skip;
    }
    let mut changed = false;
    match kind.as_str() {
        "ServiceAccount" => {
            let own = format!("{name}-dockercfg-");
            for field in ["secrets", "imagePullSecrets"] {
                changed |= retain_names(object.get_mut(field), |n| !n.starts_with(&own));
            }
        }
        "Route" if str_at(&object, "/metadata/annotations/openshift.io~1host.generated") == "true" => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                changed |= spec.remove("host").is_some();
            }
        }
        _ => {}
    }
    let pod_spec = match kind.as_str() {
        "Pod" => object.get_mut("spec"),
        "CronJob" => object.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        _ => object.pointer_mut("/spec/template/spec"),
    };
    if let Some(pod_spec) = pod_spec {
        changed |= retain_names(pod_spec.get_mut("imagePullSecrets"), |n| {
            !GENERATED_SECRET_PREFIXES.iter().any(|p| n.starts_with(p))
        });
    }
    if changed { Outcome::Replace(object) } else { Outcome::Unchanged }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Keeps the `{name: ...}` entries of a list whose name passes `keep`; true if any went.
fn retain_names(list: Option<&mut Value>, keep: impl Fn(&str) -> bool) -> bool {
    let Some(list) = list.and_then(Value::as_array_mut) else {
        return false;
    };
    let before = list.len();
    list.retain(|entry| keep(entry.get("name").and_then(Value::as_str).unwrap_or_default()));
    list.len() != before
}

mtcd_plugin::export_transformer!(StripOpenShift);

#[cfg(test)]
mod tests {
    use super::*;
    use mtcd_plugin::json;

    #[test]
    fn service_account_keeps_foreign_secrets() {
        let sa = json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "app"},
            "secrets": [{"name": "app-dockercfg-x1"}, {"name": "app-token-y"}]});
        let Outcome::Replace(out) = strip(sa) else { panic!("expected replace") };
        assert_eq!(out["secrets"], json!([{"name": "app-token-y"}]));
    }
}
