//! Printing what a command did, after its last event: human text on stdout (failures on
//! stderr), or one JSON document with `--output json`.

use super::Output;
use super::render::human_bytes;
use crate::engine::{
    ApplyReport, CleanupReport, CutoverReport, RollbackReport, StatusReport, VeleroOutcome, WatchReport,
};
use crate::plan::Plan;

/// The report of one lifecycle command.
pub enum Report {
    Plan(Plan),
    Apply(ApplyReport),
    Watch(WatchReport),
    Cutover(CutoverReport),
    Rollback(RollbackReport),
    Status(StatusReport),
    Cleanup(CleanupReport),
}

impl Report {
    /// `verbose`: `-v` was given (the plan then lists what it skips).
    pub fn print(&self, output: Output, verbose: bool) {
        if output == Output::Json {
            let json = match self {
                Report::Plan(p) => serde_json::to_value(p),
                Report::Apply(r) => summary(r),
                Report::Watch(r) => tagged("watch", r),
                Report::Cutover(r) => tagged("cutover", r),
                Report::Rollback(r) => tagged("rollback", r),
                Report::Status(r) => serde_json::to_value(r),
                Report::Cleanup(r) => serde_json::to_value(r),
            };
            match json {
                Ok(v) if matches!(self, Report::Plan(_)) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
                }
                Ok(v) => println!("{v}"),
                Err(e) => eprintln!("error: cannot render the report as JSON: {e}"),
            }
            return;
        }
        match self {
            Report::Plan(p) => super::plan::print(p, output, verbose),
            Report::Apply(r) => print_apply(r),
            Report::Watch(r) if r.missed_intervals > 0 => println!(
                "stopped after {} cycle(s); {} interval(s) missed because a cycle outlasted them",
                r.cycles, r.missed_intervals
            ),
            Report::Watch(r) => println!("stopped after {} cycle(s)", r.cycles),
            Report::Cutover(r) => {
                print_apply(&r.sync);
                let verified = if r.verify_seconds > 0.0 || !r.verified.is_empty() {
                    format!("; {} workload(s) verified available in {:.1}s", r.verified.len(), r.verify_seconds)
                } else {
                    "; not verified (--no-verify)".to_string()
                };
                println!(
                    "cutover done: source quiesced in {:.1}s; final sync {:.1}s ({} object(s) changed, {} sent); destination started in {:.1}s{verified}; downtime {:.1}s",
                    r.quiesce_seconds,
                    r.sync_seconds,
                    r.sync.changed(),
                    human_bytes(r.sync.bytes_sent()),
                    r.start_seconds,
                    r.downtime_seconds
                );
            }
            Report::Rollback(r) => println!(
                "rolled back: {} source workload(s) restored, {} destination workload(s) held at 0; no data was deleted",
                r.source_restored.len(),
                r.destination_held.len()
            ),
            Report::Status(r) => {
                for m in &r.migrations {
                    let state = if m.cutover { "cut over" } else { "not cut over (workloads held at 0)" };
                    println!(
                        "migration {}: {} managed object(s) on {}, {} volume(s), {state}",
                        m.migration, m.managed_objects, m.destination, m.volumes
                    );
                    println!("  source ({}): {}", m.source, m.source_state);
                    if !m.source_quiesced.is_empty() {
                        println!("    quiesced: {}", m.source_quiesced.join(", "));
                    }
                    if m.source_state == "partially quiesced" {
                        println!("    still running: {}", m.source_running.join(", "));
                    }
                    let at = m.cutover_at.as_deref().map(|t| format!(" since {t}")).unwrap_or_default();
                    println!("  destination ({}): {}{at}", m.destination, m.destination_state);
                    if !m.destination_unavailable.is_empty() {
                        println!("    not available: {}", m.destination_unavailable.join(", "));
                    }
                    match &m.last_run {
                        None => println!("  last sync: never (no run record)"),
                        Some(r) => {
                            println!("  last sync: {} ({}, {} by {})", r.finished, r.outcome, r.command, r.run_by);
                            println!("    result: {}", r.summary);
                            if !r.error.is_empty() {
                                println!("    error: {}", r.error);
                            }
                            if r.outcome != "succeeded" && !r.last_success.is_empty() {
                                println!("    last success: {}", r.last_success);
                            }
                            let next = if r.next_sync.is_empty() { "not scheduled" } else { r.next_sync.as_str() };
                            println!("  next sync: {next}");
                        }
                    }
                }
            }
            Report::Cleanup(r) => println!("Removed {} transfer object(s).", r.removed),
        }
    }
}

