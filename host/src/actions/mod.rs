//! The actions a plan executes. Each submodule is one kind of work on the clusters.

pub mod dim;
pub mod dvm;
pub mod quiesce;
pub mod resources;
pub mod velero;
