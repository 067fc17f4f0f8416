//! Applying a resource plan: server-side apply with field manager `mtcd`, one rank at a
//! time (CRDs established before their resources), bounded concurrency inside a rank,
//! retries on conflicts, throttling and server errors. An object that fails is reported by
//! name with the API server's message; the others still apply.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use crate::observe::{self, Catalog};
use crate::plan::{Action, ObjectKey, ResourceChange};

pub const FIELD_MANAGER: &str = "mtcd";
const CONCURRENCY: usize = 16;
const ATTEMPTS: u32 = 5;

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

/// Applies `changes` (already in rank order) to the destination.
pub async fn apply(
    client: &kube::Client,
    context: &str,
    changes: &[ResourceChange],
    progress: &(dyn Fn(&ResourceChange, Result<(), &str>) + Sync),
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut catalog = match observe::discover(client, context).await {
        Ok((c, _)) => c,
        Err(e) => {
            report.failed.push(Failure { object: context.into(), message: e.to_string() });
            return report;
        }
    };
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
            if let Ok((c, _)) = observe::discover(client, context).await {
                catalog = c;
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
    Ok(match &key.namespace {
        Some(ns) if ty.namespaced => Api::namespaced_with(client.clone(), ns, &ty.resource),
        _ => Api::all_with(client.clone(), &ty.resource),
    })
}

async fn apply_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), String> {
    let api = api_for(client, catalog, &change.key)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let span = tracing::debug_span!("apply", object = %change.key);
    let _enter = span.enter();
    retry(|| async { api.patch(&change.key.name, &params, &Patch::Apply(&change.object)).await.map(|_| ()) }).await
}

async fn prune_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), String> {
    let api = api_for(client, catalog, &change.key)?;
    retry(|| async {
        match api.delete(&change.key.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// Retries what a real API server asks to be retried: conflicts, throttling, server errors
/// and dropped connections, with exponential backoff. Anything else is the object's fault
/// and is returned with the server's own message.
async fn retry<F, Fut>(mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match f().await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(e))
                if matches!(e.code, 409 | 429 | 500..=599) && e.reason != "AlreadyExists" && attempt < ATTEMPTS => {}
            Err(kube::Error::Api(e)) => return Err(format!("{} ({})", e.message, e.reason)),
            Err(e) if attempt < ATTEMPTS && is_transient(&e) => {}
            Err(e) => return Err(e.to_string()),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    unreachable!("the last attempt returns")
}

fn is_transient(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

async fn wait_established(client: &kube::Client, name: &str) -> Result<(), String> {
    let ty =
        observe::api_resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let crd = observe::get(client, &ty, None, name).await.map_err(|e| e.to_string())?;
        let established = crd
            .as_ref()
            .and_then(|c| c.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("not Established after 60s".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
