//! Applying a resource plan: server-side apply with field manager `mtcd`, one rank at a
//! time (CRDs established before their resources), bounded concurrency inside a rank,
//! retries on conflicts, throttling and server errors. An object that fails is reported by
//! name with the API server's message; the others still apply.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::observe;
use crate::plan::{Action, ObjectKey, ResourceChange};
use crate::snapshot::Catalog;

pub use crate::labels::FIELD_MANAGER;
const CONCURRENCY: usize = 16;
/// How long a CRD mtcd created may take to be Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// One object that could not be applied.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub created: usize,
    pub updated: usize,
    pub pruned: usize,
    pub unchanged: usize,
    pub failed: Vec<Failure>,
}

/// Applies `changes` (already in rank order) to the destination, whose types `catalog` lists
/// (from the snapshot: discovery runs again only after a CRD mtcd created is Established).
pub async fn apply(
    dst: &Cluster,
    catalog: &Catalog,
    changes: &[ResourceChange],
    progress: &(dyn Fn(&ResourceChange, Result<(), &str>) + Sync),
) -> ApplyReport {
    let client = &dst.client;
    let mut report = ApplyReport::default();
    let mut catalog = std::borrow::Cow::Borrowed(catalog);
    let mut ranks: Vec<u8> = changes.iter().map(|c| c.rank).collect();
    ranks.dedup();
    let writes: Vec<&ResourceChange> =
        changes.iter().filter(|c| matches!(c.action, Action::Create | Action::Update)).collect();
    report.unchanged = changes.iter().filter(|c| c.action == Action::Unchanged).count();
    for rank in &ranks {
        let group: Vec<&ResourceChange> = writes.iter().copied().filter(|c| c.rank == *rank).collect();
        if group.is_empty() {
            continue;
        }
        let results: Vec<(&ResourceChange, Result<(), String>)> = futures::stream::iter(group.into_iter().map(|c| {
            let catalog = &catalog;
            async move { (c, apply_one(client, catalog, c).await) }
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
        let mut crds = Vec::new();
        for (c, r) in results {
            progress(c, r.as_ref().map(|_| ()).map_err(String::as_str));
            match r {
                Ok(()) => {
                    if c.action == Action::Create {
                        report.created += 1
                    } else {
                        report.updated += 1
                    }
                    if c.key.kind == "CustomResourceDefinition" {
                        crds.push(c.key.name.clone());
                    }
                }
                Err(message) => report.failed.push(Failure { object: c.key.to_string(), message }),
            }
        }
        if !crds.is_empty() {
            for name in &crds {
                if let Err(message) = wait_established(client, name).await {
                    report.failed.push(Failure {
                        object: format!("CustomResourceDefinition.apiextensions.k8s.io/{name}"),
                        message,
                    });
                }
            }
            // New types are served now: find them before their objects' rank.
            match observe::discover(client, &dst.context).await {
                Ok(c) => catalog = std::borrow::Cow::Owned(c),
                Err(e) => report.failed.push(Failure { object: dst.context.clone(), message: e.to_string() }),
            }
        }
    }
    // Prunes last, dependents first (reverse rank), so nothing is left pointing at a
    // deleted object mid-way.
    let mut prunes: Vec<&ResourceChange> = changes.iter().filter(|c| c.action == Action::Prune).collect();
    prunes.sort_by_key(|c| std::cmp::Reverse(c.rank));
    for c in prunes {
        let r = prune_one(client, &catalog, c).await;
        progress(c, r.as_ref().map(|_| ()).map_err(String::as_str));
        match r {
            Ok(()) => report.pruned += 1,
            Err(message) => report.failed.push(Failure { object: c.key.to_string(), message }),
        }
    }
    report
}

fn api_for(client: &kube::Client, catalog: &Catalog, key: &ObjectKey) -> Result<Api<DynamicObject>, String> {
    let ty = catalog.find(&key.group, &key.kind).ok_or_else(|| {
        format!("the destination does not serve kind {} in group {:?} (is its CRD installed?)", key.kind, key.group)
    })?;
    let resource = observe::resource(ty);
    Ok(match &key.namespace {
        Some(ns) if ty.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

fn message(e: kube::Error) -> String {
    crate::cluster::short_error(&e)
}

async fn apply_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), String> {
    let api = api_for(client, catalog, &change.key)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let span = tracing::debug_span!("apply", object = %change.key);
    let _enter = span.enter();
    crate::retry::kube(|| async {
        api.patch(&change.key.name, &params, &Patch::Apply(&change.object)).await.map(|_| ())
    })
    .await
    .map_err(message)
}

async fn prune_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), String> {
    let api = api_for(client, catalog, &change.key)?;
    crate::retry::kube(|| async {
        match api.delete(&change.key.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(message)
}

async fn wait_established(client: &kube::Client, name: &str) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established =
        kube::runtime::wait::await_condition(crds, name, kube::runtime::wait::conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISHED_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("watching for Established: {e}")),
        Err(_) => Err(format!("not Established after {}s", ESTABLISHED_TIMEOUT.as_secs())),
    }
}
