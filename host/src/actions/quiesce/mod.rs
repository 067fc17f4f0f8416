//! Quiescing the source for cutover and bringing it back on rollback. Reversible by design:
//! the values a workload had are stored on the workload itself (`mtcd.io/original-*`), and
//! an interrupted quiesce run again keeps the first recorded values, never the zeros.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::transform::hold::{ORIGINAL_REPLICAS, ORIGINAL_SUSPEND};
use crate::transform::object;

/// Why quiescing (or restarting) workloads stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    /// A request to the API server failed.
    #[error("{context}: {what}: {source}")]
    Api {
        context: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Workloads still had running replicas when the wait ended.
    #[error("{context}: {0} workload(s) still running after {1}s: {2}", context = .3)]
    Timeout(usize, u64, String, String),
}

use crate::labels::CUTOVER_FIELD_MANAGER as MANAGER;
pub use crate::observe::CUTOVER;

use crate::observe::api_resource as ar;

/// The workload types quiesce touches, with whether they scale (else: CronJob suspends).
fn workload_types() -> Vec<(ApiResource, bool)> {
    vec![
        (ar("apps", "v1", "Deployment", "deployments"), true),
        (ar("apps", "v1", "StatefulSet", "statefulsets"), true),
        (ar("apps", "v1", "ReplicaSet", "replicasets"), true),
        (ar("apps.openshift.io", "v1", "DeploymentConfig", "deploymentconfigs"), true),
        (ar("batch", "v1", "CronJob", "cronjobs"), false),
    ]
}

/// What was changed, for the summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct QuiesceReport {
    pub scaled: Vec<String>,
    pub suspended: Vec<String>,
}

/// The patch that stops one workload, or `None` if it is already stopped by us.
pub fn stop_patch(obj: &Value, scales: bool) -> Option<Value> {
    if scales {
        let current = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let recorded = object::annotation(obj, ORIGINAL_REPLICAS);
        if current == 0 && recorded.is_some() {
            return None;
        }
        let original = recorded.map(String::from).unwrap_or_else(|| current.to_string());
        Some(json!({"metadata": {"annotations": {ORIGINAL_REPLICAS: original}}, "spec": {"replicas": 0}}))
    } else {
        let current = obj.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false);
        let recorded = object::annotation(obj, ORIGINAL_SUSPEND);
        if current && recorded.is_some() {
            return None;
        }
        let original = recorded.map(String::from).unwrap_or_else(|| current.to_string());
        Some(json!({"metadata": {"annotations": {ORIGINAL_SUSPEND: original}}, "spec": {"suspend": true}}))
    }
}

/// The patch that restores one workload, or `None` if mtcd never stopped it.
pub fn start_patch(obj: &Value, scales: bool) -> Option<Value> {
    if scales {
        let n: i64 = object::annotation(obj, ORIGINAL_REPLICAS)?.parse().ok()?;
        Some(json!({"metadata": {"annotations": {ORIGINAL_REPLICAS: null}}, "spec": {"replicas": n}}))
    } else {
        let s = object::annotation(obj, ORIGINAL_SUSPEND)? == "true";
        Some(json!({"metadata": {"annotations": {ORIGINAL_SUSPEND: null}}, "spec": {"suspend": s}}))
    }
}

async fn for_each_workload(
    c: &Cluster,
    namespaces: &[String],
    mut patch_for: impl FnMut(&Value, bool) -> Option<Value>,
) -> Result<QuiesceReport, QuiesceError> {
    let mut report = QuiesceReport::default();
    for (ty, scales) in workload_types() {
        for ns in namespaces {
            let items = match crate::observe::list(&c.client, &ty, Some(ns), None).await {
                Ok(i) => i,
                Err(kube::Error::Api(e)) if e.code == 404 => continue, // type not served here
                Err(source) => {
                    return Err(QuiesceError::Api {
                        context: c.context.clone(),
                        what: format!("listing {} in {ns}", ty.plural),
                        source,
                    });
                }
            };
            let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &ty);
            for o in items {
                // A ReplicaSet owned by a Deployment follows its Deployment.
                if o.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|r| !r.is_empty()) {
                    continue;
                }
                let Some(patch) = patch_for(&o, scales) else { continue };
                api.patch(object::name(&o), &PatchParams::apply(MANAGER), &Patch::Merge(&patch)).await.map_err(
                    |source| QuiesceError::Api {
                        context: c.context.clone(),
                        what: format!("patching {}", object::display(&o)),
                        source,
                    },
                )?;
                if scales {
                    report.scaled.push(object::display(&o))
                } else {
                    report.suspended.push(object::display(&o))
                }
            }
        }
    }
    Ok(report)
}

/// Scales the source's workloads to 0 and suspends its CronJobs, remembering the originals.
pub async fn stop(c: &Cluster, namespaces: &[String]) -> Result<QuiesceReport, QuiesceError> {
    for_each_workload(c, namespaces, stop_patch).await
}

