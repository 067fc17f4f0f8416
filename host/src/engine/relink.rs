//! Re-linking what `keep_owned` copies (velero#7862): an owned object arrives without its
//! owner references (the source's owner UID would get it garbage-collected at once). Once
//! the resources are applied, each kept object whose owner is migrated too gets an owner
//! reference to that owner's *destination* UID, written by its own field manager
//! (`mtcd-relink`), so re-applying the object never removes it. Owners that are not migrated
//! are left out: the object stays on the destination, unowned, as the plan says.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::Engine;
use crate::actions::resources::Failure;
use crate::labels::RELINK_FIELD_MANAGER;
use crate::observe;
use crate::plan::MigrationPlan;
use crate::plan::dependencies::{Kept, owner_key};
use crate::progress::Event;
use crate::snapshot::Catalog;

impl Engine {
    /// Re-links every kept object of `m` whose owner is migrated; failures name the object.
    pub(super) async fn relink(&self, m: &MigrationPlan, catalog: &Catalog) -> Vec<Failure> {
        let mut failed = Vec::new();
        // Owners of a type whose CRD this apply created are served now, not in the snapshot.
        let mut fresh: Option<Catalog> = None;
        for k in m.resources.kept.iter().filter(|k| k.relink) {
            let served = k.owners.iter().filter(|o| o.migrated).all(|o| {
                let key = owner_key(&o.api_version, &o.kind, &o.name, None);
                catalog.find(&key.group, &key.kind).is_some()
            });
            if !served && fresh.is_none() {
                fresh = observe::discover(&self.destination.client, &self.destination.context).await.ok();
            }
            let cat = if served { catalog } else { fresh.as_ref().unwrap_or(catalog) };
            match self.relink_one(k, cat).await {
                Ok(None) => {}
                Ok(Some(owners)) => self.events.emit(Event::Step {
                    migration: m.name.clone(),
                    step: format!("re-linked {} to its owner {owners} on the destination", k.key),
                }),
                Err(message) => {
                    self.events.emit(Event::Resource {
                        migration: m.name.clone(),
                        action: crate::plan::Action::Update,
                        object: k.key.to_string(),
                        ok: false,
                        error: Some(message.clone()),
                    });
                    failed.push(Failure { object: k.key.to_string(), message });
                }
            }
        }
        failed
    }

    /// `Ok(None)`: already linked; `Ok(Some(owners))`: linked now.
    async fn relink_one(&self, k: &Kept, catalog: &Catalog) -> Result<Option<String>, String> {
        let client = &self.destination.client;
        let ns = k.key.namespace.as_deref().unwrap_or_default();
        let api_for = |group: &str, kind: &str| -> Result<Api<DynamicObject>, String> {
            let ty = catalog.find(group, kind).ok_or_else(|| format!("the destination does not serve kind {kind}"))?;
            Ok(Api::namespaced_with(client.clone(), ns, &observe::resource(ty)))
        };
        let api = api_for(&k.key.group, &k.key.kind)?;
        let short = |e: kube::Error| crate::cluster::short_error(&e);
        let live = api
            .get_opt(&k.key.name)
            .await
            .map_err(short)?
            .ok_or_else(|| "not on the destination, so not re-linked to its owner".to_string())?;
        let mut refs = Vec::new();
        let mut names = Vec::new();
        for o in k.owners.iter().filter(|o| o.migrated) {
            let key = owner_key(&o.api_version, &o.kind, &o.name, Some(ns));
            let owner = api_for(&key.group, &key.kind)?
                .get_opt(&o.name)
                .await
                .map_err(short)?
                .ok_or_else(|| format!("its owner {key} is not on the destination; not re-linked"))?;
            let uid = owner.metadata.uid.clone().unwrap_or_default();
            let mut r = json!({"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": uid});
            if let Some(c) = o.controller {
                r["controller"] = json!(c);
            }
            if let Some(b) = o.block_owner_deletion {
                r["blockOwnerDeletion"] = json!(b);
            }
            refs.push(r);
            names.push(key.to_string());
        }
        let have = live.metadata.owner_references.unwrap_or_default();
        if refs.iter().all(|r| have.iter().any(|h| Value::String(h.uid.clone()) == r["uid"] && h.kind == r["kind"])) {
            return Ok(None);
        }
        let patch = json!({"apiVersion": k.api_version, "kind": k.key.kind,
            "metadata": {"name": k.key.name, "namespace": ns, "ownerReferences": refs}});
        let params = PatchParams::apply(RELINK_FIELD_MANAGER).force();
        crate::retry::kube(|| async { api.patch(&k.key.name, &params, &Patch::Apply(&patch)).await.map(|_| ()) })
            .await
            .map_err(short)?;
        Ok(Some(names.join(", ")))
    }
}
