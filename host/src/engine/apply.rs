//! `apply`: execute a plan — images first (workloads that reference them may start as soon
//! as they are applied), then the objects (directly or through Velero), then the volume data.
//! Each failure is the object's, image's or volume's own: the rest still runs, and the report
//! says what failed.

use super::{ApplyReport, Engine, EngineError, ImageReport, MigrationReport, VeleroOutcome};
use crate::actions::{dim, dvm, resources, velero};
use crate::plan::{MigrationPlan, Plan, ResourceChange};
use crate::progress::{Event, ImagePhase};
use crate::snapshot::Snapshot;
use crate::spec::{HookPhase, ResourceMode};

impl Engine {
    /// Plans and executes one sync (a stage sync, or with `cutover` the final one with the
    /// workloads released).
    ///
    /// One run at a time per migration: the migrations' Leases are taken first (engine::lease),
    /// and every run leaves a record and an Event in the destination (engine::records).
    pub async fn apply(&self, cutover: bool) -> Result<ApplyReport, EngineError> {
        let started = chrono::Utc::now();
        let result = match self.lock().await {
            Ok(locks) => {
                let result = async {
                    let planned = self.plan(cutover).await?;
                    refuse(&planned.plan, false)?;
                    self.sync(&planned.plan, &planned.snapshot).await
                }
                .await;
                let command = match self.next_sync {
                    super::NextSync::None => "apply",
                    super::NextSync::Interval(_) => "apply --watch",
                    super::NextSync::Cron(_) => "scheduled apply",
                };
                self.record(command, (started, chrono::Utc::now()), result.as_ref()).await;
                locks.release().await;
                result
            }
            Err(e) => Err(e),
        };
        if let Some(metrics) = &self.metrics {
            metrics.observe(&self.spec, &result, started);
        }
        result
    }

    /// One sync of a checked plan: `pre-stage` hooks, the execution, `post-stage` hooks —
    /// those also when the execution failed, so what a pre-stage hook froze is thawed.
    pub(super) async fn sync(&self, plan: &Plan, snapshot: &Snapshot) -> Result<ApplyReport, EngineError> {
        self.run_hooks(plan, snapshot, HookPhase::PreStage).await?;
        let report = self.execute(plan, snapshot).await;
        let post = self.run_hooks(plan, snapshot, HookPhase::PostStage).await;
        let report = report?;
        post?;
        Ok(report)
    }

    /// Executes `plan`, computed from `snapshot`. Failures of single objects, images and
    /// volumes are in the report; a destination that stops answering, or a hook that says
    /// no, ends the run.
    pub async fn execute(&self, plan: &Plan, snapshot: &Snapshot) -> Result<ApplyReport, EngineError> {
        let mut report = ApplyReport::default();
        for m in &plan.migrations {
            let span = tracing::info_span!("apply", migration = %m.name);
            let lookup = snapshot.migration(&m.name).map(|s| s.source.as_slice()).unwrap_or_default();
            let r = tracing::Instrument::instrument(self.execute_migration(m, snapshot, lookup), span).await?;
            report.migrations.push(r);
        }
        Ok(report)
    }

    /// Runs `pre` hooks, then `step`, then `post` hooks (also after a failing step, which
    /// wins over a failing post hook).
    async fn around<T>(
        &self,
        m: &MigrationPlan,
        lookup: &[serde_json::Value],
        (pre, post): (HookPhase, HookPhase),
        step: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        self.hooks(m, lookup, pre).await?;
        let out = step.await;
        let after = self.hooks(m, lookup, post).await;
        let out = out?;
        after?;
        Ok(out)
    }

    async fn execute_migration(
        &self,
        m: &MigrationPlan,
        snapshot: &Snapshot,
        lookup: &[serde_json::Value],
    ) -> Result<MigrationReport, EngineError> {
        let drift = m.resources.changes.iter().filter(|c| c.action != crate::plan::Action::Unchanged).count();
        let mut report = MigrationReport { migration: m.name.clone(), drift, ..Default::default() };
        for w in &m.resources.warnings {
            self.events.warn(Some(&m.name), w.clone());
        }
        report.images = self.copy_images(m).await;
        const BACKUP: (HookPhase, HookPhase) = (HookPhase::PreBackup, HookPhase::PostBackup);
        const RESTORE: (HookPhase, HookPhase) = (HookPhase::PreRestore, HookPhase::PostRestore);
        match (m.mode, &m.velero) {
            (ResourceMode::Velero, Some(v)) => {
                let backup = self
                    .around(m, lookup, BACKUP, async { Ok(velero::backup(&self.source, &self.destination, v).await) });
                let outcome = match backup.await? {
                    Err(e) => Err(e),
                    Ok(done) => {
                        self.around(m, lookup, RESTORE, async { Ok(velero::restore(&self.destination, v, done).await) })
                            .await?
                    }
                };
                report.velero = Some(match outcome {
                    Ok(r) => VeleroOutcome::Done(r),
                    Err(e) => VeleroOutcome::Failed { error: e.to_string() },
                });
            }
            _ => {
                let progress = |c: &ResourceChange, r: Result<(), &str>| {
                    self.events.emit(Event::Resource {
                        migration: m.name.clone(),
                        action: c.action,
                        object: c.key.to_string(),
                        ok: r.is_ok(),
                        error: r.err().map(String::from),
                    })
                };
                let waiting = |waiting_on: Vec<String>, seconds: u64| {
                    self.events.emit(Event::ApplyWaiting { migration: m.name.clone(), waiting_on, seconds })
                };
                let catalog = &snapshot.destination_catalog;
                report.resources = Some(
                    self.around(m, lookup, RESTORE, async {
                        if m.resources.changes.iter().all(|c| c.action == crate::plan::Action::Unchanged) {
                            return Ok(resources::ApplyReport {
                                unchanged: m.resources.changes.len(),
                                ..Default::default()
                            });
                        }
                        Ok(resources::apply_ready(
                            &self.destination,
                            catalog,
                            &m.resources.changes,
                            &m.resources.waits,
                            &progress,
                            &waiting,
                        )
                        .await?)
                    })
                    .await?,
                );
            }
        }
        if m.mode == ResourceMode::Direct && m.resources.kept.iter().any(|k| k.relink) {
            let failed = self.relink(m, &snapshot.destination_catalog).await;
            if let Some(r) = report.resources.as_mut() {
                r.failed.extend(failed);
            }
        }
        // The direct path's "backup": reading the source's volume data.
        let step = async {
            if m.volumes.transfers.is_empty() {
                return Ok(None);
            }
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
            Ok(Some(dvm::run(&self.source, &self.destination, &m.volumes, &events, &self.interrupt.subscribe()).await))
        };
        let volumes = match m.mode {
            // Velero's backup hooks ran around its Backup.
            ResourceMode::Velero => step.await?,
            ResourceMode::Direct => self.around(m, lookup, BACKUP, step).await?,
        };
        match volumes {
            Some(Ok(results)) => report.volumes = results,
            Some(Err(e)) => report.volumes_error = Some(e.to_string()),
            None => {}
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
