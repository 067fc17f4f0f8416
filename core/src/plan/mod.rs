//! The plan: a value computed completely — rules, plugins and mapping included — before
//! anything is written, so a failing transform stops with no change on the destination.
//! Pure: no I/O here; `observe` feeds it, `actions` execute it.

mod confine;
pub mod dependencies;
pub mod drift;
pub mod hash;
pub mod key;
pub mod order;
pub mod readiness;
pub mod render;
pub mod resources;
pub mod transforms;
pub mod velero;
pub mod volumes;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

pub use dependencies::{Dependency, Kept};
pub use key::ObjectKey;
pub use readiness::Wait;
pub use resources::{compare, desired, desired_with};
pub use transforms::{NoTransforms, TransformFailure, Transformed, Transforms};
pub use velero::VeleroPlan;
pub use volumes::{VolumePlan, VolumeTransfer};

use crate::image::{self, ImageCopy};
use crate::snapshot::{MigrationSnapshot, Snapshot, Unread};
use crate::spec::{DimOptions, HookPhase, HookRef, ImageMode, Migration, ResourceMode, Spec};
use crate::transform::rules::RuleSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    /// The source changed, or the destination drifted from what mtcd applied.
    Update,
    Unchanged,
    Prune,
    /// An object of the same name that mtcd did not create: taken over only when the
    /// migration says `adopt = true` (or `apply --adopt`).
    Adopt,
    /// A change to an immutable field: delete, wait until gone, create.
    Replace,
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
    /// Types that could not be read completely, per side: nothing of them is planned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<UnreadType>,
    /// Desired objects of unread types: neither created, updated nor pruned this time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<ObjectKey>,
    /// Changes that cannot be made as planned (an immutable field of a kind that may not be
    /// replaced, an object to adopt without `adopt`), one line each: the plan exits 1 and
    /// apply writes nothing until they are resolved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<String>,
    /// The cluster-scoped objects the namespaces need (cluster RBAC, SCCs, static PVs) and
    /// what the plan does with each (plan::dependencies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
    /// Owned objects `keep_owned` copies, and whether they are re-linked to their owner.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// Objects the destination makes that a rank waits for (plan::readiness).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<Wait>,
}

impl ResourcePlan {
    /// Objects to write, and owner references still to re-link.
    pub fn pending(&self) -> usize {
        self.changes.iter().filter(|c| c.action != Action::Unchanged).count()
            + self.kept.iter().filter(|k| k.pending()).count()
    }
}

/// A type one side could not read completely.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadType {
    /// `source` or `destination`.
    pub side: &'static str,
    #[serde(flatten)]
    pub unread: Unread,
}

/// Everything `apply` (or `cutover`) does, for every migration of the file. Pure data: no
/// client inside, so it can be printed, serialized, tested and executed.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub migrations: Vec<MigrationPlan>,
    /// Workloads planned in their released form (cutover).
    #[serde(skip)]
    pub released: bool,
}

impl Plan {
    /// Changes `apply` would make: objects to write and images to copy. PVC syncs are
    /// listed but not counted: only rsync can tell whether data changed, and a plan that
    /// never reached 0 would be useless in automation.
    pub fn pending(&self) -> usize {
        self.migrations.iter().map(MigrationPlan::pending).sum()
    }

    /// Preflight checks that failed, with their migration. `cutover`: include the checks only
    /// a cutover needs.
    pub fn failed_checks(&self, cutover: bool) -> impl Iterator<Item = (&str, &Check)> {
        self.migrations.iter().flat_map(move |m| {
            m.preflight.iter().filter(move |c| !c.ok && (cutover || !c.cutover_only)).map(move |c| (m.name.as_str(), c))
        })
    }

    /// Changes that cannot be made as planned, with their migration.
    pub fn blocked(&self) -> impl Iterator<Item = (&str, &String)> {
        self.migrations.iter().flat_map(|m| m.resources.blocked.iter().map(move |b| (m.name.as_str(), b)))
    }

