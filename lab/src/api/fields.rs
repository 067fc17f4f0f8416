//! managedFields bookkeeping for updates and server-side apply.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::error::{ApiError, Cause};
use super::patch::{FieldPath, decode_fields, display_path, encode_fields, get_path, leaf_paths, remove_path};
use super::types::ResourceType;

/// One managedFields entry, decoded.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: BTreeSet<FieldPath>,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn decode(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    fields: decode_fields(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn encode(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                    "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": encode_fields(&e.fields)});
                if let Some(s) = &e.subresource {
                    v["subresource"] = json!(s);
                }
                v
            })
            .collect(),
    )
}

/// Ownership after a non-apply write: `manager` takes every field it changed from the others.
pub fn track_update(old: Option<&Value>, new: &Value, manager: &str, api_version: &str, status_sub: bool) -> Value {
    let mut entries = old.map(decode).unwrap_or_default();
    let new_paths = leaf_paths(new, status_sub);
    let changed: BTreeSet<FieldPath> = match old {
        None => new_paths.clone(),
        Some(old) => {
            let old_paths = leaf_paths(old, status_sub);
            let mut c: BTreeSet<FieldPath> =
                new_paths.iter().filter(|p| get_path(old, p) != get_path(new, p)).cloned().collect();
            c.extend(old_paths.into_iter().filter(|p| get_path(new, p).is_none()));
            c
        }
    };
    if changed.is_empty() {
        return encode(&entries);
    }
    for e in entries.iter_mut() {
        if !(e.manager == manager && e.operation == "Update") {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    let sub = status_sub.then(|| "status".to_string());
    let mine: BTreeSet<FieldPath> = changed.into_iter().filter(|p| new_paths.contains(p)).collect();
    match entries.iter_mut().find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub) {
        Some(e) => {
            e.fields.extend(mine);
            e.fields.retain(|p| get_path(new, p).is_some());
            e.time = now();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version: api_version.into(),
            time: now(),
            subresource: sub,
            fields: mine,
        }),
    }
    encode(&entries)
}

