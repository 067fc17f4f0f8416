//! What each lifecycle command did, as values the CLI renders (human or JSON) and tests read.

use serde::Serialize;

use crate::actions::{dvm, quiesce, resources, velero};

/// What `apply` (or the final sync of a cutover) did.
#[derive(Debug, Default, Serialize)]
pub struct ApplyReport {
    pub migrations: Vec<MigrationReport>,
}

impl ApplyReport {
    /// Objects, images and volumes that failed (each is in the report with its error).
    pub fn failed(&self) -> usize {
        self.migrations.iter().map(MigrationReport::failed).sum()
    }

    /// Objects written or pruned.
    pub fn changed(&self) -> usize {
        self.migrations.iter().map(MigrationReport::changed).sum()
    }

    /// Image and volume bytes that crossed the wire.
    pub fn bytes_sent(&self) -> u64 {
        self.migrations
            .iter()
            .map(|m| {
                m.images.iter().map(|i| i.bytes_sent).sum::<u64>()
                    + m.volumes.iter().filter(|v| v.ok).map(|v| v.stats.bytes_sent).sum::<u64>()
            })
            .sum()
    }
}

/// One migration's share of an apply.
#[derive(Debug, Default, Serialize)]
pub struct MigrationReport {
    pub migration: String,
    /// Objects out of sync when the run planned (created, updated, replaced, adopted or
    /// pruned by it, or failing to be).
    pub drift: usize,
    pub images: Vec<ImageReport>,
    /// The direct path's object writes (`None` with `resources = "velero"`).
    pub resources: Option<resources::ApplyReport>,
    /// The Velero path's backup and restore.
    pub velero: Option<VeleroOutcome>,
    pub volumes: Vec<dvm::VolumeResult>,
    /// The volume transfer could not be set up at all (no volume was copied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes_error: Option<String>,
}

impl MigrationReport {
    pub fn failed(&self) -> usize {
        self.images.iter().filter(|i| !i.ok).count()
            + self.resources.as_ref().map_or(0, |r| r.failed.len())
            + self.velero.as_ref().map_or(0, VeleroOutcome::failed)
            + self.volumes.iter().filter(|v| !v.ok).count()
            + usize::from(self.volumes_error.is_some())
    }

    pub fn changed(&self) -> usize {
        self.resources.as_ref().map_or(0, |r| r.created + r.updated + r.pruned)
            + self.velero.as_ref().map_or(0, |v| match v {
                VeleroOutcome::Done(r) => r.items_restored as usize,
                VeleroOutcome::Failed { .. } => 0,
            })
    }
}

/// One image copy.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub destination: String,
    pub ok: bool,
    pub up_to_date: bool,
    pub bytes_sent: u64,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    /// Signatures, attestations, SBOMs and referrers copied, and those already there.
    pub artifacts_copied: usize,
    pub artifacts_present: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The Velero path's result.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum VeleroOutcome {
    Done(velero::VeleroReport),
    Failed { error: String },
}

impl VeleroOutcome {
    fn failed(&self) -> usize {
        match self {
            VeleroOutcome::Done(r) => r.errors.len(),
            VeleroOutcome::Failed { .. } => 1,
        }
    }
}

/// What `cutover` did, and how long each part of the downtime took.
#[derive(Debug, Default, Serialize)]
pub struct CutoverReport {
    pub quiesced: quiesce::QuiesceReport,
    /// Quiesce until the source's pods were gone.
    pub quiesce_seconds: f64,
    /// The final sync (objects, images, volume data) with the destination held.
    pub sync_seconds: f64,
    /// Starting the destination's workloads and marking the cutover.
    pub start_seconds: f64,
    /// Until the destination's workloads were available (0 with --no-verify).
    pub verify_seconds: f64,
    /// First write to the source until the destination was available.
    pub downtime_seconds: f64,
    pub sync: ApplyReport,
    /// Destination workloads started, and those verified available.
    pub started: Vec<String>,
    pub verified: Vec<String>,
    /// Hooks that ran, as `phase hook`.
    pub hooks: Vec<String>,
}

/// What `rollback` did.
#[derive(Debug, Default, Serialize)]
pub struct RollbackReport {
    pub source_restored: Vec<String>,
    pub destination_held: Vec<String>,
}

/// Where each migration stands.
#[derive(Debug, Default, Serialize)]
pub struct StatusReport {
    pub migrations: Vec<MigrationStatus>,
}

/// Where one migration stands, from what the clusters hold now.
#[derive(Debug, Default, Serialize)]
pub struct MigrationStatus {
    pub migration: String,
    pub source: String,
    pub destination: String,
    /// Objects on the destination stamped by this migration.
    pub managed_objects: usize,
    /// PVCs on the destination stamped by this migration.
    pub volumes: usize,
    /// The destination records this migration's cutover.
    pub cutover: bool,
    /// When, as recorded (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover_at: Option<String>,
    /// Source workloads mtcd scaled to 0 or suspended (quiesced), as `Kind/ns/name`.
    pub source_quiesced: Vec<String>,
    /// Source workloads running.
    pub source_running: Vec<String>,
    /// `running`, `quiesced` or `partially quiesced`.
    pub source_state: String,
    /// `not migrated`, `held` (workloads at 0 until cutover), `started` (cut over, not all
    /// available), or `verified` (cut over, every workload available).
    pub destination_state: String,
    /// Destination workloads not (yet) available after a cutover.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_unavailable: Vec<String>,
    /// The last run's record (`mtcd-run-<migration>` in the first destination namespace):
    /// last sync, its result and the next sync. `None`: never synced since records exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<super::RunRecord>,
}

/// What `cleanup` removed.
#[derive(Debug, Default, Serialize)]
pub struct CleanupReport {
    pub removed: usize,
}

/// How an `apply --watch` ended.
#[derive(Debug, Default, Serialize)]
pub struct WatchReport {
    pub cycles: u64,
    /// The last cycle before the stop failed.
    pub last_failed: bool,
    /// Intervals skipped because a cycle outlasted them.
    pub missed_intervals: u64,
}
