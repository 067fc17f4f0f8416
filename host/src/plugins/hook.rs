//! Hook plugins: run at a migration phase; an error stops the migration.

use std::sync::Arc;

use indexmap::IndexMap;

use super::bindings::hook::Hook as HookWorld;
use super::bindings::hook::exports::mtcd::plugin::hooks::Phase;
use super::bindings::transformer::mtcd::plugin::types;
use super::engine::LoadReport;
use super::runtime::Runner;
use super::state::truncate_message;
use super::{MAX_ERROR_MESSAGE, PluginError, SourceLookup};
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

/// One loaded hook plugin. Its instance is reused across runs while they succeed.
pub struct Hook {
    pub(crate) runner: Runner<HookWorld>,
    pub(crate) config: String,
    pub(crate) report: LoadReport,
}

impl Hook {
    /// Runs the hook for `phase`, bounded by its time limit (`timeout`, default 5 min)
    /// including time spent waiting in host calls. `Err(PluginError::HookFailed)` is the
    /// hook saying "stop"; any other error means the hook itself failed (trap, time or
    /// memory limit). With `on_error = skip-object | keep-original` such failures are
    /// logged and ignored; the hook's own verdict always stops the migration.
    pub fn run(&mut self, phase: HookPhase, ctx: &HookContext<'_>) -> Result<(), PluginError> {
        let subject = format!("hook {} of migration {}", phase_name(phase), ctx.migration);
        let wit_ctx = types::HookContext {
            migration: ctx.migration.clone(),
            source_cluster: ctx.source_cluster.clone(),
            destination_cluster: ctx.destination_cluster.clone(),
            namespace_map: ctx.namespace_map.iter().map(|(s, d)| (s.clone(), d.clone())).collect(),
            config: self.config.clone(),
        };
        let namespaces: Arc<[String]> = ctx.namespace_map.keys().cloned().collect();
        let span = tracing::info_span!("hook", plugin = %self.runner.name, phase = phase_name(phase));
        let _enter = span.enter();
        let result = self.runner.call(&subject, namespaces, ctx.lookup, move |store, bindings| {
            Box::pin(async move { bindings.mtcd_plugin_hooks().call_run(store, wit_phase(phase), &wit_ctx).await })
        });
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(PluginError::HookFailed {
                plugin: self.runner.name.clone(),
                phase: phase_name(phase),
                message: truncate_message(message, MAX_ERROR_MESSAGE),
            }),
            Err(e) if self.runner.plugin.on_error != OnError::Fail => {
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
        HookPhase::PreStage => Phase::PreStage,
        HookPhase::PostStage => Phase::PostStage,
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
        HookPhase::PreStage => "pre-stage",
        HookPhase::PostStage => "post-stage",
    }
}
