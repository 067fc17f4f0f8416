//! The lab's scheduler: each cluster has one node, and a pod is bound to it only when it
//! fits, as kube-scheduler decides it for `nodeSelector` and required node affinity. A pod
//! that does not fit stays Pending with `PodScheduled=False` and the scheduler's message,
//! and no node runs it. (Taints, resources and pod affinity are not modelled: docs/lab.md.)

use serde_json::{Value, json};

/// The name of a cluster's one Node, known to the API server (which binds pods to it), the
/// node agent (which runs what is bound to it) and the bootstrap (which creates it).
pub fn node_name(cluster: &str) -> String {
    format!("{cluster}-node")
}

/// Why `pod` cannot run on `node`, or `None` when it can.
pub fn misfit(pod: &Value, node: &Value) -> Option<&'static str> {
    let labels = &node["metadata"]["labels"];
    if let Some(sel) = pod["spec"]["nodeSelector"].as_object()
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return Some(NO_MATCH);
    }
    let required = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    if required.is_null() {
        return None;
    }
    // Terms are ORed; a term's expressions and fields are ANDed; an empty term matches nothing.
    let terms = required["nodeSelectorTerms"].as_array().map(Vec::as_slice).unwrap_or_default();
    let fits = terms.iter().any(|t| {
        let exprs = t["matchExpressions"].as_array().map(Vec::as_slice).unwrap_or_default();
        let fields = t["matchFields"].as_array().map(Vec::as_slice).unwrap_or_default();
        !(exprs.is_empty() && fields.is_empty())
            && exprs.iter().all(|e| matches(e, labels.get(e["key"].as_str().unwrap_or_default())))
            && fields.iter().all(|e| e["key"] == "metadata.name" && matches(e, node["metadata"].get("name")))
    });
    (!fits).then_some(NO_MATCH)
}

const NO_MATCH: &str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

fn matches(req: &Value, value: Option<&Value>) -> bool {
    let values: Vec<&str> = req["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let value = value.and_then(Value::as_str);
    // Gt/Lt compare the label and the one value as integers.
    let numbers = value.and_then(|v| v.parse::<i64>().ok()).zip(values.first().and_then(|v| v.parse::<i64>().ok()));
    match req["operator"].as_str().unwrap_or_default() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => numbers.is_some_and(|(a, b)| a > b),
        "Lt" => numbers.is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

/// The conditions of a pod the scheduler could not place.
pub fn unschedulable_conditions(message: &str, now: &str) -> Value {
    json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now}])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Value {
        json!({"metadata": {"name": "lab-src-node", "labels": {"kubernetes.io/hostname": "lab-src-node", "zone": "a", "cores": "2"}}})
    }

    fn pinned(key: &str, op: &str, values: &[&str], field: bool) -> Value {
        let req = json!({"key": key, "operator": op, "values": values});
        let term = if field { json!({"matchFields": [req]}) } else { json!({"matchExpressions": [req]}) };
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}}})
    }

    #[test]
    fn required_node_affinity_and_node_selector_decide() {
        let n = node();
        assert_eq!(misfit(&json!({"spec": {}}), &n), None);
        assert_eq!(misfit(&pinned("metadata.name", "In", &["lab-src-node"], true), &n), None);
        assert!(misfit(&pinned("metadata.name", "In", &["other-node"], true), &n).is_some());
        assert_eq!(misfit(&pinned("zone", "In", &["a", "b"], false), &n), None);
        assert!(misfit(&pinned("zone", "NotIn", &["a"], false), &n).is_some());
        assert_eq!(misfit(&pinned("gpu", "DoesNotExist", &[], false), &n), None);
        assert!(misfit(&pinned("gpu", "Exists", &[], false), &n).is_some());
        assert_eq!(misfit(&pinned("cores", "Gt", &["1"], false), &n), None);
        assert!(misfit(&pinned("cores", "Lt", &["2"], false), &n).is_some());
        assert!(misfit(&json!({"spec": {"nodeSelector": {"zone": "b"}}}), &n).is_some());
        assert_eq!(misfit(&json!({"spec": {"nodeSelector": {"zone": "a"}}}), &n), None);
        let empty_term = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}});
        assert!(misfit(&empty_term, &n).is_some(), "an empty term matches no node");
    }
}
