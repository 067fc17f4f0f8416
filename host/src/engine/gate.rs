//! Deciding what the plan may do with objects that exist on the destination but cannot
//! simply be applied: objects mtcd did not create (adopt), and changes to immutable fields
//! (replace). Immutability is learnt from the API server itself, by a server-side dry-run of
//! each object that would change (no request for unchanged objects), so `plan` shows
//! `-/+ replace` with the field before anything is written.

use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::Engine;
use crate::labels::FIELD_MANAGER;
use crate::observe;
use crate::plan::{Action, MigrationPlan, Plan, ResourceChange};
use crate::snapshot::Catalog;

/// Kinds that are never replaced: deleting them deletes data.
const NEVER_REPLACED: &[(&str, &str)] = &[("", "PersistentVolumeClaim"), ("", "Namespace")];

impl Engine {
    /// Marks changes the API server would refuse as immutable as `replace` (or blocked), and
    /// objects to adopt as blocked unless adoption is allowed.
    pub(super) async fn gate(&self, plan: &mut Plan, catalog: &Catalog) {
        // Velero applies the objects of `resources = "velero"` migrations its own way.
        for m in plan.migrations.iter_mut().filter(|m| m.mode == crate::spec::ResourceMode::Direct) {
            let adopt = self.options.adopt || self.spec.migrations.iter().any(|s| s.name == m.name && s.adopt);
            let replace_kinds: Vec<String> = self
                .spec
                .migrations
                .iter()
                .find(|s| s.name == m.name)
                .map(|s| s.replace_kinds.clone())
                .unwrap_or_default();
            self.gate_migration(m, catalog, adopt, &replace_kinds).await;
        }
    }

    async fn gate_migration(&self, m: &mut MigrationPlan, catalog: &Catalog, adopt: bool, replace_kinds: &[String]) {
        let mut blocked = Vec::new();
        let candidates: Vec<usize> = m
            .resources
            .changes
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.action, Action::Update | Action::Adopt))
            .map(|(i, _)| i)
            .collect();
        let dry_runs = futures::future::join_all(candidates.iter().map(|&i| {
            let c = &m.resources.changes[i];
            async move { (i, self.immutable(catalog, c).await) }
        }))
        .await;
        for (i, immutable) in dry_runs {
            let c = &mut m.resources.changes[i];
            if c.action == Action::Adopt && !adopt {
                blocked.push(format!(
                    "{}: exists on the destination and mtcd did not create it; set `adopt = true` in migration {:?} or run with --adopt to take it over",
                    c.key, m.name
                ));
            }
            let Some(field) = immutable else { continue };
            let kind = (c.key.group.as_str(), c.key.kind.as_str());
            let listed =
                replace_kinds.iter().any(|k| k == &c.key.kind || k == &format!("{}.{}", c.key.kind, c.key.group));
            if NEVER_REPLACED.contains(&kind) {
                blocked
                    .push(format!("{}: {field}; mtcd never replaces a {} (it would delete data)", c.key, c.key.kind));
            } else if listed || self.options.allow_replace {
                c.action = Action::Replace;
                c.diff.insert(0, format!("(replace: {field})"));
            } else {
                blocked.push(format!(
                    "{}: {field}; add {:?} to `replace_kinds` or run with --allow-replace to delete and recreate it",
                    c.key, c.key.kind
                ));
            }
        }
        m.resources.blocked.extend(blocked);
    }

    /// The immutable field a change would touch, as the API server says it on a dry run.
    async fn immutable(&self, catalog: &Catalog, c: &ResourceChange) -> Option<String> {
        let ty = catalog.find(&c.key.group, &c.key.kind)?;
        let r = observe::resource(ty);
        let api: Api<DynamicObject> = match &c.key.namespace {
            Some(ns) if ty.namespaced => Api::namespaced_with(self.destination.client.clone(), ns, &r),
            _ => Api::all_with(self.destination.client.clone(), &r),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        match api.patch(&c.key.name, &params, &Patch::Apply(&c.object)).await {
            Err(kube::Error::Api(s)) if s.code == 422 => {
                let text = crate::cluster::short_error(&kube::Error::Api(s));
                let immutable = text.contains("immutable") || text.contains("Forbidden: updates to");
                immutable.then(|| text.split_once(" is invalid: ").map_or(text.clone(), |(_, why)| why.to_string()))
            }
            _ => None,
        }
    }
}
