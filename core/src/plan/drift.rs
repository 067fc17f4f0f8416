//! What differs between the object mtcd would write and the one the destination holds,
//! read through the live object's `managedFields` — so a plan sees drift without a request
//! per object, and without false positives from the API server's defaulting.
//!
//! Server-side apply records which fields each manager owns. A field mtcd set and still owns
//! holds what mtcd applied (the API server may have normalised `0.5` to `500m`, which is not
//! drift). A field mtcd set but no longer owns was changed or removed by someone else
//! (`kubectl edit`, `kubectl scale`, an operator): its live value is compared with the
//! desired one, with quantities and int-or-strings normalised. A field mtcd owns that the
//! desired object no longer sets is one mtcd will remove. When the source changed (the stamp
//! differs), every desired field is compared.

use serde_json::{Map, Value};

use crate::labels;

const REDACTED: &str = "(redacted)";

/// The fields mtcd applied and still owns: the union of its `Apply` entries (main resource,
/// not subresources) as one fieldsV1 tree.
pub fn owned_by_mtcd(live: &Value) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let mut tree: Option<Value> = None;
    for e in entries {
        let mine = e.get("manager").and_then(Value::as_str) == Some(labels::FIELD_MANAGER)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").is_none_or(|s| s.as_str().is_none_or(str::is_empty));
        if let (true, Some(f)) = (mine, e.get("fieldsV1")) {
            match &mut tree {
                None => tree = Some(f.clone()),
                Some(t) => merge(t, f),
            }
        }
    }
    tree
}

