//! What `observe` saw of both clusters, as plain values: with the desired state, the plan's
//! only input. Every list records whether it was read completely, because a type that could
//! not be read is *unknown*, not empty: the plan never creates, updates or prunes from
//! partial knowledge (docs/resources.md, "Unknown types").

use serde::Serialize;
use serde_json::Value;

use crate::image::{ImageCopy, SkippedImage};

/// Both clusters, for every migration of the file.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub source_context: String,
    pub destination_context: String,
    pub source_catalog: Catalog,
    pub destination_catalog: Catalog,
    /// One per `[[migration]]`, in file order.
    pub migrations: Vec<MigrationSnapshot>,
    /// Things worth saying that change nothing (an aggregated API that is down, …).
    pub warnings: Vec<String>,
    /// Both contexts reach one cluster (a namespace clone): its cluster-scoped objects are
    /// the source's own, so they are never written under the source's names.
    pub same_cluster: bool,
}

impl Snapshot {
    /// The observations of migration `name`.
    pub fn migration(&self, name: &str) -> Option<&MigrationSnapshot> {
        self.migrations.iter().find(|m| m.name == name)
    }
}

/// One served type, at its preferred version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiType {
    pub group: String,
    pub version: String,
    /// `group/version`, or `version` for the core group.
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ApiType {
    /// Whether the type supports every verb of `verbs`.
    pub fn supports(&self, verbs: &[&str]) -> bool {
        verbs.iter().all(|v| self.verbs.iter().any(|x| x == v))
    }

    /// `plural.group` (`deployments.apps`, `configmaps`), the way RBAC and kubectl name it.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// Types that are never copied and not worth listing (they are large and generated).
pub const NEVER_LISTED: &[(&str, &str)] = &[
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("coordination.k8s.io", "Lease"),
    ("", "Binding"),
    ("", "ComponentStatus"),
    ("metrics.k8s.io", "PodMetrics"),
    ("authorization.k8s.io", "LocalSubjectAccessReview"),
];

/// Everything a cluster serves, and the groups whose discovery failed.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub types: Vec<ApiType>,
    /// `group/version`s discovery could not read, with why. Their types are unknown.
    pub unavailable: Vec<(String, String)>,
}

impl Catalog {
    pub fn find(&self, group: &str, kind: &str) -> Option<&ApiType> {
        self.types.iter().find(|t| t.group == group && t.kind == kind)
    }

    /// The namespaced types worth copying: listable, creatable, not generated.
    pub fn copyable(&self) -> Vec<&ApiType> {
        self.types
            .iter()
            .filter(|t| t.namespaced && t.supports(&["list", "get", "create", "patch"]))
            .filter(|t| !NEVER_LISTED.contains(&(t.group.as_str(), t.kind.as_str())))
            .collect()
    }
}

/// A type that could not be read completely in one namespace (or cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    pub group: String,
    pub kind: String,
    /// `plural.group`, as the API server's message names it.
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The API server's answer (403 Forbidden, 503, a timeout, a broken page…).
    pub reason: String,
}

impl Unread {
    /// Whether this unread list covers objects of `group`/`kind` in `namespace` (`kind` `*`:
    /// every type of a group whose discovery failed).
    pub fn covers(&self, group: &str, kind: &str, namespace: Option<&str>) -> bool {
        self.group == group
            && (self.kind == "*" || self.kind == kind)
            && (self.namespace.is_none() || self.namespace.as_deref() == namespace)
    }
}

/// What observe saw for one migration.
#[derive(Debug, Clone, Default)]
pub struct MigrationSnapshot {
    pub name: String,
    /// The source namespaces, the CRDs of custom types in use, and every object of the
    /// copyable types in the source namespaces (filters applied).
    pub source: Vec<Value>,
    /// Source lists that failed. Nothing of these types is planned.
    pub source_unread: Vec<Unread>,
    /// `(group, kind)` of every type listed on the source (the filters applied). Objects of
    /// other types on the destination are never pruned: leaving a kind out of a migration
    /// does not delete what an earlier apply copied.
    pub source_types: Vec<(String, String)>,
    /// The source's PVCs in the migrated namespaces (read whatever the kind filters say,
    /// when volumes move).
    pub pvcs: Vec<Value>,
    /// The destination namespaces, the CRDs the source brings, and every object of the
    /// copyable types in the destination namespaces.
    pub destination: Vec<Value>,
    /// Destination lists that failed: nothing of these types is created, updated or pruned.
    pub destination_unread: Vec<Unread>,
    /// The cluster-scoped objects a namespace may depend on, as the source has them: every
    /// ClusterRoleBinding, ClusterRole and SecurityContextConstraints (when served), and the
    /// PersistentVolumes (when a migrated claim is bound). A kind the filters leave out, or
    /// a `resources = "velero"` migration, reads none (plan::dependencies).
    pub source_cluster: Vec<Value>,
    /// The destination's objects of the same kinds (what exists under the same names, and
    /// what this migration stamped, for prunes).
    pub destination_cluster: Vec<Value>,
    /// `(group, kind)` of the cluster-scoped kinds read on the source (their reads, when
    /// they failed, are in `source_unread` / `destination_unread` without a namespace).
    pub cluster_types: Vec<(String, String)>,
    /// The destination records this migration's cutover.
    pub cut_over: bool,
    /// Images of the source's internal registry and what the registries said of them.
    pub images: Vec<ImageFacts>,
    /// Internal images found but not copied (tag filters, not referenced), with why.
    pub images_skipped: Vec<SkippedImage>,
    pub warnings: Vec<String>,
}

/// One image copy and what inspecting both registries found.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub copy: ImageCopy,
    /// Sizes and presence, or why the registries could not tell.
    pub inspection: Result<Inspection, String>,
}

/// What `mtcd plan` shows for an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// Digest of the source's top manifest.
    pub digest: String,
    /// The destination already has this digest under the tag: nothing to copy.
    pub present: bool,
    pub blobs_total: usize,
    pub bytes_total: u64,
    /// Blobs (and their bytes) the destination repository does not have yet. A blob held
    /// by another destination repository counts here, although the copy will mount it.
    pub blobs_missing: usize,
    pub bytes_to_copy: u64,
    /// Signatures, attestations, SBOMs and OCI referrers of the image on the source
    /// (`signatures = "copy"`), and how many of them the destination lacks.
    pub artifacts: usize,
    pub artifacts_missing: usize,
}
