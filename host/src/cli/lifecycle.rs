//! The migration lifecycle after the first apply: `apply --watch`, `cutover`, `rollback`,
//! `status`. Each step is idempotent, so an interrupted run is finished by running it again.

use std::time::{Duration, Instant};

use super::apply::{human_bytes, sync};
use super::{Exit, Output, Session};
use crate::actions::quiesce;
use crate::plugins::{HookContext, phase_name};
use crate::spec::HookPhase;

fn source_namespaces(session: &Session) -> Vec<String> {
    session.spec.migrations.iter().flat_map(|m| m.namespaces.clone()).collect()
}

fn destination_namespaces(session: &Session) -> Vec<String> {
    session.spec.migrations.iter().flat_map(|m| m.namespace_map.values().cloned()).collect()
}

fn say(session: &Session, event: serde_json::Value, human: String) {
    match session.output {
        Output::Json => println!("{event}"),
        Output::Human => println!("{human}"),
    }
}

/// `mtcd apply --watch`: a sync every `sync.interval` until Ctrl-C. A failed cycle is
/// reported and retried next interval; the exit code is non-zero only if the last cycle
/// before the stop failed.
pub async fn watch(session: &Session) -> anyhow::Result<Exit> {
    let interval = session.spec.sync.interval;
    let mut cycle = 0u64;
    let mut last_failed;
    loop {
        cycle += 1;
        let started = Instant::now();
        let result = sync(session, false).await;
        let secs = started.elapsed().as_secs_f64();
        last_failed = match &result {
            Ok(o) => {
                say(
                    session,
                    serde_json::json!({"event": "cycle", "cycle": cycle, "changed": o.changed, "failed": o.failed, "bytes_sent": o.bytes, "seconds": secs}),
                    format!(
                        "cycle {cycle}: {} object(s) changed, {} sent, {} failed, {secs:.1}s",
                        o.changed,
                        human_bytes(o.bytes),
                        o.failed
                    ),
                );
                o.failed > 0
            }
            Err(e) => {
                say(
                    session,
                    serde_json::json!({"event": "cycle", "cycle": cycle, "error": format!("{e:#}")}),
                    format!("cycle {cycle}: failed: {e:#} (retrying in {})", humantime::format_duration(interval)),
                );
                true
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(if last_failed { Exit::Failed } else { Exit::Success })
}

/// Runs every hook of `phase`, in file order. The first failure stops the command.
async fn run_hooks(session: &Session, phase: HookPhase) -> anyhow::Result<()> {
    for m in &session.spec.migrations {
        let hooks: Vec<_> = m.hooks.iter().filter(|h| h.phase == phase).collect();
        if hooks.is_empty() {
            continue;
        }
        // Hooks read the source as it is now, through the same snapshot a plan uses.
        let (catalog, _) = crate::observe::discover(&session.source.client, &session.source.context).await?;
        let (lookup, _) = crate::engine::observe_source(&session.source, &catalog, m).await?;
        let host = crate::engine::plugin_host()?;
        for h in hooks {
            let mut hook = host.load_hook(&h.plugin)?;
            let ctx = HookContext {
                migration: m.name.clone(),
                source_cluster: session.source.context.clone(),
                destination_cluster: session.destination.context.clone(),
                namespace_map: m.namespace_map.clone(),
                lookup: &lookup,
            };
            hook.run(phase, &ctx).map_err(|e| {
                anyhow::anyhow!("{} hook {} stopped migration {:?}: {e}", phase_name(phase), h.plugin.source, m.name)
            })?;
            say(
                session,
                serde_json::json!({"event": "hook", "phase": phase_name(phase), "plugin": h.plugin.source.to_string(), "ok": true}),
                format!("{} hook {}: ok", phase_name(phase), h.plugin.source),
            );
        }
    }
    Ok(())
}

/// `mtcd cutover`: pre-cutover hooks, quiesce the source, wait for it to stop, final sync
/// with workloads released, mark the destination cut over, post-cutover hooks.
pub async fn cutover(session: &Session) -> anyhow::Result<Exit> {
    // A hook that says no stops the cutover before the source is touched.
    run_hooks(session, HookPhase::PreCutover).await?;
    let t0 = Instant::now();
    let stopped = quiesce::stop(&session.source, &source_namespaces(session)).await?;
    say(
        session,
        serde_json::json!({"event": "quiesced", "scaled": stopped.scaled, "suspended": stopped.suspended}),
        format!(
            "quiesced the source: {} workload(s) scaled to 0, {} CronJob(s) suspended",
            stopped.scaled.len(),
            stopped.suspended.len()
        ),
    );
    quiesce::wait_stopped(&session.source, &source_namespaces(session), Duration::from_secs(300)).await?;
    let quiesce_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let outcome = sync(session, true).await?;
    if outcome.failed > 0 {
        anyhow::bail!(
            "final sync had {} failure(s); the source stays quiesced. Fix them and run `mtcd cutover` again, or `mtcd rollback`",
            outcome.failed
        );
    }
    quiesce::mark_cutover(&session.destination, &destination_namespaces(session), true).await?;
    run_hooks(session, HookPhase::PostCutover).await?;
    say(
        session,
        serde_json::json!({"event": "cutover", "quiesce_seconds": quiesce_secs, "sync_seconds": t1.elapsed().as_secs_f64(), "changed": outcome.changed, "bytes_sent": outcome.bytes}),
        format!(
            "cutover done: source quiesced in {quiesce_secs:.1}s; final sync {:.1}s ({} object(s) changed, {} sent); destination workloads run with their original replicas",
            t1.elapsed().as_secs_f64(),
            outcome.changed,
            human_bytes(outcome.bytes)
        ),
    );
    Ok(Exit::Success)
}

/// `mtcd rollback`: the source as it was, the destination held at 0. Deletes nothing.
pub async fn rollback(session: &Session) -> anyhow::Result<Exit> {
    let dst = destination_namespaces(session);
    let held = quiesce::hold_destination(&session.destination, &dst).await?;
    quiesce::mark_cutover(&session.destination, &dst, false).await?;
    let started = quiesce::start(&session.source, &source_namespaces(session)).await?;
    say(
        session,
        serde_json::json!({"event": "rollback", "source_restored": started.scaled.len() + started.suspended.len(), "destination_held": held.scaled.len() + held.suspended.len()}),
        format!(
            "rolled back: {} source workload(s) restored, {} destination workload(s) held at 0; no data was deleted",
            started.scaled.len() + started.suspended.len(),
            held.scaled.len() + held.suspended.len()
        ),
    );
    Ok(Exit::Success)
}

/// `mtcd status`: per migration, drift pending, cutover state and what mtcd manages.
pub async fn status(session: &Session) -> anyhow::Result<Exit> {
    let plan = crate::engine::plan(&session.spec, &session.source, &session.destination, false).await?;
    let mut out = Vec::new();
    for m in &plan.migrations {
        let cut = m.cut_over;
        let managed = m
            .resources
            .changes
            .iter()
            .filter(|c| c.action == crate::plan::Action::Unchanged || c.action == crate::plan::Action::Update)
            .count();
        out.push(serde_json::json!({"migration": m.name, "pending": m.resources.pending(), "managed_objects": managed, "volumes": m.volumes.transfers.len(), "cutover": cut}));
        if session.output == Output::Human {
            println!(
                "migration {}: {} managed object(s) on {}, {} change(s) pending, {} volume(s), {}",
                m.name,
                managed,
                m.destination,
                m.resources.pending(),
                m.volumes.transfers.len(),
                if cut { "cut over" } else { "not cut over (workloads held at 0)" }
            );
        }
    }
    if session.output == Output::Json {
        println!("{}", serde_json::json!({"migrations": out}));
    }
    Ok(Exit::Success)
}