fn merge(into: &mut Value, from: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => merge(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Who else owns fields of `live`, for the plan's `adopt` lines: `manager (operation)`.
pub fn other_managers(live: &Value) -> Vec<String> {
    let mut out: Vec<String> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("manager").and_then(Value::as_str) != Some(labels::FIELD_MANAGER))
        .map(|e| {
            format!(
                "{} ({})",
                e.get("manager").and_then(Value::as_str).unwrap_or("?"),
                e.get("operation").and_then(Value::as_str).unwrap_or("?")
            )
        })
        .collect();
    out.dedup();
    out
}

/// The changes applying `desired` would make to `live`, one line per field: `path: live →
/// desired`. `trust_owned`: the stamp says the source is unchanged, so fields mtcd still
/// owns hold what it applied and are not compared.
pub fn changes(desired: &Value, live: &Value, trust_owned: bool) -> Vec<String> {
    let owned = owned_by_mtcd(live);
    let mut w = Walk {
        secret: crate::transform::object::kind(desired) == "Secret",
        trust_owned: trust_owned && owned.is_some(),
        out: Vec::new(),
    };
    w.object("", desired, Some(live), owned.as_ref());
    w.out
}

struct Walk {
    secret: bool,
    trust_owned: bool,
    out: Vec<String>,
}

impl Walk {
    fn object(&mut self, path: &str, d: &Value, l: Option<&Value>, owned: Option<&Value>) {
        let Value::Object(dm) = d else { return self.value(path, d, l, owned) };
        let lm = l.and_then(Value::as_object);
        for (k, dv) in dm {
            if skip(path, k) {
                continue;
            }
            let p = join(path, k);
            let o = owned.and_then(|o| o.get(format!("f:{k}")));
            self.value(&p, dv, lm.and_then(|m| m.get(k)), o);
        }
        // Fields mtcd owns that the desired object no longer sets: applying removes them.
        if let (Some(Value::Object(om)), Some(lm)) = (owned, lm) {
            for key in om.keys().filter_map(|k| k.strip_prefix("f:")) {
                if !dm.contains_key(key) && !skip(path, key) && lm.contains_key(key) {
                    let p = join(path, key);
                    self.out.push(format!("{p}: {} → (removed)", self.show(&p, &lm[key])));
                }
            }
        }
    }

    fn value(&mut self, path: &str, d: &Value, l: Option<&Value>, owned: Option<&Value>) {
        match d {
            Value::Object(_) => self.object(path, d, l, owned),
            Value::Array(items) => self.array(path, items, l, owned),
            _ => {
                if self.trust_owned && owned.is_some() {
                    return;
                }
                match l {
                    Some(lv) if same(d, lv) => {}
                    Some(lv) => self.out.push(format!("{path}: {} → {}", self.show(path, lv), self.show(path, d))),
                    None => self.out.push(format!("{path}: (unset) → {}", self.show(path, d))),
                }
            }
        }
    }

    fn array(&mut self, path: &str, items: &[Value], l: Option<&Value>, owned: Option<&Value>) {
        let owned_map = owned.and_then(Value::as_object);
        let keyed = owned_map.is_some_and(|m| m.keys().any(|k| k.starts_with("k:") || k.starts_with("v:")));
        // An atomic list mtcd owns as a whole holds what mtcd applied.
        if self.trust_owned && owned.is_some() && !keyed {
            return;
        }
        let Some(live) = l.and_then(Value::as_array) else {
            return self.out.push(format!("{path}: (unset) → {}", self.show(path, &Value::Array(items.to_vec()))));
        };
        for (i, item) in items.iter().enumerate() {
            // Elements are matched by `name` when they have one (containers, env, ports…),
            // else by position, and named in the path by what matched them.
            let (label, found) = match item.get("name").and_then(Value::as_str) {
                Some(n) => (
                    format!("{path}[name={n}]"),
                    live.iter().find(|x| x.get("name").and_then(Value::as_str) == Some(n)),
                ),
                None => (format!("{path}[{i}]"), live.get(i)),
            };
            let o = owned_map.and_then(|m| element_owner(m, item));
            match found {
                Some(lv) => self.value(&label, item, Some(lv), o),
                None => self.out.push(format!("{label}: (missing) → {}", self.show(&label, item))),
            }
        }
        if items.len() < live.len() && items.iter().all(|i| i.get("name").is_none()) {
            self.out.push(format!("{path}: {} element(s) → {}", live.len(), items.len()));
        }
    }

    fn show(&self, path: &str, v: &Value) -> String {
        if self.secret && (path.starts_with("data") || path.starts_with("stringData")) {
            return REDACTED.into();
        }
        let s = v.to_string();
        if s.len() > 80 { format!("{}…", &s[..s.floor_char_boundary(77)]) } else { s }
    }
}

/// The fieldsV1 node that owns array element `item`: `k:{"name":"web"}` whose pairs all
/// match the element, or `v:<value>` for a set of scalars.
fn element_owner<'a>(owned: &'a Map<String, Value>, item: &Value) -> Option<&'a Value> {
    owned.iter().find_map(|(k, v)| {
        if let Some(json) = k.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(json).ok()?;
            key.iter().all(|(f, want)| item.get(f).is_some_and(|have| same(want, have))).then_some(v)
        } else if let Some(json) = k.strip_prefix("v:") {
            let value: Value = serde_json::from_str(json).ok()?;
            same(&value, item).then_some(v)
        } else {
            None
        }
    })
}

