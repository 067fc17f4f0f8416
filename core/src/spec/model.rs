//! The validated desired state. Every value here has been checked: names are DNS-1123,
//! durations and sizes parsed, mappings consistent, plugin files present.
//!
//! This is the contract between the spec parser and the rest of mtcd; see
//! docs/desired-state.md for the file format that produces it.

use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

/// A whole desired-state file, version 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Where the file was read from; relative plugin paths resolve against its folder.
    pub path: PathBuf,
    pub source: ClusterSpec,
    pub destination: ClusterSpec,
    pub migrations: Vec<Migration>,
    pub sync: SyncOptions,
    pub cutover: CutoverOptions,
}

/// Which side of the migration a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// One cluster: how to reach its API and its internal registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    /// kubeconfig context name.
    pub context: String,
    /// Where `context` is written, so a context missing from the kubeconfig is reported at
    /// its line.
    pub context_at: super::Location,
    /// The internal registry's externally reachable address (`host[:port]`), e.g. the
    /// OpenShift registry's default route. `None`: images cannot be copied to/from it.
    pub registry: Option<Registry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    /// `host[:port]` as reachable from where mtcd runs.
    pub address: String,
    /// The address pods in the cluster use for the same registry (e.g.
    /// `image-registry.openshift-image-registry.svc:5000`); image references under it are
    /// internal. Defaults to `address`.
    pub internal_address: Option<String>,
    pub auth: RegistryAuth,
    pub tls: RegistryTls,
}

/// Credentials by reference: the file never holds a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryAuth {
    Anonymous,
    /// A docker `config.json`; the entry for the registry host is used.
    DockerConfig(PathBuf),
    /// The bearer token of the kubeconfig user of this cluster's context (OpenShift's
    /// registry accepts it).
    KubeconfigToken,
    /// Username and password read from environment variables (named here).
    BasicEnv {
        username_env: String,
        password_env: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum RegistryTls {
    /// System roots (the default).
    Verify,
    /// Trust this PEM bundle in addition to the system roots.
    CaBundle(PathBuf),
    /// Plain HTTP. Only when the file says `insecure = true`, never as a fallback.
    Insecure,
}

/// How a migration moves one kind of content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMode {
    Direct,
    Velero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    Direct,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageMode {
    Direct,
    Skip,
}

/// One `[[migration]]`: a set of namespaces moved together.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// DNS-1123 label; stored in the `mtcd.io/migration` label of everything mtcd creates.
    pub name: String,
    /// Source namespaces, in file order.
    pub namespaces: Vec<String>,
    /// Source namespace → destination namespace, one entry for every migrated namespace
    /// (identity where the file gives no mapping).
    pub namespace_map: IndexMap<String, String>,
    pub resources: ResourceMode,
    pub volumes: VolumeMode,
    pub images: ImageMode,
    pub filter: Filter,
    pub storage_class_map: IndexMap<String, String>,
    pub access_mode_map: IndexMap<String, String>,
    /// Source PVC name → destination PVC name (within the mapped namespace).
    pub pvc_name_map: IndexMap<String, String>,
    /// `false` (default): workloads arrive with 0 replicas and CronJobs suspended until
    /// cutover. `true`: a one-shot copy that starts everything.
    pub start_workloads: bool,
    /// Remove destination objects mtcd manages that no longer exist on the source.
    pub prune: bool,
    /// Allow `kube-*` and `openshift*` namespaces as sources or destinations.
    pub allow_system_namespaces: bool,
    /// Take over destination objects of the same name that mtcd did not create.
    pub adopt: bool,
    /// Kinds (`Kind` or `Kind.group`) replaced — deleted and created again — when a change
    /// touches an immutable field (default: Job).
    pub replace_kinds: Vec<String>,
    /// Kinds (`Kind` or `Kind.group`) copied even when an owner reference says a controller
    /// made them (an operator's credentials Secret): copied without the reference, and
    /// re-linked to the owner's destination UID when the owner is migrated too.
    pub keep_owned: Vec<String>,
    /// What to do with a PVC bound to a statically provisioned PV (hostPath, NFS, local, no
    /// provisioner). `None`: the plan is blocked until the file says.
    pub pv_policy: Option<PvPolicy>,
    pub dvm: DvmOptions,
    pub dim: DimOptions,
    pub velero: VeleroOptions,
    pub transforms: Vec<PluginRef>,
    pub hooks: Vec<HookRef>,
}

