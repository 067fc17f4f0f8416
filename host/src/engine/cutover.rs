//! `cutover` and `rollback`. Each step is idempotent, so an interrupted run is finished by
//! running it again.

use std::time::{Duration, Instant};

use super::planning::SliceLookup;
use super::{CutoverReport, Engine, EngineError, RollbackReport};
use crate::actions::quiesce;
use crate::plan::Plan;
use crate::plugins::{HookContext, phase_name};
use crate::progress::Event;
use crate::snapshot::Snapshot;
use crate::spec::HookPhase;

/// How long the source's workloads may take to stop.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(300);

impl Engine {
    /// Pre-cutover hooks, quiesce the source, wait for it to stop, final sync with the
    /// workloads released, mark the destination cut over, post-cutover hooks.
    pub async fn cutover(&self) -> Result<CutoverReport, EngineError> {
        let mut report = CutoverReport::default();
        let before = self.plan(true).await?;
        super::apply::refuse(&before.plan, true)?;
        // A hook that says no stops the cutover before the source is touched.
        report.hooks.extend(self.run_hooks(&before.plan, &before.snapshot, HookPhase::PreCutover)?);
        let t0 = Instant::now();
        let source_namespaces: Vec<String> =
            before.plan.migrations.iter().flat_map(|m| m.source_namespaces.iter().cloned()).collect();
        report.quiesced = quiesce::stop(&self.source, &source_namespaces).await?;
        self.events.emit(Event::Quiesced {
            migration: before.plan.migrations.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(","),
            scaled: report.quiesced.scaled.clone(),
            suspended: report.quiesced.suspended.clone(),
        });
        quiesce::wait_stopped(&self.source, &source_namespaces, QUIESCE_TIMEOUT).await?;
        report.quiesce_seconds = t0.elapsed().as_secs_f64();
        // The final sync sees the source as it is now, quiesced.
        let t1 = Instant::now();
        let after = self.plan(true).await?;
        super::apply::refuse(&after.plan, true)?;
        report.sync = self.execute(&after.plan, &after.snapshot).await?;
        report.sync_seconds = t1.elapsed().as_secs_f64();
        let failed = report.sync.failed();
        if failed > 0 {
            return Err(EngineError::FinalSync { failed });
        }
        let destination_namespaces: Vec<String> =
            after.plan.migrations.iter().flat_map(|m| m.destination_namespaces.iter().cloned()).collect();
        quiesce::mark_cutover(&self.destination, &destination_namespaces, true).await?;
        report.hooks.extend(self.run_hooks(&after.plan, &after.snapshot, HookPhase::PostCutover)?);
        Ok(report)
    }

    /// The source as it was, the destination held at 0. Deletes nothing.
    pub async fn rollback(&self) -> Result<RollbackReport, EngineError> {
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

    /// Runs every hook of `phase`, in file order, with the snapshot's source objects as their
    /// lookup. The first failure stops the command.
    pub(super) fn run_hooks(
        &self,
        plan: &Plan,
        snapshot: &Snapshot,
        phase: HookPhase,
    ) -> Result<Vec<String>, EngineError> {
        let mut ran = Vec::new();
        let mut host = None;
        for m in &plan.migrations {
            let lookup = snapshot.migration(&m.name).map(|s| s.source.as_slice()).unwrap_or_default();
            for h in m.hooks(phase) {
                let host = match &host {
                    Some(h) => h,
                    None => host.insert(super::plugin_host().map_err(|e| EngineError::Plugin(Box::new(e)))?),
                };
                let name = h.plugin.path.display().to_string();
                let ctx = HookContext {
                    migration: m.name.clone(),
                    source_cluster: self.source.context.clone(),
                    destination_cluster: self.destination.context.clone(),
                    namespace_map: m.namespace_map.clone(),
                    lookup: &SliceLookup(lookup),
                };
                let result = host.load_hook(&h.plugin).and_then(|mut hook| hook.run(phase, &ctx));
                self.events.emit(Event::Hook {
                    migration: m.name.clone(),
                    phase: phase_name(phase).to_string(),
                    hook: name.clone(),
                    ok: result.is_ok(),
                    error: result.as_ref().err().map(ToString::to_string),
                });
                result.map_err(|source| EngineError::Hook {
                    phase: phase_name(phase),
                    hook: name.clone(),
                    migration: m.name.clone(),
                    source: Box::new(source),
                })?;
                ran.push(format!("{} {name}", phase_name(phase)));
            }
        }
        Ok(ran)
    }
}
