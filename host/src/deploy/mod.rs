//! `mtcd deploy`: everything a cluster needs to run the scheduled re-sync itself.
pub mod cron;

use clap::Args;

/// `mtcd deploy` (stub: filled in below).
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The desired-state file.
    pub file: std::path::PathBuf,
}

pub async fn run(_args: DeployArgs, _global: &crate::cli::Global) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
