//! The one stream of progress events the engine emits while it works. The engine never
//! prints: it sends [`Event`]s through [`Events`], and the CLI renders them (live lines on a
//! terminal, plain lines otherwise, or JSON lines with `--output json` — docs/output.md).
//! Secrets never travel here: events carry names, counts and messages only.

use serde::Serialize;
use tokio::sync::mpsc;

use crate::actions::dvm::{Phase, Progress};

/// Something happened that a person (or a script) following the run wants to know.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Nothing failed, but a person should read this.
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        migration: Option<String>,
        message: String,
    },
    /// One object was written or pruned (or failed to be).
    Resource {
        migration: String,
        action: crate::plan::Action,
        object: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An image copy started, moved on, or ended.
    Image {
        migration: String,
        image: String,
        phase: ImagePhase,
        blobs_done: usize,
        blobs_total: usize,
        bytes_done: u64,
        bytes_total: u64,
        bytes_sent: u64,
        /// Bytes sent per second since the image started.
        throughput: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        seconds: f64,
    },
    /// A volume transfer changed phase or moved bytes.
    Volume {
        migration: String,
        pvc: String,
        phase: Phase,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<Progress>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A Velero Backup or Restore changed phase.
    Velero { migration: String, object: String, phase: String },
    /// A hook ran.
    Hook {
        migration: String,
        phase: String,
        hook: String,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The end of what a job or exec hook printed.
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// Cutover: the source's workloads were scaled to 0 and its CronJobs suspended.
    Quiesced { migration: String, scaled: Vec<String>, suspended: Vec<String> },
    /// Cutover: still waiting for the source's pods to be gone.
    QuiesceWaiting {
        migration: String,
        /// Workloads (with their pods) still running, as `Kind/namespace/name (why)`.
        waiting_on: Vec<String>,
        seconds: u64,
    },
    /// Cutover: still waiting for the destination's workloads to be available.
    VerifyWaiting { migration: String, waiting_on: Vec<String>, seconds: u64 },
    /// Apply: before a rank, still waiting for objects the destination makes that the rank
    /// needs (plan::readiness), as `Kind/namespace/name`.
    ApplyWaiting { migration: String, waiting_on: Vec<String>, seconds: u64 },
    /// A step of a lifecycle command began (`plan`, `images`, `resources`, `volumes`, …).
    Step { migration: String, step: String },
    /// One `apply --watch` cycle ended.
    Cycle {
        cycle: u64,
        changed: usize,
        failed: usize,
        bytes_sent: u64,
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Where an image copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImagePhase {
    Started,
    Copying,
    Done,
    Failed,
}

/// The sending end of the event stream. Cheap to clone; sending never blocks and never
/// fails (a renderer that went away just stops listening).
#[derive(Debug, Clone)]
pub struct Events {
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl Events {
    /// A stream and its receiving end, for a renderer.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events { tx: Some(tx) }, rx)
    }

    /// A stream nobody listens to (tests, library callers that only want the report).
    pub fn discard() -> Events {
        Events { tx: None }
    }

    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    pub fn warn(&self, migration: Option<&str>, message: impl Into<String>) {
        self.emit(Event::Warning { migration: migration.map(String::from), message: message.into() });
    }
}
