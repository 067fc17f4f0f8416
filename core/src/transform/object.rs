//! Small accessors over untyped Kubernetes objects (`serde_json::Value`).
//!
//! mtcd moves objects of every type, including custom ones it has never heard of, so the
//! pipeline works on JSON; these helpers keep the rules readable.

use serde_json::{Map, Value};

pub fn api_version(obj: &Value) -> &str {
    obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default()
}

pub fn kind(obj: &Value) -> &str {
    obj.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// The API group (`""` for core).
pub fn group(obj: &Value) -> &str {
    api_version(obj).rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

pub fn namespace(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str)
}

pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// The object's map at `pointer`, created (with every missing parent) when absent.
pub fn map_at<'a>(obj: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = obj;
    for key in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut().expect("object").entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("object")
}

pub fn set_annotation(obj: &mut Value, key: &str, value: impl Into<String>) {
    map_at(obj, &["metadata", "annotations"]).insert(key.into(), Value::String(value.into()));
}

pub fn set_label(obj: &mut Value, key: &str, value: impl Into<String>) {
    map_at(obj, &["metadata", "labels"]).insert(key.into(), Value::String(value.into()));
}

/// Removes the value at a JSON pointer, if there; removes maps it leaves empty under
/// `metadata` (an empty `annotations: {}` would show up as a diff).
pub fn remove(obj: &mut Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    let key = key.replace("~1", "/").replace("~0", "~");
    let removed = obj.pointer_mut(parent)?.as_object_mut()?.remove(&key);
    if removed.is_some()
        && (parent == "/metadata/annotations" || parent == "/metadata/labels")
        && obj.pointer(parent).and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        remove(obj, parent);
    }
    removed
}

pub fn remove_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    remove(obj, &format!("/metadata/annotations/{}", key.replace('~', "~0").replace('/', "~1")))
}

pub fn remove_label(obj: &mut Value, key: &str) -> Option<Value> {
    remove(obj, &format!("/metadata/labels/{}", key.replace('~', "~0").replace('/', "~1")))
}

/// `Kind.group/namespace/name` (core kinds without group): how every message names an object.
pub fn display(obj: &Value) -> String {
    let g = group(obj);
    let kind = if g.is_empty() { kind(obj).to_string() } else { format!("{}.{g}", kind(obj)) };
    match namespace(obj) {
        Some(ns) => format!("{kind}/{ns}/{}", name(obj)),
        None => format!("{kind}/{}", name(obj)),
    }
}

/// The pod spec inside a pod or any pod-template owner (Deployment, Job, CronJob, DeploymentConfig…).
pub fn pod_spec_mut(obj: &mut Value) -> Option<&mut Value> {
    match kind(obj) {
        "Pod" => obj.get_mut("spec"),
        "CronJob" => obj.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        _ => obj.pointer_mut("/spec/template/spec"),
    }
}

pub fn pod_spec(obj: &Value) -> Option<&Value> {
    match kind(obj) {
        "Pod" => obj.get("spec"),
        "CronJob" => obj.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => obj.pointer("/spec/template/spec"),
    }
}
