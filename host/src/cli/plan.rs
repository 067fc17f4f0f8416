//! `mtcd plan`: what `apply` would change, per object. Exit 0: nothing to do; 2: changes.

use std::io::IsTerminal;

use super::Output;
use super::render::human_bytes;
use crate::plan::{Plan, render};

/// Prints a plan: the human review, or the plan as one JSON document.
///
/// The objects left out are counted ("N skipped"); `verbose` (`-v`) lists each and why.
pub fn print(plan: &Plan, output: Output, verbose: bool) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(plan).unwrap_or_default()),
        Output::Human => {
            let color = std::io::stdout().is_terminal();
            for m in &plan.migrations {
                println!("migration {} ({} → {})", m.name, m.source, m.destination);
                print!("{}", render::human(&m.resources, color));
                if verbose {
                    print!("{}", render::skipped(&m.resources));
                } else if !m.resources.skipped.is_empty() {
                    println!("  (`mtcd plan -v` lists the skipped objects and why)");
                }
                if !m.preflight.is_empty() {
                    println!("  preflight:");
                    for c in &m.preflight {
                        let mark = if c.ok { "ok  " } else { "FAIL" };
                        let when = if c.cutover_only { " (needed at cutover)" } else { "" };
                        println!("    {mark} {}{when}: {}", c.name, c.detail);
                    }
                }
                if !m.images.is_empty() || !m.images_skipped.is_empty() {
                    println!("  images (Direct Image Migration):");
                    for i in &m.images {
                        let artifacts = match (i.artifacts, i.artifacts_to_copy) {
                            (0, _) => String::new(),
                            (n, 0) => format!(", {n} signatures/attestations/referrers present"),
                            (n, k) => format!(", {k} of {n} signatures/attestations/referrers to copy"),
                        };
                        let state = match (&i.error, i.present) {
                            (Some(e), _) => format!("cannot inspect: {e}"),
                            (None, true) => format!("already present{artifacts}"),
                            (None, false) => format!(
                                "{} to copy of {}{artifacts}",
                                human_bytes(i.bytes_to_copy),
                                human_bytes(i.bytes_total)
                            ),
                        };
                        println!("    {} → {}  ({state})", i.source, i.destination);
                    }
                    for s in &m.images_skipped {
                        println!("    skipped {}: {}; used by {}", s.image, s.reason.describe(), s.used_by.join(", "));
                    }
                }
                if !m.volumes.transfers.is_empty() {
                    println!("  volumes to sync (Direct Volume Migration):");
                    for v in &m.volumes.transfers {
                        let note = if v.block { "  (volumeMode Block: not supported, will fail)" } else { "" };
                        println!(
                            "    {}/{} → {}/{}  {}{}{}",
                            v.namespace,
                            v.claim,
                            v.destination_namespace,
                            v.destination_claim,
                            v.capacity,
                            v.storage_class.as_deref().map(|c| format!(", class {c}")).unwrap_or_default(),
                            note
                        );
                    }
                }
            }
            let failed = plan.failed_checks(true).count();
            if failed > 0 {
                eprintln!(
                    "error: {failed} preflight check(s) failed (listed above); fix them before `mtcd apply` or `mtcd cutover`."
                );
            }
            let unread = plan.unread().count();
            if unread > 0 {
                eprintln!(
                    "error: {unread} type(s) could not be read completely (listed above); `mtcd apply` would change nothing. Grant the read, or leave the kind out with `exclude_kinds`."
                );
            }
            if plan.pending() == 0 {
                println!("Nothing to do: the destination matches the desired state.");
            } else {
                println!("{} change(s) pending. Run `mtcd apply` to make them.", plan.pending());
            }
        }
    }
}