    /// Types that could not be read completely, with the migration they belong to: while
    /// there are any, `plan` and `apply` exit 1 (exclude the kind, or grant the read).
    pub fn unread(&self) -> impl Iterator<Item = (&str, &UnreadType)> {
        self.migrations.iter().flat_map(|m| m.resources.unread.iter().map(move |u| (m.name.as_str(), u)))
    }
}

/// One migration's share of the plan.
#[derive(Debug, Serialize)]
pub struct MigrationPlan {
    pub name: String,
    /// The kubeconfig contexts, as the file names them.
    pub source: String,
    pub destination: String,
    #[serde(skip)]
    pub mode: ResourceMode,
    pub resources: ResourcePlan,
    /// PVCs whose data DVM copies (empty with `volumes = "skip"`).
    pub volumes: VolumePlan,
    /// Images DIM copies, with what the destination already has.
    pub images: Vec<ImagePlan>,
    /// Internal images found but not copied: left out by the tag filters, or not
    /// referenced (only finished pods, finished Jobs or old ReplicaSets use them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images_skipped: Vec<image::SkippedImage>,
    #[serde(skip)]
    pub image_options: DimOptions,
    /// The Backup and Restore, with `resources = "velero"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub velero: Option<VeleroPlan>,
    /// Hooks by phase, in file order.
    #[serde(skip)]
    pub hooks: Vec<HookRef>,
    /// The source namespaces quiesce stops at cutover and starts again on rollback.
    #[serde(skip)]
    pub source_namespaces: Vec<String>,
    /// The destination namespaces (held / started workloads, cutover marker).
    #[serde(skip)]
    pub destination_namespaces: Vec<String>,
    /// Source namespace → destination namespace (what hooks are told).
    #[serde(skip)]
    pub namespace_map: IndexMap<String, String>,
    /// The destination records this migration's cutover.
    #[serde(skip)]
    pub cut_over: bool,
    /// What was checked before anything is written (access, Velero, endpoint, storage
    /// classes, images, the destination's cutover owner), filled in by the engine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<Check>,
}

/// One preflight check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `destination access` or `velero on the source`.
    pub name: String,
    pub ok: bool,
    /// What was found, or what is wrong and what to do.
    pub detail: String,
    /// Only a cutover needs it (quiesce rights on the source): a stage sync goes ahead.
    pub cutover_only: bool,
}

impl MigrationPlan {
    pub fn pending(&self) -> usize {
        self.resources.pending() + self.images.iter().filter(|i| i.pending()).count()
    }

    /// The hooks of `phase`, in file order.
    pub fn hooks(&self, phase: HookPhase) -> impl Iterator<Item = &HookRef> {
        self.hooks.iter().filter(move |h| h.phase == phase)
    }
}

/// One image to copy, as `mtcd plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub source: String,
    pub destination: String,
    /// The destination already has this manifest under the tag.
    pub present: bool,
    pub bytes_total: u64,
    pub bytes_to_copy: u64,
    /// Signatures, attestations, SBOMs and referrers found on the source, and how many the
    /// destination lacks.
    pub artifacts: usize,
    pub artifacts_to_copy: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What `apply` copies: the source pinned to the digest inspected, so the image copied
    /// is the one the plan showed even if the tag moves in between.
    #[serde(skip)]
    pub copy: ImageCopy,
}

impl ImagePlan {
    /// Something to copy: the manifest under its tag, or an artifact of it.
    pub fn pending(&self) -> bool {
        !self.present || self.artifacts_to_copy > 0
    }
}

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A transform failed: nothing was written.
    #[error("migration {migration:?}: transform failed on {source}; nothing was changed")]
    Transform {
        migration: String,
        #[source]
        source: TransformFailure,
    },
    /// A transform returned an object outside the migration: cluster-scoped, in another
    /// namespace, of another kind than it was given, badly named, or a duplicate. Nothing was
    /// written.
    #[error("migration {migration:?}: transform plugin(s) {plugins} returned {object}: {reason}; nothing was changed")]
    Confinement { migration: String, plugins: String, object: String, reason: String },
    /// The snapshot has no observations for a migration of the file (observe and plan were
    /// given different files).
    #[error("migration {0:?} was not observed")]
    NotObserved(String),
}