/// How a PVC bound to a statically provisioned PV arrives on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvPolicy {
    /// The PV is copied with its `claimRef` pointing at the destination claim, and the
    /// claim keeps its `volumeName`: both clusters mount the same (shared) storage. DVM
    /// skips the claim.
    Copy,
    /// As for any claim: the destination provisions a new volume, DVM copies the data
    /// (`volumes = "direct"`).
    Dvm,
}

/// Which objects a migration takes. Empty `include_kinds` means every kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// `Kind` or `Kind.group` (e.g. `Deployment`, `Route.route.openshift.io`).
    pub include_kinds: Vec<String>,
    pub exclude_kinds: Vec<String>,
    /// A Kubernetes label selector string (`app=shop,tier!=cache`), passed to list calls.
    pub label_selector: Option<String>,
}

/// How the source's PVC data is reached from the source cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// OpenShift Route, TLS passthrough on 443.
    Route,
    /// Ingress with TLS passthrough (nginx `ssl-passthrough`).
    Ingress,
    /// A Service of type LoadBalancer on 443.
    LoadBalancer,
}

/// Direct Volume Migration options. Defaults are in docs/desired-state.md.
#[derive(Debug, Clone, PartialEq)]
pub struct DvmOptions {
    pub endpoint: EndpointKind,
    /// For Route/Ingress: the cluster's apps domain for generated hosts. `None`: let the
    /// router assign one.
    pub subdomain: Option<String>,
    /// PVCs transferred at once.
    pub parallel: usize,
    /// rsync streams per PVC, split by top-level directory (1 = no split).
    pub streams_per_pvc: usize,
    /// rsync `--bwlimit`, bytes per second.
    pub bandwidth_limit: Option<u64>,
    /// Attempts after the first failed rsync.
    pub retries: u32,
    /// A checksum pass after the copy.
    pub verify: bool,
    /// The image with rsync and stunnel used for transfer pods.
    pub transfer_image: String,
    /// Keep owner and group (`--owner --group`; needs root transfer pods). On by default;
    /// off when the pods run as a non-root `run_as_user`.
    pub preserve_ownership: bool,
    /// Keep hard links (`--hard-links`).
    pub hard_links: bool,
    /// Keep extended attributes (`--xattrs`; `security.selinux` is the cluster's, never copied).
    pub xattrs: bool,
    /// Keep POSIX ACLs (`--acls`).
    pub acls: bool,
    /// Compare modification times to the nanosecond (`--modify-window=-1`). rsync's default
    /// compares whole seconds, so a file rewritten at the same size within the second of the
    /// last sync (a database page, during a stage sync) looked unchanged and kept its old
    /// contents. Off only for destination file systems that cannot store nanoseconds (SMB,
    /// FAT), where every re-sync would otherwise re-read every file.
    pub exact_times: bool,
    /// `--compress` (off: compression costs time on fast links and incompressible data).
    pub compress: bool,
    /// How long a client pod waits for the tunnel before failing.
    pub tunnel_timeout: Duration,
    /// The transfer pods' security context. `None`: root with the few capabilities rsync
    /// needs to keep owners, devices and times.
    pub security: TransferSecurity,
    /// Raise a destination PVC's storage request when the source's data (plus headroom)
    /// would not fit; otherwise that is a preflight error.
    pub grow: bool,
    /// Where the data is read from: the live PVC, or a CSI snapshot of it.
    pub source: VolumeSource,
    /// `source` for single PVCs, by `claim` or `namespace/claim`.
    pub pvc_source: IndexMap<String, VolumeSource>,
    /// VolumeSnapshotClass for `source = "snapshot"`; `None`: the class whose driver is the
    /// source storage class's provisioner (the default one when several match).
    pub snapshot_class: Option<String>,
}

/// Who the transfer pods run as.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferSecurity {
    /// `runAsUser`; `None` or `Some(0)`: root.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`.
    pub run_as_group: Option<u32>,
    /// `fsGroup` of the destination (server) pod only: on the source it would make the
    /// kubelet change the group of every file of the volume being read.
    pub fs_group: Option<u32>,
    /// SELinux type of both pods (`spc_t` spares the kubelet relabelling every file).
    pub selinux_type: Option<String>,
}

impl TransferSecurity {
    /// Whether the transfer pods run as root.
    pub fn root(&self) -> bool {
        self.run_as_user.is_none_or(|u| u == 0)
    }
}

/// Where DVM reads a PVC's data from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeSource {
    /// The PVC itself, as the application leaves it.
    Live,
    /// A clone PVC made from a CSI VolumeSnapshot taken just before the copy: a consistent
    /// point in time even while the application writes.
    Snapshot,
}

