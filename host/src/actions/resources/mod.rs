//! Applying a resource plan: server-side apply with field manager `mtcd`, one rank at a
//! time (CRDs established before their resources), bounded concurrency inside a rank,
//! retries on conflicts, throttling and server errors. An object that fails is reported by
//! name with the API server's message; the others still apply.

mod ready;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::observe;
use crate::plan::{Action, ObjectKey, ResourceChange, Wait};
use crate::snapshot::Catalog;

pub use crate::labels::FIELD_MANAGER;
pub use ready::READY_TIMEOUT;
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
    /// Updated, adopted and replaced objects.
    pub updated: usize,
    pub pruned: usize,
    pub unchanged: usize,
    pub failed: Vec<Failure>,
}

/// The destination stopped answering mid-apply: one error for the whole run, not one per
/// object.
#[derive(Debug, thiserror::Error)]
#[error(
    "{context}: the API server {server} stopped answering ({reason}) after {applied} object(s) were applied; nothing more was written. When it is back, run `mtcd apply` again: it picks up where this stopped"
)]
pub struct Unreachable {
    pub context: String,
    pub server: String,
    /// The innermost cause ("Connection refused").
    pub reason: String,
    pub applied: usize,
}

/// Requests in a row that got no answer before the run stops (each already retried).
const DEAD_AFTER: usize = 3;

/// Counts requests in a row that got no answer at all; any answer resets it.
#[derive(Default)]
struct Breaker {
    silent: AtomicUsize,
    last: std::sync::Mutex<Option<String>>,
}

impl Breaker {
    fn tripped(&self) -> bool {
        self.silent.load(Ordering::Relaxed) >= DEAD_AFTER
    }

    /// Records one outcome; `Err(None)` means "not tried, the cluster is down".
    fn record(&self, r: &Result<(), kube::Error>) {
        match r {
            Err(e) if !crate::cluster::is_answer(e) => {
                self.silent.fetch_add(1, Ordering::Relaxed);
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::cluster::short_error(e));
            }
            _ => self.silent.store(0, Ordering::Relaxed),
        }
    }
}

/// Applies `changes` (already in rank order) to the destination, whose types `catalog` lists
/// (from the snapshot: discovery runs again only after a CRD mtcd created is Established).
/// Each object's failure is its own; a destination that stops answering ends the run with
/// one [`Unreachable`] error.
pub async fn apply(
    dst: &Cluster,
    catalog: &Catalog,
    changes: &[ResourceChange],
    progress: &(dyn Fn(&ResourceChange, Result<(), &str>) + Sync),
) -> Result<ApplyReport, Unreachable> {
    apply_ready(dst, catalog, changes, &[], progress, &|_, _| {}).await
}

/// [`apply`], waiting before each rank for the objects of `waits` that rank needs
/// (plan::readiness; at most [`READY_TIMEOUT`], `waiting` told what is still missing).
pub async fn apply_ready(
    dst: &Cluster,
    catalog: &Catalog,
    changes: &[ResourceChange],
    waits: &[Wait],
    progress: &(dyn Fn(&ResourceChange, Result<(), &str>) + Sync),
    waiting: &(dyn Fn(Vec<String>, u64) + Sync),
) -> Result<ApplyReport, Unreachable> {
    let client = &dst.client;
    let mut report = ApplyReport::default();
    let breaker = Breaker::default();
    let mut catalog = std::borrow::Cow::Borrowed(catalog);
    let mut ranks: Vec<u8> = changes.iter().map(|c| c.rank).collect();
    ranks.dedup();
    let writes: Vec<&ResourceChange> = changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Adopt | Action::Replace))
        .collect();
    report.unchanged = changes.iter().filter(|c| c.action == Action::Unchanged).count();
    let down = |report: &ApplyReport, breaker: &Breaker| Unreachable {
        context: dst.context.clone(),
        server: dst.config.cluster_url.to_string(),
        reason: breaker.last.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default(),
        applied: report.created + report.updated + report.pruned,
    };
    for rank in &ranks {
        let group: Vec<&ResourceChange> = writes.iter().copied().filter(|c| c.rank == *rank).collect();
        if group.is_empty() {
            continue;
        }
        let due: Vec<&Wait> = waits.iter().filter(|w| w.rank == *rank).collect();
        if !due.is_empty() {
            report.failed.extend(ready::wait_for(client, &catalog, &due, READY_TIMEOUT, waiting).await);
        }
        let results: Vec<(&ResourceChange, Option<Result<(), kube::Error>>)> =
            futures::stream::iter(group.into_iter().map(|c| {
                let catalog = &catalog;
                let breaker = &breaker;
                async move {
                    if breaker.tripped() {
                        return (c, None);
                    }
                    let r = apply_one(client, catalog, c).await;
                    breaker.record(&r);
                    (c, Some(r))
                }
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut crds = Vec::new();
        for (c, r) in results {
            match r {
                None => {}
                Some(Err(e)) if !crate::cluster::is_answer(&e) && breaker.tripped() => {}
                Some(Ok(())) => {
                    progress(c, Ok(()));
                    if c.action == Action::Create {
                        report.created += 1
                    } else {
                        report.updated += 1
                    }
                    if c.key.kind == "CustomResourceDefinition" {
                        crds.push(c.key.name.clone());
                    }
                }
                Some(Err(e)) => {
                    let message = message(e);
                    progress(c, Err(&message));
                    report.failed.push(Failure { object: c.key.to_string(), message });
                }
            }
        }
        if breaker.tripped() {
            return Err(down(&report, &breaker));
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
        breaker.record(&r);
        if breaker.tripped() {
            return Err(down(&report, &breaker));
        }
        match r {
            Ok(()) => {
                progress(c, Ok(()));
                report.pruned += 1
            }
            Err(e) => {
                let message = message(e);
                progress(c, Err(&message));
                report.failed.push(Failure { object: c.key.to_string(), message });
            }
        }
    }
    Ok(report)
}

/// A type the destination does not serve, as the API server would say it.
fn not_served(key: &ObjectKey) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(
            &format!(
                "the destination does not serve kind {} in group {:?} (is its CRD installed?)",
                key.kind, key.group
            ),
            "NotFound",
        )
        .with_code(404),
    ))
}

