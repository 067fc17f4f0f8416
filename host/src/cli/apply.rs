//! `mtcd apply`: compute the whole plan, then execute it: resources, then PV data.
//! Exit 1 when any object or volume failed (the rest still ran).

use std::io::IsTerminal;

use super::{Exit, Output, Session};
use crate::actions::{dim, dvm, resources, velero};
use crate::engine;
use crate::spec::{ResourceMode, VolumeMode};

pub async fn run(session: &Session) -> anyhow::Result<Exit> {
    let outcome = sync(session, false).await?;
    if outcome.failed > 0 {
        eprintln!(
            "error: {} object(s) or volume(s) failed; the rest were applied. Fix them and run `mtcd apply` again.",
            outcome.failed
        );
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}

/// What one sync did.
pub struct Outcome {
    pub failed: usize,
    pub changed: usize,
    pub bytes: u64,
}

/// One full sync: plan everything, then resources and PV data. `cutover` applies workloads
/// in their released form (original replicas).
pub async fn sync(session: &Session, cutover: bool) -> anyhow::Result<Outcome> {
    // The whole plan first: a failing transform or an unreadable cluster stops here, before
    // the first write.
    let plan = engine::plan(&session.spec, &session.source, &session.destination, cutover).await?;
    let mut changed = 0;
    let mut bytes = 0;
    let json = session.output == Output::Json;
    let mut failed = 0;
    let mut summary = Vec::new();
    for (m, spec_m) in plan.migrations.iter().zip(&session.spec.migrations) {
        for w in &m.resources.warnings {
            eprintln!("warning: {w}");
        }
        // Images first: workloads that reference them may start (after cutover) as soon as
        // they are applied.
        let mut images = Vec::new();
        if let (Some((sc, dc)), false) = (&plan.registries, m.image_copies.is_empty()) {
            let report = dim::copy_all(sc, dc, &m.image_copies, &spec_m.dim, |e| image_event(&m.name, &e, json)).await;
            for r in &report.images {
                let (ok, detail) = match &r.outcome {
                    Ok(s) => (
                        true,
                        serde_json::json!({"bytes_sent": s.bytes_sent, "blobs_sent": s.blobs_sent, "blobs_skipped": s.blobs_skipped, "blobs_mounted": s.blobs_mounted, "up_to_date": s.up_to_date}),
                    ),
                    Err(e) => (false, serde_json::json!({"error": e.to_string()})),
                };
                if !ok {
                    failed += 1;
                }
                if !json {
                    match &r.outcome {
                        Ok(s) if s.up_to_date => println!("  image {}: up to date", r.copy.destination),
                        Ok(s) => println!(
                            "  image {}: copied, {} sent ({} blobs sent, {} skipped, {} mounted) in {:.1}s",
                            r.copy.destination,
                            human_bytes(s.bytes_sent),
                            s.blobs_sent,
                            s.blobs_skipped,
                            s.blobs_mounted,
                            r.elapsed.as_secs_f64()
                        ),
                        Err(e) => println!("  image {}: FAILED: {e}", r.copy.source),
                    }
                }
                bytes += r.outcome.as_ref().map(|s| s.bytes_sent).unwrap_or(0);
                images.push(serde_json::json!({"source": r.copy.source.to_string(), "destination": r.copy.destination.to_string(), "ok": ok, "detail": detail}));
            }
        }
        let progress = |c: &crate::plan::ResourceChange, r: Result<(), &str>| {
            if json {
                let event = serde_json::json!({"event": "resource", "migration": m.name, "action": c.action, "object": c.key.to_string(), "ok": r.is_ok(), "error": r.err()});
                println!("{event}");
            } else if let Err(e) = r {
                eprintln!("  failed {}: {e}", c.key);
            }
        };
        // The Velero path: Velero moves the objects, the plan's resource changes are only
        // what it is expected to create.
        let mut velero_report = serde_json::Value::Null;
        let report = if spec_m.resources == ResourceMode::Velero {
            match velero::run(&session.source, &session.destination, spec_m, cutover).await {
                Ok(v) => {
                    failed += v.errors.len();
                    changed += v.items_restored as usize;
                    if !json {
                        println!(
                            "migration {}: velero backup {} {} ({} items), restore {} {} ({} items), {} warning(s), {} error(s)",
                            m.name,
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
                    velero_report = serde_json::to_value(&v).unwrap_or_default();
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: migration {}: velero: {e}", m.name);
                    velero_report = serde_json::json!({"error": e.to_string()});
                }
            }
            None
        } else if m.resources.pending() == 0 {
            Some(resources::ApplyReport { unchanged: m.resources.changes.len(), ..Default::default() })
        } else {
            Some(
                resources::apply(
                    &session.destination.client,
                    &session.destination.context,
                    &m.resources.changes,
                    &progress,
                )
                .await,
            )
        };
        if let Some(report) = &report {
            failed += report.failed.len();
            changed += report.created + report.updated + report.pruned;
            if !json {
                println!(
                    "migration {}: {} created, {} updated, {} pruned, {} unchanged, {} failed",
                    m.name,
                    report.created,
                    report.updated,
                    report.pruned,
                    report.unchanged,
                    report.failed.len()
                );
                for f in &report.failed {
                    println!("  failed {}: {}", f.object, f.message);
                }
            }
        }
        let mut volumes = Vec::new();
        if spec_m.volumes == VolumeMode::Direct && !m.volumes.transfers.is_empty() {
            let tty = std::io::stderr().is_terminal();
            let events = |e: dvm::DvmEvent| volume_event(&m.name, &e, json, tty);
            match dvm::run(&session.source, &session.destination, &m.volumes, &events).await {
                Ok(results) => volumes = results,
                Err(e) => {
                    failed += 1;
                    eprintln!("error: migration {}: volume migration: {e}", m.name);
                }
            }
            for v in &volumes {
                bytes += v.stats.bytes_sent;
                if !v.ok {
                    failed += 1;
                }
                if !json {
                    if v.ok {
                        println!(
                            "  volume {}: done in {:.1}s, {} files, {} sent ({} of {} total changed)",
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
        }
        summary.push(serde_json::json!({"migration": m.name, "images": images, "resources": report, "velero": velero_report, "volumes": volumes}));
    }
    if json {
        println!("{}", serde_json::json!({"event": "summary", "migrations": summary}));
    }
    Ok(Outcome { failed, changed, bytes })
}

fn image_event(migration: &str, e: &dim::DimEvent, json: bool) {
    if !json {
        return; // the per-image summary line says it all for people
    }
    let v = match e {
        dim::DimEvent::Started { image, blobs_total, bytes_total, .. } => {
            serde_json::json!({"event": "image", "phase": "started", "image": image, "blobs_total": blobs_total, "bytes_total": bytes_total})
        }
        dim::DimEvent::Progress {
            image,
            blobs_done,
            blobs_total,
            bytes_done,
            bytes_total,
            bytes_sent,
            throughput,
            ..
        } => {
            serde_json::json!({"event": "image", "phase": "copying", "image": image, "blobs_done": blobs_done, "blobs_total": blobs_total, "bytes_done": bytes_done, "bytes_total": bytes_total, "bytes_sent": bytes_sent, "throughput": throughput})
        }
        dim::DimEvent::Finished { image, outcome, elapsed, .. } => {
            serde_json::json!({"event": "image", "phase": if outcome.is_ok() { "done" } else { "failed" }, "image": image, "error": outcome.as_ref().err(), "seconds": elapsed.as_secs_f64()})
        }
    };
    let mut v = v;
    v["migration"] = migration.into();
    println!("{v}");
}

fn volume_event(migration: &str, e: &dvm::DvmEvent, json: bool, tty: bool) {
    if json {
        let mut v = serde_json::to_value(e).unwrap_or_default();
        v["event"] = "volume".into();
        v["migration"] = migration.into();
        println!("{v}");
        return;
    }
    match (&e.progress, tty) {
        (Some(p), true) => {
            let eta = p.eta_seconds.map(|s| format!(", about {} left", clock(s))).unwrap_or_default();
            eprint!(
                "\r  {}: {:>3}% {} at {}/s, {} elapsed{eta}        ",
                e.pvc,
                p.percent,
                human_bytes(p.bytes),
                human_bytes(p.rate as u64),
                clock(p.elapsed_seconds)
            )
        }
        (Some(_), false) => {}
        (None, _) => {
            if tty {
                eprintln!();
            }
            match &e.message {
                Some(m) => eprintln!("  {}: {:?}: {m}", e.pvc, e.phase),
                None => eprintln!("  {}: {:?} (attempt {})", e.pvc, e.phase, e.attempt),
            }
        }
    }
}

/// `1:02:03` / `2:03`: how long, the way rsync and most progress bars print it.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}