/// Direct Image Migration options (`[migration.dim]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DimOptions {
    /// Registry hosts (besides the source registry's addresses) whose images count as
    /// internal and are copied.
    pub internal_hosts: Vec<String>,
    /// Images copied at once.
    pub concurrency: usize,
    /// Blobs in flight per image.
    pub blob_concurrency: usize,
    /// How many entries of each ImageStream tag's history to copy (1 = current only).
    pub max_history: usize,
    /// Whether the signatures, attestations, SBOMs and OCI referrers of every copied
    /// manifest are copied too.
    pub signatures: SignatureMode,
    /// When not empty, only tags matching one of these are copied.
    pub include_tags: Vec<TagPattern>,
    /// Tags matching one of these are never copied (wins over `include_tags`).
    pub exclude_tags: Vec<TagPattern>,
    /// What happens to images that only finished pods, finished Jobs or old ReplicaSets
    /// reference.
    pub not_referenced: NotReferenced,
}

impl Default for DimOptions {
    fn default() -> Self {
        DimOptions {
            internal_hosts: Vec::new(),
            concurrency: 4,
            blob_concurrency: 4,
            max_history: 1,
            signatures: SignatureMode::Copy,
            include_tags: Vec::new(),
            exclude_tags: Vec::new(),
            not_referenced: NotReferenced::Skip,
        }
    }
}

impl DimOptions {
    /// Whether the tag filters let `tag` through (`exclude_tags` first, then
    /// `include_tags` when there are any).
    pub fn tag_selected(&self, tag: &str) -> bool {
        !self.exclude_tags.iter().any(|p| p.matches(tag))
            && (self.include_tags.is_empty() || self.include_tags.iter().any(|p| p.matches(tag)))
    }
}

/// `signatures = "copy" | "skip"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMode {
    /// cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags and OCI 1.1 referrers travel with
    /// the image, digests unchanged.
    Copy,
    Skip,
}

/// `not_referenced = "skip" | "copy"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReferenced {
    /// Listed in the plan as not referenced, not copied.
    Skip,
    Copy,
}

/// A tag regex of `include_tags`/`exclude_tags`, matched against the whole tag (as if
/// written `^(?:…)$`).
#[derive(Debug, Clone)]
pub struct TagPattern {
    pattern: String,
    regex: regex::Regex,
}

impl TagPattern {
    /// Compiles `pattern` anchored at both ends.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        // Checked alone first: `a)|(b` is invalid, but valid once wrapped.
        regex::RegexBuilder::new(pattern).size_limit(1 << 20).build()?;
        let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(1 << 20).build()?;
        Ok(TagPattern { pattern: pattern.to_string(), regex })
    }

    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    /// The pattern as written in the file.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl PartialEq for TagPattern {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VeleroOptions {
    /// Namespace Velero runs in, on both clusters.
    pub namespace: String,
    /// BackupStorageLocation shared by both clusters.
    pub storage_location: String,
    pub existing_resource_policy: ExistingResourcePolicy,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingResourcePolicy {
    None,
    Update,
}

/// A WebAssembly component and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRef {
    /// Where the component comes from: a local file or a digest-pinned OCI artifact.
    pub source: PluginSource,
    /// `FILE:LINE:COLUMN` of the `plugin = "…"` value in the desired-state file, so errors
    /// found when the component is loaded point at the line that named it. `None` for
    /// plugins not read from a file (`mtcd plugin test`, tests).
    pub at: Option<String>,
    /// Free-form configuration handed to the plugin's `configure` as JSON.
    pub config: serde_json::Value,
    pub limits: PluginLimits,
    pub grants: PluginGrants,
    pub on_error: OnError,
}

impl PluginRef {
    /// A plugin read from a local `.wasm` file, with no config, no grants, default
    /// transform limits (1 s, 64 MiB) and `on_error = fail`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        PluginRef {
            source: PluginSource::File(path.into()),
            at: None,
            config: serde_json::Value::Object(Default::default()),
            limits: PluginLimits { timeout: Duration::from_secs(1), memory: 64 * 1024 * 1024, fuel: None },
            grants: PluginGrants::default(),
            on_error: OnError::Fail,
        }
    }
}

/// Where a plugin's component is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginSource {
    /// A `.wasm` file (resolved against the desired-state file's folder).
    File(PathBuf),
    /// An OCI artifact pinned by its manifest digest, and how to reach its registry.
    Oci(OciPlugin),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Oci(o) => write!(f, "{}", o.reference),
        }
    }
}

