//! Strategic merge patch and server-side apply field ownership, simplified to what clients
//! observe: maps merge, the lists Kubernetes declares with a merge key merge by that key, other
//! lists are replaced; apply ownership is tracked per leaf path.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// The merge key of a list field, as the Kubernetes OpenAPI declares it (`patchMergeKey`).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses"
        | "ephemeralContainerStatuses" => "name",
        "topologySpreadConstraints" => "topologyKey",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "hostAliases" => "ip",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Primitive lists Kubernetes merges as sets (`patchStrategy: merge` on scalars).
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

fn is_directive(k: &str) -> bool {
    k.starts_with("$setElementOrder") || k.starts_with("$retainKeys") || k.starts_with("$deleteFromPrimitiveList")
}

/// Applies a strategic merge patch to `target` in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    merge_value(target, patch, "", true);
}

/// Merges an apply configuration: like a strategic merge patch, but `null` means "unset by me"
/// rather than "delete", which ownership tracking handles.
pub fn apply_merge(target: &mut Value, config: &Value) {
    merge_value(target, config, "", false);
}

fn merge_value(target: &mut Value, patch: &Value, field: &str, nulls_delete: bool) {
    match patch {
        Value::Object(pm) => {
            if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut clean = patch.clone();
                clean.as_object_mut().map(|m| m.remove("$patch"));
                *target = clean;
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let tm = target.as_object_mut().expect("object");
            for (k, pv) in pm {
                if k == "$patch" || is_directive(k) {
                    continue;
                }
                if pv.is_null() {
                    if nulls_delete {
                        tm.remove(k);
                    }
                    continue;
                }
                match pv {
                    Value::Object(_) => {
                        let slot = tm.entry(k.clone()).or_insert(Value::Null);
                        merge_value(slot, pv, k, nulls_delete);
                    }
                    Value::Array(items) => {
                        let existing = tm.get_mut(k);
                        match (existing, merge_key(k, items)) {
                            (Some(Value::Array(cur)), Some(key)) => merge_keyed_list(cur, items, key, nulls_delete),
                            (Some(Value::Array(cur)), None) if is_set_list(k) => {
                                for i in items {
                                    if !cur.contains(i) {
                                        cur.push(i.clone());
                                    }
                                }
                            }
                            _ => {
                                let cleaned: Vec<Value> = items
                                    .iter()
                                    .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                                    .map(strip_directives)
                                    .collect();
                                tm.insert(k.clone(), Value::Array(cleaned));
                            }
                        }
                    }
                    _ => {
                        tm.insert(k.clone(), pv.clone());
                    }
                }
            }
            let _ = field;
        }
        other => *target = other.clone(),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_directive(k) && k.as_str() != "$patch")
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_keyed_list(cur: &mut Vec<Value>, items: &[Value], key: &str, nulls_delete: bool) {
    for item in items {
        let Some(kv) = item.get(key) else {
            cur.push(strip_directives(item));
            continue;
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                cur.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => merge_value(&mut cur[p], item, "", nulls_delete),
            (None, false) => cur.push(strip_directives(item)),
        }
    }
}

/// A leaf path in managedFields notation: `f:spec`, `f:replicas`, `k:{"name":"web"}`.
pub type FieldPath = Vec<String>;

/// Paths server-side apply tracks; identity and server-owned metadata are never owned.
fn skip_top(k: &str) -> bool {
    matches!(k, "apiVersion" | "kind")
}

fn skip_meta(k: &str) -> bool {
    matches!(
        k,
        "name"
            | "namespace"
            | "uid"
            | "resourceVersion"
            | "creationTimestamp"
            | "managedFields"
            | "generation"
            | "deletionTimestamp"
            | "selfLink"
            | "generateName"
            | "deletionGracePeriodSeconds"
    )
}

/// Every owned leaf path of an object or apply configuration.
pub fn leaf_paths(obj: &Value, include_status: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if skip_top(k) || (k == "status" && !include_status) {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(mm) = v {
                    for (mk, mv) in mm {
                        if !skip_meta(mk) {
                            walk(mv, vec!["f:metadata".into(), format!("f:{mk}")], mk, &mut out);
                        }
                    }
                }
                continue;
            }
            walk(v, vec![format!("f:{k}")], k, &mut out);
        }
    }
    out
}

fn walk(v: &Value, path: FieldPath, field: &str, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(c, p, k, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if let Some(key) = merge_key(field, items).filter(|k| items.iter().all(|i| i.get(*k).is_some())) {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("k:{}", json!({key: item[key]})));
                    walk(item, p, "", out);
                }
            } else if is_set_list(field) {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            } else {
                out.insert(path);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at a field path, if present.
pub fn get_path<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = seg.strip_prefix("k:") {
        let want: Value = serde_json::from_str(k).ok()?;
        let (key, val) = want.as_object()?.iter().next()?;
        cur.as_array()?.iter().find(|i| i.get(key) == Some(val))
    } else if let Some(v) = seg.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        cur.as_array()?.iter().find(|i| **i == want)
    } else {
        None
    }
}

/// Removes the field at `path` (and list items for `k:`/`v:` segments).
pub fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let Some((key, val)) = want.as_object().and_then(|o| o.iter().next()).map(|(a, b)| (a.clone(), b.clone()))
            else {
                return;
            };
            cur.as_array_mut().and_then(|a| a.iter_mut().find(|i| i.get(&key) == Some(&val)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:").or_else(|| last.strip_prefix("v:")) {
        let Ok(want) = serde_json::from_str::<Value>(k) else {
            return;
        };
        if let Some(a) = cur.as_array_mut() {
            if last.starts_with("v:") {
                a.retain(|i| *i != want);
            } else if let Some((key, val)) = want.as_object().and_then(|o| o.iter().next()) {
                a.retain(|i| i.get(key) != Some(val));
            }
        }
    }
}

/// `fieldsV1` encoding of a set of paths.
pub fn encode_fields(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur.entry(seg.clone()).or_insert_with(|| Value::Object(Map::new())).as_object_mut().expect("map");
        }
    }
    Value::Object(root)
}

/// Decodes `fieldsV1` back into leaf paths (the `.` self-markers are ignored).
pub fn decode_fields(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    fn rec(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let children: Vec<(&String, &Value)> =
            v.as_object().map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect()).unwrap_or_default();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, c) in children {
            path.push(k.clone());
            rec(c, path, out);
            path.pop();
        }
    }
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// Human notation of a path for conflict messages: `.spec.replicas`, `.spec.containers[name="web"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            if let Some((key, val)) = v.as_object().and_then(|o| o.iter().next()) {
                s.push_str(&format!("[{key}={val}]"));
            }
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_merge_by_name_and_maps_merge() {
        let mut t =
            json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "keep": 1}});
        strategic_merge(&mut t, &json!({"spec": {"containers": [{"name": "b", "image": "z"}], "drop": null}}));
        assert_eq!(t["spec"]["containers"][0]["image"], "x");
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        assert_eq!(t["spec"]["keep"], 1);
        strategic_merge(&mut t, &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}));
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn fields_round_trip() {
        let o = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"containers": [{"name": "w", "image": "i"}], "args": ["x"]}});
        let p = leaf_paths(&o, false);
        assert!(p.contains(&vec![
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"w\"}".into(),
            "f:image".into()
        ]));
        assert_eq!(decode_fields(&encode_fields(&p)), p);
        let path: Vec<String> =
            vec!["f:spec".into(), "f:containers".into(), "k:{\"name\":\"w\"}".into(), "f:image".into()];
        assert_eq!(get_path(&o, &path), Some(&json!("i")));
    }
}
