//! What a rank needs to be usable before it is applied, not only created (velero#2443,
//! velero#4045): the order of ranks already puts ServiceAccounts, Secrets and Services
//! before what uses them, and CRDs are awaited until Established. What the order cannot
//! promise is an object *the destination* makes: a pod is refused by the ServiceAccount
//! admission plugin while its namespace's `default` account does not exist yet, and a new
//! namespace gets that account from a controller, a moment after the namespace. So before
//! the first rank with pods (or pod templates), apply waits — bounded, with progress — for
//! the accounts they run as that neither the plan nor the destination holds.
//!
//! References nobody will make (an account or pull Secret the source did not have, or the
//! filters left out) are plan warnings: waiting for them could only time out.
//!
//! Admission webhooks: mtcd applies namespaced objects only, so it never writes a webhook
//! configuration whose Service would have to be ready first (docs/resources.md).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{Action, ObjectKey, ResourceChange};
use crate::transform::object;

/// Accounts the cluster itself creates in every namespace (`builder` and `deployer` on
/// OpenShift).
const GENERATED_ACCOUNTS: &[&str] = &["default", "builder", "deployer"];

/// One object apply waits for before a rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// Waited for before the objects of this rank are applied.
    pub rank: u8,
    #[serde(flatten)]
    pub object: ObjectKey,
    /// The objects of the plan that need it.
    pub needed_by: Vec<String>,
    /// Who makes it.
    pub made_by: String,
}

/// The waits of a resource plan, and warnings for references nobody will satisfy.
pub fn waits(changes: &[ResourceChange], live: &[Value]) -> (Vec<Wait>, Vec<String>) {
    let present: HashSet<ObjectKey> = changes
        .iter()
        .filter(|c| c.action != Action::Prune)
        .map(|c| c.key.clone())
        .chain(live.iter().map(ObjectKey::of))
        .collect();
    let mut waits: BTreeMap<ObjectKey, Wait> = BTreeMap::new();
    let mut warnings = Vec::new();
    let writes = changes.iter().filter(|c| !matches!(c.action, Action::Prune | Action::Unchanged));
    for c in writes {
        let (Some(spec), Some(ns)) = (object::pod_spec(&c.object), c.key.namespace.as_deref()) else { continue };
        let account = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let sa = ObjectKey {
            group: String::new(),
            kind: "ServiceAccount".into(),
            namespace: Some(ns.into()),
            name: account.into(),
        };
        if !present.contains(&sa) {
            if GENERATED_ACCOUNTS.contains(&account) {
                let w = waits.entry(sa.clone()).or_insert_with(|| Wait {
                    rank: c.rank,
                    object: sa,
                    needed_by: Vec::new(),
                    made_by: "the destination's service-account controller".into(),
                });
                w.rank = w.rank.min(c.rank);
                w.needed_by.push(c.key.to_string());
            } else {
                warnings.push(format!(
                    "{} runs as ServiceAccount/{ns}/{account}, which neither the migrated objects nor the destination have: its pods are refused until it exists",
                    c.key
                ));
            }
        }
        for secret in spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = secret.get("name").and_then(Value::as_str) else { continue };
            let k = ObjectKey {
                group: String::new(),
                kind: "Secret".into(),
                namespace: Some(ns.into()),
                name: name.into(),
            };
            if !present.contains(&k) {
                warnings.push(format!(
                    "{} pulls images with Secret/{ns}/{name}, which neither the migrated objects nor the destination have: pulls that need it fail until it exists",
                    c.key
                ));
            }
        }
    }
    (waits.into_values().collect(), warnings)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::order;

    fn change(action: Action, obj: Value) -> ResourceChange {
        let key = ObjectKey::of(&obj);
        ResourceChange {
            action,
            api_version: object::api_version(&obj).into(),
            rank: order::rank(&key.group, &key.kind),
            key,
            diff: vec![],
            object: obj,
        }
    }

    #[test]
    fn pods_wait_for_the_default_account_of_a_new_namespace_only() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": []}});
        let web = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a"},
            "spec": {"template": {"spec": {"serviceAccountName": "runner", "imagePullSecrets": [{"name": "pull"}]}}}});
        let runner =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": "a"}});
        let changes = vec![
            change(Action::Create, runner),
            change(Action::Create, pod.clone()),
            change(Action::Create, web.clone()),
        ];
        let (w, warnings) = waits(&changes, &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].object.to_string(), "ServiceAccount/a/default");
        assert_eq!(w[0].rank, order::rank("", "Pod"));
        assert_eq!(w[0].needed_by, ["Pod/a/p"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("Secret/a/pull"), "{warnings:?}");

        // The destination has the account: nothing to wait for.
        let default =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "a"}});
        let (w, _) = waits(&changes, &[default]);
        assert!(w.is_empty());
        // Unchanged objects are not applied: they wait for nothing.
        let (w, _) = waits(&[change(Action::Unchanged, pod)], &[]);
        assert!(w.is_empty());
        // An account nobody makes is a warning, not a wait that can only time out.
        let (w, warnings) = waits(&[change(Action::Create, web)], &[]);
        assert!(w.is_empty());
        assert!(warnings.iter().any(|x| x.contains("ServiceAccount/a/runner")), "{warnings:?}");
    }
}
