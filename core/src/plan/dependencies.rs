//! What a namespace needs from outside it (docs/resources.md, "Cluster-scoped
//! dependencies"): the cluster RBAC and SecurityContextConstraints of its service accounts,
//! the statically provisioned PersistentVolumes of its claims, and the owned objects the
//! migration keeps. Derived purely from the snapshot; the objects mtcd writes go through the
//! same cleaning, mapping, stamp and comparison as the namespaced ones, so drift, adopt and
//! prunes apply to them too. They are mtcd's own derivations, not plugin output: the plan's
//! confinement of transforms does not concern them.
//!
//! What mtcd never does here: copy a built-in ClusterRole, overwrite a ClusterRoleBinding
//! that also names subjects of other namespaces, stamp or prune an SCC it did not create (it
//! only gains the migrated accounts), or write a cluster-scoped object under the source's
//! name when both contexts reach one cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Action, ObjectKey, ResourceChange, drift, hash, order};
use crate::snapshot::{MigrationSnapshot, Snapshot};
use crate::spec::{Migration, PvPolicy, VolumeMode};
use crate::transform::{mapping, object, rules};

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub const SCC_GROUP: &str = "security.openshift.io";
pub const SCC_KIND: &str = "SecurityContextConstraints";

/// The cluster-scoped kinds observe reads for a direct migration, as `(group, kind)`.
pub const CLUSTER_KINDS: &[(&str, &str)] =
    &[(RBAC_GROUP, "ClusterRoleBinding"), (RBAC_GROUP, "ClusterRole"), (SCC_GROUP, SCC_KIND), ("", "PersistentVolume")];

/// The annotation the PV controller (or an external provisioner) puts on every volume it
/// provisions; a PV without it was made by hand.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// One cluster-scoped object the migrated namespaces need, and what the plan does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// The object as the source names it.
    #[serde(flatten)]
    pub key: ObjectKey,
    /// Why the migrated namespaces need it (`binds ServiceAccount shop/web`).
    pub needed_by: String,
    /// What the plan does with it.
    pub outcome: String,
}

/// An owned object `keep_owned` copies, and its owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The object on the destination.
    #[serde(flatten)]
    pub key: ObjectKey,
    #[serde(skip)]
    pub api_version: String,
    pub owners: Vec<KeptOwner>,
    /// At least one owner is migrated too: after apply, the object gets an owner reference
    /// with that owner's destination UID.
    pub relink: bool,
    /// The destination already carries those references.
    pub linked: bool,
}

impl Kept {
    /// A re-link is still to be made.
    pub fn pending(&self) -> bool {
        self.relink && !self.linked
    }
}

/// One owner reference of a kept object, as the source has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptOwner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The owner is among the migrated objects (it exists on the destination after apply).
    pub migrated: bool,
    #[serde(skip)]
    pub controller: Option<bool>,
    #[serde(skip)]
    pub block_owner_deletion: Option<bool>,
}

/// Everything derived for one migration.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    /// Cluster-scoped objects to compare with the destination (cleaned, mapped, stamped).
    pub desired: Vec<Value>,
    /// Changes made outside the comparison: an SCC mtcd did not create only gains users.
    pub changes: Vec<ResourceChange>,
    pub dependencies: Vec<Dependency>,
    pub warnings: Vec<String>,
    pub blocked: Vec<String>,
    /// Source claim → PV name: claims that keep their `volumeName` (`pv_policy = "copy"`).
    pub volume_names: HashMap<ObjectKey, String>,
}

/// The cluster-scoped dependencies of `m`'s namespaces.
pub fn derive(m: &Migration, seen: &MigrationSnapshot, snapshot: &Snapshot) -> Derived {
    let mut d = Deriving {
        m,
        seen,
        same_cluster: snapshot.same_cluster,
        destination_serves_scc: snapshot.destination_catalog.find(SCC_GROUP, SCC_KIND).is_some(),
        source: seen.source_cluster.iter().map(|o| (ObjectKey::of(o), o)).collect(),
        live: seen.destination_cluster.iter().map(|o| (ObjectKey::of(o), o)).collect(),
        out: Derived::default(),
    };
    let roles = d.bindings();
    d.cluster_roles(&roles);
    d.sccs(&roles);
    d.volumes();
    d.out
}