/// The whole plan: every migration of `spec` against what `snapshot` saw. `cutover` plans
/// the workloads released (original replicas); so does a migration whose cutover the
/// destination records.
pub fn build(
    spec: &Spec,
    snapshot: &Snapshot,
    cutover: bool,
    transforms: &mut dyn Transforms,
) -> Result<Plan, PlanError> {
    let mut migrations = Vec::with_capacity(spec.migrations.len());
    for m in &spec.migrations {
        let seen = snapshot.migration(&m.name).ok_or_else(|| PlanError::NotObserved(m.name.clone()))?;
        migrations.push(plan_migration(spec, m, seen, snapshot, cutover, transforms)?);
    }
    Ok(Plan { migrations, released: cutover })
}

fn plan_migration(
    spec: &Spec,
    m: &Migration,
    seen: &MigrationSnapshot,
    snapshot: &Snapshot,
    cutover: bool,
    transforms: &mut dyn Transforms,
) -> Result<MigrationPlan, PlanError> {
    let released = cutover || seen.cut_over;
    let settings = RuleSettings {
        storage_class_map: m.storage_class_map.clone(),
        access_mode_map: m.access_mode_map.clone(),
        pvc_name_map: m.pvc_name_map.clone(),
    };
    // Images move to the destination registry: references to them follow, after the user's
    // transforms (which see the source as it is).
    let rewrite = match (m.images, &spec.source.registry, &spec.destination.registry) {
        (ImageMode::Direct, Some(s), Some(d)) => {
            Some((image::internal_hosts(s, &m.dim), d.internal_address.clone().unwrap_or_else(|| d.address.clone())))
        }
        _ => None,
    };
    let lookup = &seen.source;
    let mut confinement = None;
    let mut transform = |o: Value| -> Result<Transformed, TransformFailure> {
        let given = ObjectKey::of(&o);
        let out = transforms.transform(m, o, lookup)?;
        if let Err((object, reason)) = confine::check(m, snapshot, &given, &out) {
            confinement = Some((object.clone(), reason.clone()));
            return Err(TransformFailure { object, message: reason });
        }
        Ok(match (out, &rewrite) {
            (Transformed::Keep(mut o, mut extra), Some((from, to))) => {
                image::rewrite_object(&mut o, from, to, &m.namespace_map);
                for e in &mut extra {
                    image::rewrite_object(e, from, to, &m.namespace_map);
                }
                Transformed::Keep(o, extra)
            }
            (other, _) => other,
        })
    };
    // What the namespaces need from outside them (mtcd applies it only in direct mode;
    // Velero brings its own).
    let deps = if m.resources == ResourceMode::Direct {
        dependencies::derive(m, seen, snapshot)
    } else {
        dependencies::Derived::default()
    };
    let planned = desired_with(seen.source.clone(), m, &settings, &deps.volume_names, released, &mut transform);
    let confined = |object: String, reason: String| PlanError::Confinement {
        migration: m.name.clone(),
        plugins: confine::plugin_names(m),
        object,
        reason,
    };
    let (desired, skipped) = match (planned, confinement) {
        (Err(_), Some((object, reason))) => return Err(confined(object, reason)),
        (Err(source), None) => return Err(PlanError::Transform { migration: m.name.clone(), source }),
        (Ok(d), _) => d,
    };
    if !m.transforms.is_empty()
        && let Some(key) = confine::duplicate(&desired)
    {
        return Err(confined(key, "another object of the migration has the same kind, namespace and name".into()));
    }
    let unread: Vec<UnreadType> = seen
        .source_unread
        .iter()
        .map(|u| UnreadType { side: "source", unread: u.clone() })
        .chain(seen.destination_unread.iter().map(|u| UnreadType { side: "destination", unread: u.clone() }))
        .collect();
    let kept = dependencies::kept(m, &seen.source, &desired, &seen.destination);
    let mut desired = desired;
    desired.extend(deps.desired);
    let live: Vec<Value> = seen.destination.iter().chain(&seen.destination_cluster).cloned().collect();
    let unknown = |key: &ObjectKey| unknown_type(key, seen, &m.namespace_map);
    let read = |g: &str, k: &str| seen.source_types.iter().chain(&seen.cluster_types).any(|(a, b)| a == g && b == k);
    // Which ClusterRoles are needed is learnt from the ClusterRoleBindings: without them
    // (left out by the filters) a role copied earlier is not known to be unneeded.
    let prunable = |key: &ObjectKey| {
        read(&key.group, &key.kind)
            && (key.kind != "ClusterRole" || read(dependencies::RBAC_GROUP, "ClusterRoleBinding"))
    };
    let (mut changes, mut withheld) = compare(desired, &live, &m.name, m.prune, &unknown, &prunable);
    for c in deps.changes {
        if unknown(&c.key) {
            withheld.push(c.key);
        } else {
            changes.push(c);
        }
    }
    withheld.sort();
    changes.sort_by(|a, b| (a.rank, &a.key).cmp(&(b.rank, &b.key)));
    let (waits, unsatisfied) = readiness::waits(&changes, &live);
    let mut warnings = snapshot.warnings.clone();
    warnings.extend(seen.warnings.iter().cloned());
    warnings.extend(deps.warnings);
    if m.resources == ResourceMode::Direct {
        warnings.extend(unsatisfied);
    }
    let mut volumes = volumes::plan_volumes(m, &seen.pvcs);
    // A claim whose static PV is copied shares the source's storage: nothing to transfer.
    volumes.transfers.retain(|t| {
        let claim = ObjectKey {
            group: String::new(),
            kind: "PersistentVolumeClaim".into(),
            namespace: Some(t.namespace.clone()),
            name: t.claim.clone(),
        };
        !deps.volume_names.contains_key(&claim)
    });
    let images = seen
        .images
        .iter()
        .map(|f| {
            let mut copy = f.copy.clone();
            let (present, bytes_total, bytes_to_copy, artifacts, artifacts_to_copy, error) = match &f.inspection {
                Ok(i) => {
                    if copy.source.digest.is_none() {
                        copy.source.digest = Some(i.digest.clone());
                        // The tag the image goes by on the destination stays what it was.
                        if copy.destination.tag.is_none() && copy.destination.digest.is_none() {
                            copy.destination.tag = Some("latest".into());
                        }
                    }
                    (i.present, i.bytes_total, i.bytes_to_copy, i.artifacts, i.artifacts_missing, None)
                }
                Err(e) => (false, 0, 0, 0, 0, Some(e.clone())),
            };
            ImagePlan {
                source: f.copy.source.to_string(),
                destination: f.copy.destination.to_string(),
                present,
                bytes_total,
                bytes_to_copy,
                artifacts,
                artifacts_to_copy,
                error,
                copy,
            }
        })
        .collect();
    Ok(MigrationPlan {
        name: m.name.clone(),
        source: snapshot.source_context.clone(),
        destination: snapshot.destination_context.clone(),
        mode: m.resources,
        resources: ResourcePlan {
            changes,
            skipped,
            warnings,
            unread,
            withheld,
            blocked: deps.blocked,
            dependencies: deps.dependencies,
            kept,
            waits,
        },
        volumes,
        images,
        images_skipped: seen.images_skipped.clone(),
        image_options: m.dim.clone(),
        velero: (m.resources == ResourceMode::Velero).then(|| velero::plan_velero(m, released)),
        hooks: m.hooks.clone(),
        source_namespaces: m.namespaces.clone(),
        destination_namespaces: m.namespace_map.values().cloned().collect(),
        namespace_map: m.namespace_map.clone(),
        cut_over: seen.cut_over,
        preflight: Vec::new(),
    })
}

/// Whether objects of `key`'s type in its (destination) namespace were not read completely
/// on the destination, or in the source namespace that maps onto it.
fn unknown_type(key: &ObjectKey, seen: &MigrationSnapshot, map: &IndexMap<String, String>) -> bool {
    let ns = key.namespace.as_deref();
    let source_ns = ns.and_then(|d| map.iter().find(|(_, to)| to.as_str() == d).map(|(from, _)| from.as_str()));
    seen.destination_unread.iter().any(|u| u.covers(&key.group, &key.kind, ns))
        || seen.source_unread.iter().any(|u| u.covers(&key.group, &key.kind, source_ns))
}

#[cfg(test)]
mod tests;