fn tagged(event: &str, r: &impl serde::Serialize) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(r)?;
    v["event"] = event.into();
    Ok(v)
}

/// `apply`'s JSON report: the last line, `{"event": "summary", "migrations": [...]}`.
fn summary(r: &ApplyReport) -> serde_json::Result<serde_json::Value> {
    tagged("summary", r)
}

fn print_apply(r: &ApplyReport) {
    for m in &r.migrations {
        for i in &m.images {
            match &i.error {
                None if i.up_to_date => println!("  image {}: up to date", i.destination),
                None => println!(
                    "  image {}: copied, {} sent ({} blobs sent, {} skipped, {} mounted{}) in {:.1}s",
                    i.destination,
                    human_bytes(i.bytes_sent),
                    i.blobs_sent,
                    i.blobs_skipped,
                    i.blobs_mounted,
                    if i.artifacts_copied > 0 {
                        format!("; {} signatures/attestations/referrers", i.artifacts_copied)
                    } else {
                        String::new()
                    },
                    i.seconds
                ),
                // The error itself was printed when it happened (stderr).
                Some(_) => println!("  image {}: FAILED (the error is above)", i.source),
            }
        }
        if let Some(res) = &m.resources {
            println!(
                "migration {}: {} created, {} updated, {} pruned, {} unchanged, {} failed",
                m.migration,
                res.created,
                res.updated,
                res.pruned,
                res.unchanged,
                res.failed.len()
            );
        }
        match &m.velero {
            Some(VeleroOutcome::Done(v)) => {
                println!(
                    "migration {}: velero backup {} {} ({} items), restore {} {} ({} items), {} warning(s), {} error(s)",
                    m.migration,
                    v.backup,
                    v.backup_phase,
                    v.items_backed_up,
                    v.restore,
                    v.restore_phase,
                    v.items_restored,
                    v.warnings.len(),
                    v.errors.len()
                );
                for w in &v.warnings {
                    println!("  warning [{}]: {}", w.scope, w.message);
                }
                for e in &v.errors {
                    println!("  error [{}]: {}", e.scope, e.message);
                }
                if !v.held.is_empty() {
                    println!("  held until cutover: {}", v.held.join(", "));
                }
            }
            Some(VeleroOutcome::Failed { error }) => eprintln!("error: migration {}: velero: {error}", m.migration),
            None => {}
        }
        if let Some(e) = &m.volumes_error {
            eprintln!("error: migration {}: volume migration: {e}", m.migration);
        }
        for v in &m.volumes {
            if v.ok {
                println!(
                    "  volume {}: done in {:.1}s ({} files, {} sent, {} literal of {})",
                    v.pvc,
                    v.seconds,
                    v.stats.files,
                    human_bytes(v.stats.bytes_sent),
                    human_bytes(v.stats.literal_data),
                    human_bytes(v.stats.total_size)
                );
            } else {
                println!("  volume {}: FAILED after {} attempt(s)", v.pvc, v.attempts);
                for e in &v.errors {
                    println!("    {e}");
                }
            }
        }
    }
    let failed = r.failed();
    if failed > 0 {
        eprintln!(
            "error: {failed} object(s), image(s) or volume(s) failed; the rest were applied. Fix them and run `mtcd apply` again."
        );
    }
}