/// Restores what [`stop`] changed.
pub async fn start(c: &Cluster, namespaces: &[String]) -> Result<QuiesceReport, QuiesceError> {
    for_each_workload(c, namespaces, start_patch).await
}

/// Scales held workloads on the destination back to 0 (rollback), keeping the originals.
pub async fn hold_destination(c: &Cluster, namespaces: &[String]) -> Result<QuiesceReport, QuiesceError> {
    for_each_workload(c, namespaces, |o, scales| {
        if scales {
            let n = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            (n != 0).then(|| json!({"metadata": {"annotations": {ORIGINAL_REPLICAS: object::annotation(o, ORIGINAL_REPLICAS).map(String::from).unwrap_or(n.to_string())}}, "spec": {"replicas": 0}}))
        } else {
            stop_patch(o, false)
        }
    })
    .await
}

/// Waits until no scaled workload reports running replicas.
pub async fn wait_stopped(c: &Cluster, namespaces: &[String], timeout: Duration) -> Result<(), QuiesceError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = Vec::new();
        for (ty, scales) in workload_types() {
            if !scales {
                continue;
            }
            for ns in namespaces {
                // A type the cluster does not serve (no DeploymentConfigs on Kubernetes) has
                // nothing running; any other failure is not "stopped".
                let items = match crate::observe::list(&c.client, &ty, Some(ns), None).await {
                    Ok(items) => items,
                    Err(kube::Error::Api(e)) if e.code == 404 => continue,
                    Err(source) => {
                        return Err(QuiesceError::Api {
                            context: c.context.clone(),
                            what: format!("listing {} in {ns} to see whether they stopped", ty.plural),
                            source,
                        });
                    }
                };
                for o in items {
                    let replicas = o.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0);
                    let ready = o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0);
                    if replicas > 0 || ready > 0 {
                        running.push(object::display(&o));
                    }
                }
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(QuiesceError::Timeout(running.len(), timeout.as_secs(), running.join(", "), c.context.clone()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Marks (or unmarks) destination namespaces as cut over.
pub async fn mark_cutover(c: &Cluster, namespaces: &[String], done: bool) -> Result<(), QuiesceError> {
    let api: Api<DynamicObject> = Api::all_with(c.client.clone(), &ar("", "v1", "Namespace", "namespaces"));
    let value = if done { json!(chrono::Utc::now().to_rfc3339()) } else { Value::Null };
    for ns in namespaces {
        api.patch(
            ns,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(&json!({"metadata": {"annotations": {CUTOVER: value}}})),
        )
        .await
        .map_err(|source| QuiesceError::Api {
            context: c.context.clone(),
            what: format!("marking namespace {ns}"),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_records_the_original_once() {
        let d = json!({"metadata": {"name": "w"}, "spec": {"replicas": 3}});
        let p = stop_patch(&d, true).unwrap();
        assert_eq!(p, json!({"metadata": {"annotations": {ORIGINAL_REPLICAS: "3"}}, "spec": {"replicas": 0}}));
        // Interrupted half-way: replicas already 0 but recorded → nothing to do.
        let stopped =
            json!({"metadata": {"name": "w", "annotations": {ORIGINAL_REPLICAS: "3"}}, "spec": {"replicas": 0}});
        assert!(stop_patch(&stopped, true).is_none());
        // Someone scaled it back up after a stop: stop again, keep the recorded original.
        let bumped =
            json!({"metadata": {"name": "w", "annotations": {ORIGINAL_REPLICAS: "3"}}, "spec": {"replicas": 1}});
        assert_eq!(stop_patch(&bumped, true).unwrap()["metadata"]["annotations"][ORIGINAL_REPLICAS], "3");
    }

    #[test]
    fn starting_restores_and_forgets() {
        let stopped =
            json!({"metadata": {"name": "w", "annotations": {ORIGINAL_REPLICAS: "3"}}, "spec": {"replicas": 0}});
        assert_eq!(
            start_patch(&stopped, true).unwrap(),
            json!({"metadata": {"annotations": {ORIGINAL_REPLICAS: null}}, "spec": {"replicas": 3}})
        );
        assert!(start_patch(&json!({"spec": {"replicas": 2}}), true).is_none(), "never touched by mtcd");
        let cj = json!({"metadata": {"annotations": {ORIGINAL_SUSPEND: "false"}}, "spec": {"suspend": true}});
        assert_eq!(start_patch(&cj, false).unwrap()["spec"]["suspend"], false);
    }
}

#[cfg(test)]
mod wait_tests {
    use serde_json::json;

    use super::*;

    /// A wait that cannot read the workloads has not seen them stop.
    #[tokio::test]
    async fn a_forbidden_list_while_waiting_is_an_error_not_stopped() {
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "deployments.apps is forbidden"});
        let c = crate::testing::fake_cluster(vec![("/apis/apps/v1/namespaces/shop/deployments", 403, forbidden)]).await;
        let e = wait_stopped(&c, &["shop".into()], Duration::from_secs(1)).await.unwrap_err();
        assert!(e.to_string().contains("deployments"), "{e}");
    }
}
