//! `apply`: execute a plan — images first (workloads that reference them may start as soon
//! as they are applied), then the objects (directly or through Velero), then the volume data.
//! Each failure is the object's, image's or volume's own: the rest still runs, and the report
//! says what failed.

use super::{ApplyReport, Engine, EngineError, ImageReport, MigrationReport, VeleroOutcome};
use crate::actions::{dim, dvm, resources, velero};
use crate::plan::{MigrationPlan, Plan, ResourceChange};
use crate::progress::{Event, ImagePhase};
use crate::snapshot::Snapshot;
use crate::spec::ResourceMode;

impl Engine {
    /// Plans and executes one sync (a stage sync, or with `cutover` the final one with the
    /// workloads released).
    pub async fn apply(&self, cutover: bool) -> Result<ApplyReport, EngineError> {
        let planned = self.plan(cutover).await?;
        refuse(&planned.plan, false)?;
        self.execute(&planned.plan, &planned.snapshot).await
    }

    /// Executes `plan`, computed from `snapshot`. Failures of single objects, images and
    /// volumes are in the report; a destination that stops answering ends the run.
    pub async fn execute(&self, plan: &Plan, snapshot: &Snapshot) -> Result<ApplyReport, EngineError> {
        let mut report = ApplyReport::default();
        for m in &plan.migrations {
            let span = tracing::info_span!("apply", migration = %m.name);
            let r = tracing::Instrument::instrument(self.execute_migration(m, snapshot), span).await?;
            report.migrations.push(r);
        }
        Ok(report)
    }

    async fn execute_migration(&self, m: &MigrationPlan, snapshot: &Snapshot) -> Result<MigrationReport, EngineError> {
        let mut report = MigrationReport { migration: m.name.clone(), ..Default::default() };
        for w in &m.resources.warnings {
            self.events.warn(Some(&m.name), w.clone());
        }
        report.images = self.copy_images(m).await;
        match m.mode {
            ResourceMode::Velero => {
                if let Some(v) = &m.velero {
                    report.velero = Some(match velero::run(&self.source, &self.destination, v).await {
                        Ok(r) => VeleroOutcome::Done(r),
                        Err(e) => VeleroOutcome::Failed { error: e.to_string() },
                    });
                }
            }
            ResourceMode::Direct if m.resources.pending() == 0 => {
                report.resources =
                    Some(resources::ApplyReport { unchanged: m.resources.changes.len(), ..Default::default() });
            }
            ResourceMode::Direct => {
                let progress = |c: &ResourceChange, r: Result<(), &str>| {
                    self.events.emit(Event::Resource {
                        migration: m.name.clone(),
                        action: c.action,
                        object: c.key.to_string(),
                        ok: r.is_ok(),
                        error: r.err().map(String::from),
                    })
                };
                report.resources = Some(
                    resources::apply(&self.destination, &snapshot.destination_catalog, &m.resources.changes, &progress)
                        .await?,
                );
            }
        }
        if !m.volumes.transfers.is_empty() {
            let events = |e: dvm::DvmEvent| {
                self.events.emit(Event::Volume {
                    migration: m.name.clone(),
                    pvc: e.pvc,
                    phase: e.phase,
                    attempt: e.attempt,
                    progress: e.progress,
                    message: e.message,
                })
            };
            match dvm::run(&self.source, &self.destination, &m.volumes, &events).await {
                Ok(results) => report.volumes = results,
                Err(e) => report.volumes_error = Some(e.to_string()),
            }
        }
        Ok(report)
    }

    async fn copy_images(&self, m: &MigrationPlan) -> Vec<ImageReport> {
        let Some((sc, dc)) = self.registries() else { return Vec::new() };
        if m.images.is_empty() {
            return Vec::new();
        }
        let copies: Vec<dim::ImageCopy> = m.images.iter().map(|i| i.copy.clone()).collect();
        let on_event = |e: dim::DimEvent| self.events.emit(image_event(&m.name, e));
        let done = dim::copy_all(sc, dc, &copies, &m.image_options, on_event).await;
        done.images
            .into_iter()
            .map(|r| {
                let stats = r.outcome.as_ref().ok();
                ImageReport {
                    source: r.copy.source.to_string(),
                    destination: r.copy.destination.to_string(),
                    ok: r.outcome.is_ok(),
                    up_to_date: stats.is_some_and(|s| s.up_to_date),
                    bytes_sent: stats.map_or(0, |s| s.bytes_sent),
                    blobs_sent: stats.map_or(0, |s| s.blobs_sent),
                    blobs_skipped: stats.map_or(0, |s| s.blobs_skipped),
                    blobs_mounted: stats.map_or(0, |s| s.blobs_mounted),
                    artifacts_copied: stats.map_or(0, |s| s.artifacts_copied),
                    artifacts_present: stats.map_or(0, |s| s.artifacts_present),
                    seconds: r.elapsed.as_secs_f64(),
                    error: r.outcome.err().map(|e| e.to_string()),
                }
            })
            .collect()
    }
}

/// Safety rule 1: nothing is written while a migrated type could not be read, or while a
/// change cannot be made as planned.
pub(super) fn refuse(plan: &Plan, cutover: bool) -> Result<(), EngineError> {
    let failed: Vec<String> =
        plan.failed_checks(cutover).map(|(m, c)| format!("migration {m}: {}: {}", c.name, c.detail)).collect();
    if !failed.is_empty() {
        return Err(EngineError::Preflight(failed));
    }
    let blocked: Vec<String> = plan.blocked().map(|(m, b)| format!("migration {m}: {b}")).collect();
    if !blocked.is_empty() {
        return Err(EngineError::Blocked(blocked));
    }
    let unread: Vec<String> = plan
        .unread()
        .map(|(m, u)| {
            let ns = u.unread.namespace.as_deref().map(|n| format!(" in {n}")).unwrap_or_default();
            format!("migration {m}: {} {}{ns}: {}", u.side, u.unread.resource, u.unread.reason)
        })
        .collect();
    if unread.is_empty() { Ok(()) } else { Err(EngineError::Unread(unread)) }
}

fn image_event(migration: &str, e: dim::DimEvent) -> Event {
    let migration = migration.to_string();
    match e {
        dim::DimEvent::Started { image, blobs_total, bytes_total, .. } => Event::Image {
            migration,
            image,
            phase: ImagePhase::Started,
            blobs_done: 0,
            blobs_total,
            bytes_done: 0,
            bytes_total,
            bytes_sent: 0,
            throughput: 0.0,
            error: None,
            seconds: 0.0,
        },
        dim::DimEvent::Progress {
            image,
            blobs_done,
            blobs_total,
            bytes_done,
            bytes_total,
            bytes_sent,
            throughput,
            ..
        } => Event::Image {
            migration,
            image,
            phase: ImagePhase::Copying,
            blobs_done,
            blobs_total,
            bytes_done,
            bytes_total,
            bytes_sent,
            throughput,
            error: None,
            seconds: 0.0,
        },
        dim::DimEvent::Finished { image, outcome, elapsed, .. } => {
            let stats = outcome.as_ref().ok();
            Event::Image {
                migration,
                image,
                phase: if outcome.is_ok() { ImagePhase::Done } else { ImagePhase::Failed },
                blobs_done: 0,
                blobs_total: 0,
                bytes_done: 0,
                bytes_total: 0,
                bytes_sent: stats.map_or(0, |s| s.bytes_sent),
                throughput: 0.0,
                error: outcome.err(),
                seconds: elapsed.as_secs_f64(),
            }
        }
    }
}