/// `plugin = "oci://…@sha256:…"`: the artifact and the registry settings used to pull it.
#[derive(Debug, Clone, PartialEq)]
pub struct OciPlugin {
    pub reference: super::oci::OciReference,
    /// Credentials and TLS for `reference.registry`: the matching `[[plugins.registry]]`
    /// entry, else the cluster registry with that address, else anonymous HTTPS.
    pub registry: Registry,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginLimits {
    /// Wall-clock deadline per call (default 1 s for transforms, 5 min for hooks).
    pub timeout: Duration,
    /// Linear memory cap in bytes (default 64 MiB).
    pub memory: u64,
    /// Fuel per call; `None` = derived from the timeout only.
    pub fuel: Option<u64>,
}

/// Capabilities beyond pure computation. All off unless the file grants them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginGrants {
    /// Host directories preopened for the plugin: (host path, guest path, writable).
    pub dirs: Vec<DirGrant>,
    pub env: Vec<String>,
    pub clock: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop the plan (default).
    Fail,
    /// Leave the object out and warn.
    SkipObject,
    /// Keep the object as it was before this plugin and warn.
    KeepOriginal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPhase {
    /// Around every sync (apply, each watch cycle, the cutover's final sync).
    PreStage,
    PostStage,
    /// Around reading the source: Velero's Backup; in the direct path, the volume data copy.
    PreBackup,
    PostBackup,
    /// Around writing the destination: Velero's Restore; in the direct path, the objects.
    PreRestore,
    PostRestore,
    /// Before the source is quiesced / after the destination runs.
    PreCutover,
    PostCutover,
}

/// One hook: a phase and what runs there.
#[derive(Debug, Clone, PartialEq)]
pub struct HookRef {
    pub phase: HookPhase,
    pub kind: HookKind,
}

impl HookRef {
    /// The plugin, for `kind = plugin` hooks.
    pub fn plugin(&self) -> Option<&PluginRef> {
        match &self.kind {
            HookKind::Plugin(p) => Some(p),
            _ => None,
        }
    }

    /// How messages name the hook.
    pub fn label(&self) -> String {
        match &self.kind {
            HookKind::Plugin(p) => format!("plugin {}", p.source),
            HookKind::Job(j) => format!("job {} in {}/{}", j.image, j.cluster.as_str(), j.namespace),
            HookKind::Exec(e) => format!(
                "exec {:?} in pods {} of {}/{}",
                e.command.join(" "),
                e.selector,
                e.cluster.as_str(),
                e.namespace
            ),
        }
    }
}

/// What a hook runs.
#[derive(Debug, Clone, PartialEq)]
pub enum HookKind {
    /// A WebAssembly component of the `hook` world.
    Plugin(Box<PluginRef>),
    /// An image and command run as a Job (MTC's MigHook).
    Job(JobHook),
    /// A command in a running container of the pods a selector matches (Velero's exec hook).
    Exec(ExecHook),
}

/// `job = { … }`
#[derive(Debug, Clone, PartialEq)]
pub struct JobHook {
    pub cluster: Side,
    pub namespace: String,
    pub image: String,
    pub command: Vec<String>,
    pub service_account: Option<String>,
    /// `activeDeadlineSeconds`, and how long mtcd waits.
    pub deadline: Duration,
    /// `fail` (default) stops the migration; `ignore` reports and goes on.
    pub on_error: HookOnError,
}

/// `exec = { … }`
#[derive(Debug, Clone, PartialEq)]
pub struct ExecHook {
    pub cluster: Side,
    pub namespace: String,
    /// A label selector; every running pod it matches runs the command.
    pub selector: String,
    /// The container (default: the pod's first).
    pub container: Option<String>,
    pub command: Vec<String>,
    pub timeout: Duration,
    pub on_error: HookOnError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOnError {
    Fail,
    Ignore,
}

/// `apply --watch` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOptions {
    pub interval: Duration,
}

/// `[cutover]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoverOptions {
    /// How long the source's pods may take to be gone after quiesce.
    pub quiesce_timeout: Duration,
    /// How long the destination's workloads may take to become available.
    pub verify_timeout: Duration,
}

impl Default for CutoverOptions {
    fn default() -> Self {
        CutoverOptions { quiesce_timeout: Duration::from_secs(300), verify_timeout: Duration::from_secs(300) }
    }
}
