//! Field-level differences between what mtcd would write and what the destination holds.
//!
//! Only fields mtcd sets are compared: the API server adds defaults, status and metadata of
//! its own, which are not drift. Secret values are never shown.

use serde_json::Value;

const REDACTED: &str = "(redacted)";

/// One changed field: `spec.replicas: 3 → 0`.
pub fn diff(desired: &Value, live: &Value) -> Vec<String> {
    let secret = crate::transform::object::kind(desired) == "Secret";
    let mut out = Vec::new();
    walk("", desired, live, secret, &mut out);
    out
}

fn walk(path: &str, desired: &Value, live: &Value, secret: bool, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, dv) in d {
                if path.is_empty() && matches!(k.as_str(), "status") {
                    continue;
                }
                if path == "metadata" && !matches!(k.as_str(), "labels" | "annotations" | "name" | "namespace") {
                    continue;
                }
                if path == "metadata.annotations" && k == super::hash::SOURCE_HASH {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match l.get(k) {
                    Some(lv) => walk(&p, dv, lv, secret, out),
                    None => out.push(format!("{p}: (unset) → {}", show(&p, dv, secret))),
                }
            }
        }
        (d, l) if d == l => {}
        (d, l) => out.push(format!("{path}: {} → {}", show(path, l, secret), show(path, d, secret))),
    }
}

fn show(path: &str, v: &Value, secret: bool) -> String {
    if secret && (path.starts_with("data") || path.starts_with("stringData")) {
        return REDACTED.into();
    }
    let s = v.to_string();
    if s.len() > 80 { format!("{}…", &s[..s.floor_char_boundary(77)]) } else { s }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_fields_mtcd_sets_are_compared() {
        let desired =
            json!({"kind": "Deployment", "metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"replicas": 0}});
        let live = json!({"kind": "Deployment", "metadata": {"name": "w", "uid": "x", "labels": {"a": "2"}},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600}, "status": {"readyReplicas": 3}});
        assert_eq!(diff(&desired, &live), ["metadata.labels.a: \"2\" → \"1\"", "spec.replicas: 3 → 0"]);
    }

    #[test]
    fn secret_values_are_redacted() {
        let desired = json!({"kind": "Secret", "data": {"password": "bmV3"}});
        let live = json!({"kind": "Secret", "data": {"password": "b2xk"}});
        let d = diff(&desired, &live);
        assert_eq!(d, ["data.password: (redacted) → (redacted)"]);
    }
}
