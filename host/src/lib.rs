//! mtcd: a declarative engine that moves applications between Kubernetes clusters.
//!
//! The data flows one way (docs/architecture.md):
//! `spec` (parse + validate) → `observe` (snapshots of both clusters) → `plan` (pure: diff,
//! transforms, ordering) → `actions` (execute with bounded concurrency) → `progress` (report).
//! The plan is a value: it is computed whole, plugins included, before the first write.

pub mod actions;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod observe;
pub mod plugins;
pub mod progress;
pub mod tls;

// The pure core, under the names the rest of the crate uses.
pub use mtcd_core::{image, plan, spec, transform};