/// Server-side apply of `config` by `manager` onto `current` (None: create). Returns the
/// merged object with its new managedFields, or a 409 listing the conflicting fields.
pub fn apply(
    ty: &ResourceType,
    name: &str,
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    status_sub: bool,
) -> Result<Value, ApiError> {
    let api_version = ty.api_version();
    let cfg_paths = leaf_paths(config, status_sub);
    let Some(current) = current else {
        let mut obj = config.clone();
        let entry = Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version,
            time: now(),
            subresource: None,
            fields: cfg_paths,
        };
        obj["metadata"]["managedFields"] = encode(&[entry]);
        return Ok(obj);
    };
    let mut entries = decode(current);
    let sub = status_sub.then(|| "status".to_string());
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for e in &entries {
        if e.manager == manager || e.subresource != sub {
            continue;
        }
        for p in cfg_paths.intersection(&e.fields) {
            if get_path(current, p) != get_path(config, p) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let mut message = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
        let mut managers: Vec<&String> = conflicts.iter().map(|(m, _)| m).collect();
        managers.dedup();
        if n == 1 {
            message += &format!(
                "conflict with \"{}\" using {}: {}",
                conflicts[0].0,
                api_version,
                display_path(&conflicts[0].1)
            );
        } else {
            for m in managers {
                message += &format!("conflicts with \"{m}\" using {api_version}:");
                for (_, p) in conflicts.iter().filter(|(mm, _)| mm == m) {
                    message += &format!("\n- {}", display_path(p));
                }
                message += "\n";
            }
        }
        let causes = conflicts
            .iter()
            .map(|(m, p)| Cause {
                reason: "FieldManagerConflict",
                field: display_path(p),
                message: format!("conflict with \"{m}\" using {api_version}"),
            })
            .collect();
        return Err(ApiError::Conflict {
            message: message.trim_end().to_string(),
            resource: ty.plural.clone(),
            group: ty.group.clone(),
            name: name.into(),
            causes,
        });
    }
    for (m, p) in &conflicts {
        for e in entries.iter_mut().filter(|e| &e.manager == m) {
            e.fields.remove(p);
        }
    }
    let mut merged = current.clone();
    super::patch::apply_merge(&mut merged, config);
    let previously: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others_own = |pred: &dyn Fn(&FieldPath) -> bool| {
        entries.iter().filter(|e| !(e.manager == manager && e.operation == "Apply")).any(|e| e.fields.iter().any(pred))
    };
    let removed: Vec<&FieldPath> = previously.difference(&cfg_paths).collect();
    // A keyed list item (a container, an env var, a port) the applier stopped sending goes
    // as a whole when nobody else owns anything in it, not field by field.
    let mut whole_items: BTreeSet<FieldPath> = BTreeSet::new();
    for p in &removed {
        for (i, seg) in p.iter().enumerate() {
            if seg.starts_with("k:") {
                let item: FieldPath = p[..=i].to_vec();
                let still_applied = cfg_paths.iter().any(|c| c.starts_with(&item));
                if !still_applied && !others_own(&|q: &FieldPath| q.starts_with(&item)) {
                    whole_items.insert(item);
                    break;
                }
            }
        }
    }
    for item in &whole_items {
        remove_path(&mut merged, item);
    }
    for p in removed {
        if whole_items.iter().any(|item| p.starts_with(item)) {
            continue;
        }
        // An item that stays keeps its key field (`name` of a container someone else owns).
        let is_key_of_item = p.len() >= 2
            && p[p.len() - 2].strip_prefix("k:").is_some_and(|k| {
                serde_json::from_str::<Value>(k)
                    .ok()
                    .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
                    .is_some_and(|key| p[p.len() - 1] == format!("f:{key}"))
            });
        if !is_key_of_item && !others_own(&|q: &FieldPath| q == p) {
            remove_path(&mut merged, p);
        }
    }
    match entries.iter_mut().find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub) {
        Some(e) => {
            if e.fields != cfg_paths {
                e.time = now();
            }
            e.fields = cfg_paths;
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version,
            time: now(),
            subresource: sub,
            fields: cfg_paths,
        }),
    }
    merged["metadata"]["managedFields"] = encode(&entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::TypeTable;

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn items_another_manager_touched_survive_with_their_key() {
        let ty = TypeTable::builtin("kubernetes").get("apps", "v1", "deployments").unwrap();
        let two = deployment(json!([{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]));
        let created = apply(&ty, "d", None, &two, "mtcd", false, false).unwrap();
        // Someone else changes the side container's image.
        let mut edited = created.clone();
        edited["spec"]["template"]["spec"]["containers"][1]["image"] = json!("s:2");
        edited["metadata"]["managedFields"] = track_update(Some(&created), &edited, "kubectl", "apps/v1", false);
        // The applier drops the side container: it stays (kubectl owns its image), named.
        let one = deployment(json!([{"name": "app", "image": "a:1"}]));
        let merged = apply(&ty, "d", Some(&edited), &one, "mtcd", true, false).unwrap();
        let cs = merged["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[1], json!({"name": "side", "image": "s:2"}));
        // Without the other owner it would have gone whole.
        let merged = apply(&ty, "d", Some(&created), &one, "mtcd", false, false).unwrap();
        assert_eq!(merged["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn conflicts_name_the_manager_and_field() {
        let ty = TypeTable::builtin("kubernetes").get("apps", "v1", "deployments").unwrap();
        let base =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let created = apply(&ty, "d", None, &base, "first", false, false).unwrap();
        let mut other = base.clone();
        other["spec"]["replicas"] = json!(3);
        match apply(&ty, "d", Some(&created), &other, "second", false, false) {
            Err(ApiError::Conflict { message, .. }) => {
                assert_eq!(
                    message,
                    "Apply failed with 1 conflict: conflict with \"first\" using apps/v1: .spec.replicas"
                )
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let forced = apply(&ty, "d", Some(&created), &other, "second", true, false).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let owners = decode(&forced);
        assert!(owners.iter().all(|e| e.manager != "first" || e.fields.is_empty()));
    }
}
