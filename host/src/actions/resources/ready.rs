//! Readiness before a rank (plan::readiness): the objects the destination makes that the
//! rank's objects need (a new namespace's `default` ServiceAccount, made by a controller a
//! moment after the namespace) are watched for until they exist — at most
//! [`READY_TIMEOUT`], telling the caller every [`TICK`] what is still missing. One that never
//! comes is a failure naming it and what needs it; the rank is applied anyway (the API
//! server's own answer for each object follows).

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::api::{Api, DynamicObject};

use super::Failure;
use crate::observe;
use crate::plan::Wait;
use crate::snapshot::Catalog;

/// How long a rank waits for what the destination makes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the caller hears what is still missing.
const TICK: Duration = Duration::from_secs(2);

/// Waits until every object of `waits` exists on the destination. Returns a failure for each
/// one that did not appear in time (or whose type the destination does not serve).
pub async fn wait_for(
    client: &kube::Client,
    catalog: &Catalog,
    waits: &[&Wait],
    timeout: Duration,
    waiting: &(dyn Fn(Vec<String>, u64) + Sync),
) -> Vec<Failure> {
    let mut failed = Vec::new();
    let mut pending = FuturesUnordered::new();
    for w in waits {
        let Some(ty) = catalog.find(&w.object.group, &w.object.kind) else {
            failed.push(Failure {
                object: w.object.to_string(),
                message: format!(
                    "the destination does not serve {}; needed by {}",
                    w.object.kind,
                    w.needed_by.join(", ")
                ),
            });
            continue;
        };
        let r = observe::resource(ty);
        let api: Api<DynamicObject> = match &w.object.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &r),
            None => Api::all_with(client.clone(), &r),
        };
        let name = w.object.name.clone();
        pending.push(async move {
            let exists = |o: Option<&DynamicObject>| o.is_some();
            let r = kube::runtime::wait::await_condition(api, &name, exists).await;
            (*w, r.map(|_| ()).map_err(|e| e.to_string()))
        });
    }
    let mut missing: Vec<&Wait> = waits.to_vec();
    let started = Instant::now();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    while !pending.is_empty() {
        tokio::select! {
            Some((w, r)) = pending.next() => {
                missing.retain(|m| m.object != w.object);
                if let Err(e) = r {
                    failed.push(Failure { object: w.object.to_string(), message: format!("watching for it: {e}") });
                }
            }
            _ = tick.tick() => waiting(missing.iter().map(|w| w.object.to_string()).collect(), started.elapsed().as_secs()),
            _ = &mut deadline => {
                for w in &missing {
                    failed.push(Failure {
                        object: w.object.to_string(),
                        message: format!(
                            "not there {}s after apply began waiting for it (made by {}); needed by {}",
                            timeout.as_secs(),
                            w.made_by,
                            w.needed_by.join(", ")
                        ),
                    });
                }
                break;
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::ObjectKey;
    use crate::snapshot::ApiType;

    fn wait(kind: &str, name: &str) -> Wait {
        Wait {
            rank: 14,
            object: ObjectKey {
                group: String::new(),
                kind: kind.into(),
                namespace: Some("a".into()),
                name: name.into(),
            },
            needed_by: vec!["Pod/a/p".into()],
            made_by: "the destination's service-account controller".into(),
        }
    }

    #[tokio::test]
    async fn an_object_that_exists_ends_the_wait_and_an_unserved_type_is_a_failure_naming_it() {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "a", "resourceVersion": "5"}});
        let list = json!({"kind": "ServiceAccountList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"}, "items": [sa]});
        let c = crate::testing::fake_cluster(vec![("/api/v1/namespaces/a/serviceaccounts", 200, list)]).await;
        let catalog = Catalog {
            types: vec![ApiType {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                plural: "serviceaccounts".into(),
                namespaced: true,
                verbs: vec![],
            }],
            unavailable: vec![],
        };
        let (present, unserved) = (wait("ServiceAccount", "default"), wait("Gizmo", "g"));
        let failed = wait_for(&c.client, &catalog, &[&present, &unserved], Duration::from_secs(10), &|_, _| {}).await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].object, "Gizmo/a/g");
        assert!(failed[0].message.contains("does not serve Gizmo; needed by Pod/a/p"), "{}", failed[0].message);
    }
}