fn api_for(client: &kube::Client, catalog: &Catalog, key: &ObjectKey) -> Result<Api<DynamicObject>, kube::Error> {
    let ty = catalog.find(&key.group, &key.kind).ok_or_else(|| not_served(key))?;
    let resource = observe::resource(ty);
    Ok(match &key.namespace {
        Some(ns) if ty.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    })
}

fn message(e: kube::Error) -> String {
    match &e {
        kube::Error::Api(s) if s.reason == "NotFound" && s.message.starts_with("the destination does not serve") => {
            s.message.clone()
        }
        _ => crate::cluster::short_error(&e),
    }
}

async fn apply_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), kube::Error> {
    let api = api_for(client, catalog, &change.key)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let span = tracing::debug_span!("apply", object = %change.key, action = ?change.action);
    tracing::Instrument::instrument(
        async {
            if change.action == Action::Replace {
                replace_away(&api, change).await?;
            }
            crate::retry::kube(|| async {
                api.patch(&change.key.name, &params, &Patch::Apply(&change.object)).await.map(|_| ())
            })
            .await
        },
        span,
    )
    .await
}

/// How long a replaced object may take to be gone (finalizers, foreground deletion).
const GONE_TIMEOUT: Duration = Duration::from_secs(120);

/// The first half of a replace: delete in the foreground (a Job's pods go with it) and wait
/// until the object — that exact one, by uid — is gone.
async fn replace_away(api: &Api<DynamicObject>, change: &ResourceChange) -> Result<(), kube::Error> {
    let Some(live) = api.get_opt(&change.key.name).await? else { return Ok(()) };
    let uid = live.metadata.uid.clone().unwrap_or_default();
    match api.delete(&change.key.name, &DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    let gone = kube::runtime::wait::await_condition(
        api.clone(),
        &change.key.name,
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    let timeout = || {
        kube::core::Status::failure(
            &format!("replacing: still there {}s after its deletion (finalizers?)", GONE_TIMEOUT.as_secs()),
            "Timeout",
        )
        .with_code(504)
    };
    match tokio::time::timeout(GONE_TIMEOUT, gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(kube::Error::Service(Box::new(e))),
        Err(_) => Err(kube::Error::Api(Box::new(timeout()))),
    }
}

async fn prune_one(client: &kube::Client, catalog: &Catalog, change: &ResourceChange) -> Result<(), kube::Error> {
    let api = api_for(client, catalog, &change.key)?;
    crate::retry::kube(|| async {
        match api.delete(&change.key.name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use serde_json::json;

    use super::*;
    use crate::snapshot::ApiType;

    #[tokio::test]
    async fn a_destination_that_stops_answering_is_one_error_not_one_per_object() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dst =
            Cluster::from_config("lab-dst", kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
        let catalog = Catalog {
            types: vec![ApiType {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
                namespaced: true,
                verbs: vec![],
            }],
            unavailable: vec![],
        };
        let changes: Vec<ResourceChange> = (0..200)
            .map(|i| {
                let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}"), "namespace": "shop"}});
                ResourceChange {
                    action: Action::Create,
                    api_version: "v1".into(),
                    key: ObjectKey::of(&object),
                    diff: vec![],
                    object,
                    rank: 10,
                }
            })
            .collect();
        let printed = AtomicUsize::new(0);
        let progress = |_: &ResourceChange, _: Result<(), &str>| {
            printed.fetch_add(1, Ordering::Relaxed);
        };
        let started = std::time::Instant::now();
        let e = apply(&dst, &catalog, &changes, &progress).await.unwrap_err();
        assert_eq!(printed.load(Ordering::Relaxed), 0, "no per-object failure lines");
        let text = e.to_string();
        assert!(text.starts_with(&format!("lab-dst: the API server http://{addr}/ stopped answering")), "{text}");
        assert!(text.to_lowercase().contains("refused") && text.contains("run `mtcd apply` again"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    }
}
