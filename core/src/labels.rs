//! Every label, annotation and field manager mtcd writes, in one place (docs/resources.md
//! lists them for users). One prefix, `mtcd.io/`, for what is mtcd's own.

/// On every object mtcd writes: who manages it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "mtcd";
/// On every object mtcd writes: which migration.
pub const MIGRATION: &str = "mtcd.io/migration";
/// On migrated objects: hash of the desired object (the next plan's unchanged test).
pub const SOURCE_HASH: &str = "mtcd.io/source-hash";
/// On held destination workloads and quiesced source workloads: replicas to restore.
pub const ORIGINAL_REPLICAS: &str = "mtcd.io/original-replicas";
/// On held / quiesced CronJobs: the suspension to restore.
pub const ORIGINAL_SUSPEND: &str = "mtcd.io/original-suspend";
/// On destination namespaces: when the migration's cutover finished (RFC 3339).
pub const CUTOVER: &str = "mtcd.io/cutover";
/// On transfer objects (pods, services, secrets…): what part of a transfer they are.
pub const COMPONENT: &str = "mtcd.io/component";

/// The field manager of migrated objects (server-side apply).
pub const FIELD_MANAGER: &str = "mtcd";
/// The field manager of quiesce, release and cutover markers: kept apart from
/// [`FIELD_MANAGER`], so re-applying a migrated object never undoes a quiesce.
pub const CUTOVER_FIELD_MANAGER: &str = "mtcd-cutover";
/// The field manager of the owner references mtcd re-links on objects `keep_owned` copies
/// (the owner's destination UID): apart from [`FIELD_MANAGER`], which never sets them.
pub const RELINK_FIELD_MANAGER: &str = "mtcd-relink";
