//! Namespace mapping: moves an object to its destination namespace and rewrites the
//! references into migrated namespaces that a rename would otherwise break (crane#54,
//! crane#732): RBAC subjects, namespace selectors and `namespaces` lists in NetworkPolicies
//! and affinity terms, and ExternalName services pointing at `svc.<ns>.svc`.

use indexmap::IndexMap;
use serde_json::{Value, json};

use super::object::*;

pub fn map_namespace(obj: &mut Value, map: &IndexMap<String, String>) {
    if map.iter().all(|(a, b)| a == b) {
        return;
    }
    let kind = kind(obj).to_string();
    if kind == "Namespace" {
        if let Some(to) = map.get(name(obj)) {
            obj["metadata"]["name"] = json!(to);
        }
        return;
    }
    if let Some(to) = namespace(obj).and_then(|ns| map.get(ns)) {
        obj["metadata"]["namespace"] = json!(to);
    }
    match kind.as_str() {
        "RoleBinding" | "ClusterRoleBinding" => map_subjects(obj, map),
        "Service" => map_external_name(obj, map),
        _ => {}
    }
    map_selectors(obj, map);
}

fn map_subjects(obj: &mut Value, map: &IndexMap<String, String>) {
    for s in obj.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
        match s.get("kind").and_then(Value::as_str) {
            Some("ServiceAccount") => {
                if let Some(to) = s.get("namespace").and_then(Value::as_str).and_then(|ns| map.get(ns)) {
                    s["namespace"] = json!(to);
                }
            }
            Some("Group") => {
                let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                if let Some(to) = name.strip_prefix("system:serviceaccounts:").and_then(|ns| map.get(ns)) {
                    s["name"] = json!(format!("system:serviceaccounts:{to}"));
                }
            }
            Some("User") => {
                let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
                if let Some((ns, sa)) = name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':'))
                    && let Some(to) = map.get(ns)
                {
                    s["name"] = json!(format!("system:serviceaccount:{to}:{sa}"));
                }
            }
            _ => {}
        }
    }
}

fn map_external_name(obj: &mut Value, map: &IndexMap<String, String>) {
    let Some(ext) = obj.pointer("/spec/externalName").and_then(Value::as_str) else { return };
    let parts: Vec<&str> = ext.split('.').collect();
    if parts.len() >= 3
        && parts[2] == "svc"
        && let Some(to) = map.get(parts[1])
    {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        p[1] = to.clone();
        obj["spec"]["externalName"] = json!(p.join("."));
    }
}

/// Walks the whole object: NetworkPolicy peers and (anti-)affinity terms both use
/// `namespaceSelector` and `namespaces`, at different depths.
fn map_selectors(v: &mut Value, map: &IndexMap<String, String>) {
    match v {
        Value::Object(o) => {
            if let Some(sel) = o.get_mut("namespaceSelector") {
                if let Some(n) = sel.pointer_mut("/matchLabels/kubernetes.io~1metadata.name")
                    && let Some(to) = n.as_str().and_then(|ns| map.get(ns))
                {
                    *n = json!(to);
                }
                for e in sel.get_mut("matchExpressions").and_then(Value::as_array_mut).into_iter().flatten() {
                    if e.get("key").and_then(Value::as_str) == Some("kubernetes.io/metadata.name") {
                        for val in e.get_mut("values").and_then(Value::as_array_mut).into_iter().flatten() {
                            if let Some(to) = val.as_str().and_then(|ns| map.get(ns)) {
                                *val = json!(to);
                            }
                        }
                    }
                }
            }
            if let Some(list) = o.get_mut("namespaces").and_then(Value::as_array_mut) {
                for val in list {
                    if let Some(to) = val.as_str().and_then(|ns| map.get(ns)) {
                        *val = json!(to);
                    }
                }
            }
            for (k, child) in o.iter_mut() {
                if k != "metadata" {
                    map_selectors(child, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| map_selectors(c, map)),
        _ => {}
    }
}
