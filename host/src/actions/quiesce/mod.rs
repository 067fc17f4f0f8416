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
    /// Workloads or pods were still there when the wait ended.
    #[error("{context}: {0} still not there after {1}s: {2}", context = .3)]
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

/// How often a wait says what it still waits for (and re-reads, should a watch event be
/// missed).
const WAIT_TICK: Duration = Duration::from_secs(2);

/// Waits until the source has no writer left: every scaled workload reports no replicas and
/// every pod of a ReplicaSet, StatefulSet or ReplicationController is gone — not only
/// "replicas: 0", so a ReadWriteOnce volume is detached before the final sync (MTC #409).
/// Pod changes are watched; `waiting` hears what is left every few seconds. On timeout the
/// error names each stuck pod or workload and why.
pub async fn wait_stopped(
    c: &Cluster,
    namespaces: &[String],
    timeout: Duration,
    waiting: &(dyn Fn(&[String], u64) + Sync),
) -> Result<(), QuiesceError> {
    let started = Instant::now();
    wait_until(c, namespaces, timeout, started, waiting, || async {
        let mut left = Vec::new();
        for (ty, scales) in workload_types() {
            if !scales {
                continue;
            }
            for o in list_served(c, &ty, namespaces).await? {
                let replicas = o.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0);
                let ready = o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0);
                if replicas > 0 || ready > 0 {
                    let seen = o.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
                    let generation = o.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                    let why = if seen < generation {
                        "its controller has not acted on the scale-down (is the controller manager running?)"
                            .to_string()
                    } else {
                        format!("{replicas} replica(s) still reported")
                    };
                    left.push(format!("{} ({why})", object::display(&o)));
                }
            }
        }
        let pods = ar("", "v1", "Pod", "pods");
        for p in list_served(c, &pods, namespaces).await? {
            if let Some(why) = writer(&p, started.elapsed()) {
                left.push(format!("{} ({why})", object::display(&p)));
            }
        }
        Ok(left)
    })
    .await
}

/// Why `pod` still counts as a writer of the stopped source, or `None`.
fn writer(pod: &Value, waited: Duration) -> Option<String> {
    let controlled =
        pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().any(|r| {
            r["controller"] == true
                && matches!(r["kind"].as_str(), Some("ReplicaSet" | "StatefulSet" | "ReplicationController"))
        });
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if !controlled || matches!(phase, "Succeeded" | "Failed") {
        return None;
    }
    let finalizers: Vec<&str> = pod
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Some(match (pod.pointer("/metadata/deletionTimestamp").is_some(), finalizers.is_empty()) {
        (true, false) => format!("terminating, held by finalizer(s) {}", finalizers.join(", ")),
        (true, true) => "terminating".to_string(),
        (false, _) if waited > Duration::from_secs(10) => {
            "not being deleted: is its controller running? (a PodDisruptionBudget does not stop a scale-down)"
                .to_string()
        }
        (false, _) => "running".to_string(),
    })
}

/// Waits until the destination's released workloads are available: Deployments and
/// DeploymentConfigs by available replicas, StatefulSets by ready replicas, DaemonSets by
/// available pods — each with the controller having seen the latest generation.
pub async fn wait_available(
    c: &Cluster,
    namespaces: &[String],
    timeout: Duration,
    waiting: &(dyn Fn(&[String], u64) + Sync),
) -> Result<Vec<String>, QuiesceError> {
    let started = Instant::now();
    wait_until(c, namespaces, timeout, started, waiting, || async { Ok(availability(c, namespaces).await?.1) }).await?;
    Ok(availability(c, namespaces).await?.0)
}

/// The released workloads of `namespaces`: (available, not yet with how many are).
pub async fn availability(c: &Cluster, namespaces: &[String]) -> Result<(Vec<String>, Vec<String>), QuiesceError> {
    let types = [
        (ar("apps", "v1", "Deployment", "deployments"), "/status/availableReplicas"),
        (ar("apps", "v1", "StatefulSet", "statefulsets"), "/status/readyReplicas"),
        (ar("apps.openshift.io", "v1", "DeploymentConfig", "deploymentconfigs"), "/status/availableReplicas"),
        (ar("apps", "v1", "DaemonSet", "daemonsets"), "/status/numberAvailable"),
    ];
    let (mut verified, mut left) = (Vec::new(), Vec::new());
    for (ty, available_at) in &types {
        for o in list_served(c, ty, namespaces).await? {
            let want = if ty.kind == "DaemonSet" {
                o.pointer("/status/desiredNumberScheduled").and_then(Value::as_i64).unwrap_or(0)
            } else {
                o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
            };
            let have = o.pointer(available_at).and_then(Value::as_i64).unwrap_or(0);
            let seen = o.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
            let generation = o.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            if want == 0 {
                continue;
            }
            if have >= want && seen >= generation {
                verified.push(object::display(&o));
            } else {
                left.push(format!("{} ({have}/{want} available)", object::display(&o)));
            }
        }
    }
    Ok((verified, left))
}

/// Re-reads with `left` until it is empty: on every pod or workload change seen by a watch,
/// and every few seconds; gives up after `timeout` naming what is left.
async fn wait_until<F, Fut>(
    c: &Cluster,
    namespaces: &[String],
    timeout: Duration,
    started: Instant,
    waiting: &(dyn Fn(&[String], u64) + Sync),
    mut left: F,
) -> Result<(), QuiesceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, QuiesceError>>,
{
    use futures::StreamExt;
    // Any change to a pod in the namespaces wakes the wait up.
    let changes = futures::stream::select_all(namespaces.iter().map(|ns| {
        let pods: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &ar("", "v1", "Pod", "pods"));
        kube::runtime::watcher(pods, kube::runtime::watcher::Config::default()).boxed()
    }));
    let mut changes = std::pin::pin!(changes);
    loop {
        let remaining = left().await?;
        if remaining.is_empty() {
            return Ok(());
        }
        let secs = started.elapsed().as_secs();
        if started.elapsed() >= timeout {
            return Err(QuiesceError::Timeout(
                remaining.len(),
                timeout.as_secs(),
                remaining.join("; "),
                c.context.clone(),
            ));
        }
        waiting(&remaining, secs);
        let tick = tokio::time::sleep(WAIT_TICK.min(timeout.saturating_sub(started.elapsed())));
        tokio::select! {
            _ = tick => {}
            _ = changes.next() => {}
        }
    }
}

/// Objects of `ty` in `namespaces`; a type the cluster does not serve (no DeploymentConfigs
/// on Kubernetes) has none, any other failure is an error — never "stopped".
async fn list_served(c: &Cluster, ty: &ApiResource, namespaces: &[String]) -> Result<Vec<Value>, QuiesceError> {
    let mut out = Vec::new();
    for ns in namespaces {
        match crate::observe::list(&c.client, ty, Some(ns), None).await {
            Ok(items) => out.extend(items),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(QuiesceError::Api {
                    context: c.context.clone(),
                    what: format!("listing {} in {ns}", ty.plural),
                    source,
                });
            }
        }
    }
    Ok(out)
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
        let e = wait_stopped(&c, &["shop".into()], Duration::from_secs(1), &|_, _| {}).await.unwrap_err();
        assert!(e.to_string().contains("deployments"), "{e}");
    }
}