/// Fields that are the API server's or mtcd's own bookkeeping.
fn skip(path: &str, key: &str) -> bool {
    (path.is_empty() && matches!(key, "status" | "apiVersion" | "kind"))
        || (path == "metadata" && !matches!(key, "labels" | "annotations"))
        || (path == "metadata.annotations" && key == labels::SOURCE_HASH)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Equal as the API server sees them: `8080` and `"8080"` (int-or-string), `0.5` and
/// `"500m"`, `1Gi` and `1073741824` (quantities).
pub fn same(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// A Kubernetes quantity (or a number) as a number.
fn quantity(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(s.len());
            let (num, suffix) = s.split_at(split);
            let n: f64 = num.parse().ok()?;
            let mult = match suffix {
                "" => 1.0,
                "m" => 1e-3,
                "k" => 1e3,
                "M" => 1e6,
                "G" => 1e9,
                "T" => 1e12,
                "P" => 1e15,
                "Ki" => 1024.0,
                "Mi" => 1024f64.powi(2),
                "Gi" => 1024f64.powi(3),
                "Ti" => 1024f64.powi(4),
                "Pi" => 1024f64.powi(5),
                _ => return None,
            };
            Some(n * mult)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn live(data: Value, managed: Value) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"name": "cfg", "managedFields": managed}, "data": data})
    }

    fn mtcd(fields: Value) -> Value {
        json!({"manager": "mtcd", "operation": "Apply", "fieldsV1": fields})
    }

    #[test]
    fn a_field_someone_else_took_over_is_drift() {
        let desired = json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}});
        // kubectl edit changed `a`: ownership moved to kubectl-edit.
        let l = live(
            json!({"a": "9", "b": "2"}),
            json!([mtcd(json!({"f:data": {"f:b": {}}})), {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:a": {}}}}]),
        );
        assert_eq!(changes(&desired, &l, true), ["data.a: \"9\" → \"1\""]);
    }

    #[test]
    fn fields_mtcd_still_owns_are_trusted_whatever_the_server_normalised() {
        let desired = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"cpu": "0.5", "port": 8080}});
        let l = json!({"kind": "Pod", "metadata": {"name": "p", "managedFields": [mtcd(json!({"f:spec": {"f:cpu": {}, "f:port": {}}}))]},
            "spec": {"cpu": "500m", "port": 8080, "defaulted": true}});
        assert!(changes(&desired, &l, true).is_empty());
        // Compared value by value (the source changed), normalisation still holds.
        assert!(changes(&desired, &l, false).is_empty());
        assert!(same(&json!("1Gi"), &json!(1073741824)));
        assert!(same(&json!(8080), &json!(8080.0)));
        assert!(!same(&json!("http"), &json!(8080)));
    }

    #[test]
    fn a_field_removed_on_the_destination_is_drift() {
        let desired = json!({"kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
        let l = live(json!({}), json!([mtcd(json!({"f:metadata": {"f:name": {}}}))]));
        assert_eq!(changes(&desired, &l, true), ["data.a: (unset) → \"1\""]);
    }

    #[test]
    fn a_field_the_source_dropped_is_removed() {
        let desired = json!({"kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"a": "1"}}});
        let l = json!({"kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"a": "1", "old": "x"},
            "managedFields": [mtcd(json!({"f:metadata": {"f:labels": {"f:a": {}, "f:old": {}}}}))]}});
        assert_eq!(changes(&desired, &l, false), ["metadata.labels.old: \"x\" → (removed)"]);
    }

    #[test]
    fn array_differences_name_the_element() {
        let desired = json!({"kind": "Deployment", "metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "side:1"}]}}}});
        let l = json!({"kind": "Deployment", "metadata": {"name": "w"}, "spec": {"template": {"spec": {"containers": [
            {"name": "side", "image": "side:1", "imagePullPolicy": "IfNotPresent"},
            {"name": "web", "image": "web:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        assert_eq!(
            changes(&desired, &l, false),
            ["spec.template.spec.containers[name=web].image: \"web:1\" → \"web:2\""]
        );
    }

    #[test]
    fn a_scaled_held_workload_is_drift_and_a_rollback_is_not() {
        let desired = json!({"kind": "Deployment", "metadata": {"name": "w", "annotations": {"mtcd.io/original-replicas": "3"}}, "spec": {"replicas": 0}});
        let scaled = json!({"kind": "Deployment", "metadata": {"name": "w", "annotations": {"mtcd.io/original-replicas": "3"},
            "managedFields": [mtcd(json!({"f:metadata": {"f:annotations": {"f:mtcd.io/original-replicas": {}}}})),
                {"manager": "kubectl", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
            "spec": {"replicas": 2}});
        assert_eq!(changes(&desired, &scaled, true), ["spec.replicas: 2 → 0"]);
        // After a rollback mtcd-cutover holds replicas at 0: other owner, same value.
        let mut held = scaled.clone();
        held["spec"]["replicas"] = json!(0);
        assert!(changes(&desired, &held, false).is_empty());
    }

    #[test]
    fn secret_values_are_redacted() {
        let desired = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "bmV3"}});
        let l = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "b2xk"}});
        assert_eq!(changes(&desired, &l, false), ["data.password: (redacted) → (redacted)"]);
    }
}