fn key(group: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey { group: group.into(), kind: kind.into(), namespace: None, name: name.into() }
}

/// `system:serviceaccount:<ns>:<sa>` → `(ns, sa)`.
fn account_user(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

/// `system:serviceaccounts:<ns>` → `ns`.
fn accounts_group(group: &str) -> Option<&str> {
    group.strip_prefix("system:serviceaccounts:")
}

/// The migrated namespace an RBAC subject belongs to: a ServiceAccount there, the group of
/// all its accounts, or the user name of one account.
pub fn subject_namespace<'s>(s: &'s Value, namespaces: &[String]) -> Option<&'s str> {
    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
    let ns = match s.get("kind").and_then(Value::as_str) {
        Some("ServiceAccount") => s.get("namespace").and_then(Value::as_str),
        Some("Group") => accounts_group(name),
        Some("User") => account_user(name).map(|(ns, _)| ns),
        _ => None,
    }?;
    namespaces.iter().any(|n| n == ns).then_some(ns)
}

fn show_subject(s: &Value) -> String {
    let kind = s.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
    match s.get("namespace").and_then(Value::as_str) {
        Some(ns) if kind == "ServiceAccount" => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// ClusterRoles every cluster has: never copied (a binding to one is).
pub fn builtin_cluster_role(name: &str, obj: Option<&Value>) -> bool {
    name.starts_with("system:")
        || matches!(name, "cluster-admin" | "admin" | "edit" | "view")
        || obj.is_some_and(|o| object::label(o, "kubernetes.io/bootstrapping") == Some("rbac-defaults"))
}

/// The binding mtcd writes for the migrated subjects of a binding it may not overwrite.
pub fn own_binding_name(migration: &str, name: &str) -> String {
    let n = format!("mtcd:{migration}:{name}");
    if n.len() <= 253 { n } else { format!("mtcd:{migration}:{}", hash::hash(&json!(name))) }
}

fn strings(obj: &Value, field: &str) -> Vec<String> {
    obj.get(field).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

struct Deriving<'a> {
    m: &'a Migration,
    seen: &'a MigrationSnapshot,
    same_cluster: bool,
    destination_serves_scc: bool,
    source: HashMap<ObjectKey, &'a Value>,
    live: HashMap<ObjectKey, &'a Value>,
    out: Derived,
}

impl<'a> Deriving<'a> {
    fn read(&self, group: &str, kind: &str) -> bool {
        self.seen.cluster_types.iter().any(|(g, k)| g == group && k == kind)
    }

    fn note(&mut self, key: ObjectKey, needed_by: impl Into<String>, outcome: impl Into<String>) {
        self.out.dependencies.push(Dependency { key, needed_by: needed_by.into(), outcome: outcome.into() });
    }

    fn sorted(&self, group: &str, kind: &str) -> Vec<&'a Value> {
        let seen: &'a MigrationSnapshot = self.seen;
        let mut v: Vec<&'a Value> =
            seen.source_cluster.iter().filter(|o| object::group(o) == group && object::kind(o) == kind).collect();
        v.sort_by(|a, b| object::name(a).cmp(object::name(b)));
        v
    }

    fn push(&mut self, mut obj: Value) {
        hash::stamp(&mut obj, &self.m.name);
        self.out.desired.push(obj);
    }

    /// ClusterRoleBindings naming migrated subjects. Returns the ClusterRoles the migrated
    /// namespaces reference (bindings and RoleBindings), with what references them.
    fn bindings(&mut self) -> BTreeMap<String, Vec<String>> {
        let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let namespaces = &self.m.namespaces;
        if self.read(RBAC_GROUP, "ClusterRoleBinding") {
            for crb in self.sorted(RBAC_GROUP, "ClusterRoleBinding") {
                let name = object::name(crb);
                let subjects = crb.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
                let migrated: Vec<Value> =
                    subjects.iter().filter(|s| subject_namespace(s, namespaces).is_some()).cloned().collect();
                if migrated.is_empty() {
                    continue;
                }
                let others = subjects.len() - migrated.len();
                let mut obj = crb.clone();
                rules::clean(&mut obj, &Default::default());
                mapping::map_namespace(&mut obj, &self.m.namespace_map);
                // A destination binding of that name that names other subjects is somebody
                // else's grant: never overwritten either (adopting it would drop them).
                let foreign = self.live.get(&key(RBAC_GROUP, "ClusterRoleBinding", name)).is_some_and(|l| {
                    !hash::is_managed_by(l, &self.m.name)
                        && l.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|s| {
                            !obj.get("subjects").and_then(Value::as_array).into_iter().flatten().any(|m| m == s)
                        })
                });
                let outcome = if others == 0 && !self.same_cluster && !foreign {
                    "copied, subjects mapped to the destination namespaces".to_string()
                } else {
                    let own = own_binding_name(&self.m.name, name);
                    obj = crb.clone();
                    rules::clean(&mut obj, &Default::default());
                    obj["metadata"]["name"] = json!(own);
                    obj["subjects"] = Value::Array(migrated.clone());
                    mapping::map_namespace(&mut obj, &self.m.namespace_map);
                    if others > 0 {
                        format!(
                            "shared with {others} subject(s) of other namespaces: mtcd writes its own ClusterRoleBinding {own} with the migrated subjects only; the destination's {name} (if any) is not touched"
                        )
                    } else if self.same_cluster {
                        format!(
                            "source and destination are one cluster: mtcd writes its own ClusterRoleBinding {own} with the mapped subjects; {name} is not touched"
                        )
                    } else {
                        format!(
                            "the destination's {name} names other subjects: mtcd writes its own ClusterRoleBinding {own} with the mapped subjects; {name} is not touched"
                        )
                    }
                };
                let needed_by = format!("binds {}", migrated.iter().map(show_subject).collect::<Vec<_>>().join(", "));
                if crb.pointer("/roleRef/kind").and_then(Value::as_str) == Some("ClusterRole")
                    && let Some(role) = crb.pointer("/roleRef/name").and_then(Value::as_str)
                {
                    roles.entry(role.to_string()).or_default().push(format!("ClusterRoleBinding {name}"));
                }
                self.push(obj);
                self.note(key(RBAC_GROUP, "ClusterRoleBinding", name), needed_by, outcome);
            }
        }
        for rb in &self.seen.source {
            let ns = object::namespace(rb).unwrap_or_default();
            if object::group(rb) != RBAC_GROUP
                || object::kind(rb) != "RoleBinding"
                || !namespaces.iter().any(|n| n == ns)
                || rules::skip_reason(rb).is_some()
                || rb.pointer("/roleRef/kind").and_then(Value::as_str) != Some("ClusterRole")
            {
                continue;
            }
            if let Some(role) = rb.pointer("/roleRef/name").and_then(Value::as_str) {
                roles.entry(role.to_string()).or_default().push(format!("RoleBinding {ns}/{}", object::name(rb)));
            }
        }
        roles
    }

    /// The ClusterRoles the migrated bindings reference: copied unless built in, or unless
    /// the destination has one of that name that this migration did not create (used as it
    /// is; the plan says whether its rules differ).
    fn cluster_roles(&mut self, roles: &BTreeMap<String, Vec<String>>) {
        if !self.read(RBAC_GROUP, "ClusterRole") {
            return;
        }
        for (name, by) in roles {
            let k = key(RBAC_GROUP, "ClusterRole", name);
            let needed_by = format!("referenced by {}", by.join(", "));
            let src = self.source.get(&k).copied();
            if builtin_cluster_role(name, src) {
                self.note(k, needed_by, "built in: never copied (every cluster has it)");
                continue;
            }
            let Some(src) = src else {
                self.out.warnings.push(format!(
                    "ClusterRole {name} ({needed_by}) does not exist on the source: the bindings to it grant nothing"
                ));
                self.note(k, needed_by, "missing on the source: not copied");
                continue;
            };
            let mut obj = src.clone();
            rules::clean(&mut obj, &Default::default());
            // An aggregated role's rules are filled in by the destination's controller.
            if obj.get("aggregationRule").is_some()
                && let Some(o) = obj.as_object_mut()
            {
                o.remove("rules");
            }
            match self.live.get(&k) {
                Some(l) if !hash::is_managed_by(l, &self.m.name) => {
                    let pick =
                        |o: &Value| json!({"rules": o.get("rules"), "aggregationRule": o.get("aggregationRule")});
                    let diff = drift::changes(&pick(&obj), &pick(l), false);
                    let outcome = if diff.is_empty() {
                        "exists on the destination with the same rules: used as it is".to_string()
                    } else {
                        self.out.warnings.push(format!(
                            "ClusterRole {name} exists on the destination with other rules than on the source ({}); mtcd uses it as it is",
                            diff.join("; ")
                        ));
                        format!(
                            "exists on the destination, not created by this migration: used as it is; differs: {}",
                            diff.join("; ")
                        )
                    };
                    self.note(k, needed_by, outcome);
                }
                _ => {
                    self.push(obj);
                    self.note(k, needed_by, "copied");
                }
            }
        }
    }

    /// SCCs whose users or groups name migrated accounts, and SCCs the migrated roles may
    /// `use`.
    fn sccs(&mut self, roles: &BTreeMap<String, Vec<String>>) {
        if !self.read(SCC_GROUP, SCC_KIND) {
            return;
        }
        let m: &'a Migration = self.m;
        let map = &m.namespace_map;
        let mut handled = BTreeSet::new();
        for scc in self.sorted(SCC_GROUP, SCC_KIND) {
            let name = object::name(scc).to_string();
            let in_scope = |ns: &str| m.namespaces.iter().any(|n| n == ns);
            let users: Vec<String> = strings(scc, "users")
                .into_iter()
                .filter(|u| account_user(u).is_some_and(|(ns, _)| in_scope(ns)))
                .collect();
            let groups: Vec<String> =
                strings(scc, "groups").into_iter().filter(|g| accounts_group(g).is_some_and(in_scope)).collect();
            if users.is_empty() && groups.is_empty() {
                continue;
            }
            handled.insert(name.clone());
            let mapped_users: Vec<String> = users
                .iter()
                .map(|u| {
                    let (ns, sa) = account_user(u).unwrap_or_default();
                    format!("system:serviceaccount:{}:{sa}", map.get(ns).map_or(ns, String::as_str))
                })
                .collect();
            let mapped_groups: Vec<String> = groups
                .iter()
                .map(|g| {
                    let ns = accounts_group(g).unwrap_or_default();
                    format!("system:serviceaccounts:{}", map.get(ns).map_or(ns, String::as_str))
                })
                .collect();
            let needed_by = format!("names {}", users.iter().chain(&groups).cloned().collect::<Vec<_>>().join(", "));
            self.scc(scc, needed_by, &mapped_users, &mapped_groups);
        }
        // SCCs reached through RBAC (`use` on securitycontextconstraints, as OpenShift's
        // `system:openshift:scc:<name>` roles grant): they must exist on the destination.
        let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for role in roles.keys() {
            if let Some(r) = self.source.get(&key(RBAC_GROUP, "ClusterRole", role)) {
                for scc in scc_uses(r) {
                    uses.entry(scc).or_default().push(format!("ClusterRole {role}"));
                }
            }
        }
        for r in self.seen.source.iter().filter(|o| object::group(o) == RBAC_GROUP && object::kind(o) == "Role") {
            for scc in scc_uses(r) {
                uses.entry(scc).or_default().push(format!(
                    "Role {}/{}",
                    object::namespace(r).unwrap_or_default(),
                    object::name(r)
                ));
            }
        }
        for (name, by) in uses {
            if handled.contains(&name) {
                continue;
            }
            let k = key(SCC_GROUP, SCC_KIND, &name);
            let needed_by = format!("may be used through {}", by.join(", "));
            match (self.source.get(&k).copied(), self.live.get(&k)) {
                (_, Some(l)) if !hash::is_managed_by(l, &self.m.name) => {
                    self.note(k, needed_by, "exists on the destination: used as it is")
                }
                (Some(src), _) => self.scc(src, needed_by, &[], &[]),
                (None, _) => {
                    self.out
                        .warnings
                        .push(format!("SecurityContextConstraints {name} ({needed_by}) does not exist on the source"));
                    self.note(k, needed_by, "missing on the source: not copied");
                }
            }
        }
    }

    /// One SCC the destination must have, with `users` and `groups` (destination names)
    /// among those it admits.
    fn scc(&mut self, src: &Value, needed_by: String, users: &[String], groups: &[String]) {
        let name = object::name(src).to_string();
        let k = key(SCC_GROUP, SCC_KIND, &name);
        if !self.destination_serves_scc {
            self.out.warnings.push(format!(
                "SecurityContextConstraints {name} ({needed_by}): the destination does not serve security.openshift.io/v1; not copied"
            ));
            return self.note(k, needed_by, "the destination does not serve SCCs: not copied");
        }
        let shown = users.iter().chain(groups).cloned().collect::<Vec<_>>().join(", ");
        match self.live.get(&k).copied() {
            // Not mtcd's: it only gains the mapped accounts (the lists are atomic under
            // server-side apply, so the union of what is there and the new names is sent).
            Some(l) if !hash::is_managed_by(l, &self.m.name) => {
                let change = gain(l, users, groups);
                let outcome = if change.action == Action::Unchanged {
                    format!("exists on the destination and already admits {shown}")
                } else {
                    format!("exists on the destination (not mtcd's: never stamped or pruned): gains {shown}")
                };
                self.out.changes.push(change);
                self.note(k, needed_by, outcome);
            }
            live => {
                let mut obj = src.clone();
                rules::clean(&mut obj, &Default::default());
                // Accounts of other namespaces are not the migration's to grant; names this
                // migration's earlier applies did not add (another migration's, a person's)
                // stay.
                let ours = |n: &str| {
                    let ns = account_user(n).map(|(ns, _)| ns).or_else(|| accounts_group(n));
                    ns.is_some_and(|ns| self.m.namespace_map.values().any(|d| d == ns))
                };
                for (field, add) in [("users", users), ("groups", groups)] {
                    let mut list: Vec<String> =
                        live.map(|l| strings(l, field)).unwrap_or_default().into_iter().filter(|n| !ours(n)).collect();
                    list.extend(add.iter().filter(|a| !list.contains(a)).cloned().collect::<Vec<_>>());
                    obj[field] = json!(list);
                }
                let outcome = if live.is_some() {
                    format!("created by this migration; admits {shown}")
                } else if shown.is_empty() {
                    "created on the destination".to_string()
                } else {
                    format!("created on the destination, admitting {shown} (not the source's other users)")
                };
                self.push(obj);
                self.note(k, needed_by, outcome);
            }
        }
    }

    /// Claims bound to statically provisioned PVs: `pv_policy` decides.
    fn volumes(&mut self) {
        if !self.read("", "PersistentVolume") {
            return;
        }
        let mut claims: BTreeMap<ObjectKey, &Value> = BTreeMap::new();
        for pvc in self.seen.source.iter().chain(&self.seen.pvcs) {
            let ns = object::namespace(pvc).unwrap_or_default();
            if object::kind(pvc) == "PersistentVolumeClaim"
                && object::group(pvc).is_empty()
                && self.m.namespaces.iter().any(|n| n == ns)
                && pvc.pointer("/spec/volumeName").and_then(Value::as_str).is_some_and(|v| !v.is_empty())
            {
                claims.insert(ObjectKey::of(pvc), pvc);
            }
        }
        for (claim, pvc) in claims {
            let pv_name = pvc.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or_default();
            let k = key("", "PersistentVolume", pv_name);
            let Some(pv) = self.source.get(&k).copied() else { continue };
            if object::annotation(pv, PROVISIONED_BY).is_some() {
                continue;
            }
            let how = volume_source(pv);
            let ns = claim.namespace.clone().unwrap_or_default();
            let to_ns = self.m.namespace_map.get(&ns).cloned().unwrap_or_else(|| ns.clone());
            let to_claim = self.m.pvc_name_map.get(&claim.name).cloned().unwrap_or_else(|| claim.name.clone());
            let shown = format!("PersistentVolumeClaim/{ns}/{}", claim.name);
            let needed_by = format!("bound to {shown} (statically provisioned, {how})");
            match self.m.pv_policy {
                None => {
                    self.out.blocked.push(format!(
                        "{shown} is bound to PersistentVolume/{pv_name}, which no provisioner made ({how}); say in migration {:?} what it becomes: `pv_policy = \"copy\"` copies the PV with its claimRef pointing at {to_ns}/{to_claim} (both clusters then use the same storage; DVM skips the claim; for shared storage, with `volumes = \"skip\"`), or `pv_policy = \"dvm\"` gives the claim a new volume the destination provisions (its data copied by DVM with `volumes = \"direct\"`)",
                        self.m.name
                    ));
                    self.note(k, needed_by, "blocked: set pv_policy = \"copy\" or \"dvm\"");
                }
                Some(PvPolicy::Copy) if self.same_cluster => {
                    self.out.blocked.push(format!(
                        "{shown}: source and destination are one cluster, so copying PersistentVolume/{pv_name} would take it from the source's claim; use `pv_policy = \"dvm\"` in migration {:?}",
                        self.m.name
                    ));
                    self.note(k, needed_by, "blocked: one cluster, the PV cannot be copied");
                }
                Some(PvPolicy::Copy) => {
                    let mut obj = pv.clone();
                    rules::clean(&mut obj, &Default::default());
                    let spec = object::map_at(&mut obj, &["spec"]);
                    spec.insert(
                        "claimRef".into(),
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": to_ns, "name": to_claim}),
                    );
                    // The storage is shared with the source: deleting the destination's claim
                    // must never delete the data.
                    let policy = spec.get("persistentVolumeReclaimPolicy").and_then(Value::as_str).unwrap_or("Retain");
                    let retain = if policy == "Retain" {
                        String::new()
                    } else {
                        format!(", reclaim policy {policy} → Retain (the storage is the source's too)")
                    };
                    spec.insert("persistentVolumeReclaimPolicy".into(), json!("Retain"));
                    if let Some(to) = spec
                        .get("storageClassName")
                        .and_then(Value::as_str)
                        .and_then(|c| self.m.storage_class_map.get(c))
                    {
                        spec.insert("storageClassName".into(), json!(to));
                    }
                    if spec.contains_key("local") && spec.contains_key("nodeAffinity") {
                        self.out.warnings.push(format!(
                            "PersistentVolume/{pv_name} is a local volume whose nodeAffinity names the source's nodes: the destination can only mount it on nodes of the same names"
                        ));
                    }
                    let dvm = if self.m.volumes == VolumeMode::Direct { "; DVM does not copy the claim" } else { "" };
                    self.out.volume_names.insert(claim.clone(), pv_name.to_string());
                    self.push(obj);
                    self.note(k, needed_by, format!("copied, claimRef → {to_ns}/{to_claim}{retain}{dvm}"));
                }
                Some(PvPolicy::Dvm) => {
                    if self.m.volumes == VolumeMode::Skip {
                        self.out.warnings.push(format!(
                            "{shown}: pv_policy = \"dvm\" with volumes = \"skip\": the destination claim gets a new, empty volume"
                        ));
                    }
                    self.note(
                        k,
                        needed_by,
                        "not copied: the destination provisions a new volume for the claim (pv_policy = \"dvm\")",
                    );
                }
            }
        }
    }
}

