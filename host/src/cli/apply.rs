//! `mtcd apply`: compute the whole plan, then execute it. Exit 1 when any object failed.

use super::{Exit, Output, Session};
use crate::actions::resources;
use crate::engine;

pub async fn run(session: &Session) -> anyhow::Result<Exit> {
    // The whole plan first: a failing transform or an unreadable cluster stops here, before
    // the first write.
    let plan = engine::plan(&session.spec, &session.source, &session.destination).await?;
    let mut failed = 0;
    let mut summary = Vec::new();
    for m in &plan.migrations {
        for w in &m.resources.warnings {
            eprintln!("warning: {w}");
        }
        let json = session.output == Output::Json;
        let progress = |c: &crate::plan::ResourceChange, r: Result<(), &str>| {
            if json {
                let event = serde_json::json!({"event": "resource", "migration": m.name, "action": c.action, "object": c.key.to_string(), "ok": r.is_ok(), "error": r.err()});
                println!("{event}");
            } else if let Err(e) = r {
                eprintln!("  failed {}: {e}", c.key);
            }
        };
        let report = if m.resources.pending() == 0 {
            resources::ApplyReport { unchanged: m.resources.changes.len(), ..Default::default() }
        } else {
            resources::apply(&session.destination.client, &session.destination.context, &m.resources.changes, &progress).await
        };
        failed += report.failed.len();
        if json {
            summary.push(serde_json::json!({"migration": m.name, "resources": report}));
        } else {
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
    if session.output == Output::Json {
        println!("{}", serde_json::json!({"event": "summary", "migrations": summary}));
    }
    if failed > 0 {
        eprintln!("error: {failed} object(s) could not be applied; the rest were. Fix them and run `mtcd apply` again.");
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}
