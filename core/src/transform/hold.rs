//! Holding workloads until cutover: so that two copies of an application never run at once,
//! workloads arrive on the destination with 0 replicas and CronJobs suspended, with the
//! source's values kept in annotations that the cutover restores.
//!
//! The original value is taken from the source's own `mtcd.io/original-*` annotation when
//! the source has been quiesced by a cutover, so a quiesced source does not change the
//! desired state (and a re-plan after cutover shows no drift).

use serde_json::{Value, json};

use super::object::*;

pub use crate::labels::{ORIGINAL_REPLICAS, ORIGINAL_SUSPEND};

/// Kinds scaled by `spec.replicas`.
pub fn is_scalable(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "ReplicaSet" | "DeploymentConfig" | "ReplicationController")
}

/// The replica count the application runs with on the source, quiesced or not.
pub fn original_replicas(source: &Value) -> i64 {
    annotation(source, ORIGINAL_REPLICAS)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| source.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1))
}

/// The CronJob suspension the application has on the source, quiesced or not.
pub fn original_suspend(source: &Value) -> bool {
    annotation(source, ORIGINAL_SUSPEND)
        .map(|s| s == "true")
        .unwrap_or_else(|| source.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false))
}

/// Destination form before cutover: stopped, originals recorded.
pub fn hold(obj: &mut Value) {
    let kind = kind(obj).to_string();
    if is_scalable(&kind) {
        let n = original_replicas(obj);
        map_at(obj, &["spec"]).insert("replicas".into(), json!(0));
        set_annotation(obj, ORIGINAL_REPLICAS, n.to_string());
    } else if kind == "CronJob" {
        let s = original_suspend(obj);
        map_at(obj, &["spec"]).insert("suspend".into(), json!(true));
        set_annotation(obj, ORIGINAL_SUSPEND, s.to_string());
    }
}

/// Destination form after cutover (or with `start_workloads`): running as on the source
/// before it was quiesced; no mtcd annotations left.
pub fn release(obj: &mut Value) {
    let kind = kind(obj).to_string();
    if is_scalable(&kind) {
        let n = original_replicas(obj);
        map_at(obj, &["spec"]).insert("replicas".into(), json!(n));
        remove_annotation(obj, ORIGINAL_REPLICAS);
    } else if kind == "CronJob" {
        let s = original_suspend(obj);
        map_at(obj, &["spec"]).insert("suspend".into(), json!(s));
        remove_annotation(obj, ORIGINAL_SUSPEND);
    }
}