/// The kind of storage behind a PV (`nfs`, `hostPath`, `local`, `csi`…).
fn volume_source(pv: &Value) -> String {
    const NOT_SOURCES: &[&str] = &[
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "volumeAttributesClassName",
    ];
    pv.get("spec")
        .and_then(Value::as_object)
        .and_then(|s| s.keys().find(|k| !NOT_SOURCES.contains(&k.as_str())).cloned())
        .unwrap_or_else(|| "no volume source".into())
}

/// SCC names a role's rules grant `use` of.
fn scc_uses(role: &Value) -> Vec<String> {
    let has = |r: &Value, field: &str, want: &str| {
        r.get(field).and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == want || v == "*"))
    };
    role.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| {
            has(r, "apiGroups", SCC_GROUP)
                && has(r, "resources", "securitycontextconstraints")
                && has(r, "verbs", "use")
        })
        .flat_map(|r| strings(r, "resourceNames"))
        .collect()
}

/// An SCC mtcd did not create, with `users` and `groups` added: the union of what it holds
/// and the new names, in that order (both lists, always: under server-side apply a list mtcd
/// applied once and then left out would be removed).
fn gain(live: &Value, users: &[String], groups: &[String]) -> ResourceChange {
    let name = object::name(live);
    let mut diff = Vec::new();
    let mut obj = json!({"apiVersion": object::api_version(live), "kind": SCC_KIND, "metadata": {"name": name}});
    for (field, add) in [("users", users), ("groups", groups)] {
        let mut list = strings(live, field);
        for a in add {
            if !list.contains(a) {
                diff.push(format!("{field}: + {a}"));
                list.push(a.clone());
            }
        }
        obj[field] = json!(list);
    }
    ResourceChange {
        action: if diff.is_empty() { Action::Unchanged } else { Action::Update },
        api_version: object::api_version(live).to_string(),
        key: key(SCC_GROUP, SCC_KIND, name),
        diff,
        object: obj,
        rank: order::rank(SCC_GROUP, SCC_KIND),
    }
}

