//! Hook plugins: run at a migration phase; an error stops the migration.

use indexmap::IndexMap;

use super::bindings::hook::exports::mtcd::plugin::hooks::Phase;
use super::bindings::hook::{Hook as HookWorld, HookPre};
use super::bindings::transformer::mtcd::plugin::types;
use super::engine::LoadReport;
use super::runtime::Slot;
use super::state::{HostState, with_lookup};
use super::{PluginError, SourceLookup};
use crate::spec::{HookPhase, OnError};

/// What a hook is told about the migration.
pub struct HookContext<'a> {
    /// The `[[migration]]` name.
    pub migration: String,
    pub source_cluster: String,
    pub destination_cluster: String,
    /// Source namespace → destination namespace; also the namespaces `lookup` may read.
    pub namespace_map: IndexMap<String, String>,
    /// Answers the hook's read-only lookups of source objects.
    pub lookup: &'a dyn SourceLookup,
}

/// One loaded hook plugin.
pub struct Hook {
    pub(crate) slot: Slot<HookWorld>,
    pub(crate) pre: HookPre<HostState>,
    pub(crate) config: String,
    pub(crate) report: LoadReport,
}

impl Hook {
    /// Runs the hook for `phase`. `Err(PluginError::HookFailed)` is the hook saying "stop";
    /// any other error means the hook itself failed (trap, time or memory limit). With
    /// `on_error = skip-object | keep-original` such failures are logged and ignored;
    /// the hook's own verdict always stops the migration.
    pub fn run(&mut self, phase: HookPhase, ctx: &HookContext<'_>) -> Result<(), PluginError> {
        super::off_async(|| self.run_inner(phase, ctx))
    }

    fn run_inner(&mut self, phase: HookPhase, ctx: &HookContext<'_>) -> Result<(), PluginError> {
        let subject = format!("hook {} of migration {}", phase_name(phase), ctx.migration);
        let wit_ctx = types::HookContext {
            migration: ctx.migration.clone(),
            source_cluster: ctx.source_cluster.clone(),
            destination_cluster: ctx.destination_cluster.clone(),
            namespace_map: ctx.namespace_map.iter().map(|(s, d)| (s.clone(), d.clone())).collect(),
            config: self.config.clone(),
        };
        self.slot.set_namespaces(ctx.namespace_map.keys());
        let pre = &self.pre;
        let span = tracing::info_span!("hook", plugin = %self.slot.plugin.path.display(), phase = phase_name(phase));
        let _enter = span.enter();
        let result = with_lookup(ctx.lookup, || -> Result<Result<(), String>, PluginError> {
            let live = self.slot.arm(&subject, |store| pre.instantiate(&mut *store))?;
            match live.bindings.mtcd_plugin_hooks().call_run(&mut live.store, wit_phase(phase), &wit_ctx) {
                Ok(verdict) => {
                    self.slot.after_success();
                    Ok(verdict)
                }
                Err(e) => Err(self.slot.failure(e, &subject)),
            }
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(PluginError::HookFailed {
                plugin: self.slot.plugin.path.clone(),
                phase: phase_name(phase),
                message,
            }),
            Err(e) if self.slot.plugin.on_error != OnError::Fail => {
                tracing::warn!(error = %e, "hook failed; continuing because of its on-error setting");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// How the hook was loaded (compiled or cached) and what it cost.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }
}

fn wit_phase(phase: HookPhase) -> Phase {
    match phase {
        HookPhase::PreBackup => Phase::PreBackup,
        HookPhase::PostBackup => Phase::PostBackup,
        HookPhase::PreRestore => Phase::PreRestore,
        HookPhase::PostRestore => Phase::PostRestore,
        HookPhase::PreCutover => Phase::PreCutover,
        HookPhase::PostCutover => Phase::PostCutover,
    }
}

/// The phase as desired.toml spells it.
pub fn phase_name(phase: HookPhase) -> &'static str {
    match phase {
        HookPhase::PreBackup => "pre-backup",
        HookPhase::PostBackup => "post-backup",
        HookPhase::PreRestore => "pre-restore",
        HookPhase::PostRestore => "post-restore",
        HookPhase::PreCutover => "pre-cutover",
        HookPhase::PostCutover => "post-cutover",
    }
}
