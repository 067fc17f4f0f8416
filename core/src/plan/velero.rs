//! The Velero two-step path as values: the Backup the source's Velero makes and the Restore
//! the destination's Velero makes, both computed here so the action only creates, waits and
//! reports (docs/velero.md).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::spec::{ExistingResourcePolicy, Migration};

/// What the Velero action runs for one migration. Names are chosen when it runs (they carry
/// the time), so the specs here have none.
#[derive(Debug, Clone, Serialize)]
pub struct VeleroPlan {
    pub migration: String,
    /// Velero's namespace, on both clusters.
    pub namespace: String,
    pub storage_location: String,
    #[serde(skip)]
    pub timeout: Duration,
    /// `spec` of the Backup on the source.
    pub backup: Value,
    /// `spec` of the Restore on the destination, without `backupName`.
    pub restore: Value,
    /// Where the restored workloads land (held at 0 until cutover, or started).
    pub destination_namespaces: Vec<String>,
    /// Workloads start after the restore (cutover or `start_workloads`).
    pub release: bool,
}

/// The Velero plan of `m`; `released` when the cutover starts the workloads.
pub fn plan_velero(m: &Migration, released: bool) -> VeleroPlan {
    let backup = json!({
        "includedNamespaces": m.namespaces,
        "includedResources": m.filter.include_kinds.iter().map(|k| k.to_lowercase()).collect::<Vec<_>>(),
        "excludedResources": excluded_resources(&m.filter.exclude_kinds),
        "includeClusterResources": false,
        "snapshotVolumes": false,
        "storageLocation": m.velero.storage_location,
        "labelSelector": m.filter.label_selector.as_deref().map(label_selector),
    });
    let mapping: serde_json::Map<String, Value> =
        m.namespace_map.iter().filter(|(s, d)| s != d).map(|(s, d)| (s.clone(), json!(d))).collect();
    let restore = json!({
        "includedNamespaces": m.namespaces,
        "namespaceMapping": mapping,
        "restorePVs": false,
        "existingResourcePolicy": match m.velero.existing_resource_policy {
            ExistingResourcePolicy::None => "none",
            ExistingResourcePolicy::Update => "update",
        },
    });
    VeleroPlan {
        migration: m.name.clone(),
        namespace: m.velero.namespace.clone(),
        storage_location: m.velero.storage_location.clone(),
        timeout: m.velero.timeout,
        backup,
        restore,
        destination_namespaces: m.namespace_map.values().cloned().collect(),
        release: released || m.start_workloads,
    }
}

/// PVC data is DVM's; the user's excluded kinds are resource names to Velero (its REST
/// mapper takes `kind` and `kind.group`, lower case).
fn excluded_resources(exclude_kinds: &[String]) -> Vec<String> {
    let mut out = vec!["persistentvolumeclaims".to_string(), "persistentvolumes".to_string()];
    out.extend(exclude_kinds.iter().map(|k| k.to_lowercase()));
    out
}

/// `a=b,c!=d` → Velero's `labelSelector` (equality terms only; set-based terms are sent
/// as `matchExpressions`).
fn label_selector(s: &str) -> Value {
    let mut labels = serde_json::Map::new();
    let mut exprs = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if let Some((k, v)) = term.split_once("!=") {
            exprs.push(json!({"key": k.trim(), "operator": "NotIn", "values": [v.trim()]}));
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels.insert(k.trim().into(), json!(v.trim()));
        } else if let Some(k) = term.strip_prefix('!') {
            exprs.push(json!({"key": k.trim(), "operator": "DoesNotExist"}));
        } else {
            exprs.push(json!({"key": term, "operator": "Exists"}));
        }
    }
    json!({"matchLabels": labels, "matchExpressions": exprs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_become_match_labels_and_expressions() {
        let s = label_selector("app=shop, tier!=cache,!legacy,canary");
        assert_eq!(s["matchLabels"], json!({"app": "shop"}));
        assert_eq!(
            s["matchExpressions"],
            json!([
                {"key": "tier", "operator": "NotIn", "values": ["cache"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "canary", "operator": "Exists"},
            ])
        );
    }

    #[test]
    fn pvc_data_is_never_velero_s() {
        assert_eq!(excluded_resources(&["Secret".into()]), ["persistentvolumeclaims", "persistentvolumes", "secret"]);
    }
}