/// The owned objects `keep_owned` copies (`desired`: the migration's namespaced desired
/// objects; `live`: the destination's), with their owners and whether they are linked.
pub fn kept(m: &Migration, source: &[Value], desired: &[Value], live: &[Value]) -> Vec<Kept> {
    if m.keep_owned.is_empty() {
        return Vec::new();
    }
    let wanted: BTreeSet<ObjectKey> = desired.iter().map(ObjectKey::of).collect();
    let live: HashMap<ObjectKey, &Value> = live.iter().map(|o| (ObjectKey::of(o), o)).collect();
    let mapped = |ns: Option<&str>| ns.map(|ns| m.namespace_map.get(ns).cloned().unwrap_or_else(|| ns.to_string()));
    let mut out = Vec::new();
    for obj in source {
        if !rules::is_owned(obj) || rules::skip_reason_keeping(obj, &m.keep_owned).is_some() {
            continue;
        }
        let key = ObjectKey { namespace: mapped(object::namespace(obj)), ..ObjectKey::of(obj) };
        if !wanted.contains(&key) {
            continue;
        }
        let refs = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        let owners: Vec<KeptOwner> = refs
            .iter()
            .map(|r| {
                let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
                let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let owner = owner_key(&api_version, &kind, &name, key.namespace.as_deref());
                KeptOwner {
                    migrated: wanted.contains(&owner),
                    controller: r.get("controller").and_then(Value::as_bool),
                    block_owner_deletion: r.get("blockOwnerDeletion").and_then(Value::as_bool),
                    api_version,
                    kind,
                    name,
                }
            })
            .collect();
        let relink = owners.iter().any(|o| o.migrated);
        let linked = live.get(&key).is_some_and(|l| {
            let refs = l.pointer("/metadata/ownerReferences").and_then(Value::as_array);
            owners.iter().filter(|o| o.migrated).all(|o| {
                let owner = owner_key(&o.api_version, &o.kind, &o.name, key.namespace.as_deref());
                let uid = live.get(&owner).and_then(|x| x.pointer("/metadata/uid")).and_then(Value::as_str);
                uid.is_some_and(|uid| {
                    refs.into_iter()
                        .flatten()
                        .any(|r| r["kind"] == o.kind.as_str() && r["name"] == o.name.as_str() && r["uid"] == uid)
                })
            })
        });
        out.push(Kept {
            api_version: object::api_version(obj).to_string(),
            key,
            owners,
            relink,
            linked: relink && linked,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The key of an owner named by an owner reference of an object in `namespace` (owners are
/// in the same namespace, as the garbage collector requires).
pub fn owner_key(api_version: &str, kind: &str, name: &str, namespace: Option<&str>) -> ObjectKey {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    ObjectKey { group: group.into(), kind: kind.into(), namespace: namespace.map(String::from), name: name.into() }
}

#[cfg(test)]
#[path = "dependencies_tests.rs"]
mod tests;
