//! mtcd: a declarative engine that moves applications between Kubernetes clusters.
//!
//! The data flows one way (docs/architecture.md):
//! `spec` (parse + validate) → `observe` (snapshots of both clusters) → `plan` (pure: diff,
//! transforms, ordering) → `actions` (execute with bounded concurrency) → `progress` (report).
//! The plan is a value: it is computed whole, plugins included, before the first write.

pub mod actions;
pub mod cli;
pub mod cluster;
pub mod deploy;
pub mod engine;
pub mod metrics;
pub mod observe;
pub mod plugins;
pub mod progress;
pub mod retry;
pub mod stop;
#[cfg(test)]
mod testing;
pub mod tls;

// The pure core, under the names the rest of the crate uses.
pub use mtcd_core::{image, labels, plan, snapshot, spec, transform};

/// An error and its causes on one line (`a: b: c`), each piece once: wrapped errors often
/// repeat their source's text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
