//! `cutover` and `rollback`. Each step is idempotent, so an interrupted run is finished by
//! running it again.

use std::future::Future;
use std::time::Instant;

use super::{CutoverReport, Engine, EngineError, RollbackReport};
use crate::actions::quiesce;
use crate::plan::Plan;
use crate::progress::Event;
use crate::snapshot::Snapshot;
use crate::spec::HookPhase;

/// What the command line says about a cutover.
#[derive(Debug, Clone, Copy, Default)]
pub struct CutoverFlags {
    /// After a failure, leave the source quiesced instead of restoring it.
    pub keep_source_quiesced: bool,
    /// Do not wait for the destination's workloads to become available.
    pub no_verify: bool,
    /// When verification fails, roll back (source restored, destination held).
    pub rollback_on_failure: bool,
}

impl Engine {
    /// The cutover: every check first (nothing touched yet), pre-cutover hooks, quiesce the
    /// source and wait until its pods are gone, final sync with the workloads still held,
    /// start the destination, mark it cut over, verify it runs, post-cutover hooks.
    ///
    /// From the first write to the source until the destination is started, any failure —
    /// or `stop` (Ctrl-C, SIGTERM) — puts the source back as it was (unless
    /// `keep_source_quiesced`), so the application is never down on both sides by surprise.
    ///
    /// It holds the migrations' locks (engine::lease) for its whole length, so no scheduled
    /// re-sync runs in the middle of it, and records its final sync (engine::records).
    pub async fn cutover(
        &self,
        flags: CutoverFlags,
        stop: impl Future<Output = ()>,
    ) -> Result<CutoverReport, EngineError> {
        let started = chrono::Utc::now();
        let locks = self.lock().await?;
        let result = self.cutover_locked(flags, stop).await;
        let sync = result.as_ref().map(|r| &r.sync);
        self.record("cutover", (started, chrono::Utc::now()), sync).await;
        locks.release().await;
        result
    }

    async fn cutover_locked(
        &self,
        flags: CutoverFlags,
        stop: impl Future<Output = ()>,
    ) -> Result<CutoverReport, EngineError> {
        let mut report = CutoverReport::default();
        let before = self.plan(true).await?;
        super::apply::refuse(&before.plan, true)?;
        // A hook that says no stops the cutover before the source is touched.
        report.hooks.extend(self.run_hooks(&before.plan, &before.snapshot, HookPhase::PreCutover).await?);
        let source_namespaces: Vec<String> =
            before.plan.migrations.iter().flat_map(|m| m.source_namespaces.iter().cloned()).collect();
        let destination_namespaces: Vec<String> =
            before.plan.migrations.iter().flat_map(|m| m.destination_namespaces.iter().cloned()).collect();
        let names = before.plan.migrations.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(",");

        let t0 = Instant::now();
        let check = || if self.interrupted() { Err(EngineError::Interrupted) } else { Ok(()) };
        // Waits only read: an interrupt may end them where they are.
        let interrupt = self.interrupt.subscribe();
        let halted = |_: String| EngineError::Interrupted;
        let guarded = async {
            report.quiesced = quiesce::stop(&self.source, &source_namespaces).await?;
            self.events.emit(Event::Quiesced {
                migration: names.clone(),
                scaled: report.quiesced.scaled.clone(),
                suspended: report.quiesced.suspended.clone(),
            });
            check()?;
            let waiting = |left: &[String], seconds: u64| {
                self.events.emit(Event::QuiesceWaiting { migration: names.clone(), waiting_on: left.to_vec(), seconds })
            };
            let quiet =
                quiesce::wait_stopped(&self.source, &source_namespaces, self.spec.cutover.quiesce_timeout, &waiting);
            crate::stop::unless(&interrupt, quiet).await.map_err(halted)??;
            report.quiesce_seconds = t0.elapsed().as_secs_f64();
            // The final sync sees the source as it is now, stopped; workloads stay held on
            // the destination until the data is complete.
            let t1 = Instant::now();
            let after = crate::stop::unless(&interrupt, self.plan_final_sync()).await.map_err(halted)??;
            super::apply::refuse(&after.plan, true)?;
            check()?;
            report.sync = self.sync(&after.plan, &after.snapshot).await?;
            report.sync_seconds = t1.elapsed().as_secs_f64();
            check()?;
            let failed = report.sync.failed();
            if failed > 0 {
                return Err(EngineError::FinalSync { failed });
            }
            Ok::<_, EngineError>(after)
        };
        // `stop` (Ctrl-C, SIGTERM) does not drop the work above: a write it has on its way (a
        // workload's scale-down, a transfer pod) would land after the source was put back.
        let outcome = self.stop_on(stop, guarded).await;
        let outcome = if self.interrupted() { Err(EngineError::Interrupted) } else { outcome };
        let after = match outcome {
            Ok(after) => after,
            Err(cause) => return Err(self.recover(cause, &source_namespaces, flags).await),
        };

        // Start the destination: from here on the source stays stopped whatever happens.
        let t2 = Instant::now();
        let started = quiesce::start(&self.destination, &destination_namespaces).await?;
        report.started = started.scaled.into_iter().chain(started.suspended).collect();
        quiesce::mark_cutover(&self.destination, &destination_namespaces, true).await?;
        report.start_seconds = t2.elapsed().as_secs_f64();
        if !flags.no_verify {
            let t3 = Instant::now();
            let waiting = |left: &[String], seconds: u64| {
                self.events.emit(Event::VerifyWaiting { migration: names.clone(), waiting_on: left.to_vec(), seconds })
            };
            let verified = quiesce::wait_available(
                &self.destination,
                &destination_namespaces,
                self.spec.cutover.verify_timeout,
                &waiting,
            )
            .await;
            report.verify_seconds = t3.elapsed().as_secs_f64();
            match verified {
                Ok(v) => report.verified = v,
                Err(e) => {
                    let rolled_back =
                        if flags.rollback_on_failure { Some(self.rollback_locked().await?) } else { None };
                    return Err(EngineError::Verify { cause: e, rolled_back: rolled_back.is_some() });
                }
            }
        }
        report.downtime_seconds = t0.elapsed().as_secs_f64();
        report.hooks.extend(self.run_hooks(&after.plan, &after.snapshot, HookPhase::PostCutover).await?);
        Ok(report)
    }

