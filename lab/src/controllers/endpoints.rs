//! The endpoints controller: each Service with a selector gets an Endpoints object listing
//! its Running pods, as on a real cluster (tools and migrations see them there too).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub(super) async fn run(client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ns_of = |m: &kube::api::ObjectMeta| m.namespace.clone().unwrap_or_default();
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(move |e| async move {
            match e {
                Ok(Event::Apply(s) | Event::InitApply(s) | Event::Delete(s)) => Some(ns_of(&s.metadata)),
                _ => None,
            }
        });
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(move |e| async move {
            match e {
                Ok(Event::Apply(p) | Event::InitApply(p) | Event::Delete(p)) => Some(ns_of(&p.metadata)),
                _ => None,
            }
        });
    let mut changes = futures::stream::select(services.boxed(), pods.boxed());
    loop {
        let ns = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = changes.next() => match n { Some(n) => n, None => return Ok(()) },
        };
        // Coalesce a burst of events for the same namespace into one pass.
        let mut pending = vec![ns];
        while let Some(Some(more)) = futures::FutureExt::now_or_never(changes.next()) {
            if !pending.contains(&more) {
                pending.push(more);
            }
        }
        for ns in pending {
            if let Err(e) = sync_namespace(&client, &ns).await {
                tracing::debug!(namespace = %ns, error = %e, "endpoints");
            }
        }
    }
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Endpoints subsets of `svc` over `pods` (Running pods with an IP are ready).
pub fn subsets(svc: &Service, pods: &[Pod]) -> Value {
    let spec = svc.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let chosen: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && selects(&selector, p))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
        .collect();
    if chosen.is_empty() {
        return json!([]);
    }
    let address = |p: &Pod| {
        json!({"ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()), "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
               "targetRef": {"kind": "Pod", "namespace": p.metadata.namespace, "name": p.metadata.name, "uid": p.metadata.uid}})
    };
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready: Vec<Value> = chosen.iter().filter(|p| running(p)).map(|p| address(p)).collect();
    let not_ready: Vec<Value> = chosen.iter().filter(|p| !running(p)).map(|p| address(p)).collect();
    let ports: Vec<Value> = spec
        .ports
        .iter()
        .flatten()
        .map(|sp| {
            let port = match &sp.target_port {
                None => sp.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => chosen
                    .iter()
                    .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .map(|cp| cp.container_port)
                    .unwrap_or(sp.port),
            };
            let mut v = json!({"port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())});
            if let Some(n) = &sp.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    let mut subset = json!({"ports": ports});
    if !ready.is_empty() {
        subset["addresses"] = json!(ready);
    }
    if !not_ready.is_empty() {
        subset["notReadyAddresses"] = json!(not_ready);
    }
    json!([subset])
}

async fn sync_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let services = Api::<Service>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items;
    let with_selector: Vec<&Service> = services
        .iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty()))
        .collect();
    if with_selector.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default()).await?.items;
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    for svc in with_selector {
        let Some(name) = svc.metadata.name.clone() else {
            continue;
        };
        let want = subsets(svc, &pods);
        let existing = api.get_opt(&name).await?;
        let have = existing
            .as_ref()
            .map(|e| serde_json::to_value(e.subsets.clone().unwrap_or_default()).unwrap_or_default())
            .unwrap_or(Value::Null);
        if have == want {
            continue;
        }
        let mut obj =
            json!({"metadata": {"name": name, "namespace": ns, "labels": svc.metadata.labels}, "subsets": want});
        match existing {
            Some(e) => {
                obj["metadata"]["resourceVersion"] = json!(e.metadata.resource_version);
                let ep: Endpoints = serde_json::from_value(obj)?;
                api.replace(&name, &PostParams::default(), &ep).await?;
            }
            None => {
                let ep: Endpoints = serde_json::from_value(obj)?;
                api.create(&PostParams::default(), &ep).await?;
            }
        }
    }
    Ok(())
}
