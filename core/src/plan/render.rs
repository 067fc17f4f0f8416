//! Human rendering of a plan: grouped by namespace and kind, with counts, like
//! `terraform plan` — what a reviewer needs to approve a change.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Action, ResourcePlan};

pub fn human(plan: &ResourcePlan, color: bool) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<(String, String), Vec<&super::ResourceChange>> = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.action != Action::Unchanged) {
        let ns = c.key.namespace.clone().unwrap_or_else(|| "(cluster)".into());
        groups.entry((ns, c.key.kind.clone())).or_default().push(c);
    }
    let paint = |s: &str, a: Action| -> String {
        if !color {
            return s.to_string();
        }
        use owo_colors::OwoColorize;
        match a {
            Action::Create => s.green().to_string(),
            Action::Update => s.yellow().to_string(),
            Action::Prune => s.red().to_string(),
            Action::Adopt => s.cyan().to_string(),
            Action::Replace => s.magenta().to_string(),
            Action::Unchanged => s.to_string(),
        }
    };
    let mut last_ns = None;
    for ((ns, kind), changes) in &groups {
        if last_ns.as_ref() != Some(ns) {
            let _ = writeln!(out, "  namespace {ns}");
            last_ns = Some(ns.clone());
        }
        let _ = writeln!(out, "    {kind} ({})", changes.len());
        for c in changes {
            let (sign, word) = match c.action {
                Action::Create => ("+", "create"),
                Action::Update => ("~", "update"),
                Action::Prune => ("-", "prune"),
                Action::Adopt => ("*", "adopt"),
                Action::Replace => ("-/+", "replace"),
                Action::Unchanged => (" ", "unchanged"),
            };
            let _ = writeln!(
                out,
                "      {} {} {}",
                paint(sign, c.action),
                c.key.name,
                paint(&format!("({word})"), c.action)
            );
            for d in &c.diff {
                let _ = writeln!(out, "          {d}");
            }
        }
    }
    let count = |a: Action| plan.changes.iter().filter(|c| c.action == a).count();
    let _ = writeln!(
        out,
        "  resources: {} to create, {} to update, {} to replace, {} to adopt, {} to prune, {} unchanged, {} skipped",
        count(Action::Create),
        count(Action::Update),
        count(Action::Replace),
        count(Action::Adopt),
        count(Action::Prune),
        count(Action::Unchanged),
        plan.skipped.len()
    );
    if !plan.dependencies.is_empty() {
        let _ = writeln!(out, "  cluster-scoped dependencies:");
        for d in &plan.dependencies {
            let _ = writeln!(out, "    {} ({}): {}", d.key, d.needed_by, d.outcome);
        }
    }
    for k in &plan.kept {
        let owners: Vec<String> = k
            .owners
            .iter()
            .map(|o| format!("{} {}{}", o.kind, o.name, if o.migrated { "" } else { " (not migrated)" }))
            .collect();
        let what = match (k.relink, k.linked) {
            (true, true) => "re-linked to its owner on the destination",
            (true, false) => "re-linked to its owner's destination UID after apply",
            (false, _) => "arrives without an owner (its owner is not migrated)",
        };
        let _ = writeln!(out, "  kept (keep_owned) {}: owned by {}; {what}", k.key, owners.join(", "));
    }
    for w in &plan.waits {
        let _ = writeln!(
            out,
            "  apply waits for {} (made by {}; needed by {})",
            w.object,
            w.made_by,
            w.needed_by.join(", ")
        );
    }
    if !plan.unread.is_empty() {
        let _ = writeln!(out, "  not read completely (nothing of these is created, updated or pruned):");
        for u in &plan.unread {
            let r = &u.unread;
            let ns = r.namespace.as_deref().map(|n| format!(" in {n}")).unwrap_or_default();
            let _ = writeln!(out, "    {} {}{ns}: {}", u.side, r.resource, r.reason);
        }
        if !plan.withheld.is_empty() {
            let _ = writeln!(out, "    {} desired object(s) of these types withheld", plan.withheld.len());
        }
    }
    for b in &plan.blocked {
        let _ = writeln!(out, "  blocked: {b}");
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

/// The source objects the plan leaves out, grouped by why (`mtcd plan -v`; JSON always has
/// them as `skipped`).
pub fn skipped(plan: &ResourcePlan) -> String {
    let mut out = String::new();
    if plan.skipped.is_empty() {
        return out;
    }
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &plan.skipped {
        by_reason.entry(&s.reason).or_default().push(s.key.to_string());
    }
    let _ = writeln!(out, "  skipped ({}):", plan.skipped.len());
    for (reason, mut keys) in by_reason {
        keys.sort();
        let _ = writeln!(out, "    {reason} ({}):", keys.len());
        for k in keys {
            let _ = writeln!(out, "      {k}");
        }
    }
    out
}
