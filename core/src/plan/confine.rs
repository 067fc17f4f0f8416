//! What a transform may return (DESIGN.md, safety rule 5): only namespaced objects that land
//! in the migration's namespaces. A plugin that returns a ClusterRoleBinding to cluster-admin,
//! a `hostPath: /` PersistentVolume, or an object in somebody else's namespace is refused at
//! plan time, before anything is written.

use std::collections::HashSet;

use serde_json::Value;

use super::transforms::Transformed;
use super::{ObjectKey, Snapshot};
use crate::spec::Migration;

/// Checks what a transform made of the object `given`. Errors are `(object, reason)`.
pub fn check(m: &Migration, snapshot: &Snapshot, given: &ObjectKey, out: &Transformed) -> Result<(), (String, String)> {
    let Transformed::Keep(obj, extra) = out else { return Ok(()) };
    let key = ObjectKey::of(obj);
    let err = |k: &ObjectKey, reason: String| Err((k.to_string(), reason));
    // The object itself stays what it was: same kind, same namespace; a cluster-scoped
    // object it was given (a Namespace, a CRD) keeps its name too.
    if (key.group.as_str(), key.kind.as_str()) != (given.group.as_str(), given.kind.as_str()) {
        return err(
            &key,
            format!(
                "it was given {given}; a transform may change an object but not turn it into another kind (return new objects as extra objects)"
            ),
        );
    }
    if key.namespace != given.namespace {
        return err(&key, format!("it was given {given}; a transform may not move an object to another namespace"));
    }
    if given.namespace.is_none() && key.name != given.name {
        return err(&key, format!("it was given {given}; a cluster-scoped object keeps its name"));
    }
    check_name(&key)?;
    for e in extra {
        let k = ObjectKey::of(e);
        check_name(&k)?;
        let namespaced = [&snapshot.destination_catalog, &snapshot.source_catalog]
            .iter()
            .find_map(|c| c.find(&k.group, &k.kind).map(|t| t.namespaced));
        match namespaced {
            None => return err(&k, "neither cluster serves this kind".into()),
            Some(false) => {
                return err(&k, "cluster-scoped objects are refused (a transform may only add namespaced objects of the migration's namespaces)".into());
            }
            Some(true) => {}
        }
        match &k.namespace {
            Some(ns) if m.namespaces.contains(ns) => {}
            Some(ns) => {
                return err(
                    &k,
                    format!("namespace {ns:?} is not one of the migration's namespaces ({})", m.namespaces.join(", ")),
                );
            }
            None => {
                return err(
                    &k,
                    "an added object must name its namespace (one of the migration's source namespaces)".into(),
                );
            }
        }
    }
    Ok(())
}

/// Names the API server accepts in a path segment: non-empty, at most 253 characters, no
/// `/`, `%`, whitespace or control characters, not `.` or `..`.
fn check_name(k: &ObjectKey) -> Result<(), (String, String)> {
    let n = &k.name;
    let bad = n.is_empty()
        || n.len() > 253
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == '%' || c.is_whitespace() || c.is_control());
    if bad { Err((k.to_string(), format!("{n:?} is not a valid object name"))) } else { Ok(()) }
}

/// The first key two desired objects share.
pub fn duplicate(desired: &[Value]) -> Option<String> {
    let mut seen = HashSet::with_capacity(desired.len());
    desired.iter().map(ObjectKey::of).find(|k| !seen.insert(k.clone())).map(|k| k.to_string())
}

/// The migration's transform plugins, for messages.
pub fn plugin_names(m: &Migration) -> String {
    m.transforms.iter().map(|t| t.source.to_string()).collect::<Vec<_>>().join(", ")
}
