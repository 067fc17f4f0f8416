//! The plan: a value computed completely — rules, plugins and mapping included — before
//! anything is written, so a failing transform stops with no change on the destination.
//! Pure: no I/O here; `observe` feeds it, `actions` execute it.

pub mod diff;
pub mod hash;
pub mod key;
pub mod order;
pub mod render;
pub mod volumes;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

pub use key::ObjectKey;

use crate::spec::Migration;
use crate::transform::{hold, mapping, object, rules};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Prune,
}

/// What will happen to one destination object.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceChange {
    pub action: Action,
    pub api_version: String,
    #[serde(flatten)]
    pub key: ObjectKey,
    /// Changed fields, for updates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// The object to apply (the live one, for prunes). Holds secret data: never serialized.
    #[serde(skip)]
    pub object: Value,
    #[serde(skip)]
    pub rank: u8,
}

/// A source object that is not copied, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    #[serde(flatten)]
    pub key: ObjectKey,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourcePlan {
    pub changes: Vec<ResourceChange>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
}

impl ResourcePlan {
    pub fn pending(&self) -> usize {
        self.changes.iter().filter(|c| c.action != Action::Unchanged).count()
    }
}

/// What a user transform made of one object.
pub enum Transformed {
    /// The object (possibly changed) and any extra objects to create.
    Keep(Value, Vec<Value>),
    Skip,
}

/// A transform that failed; the plan stops.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {message}")]
pub struct TransformFailure {
    pub object: String,
    pub message: String,
}

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
    let mut out = Vec::with_capacity(source.len());
    let mut skipped = Vec::new();
    for mut obj in source {
        if let Some(reason) = rules::skip_reason(&obj) {
            skipped.push(Skipped { key: ObjectKey::of(&obj), reason: reason.into() });
            continue;
        }
        let key = ObjectKey::of(&obj);
        rules::clean(&mut obj, settings);
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
/// desired; Namespaces and CRDs are never pruned (deleting them deletes data).
pub fn compare(desired: Vec<Value>, live: &[Value], migration: &str, prune: bool) -> Vec<ResourceChange> {
    let live_by_key: HashMap<ObjectKey, &Value> = live.iter().map(|o| (ObjectKey::of(o), o)).collect();
    let mut wanted = HashSet::new();
    let mut changes = Vec::with_capacity(desired.len());
    for obj in desired {
        let key = ObjectKey::of(&obj);
        wanted.insert(key.clone());
        let (action, diff) = match live_by_key.get(&key) {
            None => (Action::Create, Vec::new()),
            Some(l)
                if object::annotation(l, hash::SOURCE_HASH) == object::annotation(&obj, hash::SOURCE_HASH)
                    && hash::is_managed_by(l, migration) =>
            {
                (Action::Unchanged, Vec::new())
            }
            Some(l) => {
                let mut d = diff::diff(&obj, l);
                if d.is_empty() {
                    d.push("(no field differs; mtcd takes over managing it)".into());
                }
                (Action::Update, d)
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
    changes
}

#[cfg(test)]
mod tests;
