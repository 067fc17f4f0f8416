//! The Job controller: a Job gets pods from its template (run by the node agent like any
//! pod) until enough succeed, or it fails after `backoffLimit` failed pods.

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

enum Change {
    Job(Box<Job>, bool),
    Pod(Box<Pod>),
}

pub(super) async fn run(client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let jobs = watcher::watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(|e| async move {
            match e {
                Ok(Event::Apply(j) | Event::InitApply(j)) => Some(Change::Job(Box::new(j), false)),
                Ok(Event::Delete(j)) => Some(Change::Job(Box::new(j), true)),
                _ => None,
            }
        });
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(UID_LABEL))
        .default_backoff()
        .filter_map(|e| async move {
            match e {
                Ok(Event::Apply(p) | Event::InitApply(p) | Event::Delete(p)) => Some(Change::Pod(Box::new(p))),
                _ => None,
            }
        });
    let mut changes = futures::stream::select(jobs.boxed(), pods.boxed());
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = changes.next() => c,
        };
        let result = match change {
            None => return Ok(()),
            Some(Change::Job(job, true)) => delete_pods(&client, &job).await,
            Some(Change::Job(job, false)) => reconcile(&client, &job).await,
            Some(Change::Pod(pod)) => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.labels.as_ref().and_then(|l| l.get("batch.kubernetes.io/job-name").cloned());
                match name {
                    Some(name) => match Api::<Job>::namespaced(client.clone(), &ns).get_opt(&name).await {
                        Ok(Some(job)) => reconcile(&client, &job).await,
                        _ => Ok(()),
                    },
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "job controller");
        }
    }
}

fn pod_selector(job: &Job) -> String {
    format!("{UID_LABEL}={}", job.metadata.uid.clone().unwrap_or_default())
}

async fn delete_pods(client: &kube::Client, job: &Job) -> anyhow::Result<()> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for p in pods.list(&ListParams::default().labels(&pod_selector(job))).await?.items {
        if let Some(n) = p.metadata.name {
            let _ = pods.delete(&n, &DeleteParams::background()).await;
        }
    }
    Ok(())
}

async fn reconcile(client: &kube::Client, job: &Job) -> anyhow::Result<()> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let status = job.status.clone().unwrap_or_default();
    let finished = status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    if finished {
        return Ok(());
    }
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1);
    let parallelism = spec.parallelism.unwrap_or(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = pods.list(&ListParams::default().labels(&pod_selector(job))).await?.items;
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let succeeded = list.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed = list.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let mut active = list.iter().filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed")).count() as i32;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut patch = json!({
        "startTime": status.start_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| now.clone()),
        "succeeded": succeeded, "failed": failed,
    });
    if succeeded >= completions {
        patch["active"] = json!(0);
        patch["completionTime"] = json!(now);
        patch["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
        ]);
    } else if failed > backoff_limit {
        patch["active"] = json!(0);
        patch["conditions"] = json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
        ]);
        for p in list.iter().filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed")) {
            if let Some(n) = &p.metadata.name {
                let _ = pods.delete(n, &DeleteParams::background()).await;
            }
        }
    } else if spec.suspend != Some(true) {
        let wanted = parallelism.min(completions - succeeded);
        while active < wanted {
            let template = serde_json::to_value(&spec.template)?;
            let mut pod = json!({
                "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
                "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
            });
            let suffix: String = (0..5).map(|_| (b'a' + rand::random_range(0..26u8)) as char).collect();
            pod["metadata"]["name"] = json!(format!("{name}-{suffix}"));
            pod["metadata"]["namespace"] = json!(ns);
            for (k, v) in [
                ("job-name", &name),
                ("controller-uid", &uid),
                ("batch.kubernetes.io/job-name", &name),
                (UID_LABEL, &uid),
            ] {
                pod["metadata"]["labels"][k] = json!(v);
            }
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}]);
            let pod: Pod = serde_json::from_value(pod)?;
            pods.create(&PostParams::default(), &pod).await?;
            active += 1;
        }
        patch["active"] = json!(active);
    } else {
        patch["active"] = json!(active);
    }
    let current = serde_json::to_value(&status)?;
    let unchanged = patch.as_object().is_some_and(|m| {
        m.iter().all(|(k, v)| k == "startTime" && current.get(k).is_some() || current.get(k) == Some(v))
    });
    if !unchanged {
        Api::<Job>::namespaced(client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": patch})))
            .await?;
    }
    Ok(())
}