    /// The final sync's plan: the stopped source, workloads still held on the destination.
    async fn plan_final_sync(&self) -> Result<super::planning::Planned, EngineError> {
        let mut planned = self.plan(false).await?;
        for m in &mut planned.plan.migrations {
            // Files vanishing now that the source is stopped are an error, not a warning (dvm).
            m.volumes.final_sync = true;
            if let Some(v) = &mut m.velero {
                v.release = false;
            }
        }
        Ok(planned)
    }

    /// After a failure between quiesce and start: the source back as it was (unless the user
    /// asked to keep it stopped), and an error saying where each side is and what to run.
    async fn recover(&self, cause: EngineError, source_namespaces: &[String], flags: CutoverFlags) -> EngineError {
        let (source, next) = if flags.keep_source_quiesced {
            (
                "stays quiesced (--keep-source-quiesced)".to_string(),
                "run `mtcd cutover` again to finish, or `mtcd rollback` to start the source again".to_string(),
            )
        } else {
            match quiesce::start(&self.source, source_namespaces).await {
                Ok(r) => (
                    format!(
                        "was restored ({} workload(s) running again as before)",
                        r.scaled.len() + r.suspended.len()
                    ),
                    "fix the cause and run `mtcd cutover` again".to_string(),
                ),
                Err(e) => (
                    format!("could NOT be restored ({e}); it is still quiesced"),
                    "run `mtcd rollback` to start the source again".to_string(),
                ),
            }
        };
        EngineError::CutoverFailed {
            cause: Box::new(cause),
            source_state: source,
            destination_state: "is held at 0 replicas (not started)".into(),
            next,
        }
    }

    /// The source as it was, the destination held at 0. Deletes nothing.
    ///
    /// It holds the migrations' locks, as a cutover does: a rollback that ran while a cutover
    /// or a re-sync was under way would start the source while the destination was being
    /// started or written, the application running on both sides. It waits for them instead,
    /// and refuses naming the holder after `lock_wait`.
    pub async fn rollback(&self) -> Result<RollbackReport, EngineError> {
        let locks = self.lock().await?;
        let result = self.rollback_locked().await;
        locks.release().await;
        result
    }

    /// [`Engine::rollback`] for a run that already holds the locks (a cutover rolling back).
    async fn rollback_locked(&self) -> Result<RollbackReport, EngineError> {
        self.check_distinct().await?;
        let dst: Vec<String> = self.spec.migrations.iter().flat_map(|m| m.namespace_map.values().cloned()).collect();
        let src: Vec<String> = self.spec.migrations.iter().flat_map(|m| m.namespaces.iter().cloned()).collect();
        let held = quiesce::hold_destination(&self.destination, &dst).await?;
        quiesce::mark_cutover(&self.destination, &dst, false).await?;
        let started = quiesce::start(&self.source, &src).await?;
        Ok(RollbackReport {
            source_restored: started.scaled.into_iter().chain(started.suspended).collect(),
            destination_held: held.scaled.into_iter().chain(held.suspended).collect(),
        })
    }

    /// Runs the hooks of `phase` of every migration, with each one's source snapshot.
    pub(super) async fn run_hooks(
        &self,
        plan: &Plan,
        snapshot: &Snapshot,
        phase: HookPhase,
    ) -> Result<Vec<String>, EngineError> {
        let mut ran = Vec::new();
        for m in &plan.migrations {
            let lookup = snapshot.migration(&m.name).map(|s| s.source.as_slice()).unwrap_or_default();
            ran.extend(self.hooks(m, lookup, phase).await?);
        }
        Ok(ran)
    }
}
