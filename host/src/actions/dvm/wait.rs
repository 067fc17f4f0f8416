//! Waiting on transfer objects by watch, not by polling: a pod that starts, a Route that is
//! admitted or a container that exits is seen the moment the API server says so. Polling at
//! 200–300 ms cost a transfer about 1 s of pure waiting (docs/benchmarks.md); on a 1%
//! re-sync that was most of the run.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, DeleteParams};
use serde::de::DeserializeOwned;

/// Why a wait ended without its condition.
#[derive(Debug)]
pub enum WaitError {
    Timeout,
    Watch(String),
}

/// Waits until `done` holds for the named object (`None`: it does not exist), or `timeout`.
pub async fn until<K>(
    api: Api<K>,
    name: &str,
    timeout: Duration,
    done: impl Fn(Option<&K>) -> bool + Send + 'static,
) -> Result<Option<K>, WaitError>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    match tokio::time::timeout(timeout, kube::runtime::wait::await_condition(api, name, done)).await {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(WaitError::Watch(e.to_string())),
        Err(_) => Err(WaitError::Timeout),
    }
}

/// Deletion without a grace period: transfer objects hold nothing to shut down cleanly.
pub fn at_once() -> DeleteParams {
    DeleteParams { grace_period_seconds: Some(0), ..Default::default() }
}

/// Deletes a pod at once and waits until it is gone, so a new pod of the same name can be
/// created. Nothing to do when it does not exist.
pub async fn delete_pod(pods: &Api<Pod>, name: &str) {
    if delete_pod_now(pods, name).await {
        let _ = until(pods.clone(), name, Duration::from_secs(30), |p| p.is_none()).await;
    }
}

/// Deletes a pod at once without waiting for it to go (the end of a transfer: nothing reuses
/// the name before the final cleanup). Whether there was one to delete.
pub async fn delete_pod_now(pods: &Api<Pod>, name: &str) -> bool {
    pods.delete(name, &at_once()).await.is_ok()
}

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// `reason message` of a container waiting for one of `reasons` (it will not start by itself).
pub fn stuck(pod: &Pod, reasons: &[&str]) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| w.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .map(|w| format!("{} {}", w.reason.clone().unwrap_or_default(), w.message.clone().unwrap_or_default()))
}

/// The exit code of the pod's (single) container once it has terminated.
pub fn exit_code(p: &Pod) -> Option<i32> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

/// The scheduler's reason when it cannot place the pod (`PodScheduled=False`).
pub fn unschedulable(p: &Pod) -> Option<String> {
    let c =
        p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(
        format!("{} {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())
            .trim()
            .to_string(),
    )
}
