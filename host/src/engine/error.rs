//! Why a lifecycle command stopped. Per-object, per-image and per-volume failures are not
//! here: they are in the reports, and the rest of the run goes on.

use crate::actions::{dim, dvm, quiesce, velero};
use crate::observe::ObserveError;
use crate::plan::PlanError;
use crate::plugins::PluginError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A cluster could not be read well enough to plan.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// The plan could not be computed (a transform failed): nothing was written.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugin(Box<PluginError>),
    /// A hook said no, or failed (and its `on_error` is `fail`).
    #[error("{phase} hook {hook} stopped migration {migration:?}: {reason}")]
    Hook {
        phase: &'static str,
        hook: String,
        migration: String,
        reason: String,
        #[source]
        source: Option<Box<PluginError>>,
    },
    /// The registry settings cannot be used.
    #[error(transparent)]
    Dim(Box<dim::DimError>),
    /// The transfer objects could not be listed or removed.
    #[error(transparent)]
    Dvm(#[from] dvm::DvmError),
    /// Quiescing or restarting workloads failed.
    #[error(transparent)]
    Quiesce(#[from] quiesce::QuiesceError),
    /// The Velero path could not run.
    #[error(transparent)]
    Velero(#[from] velero::VeleroError),
    /// Types that are migrated could not be read completely: applying would act on partial
    /// knowledge, so nothing is written.
    #[error(
        "{} type(s) could not be read completely ({}); nothing was changed. Grant the read, or leave the kind out with `exclude_kinds`",
        .0.len(), .0.join("; ")
    )]
    Unread(Vec<String>),
    /// Source and destination are one cluster and a namespace maps onto itself: the
    /// migration would write the objects it reads.
    #[error(
        "contexts {source_context:?} and {destination_context:?} reach the same cluster ({why}), and migration {migration:?} maps namespace {namespace:?} onto itself: it would overwrite its own source. Map it to another namespace (a clone) or use another destination"
    )]
    SameCluster {
        source_context: String,
        destination_context: String,
        why: String,
        migration: String,
        namespace: String,
    },
    /// A preflight check failed: nothing was written (and, for a cutover, the source was not
    /// touched).
    #[error("{} preflight check(s) failed; nothing was changed:\n  {}", .0.len(), .0.join("\n  "))]
    Preflight(Vec<String>),
    /// Changes that cannot be made as planned (adopt without `adopt`, an immutable field of
    /// a kind that may not be replaced): nothing is written.
    #[error("{} change(s) cannot be made as planned; nothing was changed:\n  {}", .0.len(), .0.join("\n  "))]
    Blocked(Vec<String>),
    /// The destination stopped answering mid-apply.
    #[error(transparent)]
    Unreachable(#[from] crate::actions::resources::Unreachable),
    /// A cutover was interrupted (Ctrl-C, SIGTERM) after the source was touched.
    #[error("interrupted")]
    Interrupted,
    /// A cutover failed between quiesce and start; what each side is in now, and the one
    /// command to continue.
    #[error("cutover failed: {cause}. The source {source_state}; the destination {destination_state}. Next: {next}")]
    CutoverFailed { cause: Box<EngineError>, source_state: String, destination_state: String, next: String },
    /// The destination was started but its workloads did not become available.
    #[error(
        "the destination was started but did not become available: {cause}. {}",
        if *rolled_back { "Rolled back: the source runs again, the destination is held at 0." } else { "The source stays quiesced; run `mtcd rollback` to run the source again, or fix the destination and run `mtcd status`." }
    )]
    Verify { cause: quiesce::QuiesceError, rolled_back: bool },
    /// The final sync of a cutover had failures; the source stays quiesced.
    #[error("the final sync had {failed} failure(s) (listed above)")]
    FinalSync { failed: usize },
}
