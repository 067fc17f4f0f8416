//! The resource half of a plan: source objects → the stamped objects the destination should
//! hold → create / update / unchanged / prune against the destination's live objects.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::transforms::{TransformFailure, Transformed};
use super::{Action, ObjectKey, ResourceChange, Skipped, drift, hash, order};
use crate::spec::Migration;
use crate::transform::{hold, mapping, object, rules};

/// Turns source objects into the stamped objects the destination should hold.
///
/// Order per object: built-in rules → user transforms → hold or release of workloads →
/// namespace mapping → stamp. Transforms see source namespaces, as the user wrote them.
pub fn desired(
    source: Vec<Value>,
    migration: &Migration,
    settings: &rules::RuleSettings,
    released: bool,
    transform: &mut dyn FnMut(Value) -> Result<Transformed, TransformFailure>,
) -> Result<(Vec<Value>, Vec<Skipped>), TransformFailure> {
    desired_with(source, migration, settings, &HashMap::new(), released, transform)
}

/// [`desired`], with the claims that keep their `volumeName` (source key → PV name): a claim
/// bound to a statically provisioned PV that `pv_policy = "copy"` copies (plan::dependencies).
/// Owned objects of the migration's `keep_owned` kinds are copied (without their owners).
pub fn desired_with(
    source: Vec<Value>,
    migration: &Migration,
    settings: &rules::RuleSettings,
    volume_names: &HashMap<ObjectKey, String>,
    released: bool,
    transform: &mut dyn FnMut(Value) -> Result<Transformed, TransformFailure>,
) -> Result<(Vec<Value>, Vec<Skipped>), TransformFailure> {
    let mut out = Vec::with_capacity(source.len());
    let mut skipped = Vec::new();
    for mut obj in source {
        if let Some(reason) = rules::skip_reason_keeping(&obj, &migration.keep_owned) {
            skipped.push(Skipped { key: ObjectKey::of(&obj), reason: reason.into() });
            continue;
        }
        let key = ObjectKey::of(&obj);
        rules::clean(&mut obj, settings);
        if let Some(pv) = volume_names.get(&key) {
            object::map_at(&mut obj, &["spec"]).insert("volumeName".into(), Value::String(pv.clone()));
        }
        let (obj, extra) = match transform(obj)? {
            Transformed::Keep(o, extra) => (o, extra),
            Transformed::Skip => {
                skipped.push(Skipped { key, reason: "skipped by a transform plugin".into() });
                continue;
            }
        };
        for mut o in std::iter::once(obj).chain(extra) {
            if released || migration.start_workloads {
                hold::release(&mut o);
            } else {
                hold::hold(&mut o);
            }
            mapping::map_namespace(&mut o, &migration.namespace_map);
            hash::stamp(&mut o, &migration.name);
            out.push(o);
        }
    }
    Ok((out, skipped))
}

/// Compares desired objects with the destination's live objects.
///
/// `live` holds the destination's objects of the migrated types in the destination
/// namespaces. Prune candidates are live objects this migration stamped that are no longer
/// desired; Namespaces and CRDs are never pruned (deleting them deletes data). Objects whose
/// type could not be read completely on either side (`unknown`) get no change at all: they
/// are returned apart, so the plan can say so. Only `prunable` types (those the source was
/// asked for: a kind the filters leave out is no longer the migration's to delete) are pruned.
pub fn compare(
    desired: Vec<Value>,
    live: &[Value],
    migration: &str,
    prune: bool,
    unknown: &dyn Fn(&ObjectKey) -> bool,
    prunable: &dyn Fn(&ObjectKey) -> bool,
) -> (Vec<ResourceChange>, Vec<ObjectKey>) {
    let live_by_key: HashMap<ObjectKey, &Value> = live.iter().map(|o| (ObjectKey::of(o), o)).collect();
    let mut wanted = HashSet::new();
    let mut changes = Vec::with_capacity(desired.len());
    let mut withheld = Vec::new();
    for obj in desired {
        let key = ObjectKey::of(&obj);
        wanted.insert(key.clone());
        if unknown(&key) {
            withheld.push(key);
            continue;
        }
        let (action, diff) = match live_by_key.get(&key) {
            None => (Action::Create, Vec::new()),
            Some(l) if hash::is_managed_by(l, migration) => {
                // The stamp tells a source change; managedFields tell drift on the
                // destination. Neither: nothing to do, even if only the stamp is stale.
                let same_source =
                    object::annotation(l, hash::SOURCE_HASH) == object::annotation(&obj, hash::SOURCE_HASH);
                let d = drift::changes(&obj, l, same_source);
                if d.is_empty() { (Action::Unchanged, d) } else { (Action::Update, d) }
            }
            // A namespace that already exists (created by hand, or by a project request) only
            // gains mtcd's labels: it is not somebody else's object to adopt.
            Some(l) if key.kind == "Namespace" && key.group.is_empty() => {
                let mut d = drift::changes(&obj, l, false);
                d.push("(mtcd labels the existing namespace)".into());
                (Action::Update, d)
            }
            Some(l) => {
                let mut d = drift::changes(&obj, l, false);
                let owners = drift::other_managers(l);
                d.push(match object::label(l, hash::MIGRATION) {
                    Some(other) => format!("(managed by migration {other:?})"),
                    None if owners.is_empty() => "(not created by mtcd)".to_string(),
                    None => format!("(not created by mtcd; fields owned by {})", owners.join(", ")),
                });
                (Action::Adopt, d)
            }
        };
        changes.push(ResourceChange {
            action,
            api_version: object::api_version(&obj).to_string(),
            rank: order::rank(&key.group, &key.kind),
            key,
            diff,
            object: obj,
        });
    }
    if prune {
        for l in live {
            let key = ObjectKey::of(l);
            let protected = matches!(key.kind.as_str(), "Namespace" | "CustomResourceDefinition");
            if !wanted.contains(&key)
                && !protected
                && !unknown(&key)
                && prunable(&key)
                && hash::is_managed_by(l, migration)
                && object::annotation(l, hash::SOURCE_HASH).is_some()
            {
                changes.push(ResourceChange {
                    action: Action::Prune,
                    api_version: object::api_version(l).to_string(),
                    rank: order::rank(&key.group, &key.kind),
                    key,
                    diff: Vec::new(),
                    object: l.clone(),
                });
            }
        }
    }
    changes.sort_by(|a, b| (a.rank, &a.key).cmp(&(b.rank, &b.key)));
    withheld.sort();
    (changes, withheld)
}
