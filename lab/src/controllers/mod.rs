//! The controllers a cluster has, as ordinary API clients: namespace defaults and lifecycle,
//! a local-path provisioner and its resizer, and replica status for workloads.
//!
//! Each controller is a kube-rs watcher loop; every write goes through the API, so the same
//! code would drive a real API server.

mod endpoints;
mod jobs;
mod resizer;
pub mod snapshots;
mod static_pv;
mod velero;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as K8sEvent, Namespace, ObjectReference, PersistentVolume, PersistentVolumeClaim, ServiceAccount,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The provisioner name of the lab's storage classes.
pub const PROVISIONER: &str = "lab.mtcd.io/local-path";

/// Configuration of one cluster's controllers.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// "src" or "dst".
    pub cluster: String,
    /// PV directories are created under `<storage_root>/<ns>/<pvc>-<uid>`.
    pub storage_root: PathBuf,
    /// "openshift" or "kubernetes".
    pub profile: String,
    /// The cluster's apps domain (routes); unused by these controllers but part of the config.
    pub apps_domain: String,
    /// The Velero stand-in's storage location, shared by both clusters; `None`: no
    /// Velero stand-in on this cluster.
    pub velero_storage: Option<PathBuf>,
}

/// Errors of the controllers.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A provisioned volume's directory could not be created.
    #[error("creating volume directory {dir} for persistentvolumeclaim {claim}")]
    VolumeDir {
        dir: String,
        claim: String,
        #[source]
        source: std::io::Error,
    },
    /// An API call failed.
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ControllerError {
    let what = what.into();
    move |source| ControllerError::Api { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Run every controller until `shutdown`.
pub async fn run(client: kube::Client, cfg: ControllerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(namespaces(client.clone(), cfg.clone(), shutdown.clone()));
    tasks.spawn(provisioner(client.clone(), cfg.clone(), shutdown.clone()));
    tasks.spawn(static_pv::run(client.clone(), shutdown.clone()));
    tasks.spawn(resizer::run(client.clone(), shutdown.clone()));
    tasks.spawn(jobs::run(client.clone(), shutdown.clone()));
    tasks.spawn(endpoints::run(client.clone(), shutdown.clone()));
    tasks.spawn(snapshots::run(client.clone(), cfg.storage_root.clone(), shutdown.clone()));
    if let Some(storage) = cfg.velero_storage.clone() {
        tasks.spawn(velero::run(client.clone(), storage, shutdown.clone()));
    }
    let mut workloads = vec![
        (GroupVersionKind::gvk("apps", "v1", "Deployment"), "deployments"),
        (GroupVersionKind::gvk("apps", "v1", "StatefulSet"), "statefulsets"),
        (GroupVersionKind::gvk("apps", "v1", "ReplicaSet"), "replicasets"),
        (GroupVersionKind::gvk("apps", "v1", "DaemonSet"), "daemonsets"),
    ];
    // DeploymentConfigs exist on the openshift profile only: ask discovery, not the profile.
    if client
        .list_api_group_resources("apps.openshift.io/v1")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == "deploymentconfigs"))
    {
        workloads.push((GroupVersionKind::gvk("apps.openshift.io", "v1", "DeploymentConfig"), "deploymentconfigs"));
    }
    for (gvk, plural) in workloads {
        tasks.spawn(workload(client.clone(), ApiResource::from_gvk_with_plural(&gvk, plural), shutdown.clone()));
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(cluster = %cfg.cluster, error = %e, "controller stopped");
        }
    }
    Ok(())
}

/// Drive a watcher until shutdown, calling `f` for every applied/deleted object.
async fn watch_each<K, F, Fut>(api: Api<K>, shutdown: CancellationToken, mut f: F) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: FnMut(K, bool) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = events.next() => ev,
        };
        match ev {
            None => return Ok(()),
            Some(Err(e)) => tracing::debug!(error = %e, "watch error; retrying"),
            Some(Ok(Event::Apply(o) | Event::InitApply(o))) => f(o, false).await,
            Some(Ok(Event::Delete(o))) => f(o, true).await,
            Some(Ok(_)) => {}
        }
    }
}

/// Namespace defaults (ServiceAccount `default`, ConfigMap `kube-root-ca.crt`) and, for a
/// terminating namespace, deleting what it contains.
async fn namespaces(client: kube::Client, cfg: ControllerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ca = find_ca(&cfg);
    let api: Api<Namespace> = Api::all(client.clone());
    watch_each(api, shutdown, |ns, deleted| {
        let client = client.clone();
        let ca = ca.clone();
        async move {
            let Some(name) = ns.metadata.name.clone() else {
                return;
            };
            if deleted {
                return;
            }
            let terminating = ns.metadata.deletion_timestamp.is_some()
                || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
            if terminating {
                if let Err(e) = empty_namespace(&client, &name).await {
                    tracing::warn!(namespace = %name, error = %e, "emptying terminating namespace");
                }
                return;
            }
            if let Err(e) = namespace_defaults(&client, &name, &ca).await {
                tracing::debug!(namespace = %name, error = %e, "namespace defaults");
            }
        }
    })
    .await
}

/// The lab CA, for `kube-root-ca.crt`: the orchestration writes it as `<lab dir>/ca.crt`,
/// two levels above a cluster's storage root (`<lab dir>/<cluster>/storage`).
fn find_ca(cfg: &ControllerConfig) -> String {
    cfg.storage_root
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join("ca.crt"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

async fn namespace_defaults(client: &kube::Client, ns: &str, ca: &str) -> Result<(), ControllerError> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if sas.get_opt("default").await.map_err(api_err(format!("reading serviceaccount/{ns}/default")))?.is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("static");
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(api_err(format!("creating serviceaccount/{ns}/default"))(e)),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    if cms
        .get_opt("kube-root-ca.crt")
        .await
        .map_err(api_err(format!("reading configmap/{ns}/kube-root-ca.crt")))?
        .is_none()
    {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ca},
        }))
        .expect("static");
        match cms.create(&PostParams::default(), &cm).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(api_err(format!("creating configmap/{ns}/kube-root-ca.crt"))(e)),
        }
    }
    Ok(())
}

/// Delete every namespaced object in `ns` (through discovery), then ask the server to
/// finalize the namespace.
async fn empty_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let discovery = kube::Discovery::new(client.clone()).run().await?;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != kube::discovery::Scope::Namespaced
                || !caps.supports_operation(kube::discovery::verbs::LIST)
                || !caps.supports_operation(kube::discovery::verbs::DELETE)
                || ar.plural == "events"
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list.items {
                if let Some(n) = o.metadata.name.as_deref() {
                    let _ = api.delete(n, &DeleteParams::background()).await;
                }
            }
        }
    }
    Ok(())
}

/// The local-path provisioner: binds PVCs of lab classes to fresh directories.
async fn provisioner(client: kube::Client, cfg: ControllerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let warned = std::sync::Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    // Claims restored from a snapshot wait for it to become ready: retried each second, as
    // the external provisioner retries with back-off.
    let resync = {
        let (client, cfg, warned, shutdown) = (client.clone(), cfg.clone(), warned.clone(), shutdown.clone());
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let Ok(list) = api.list(&ListParams::default()).await else { continue };
                for pvc in list.items {
                    let pending =
                        pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
                    if pending && snapshot_source(&pvc).is_some() {
                        let _ = provision(&client, &cfg, &pvc, &warned).await;
                    }
                }
            }
        }
    };
    let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let watch = watch_each(api, shutdown, |pvc, deleted| {
        let (client, cfg, warned) = (client.clone(), cfg.clone(), warned.clone());
        async move {
            let id = format!(
                "persistentvolumeclaim/{}/{}",
                pvc.metadata.namespace.as_deref().unwrap_or(""),
                pvc.metadata.name.as_deref().unwrap_or("")
            );
            let r = if deleted { release(&client, &pvc).await } else { provision(&client, &cfg, &pvc, &warned).await };
            if let Err(e) = r {
                tracing::warn!(claim = %id, error = %e, "provisioner");
            }
        }
    });
    let (r, ()) = tokio::join!(watch, resync);
    r
}

/// The VolumeSnapshot a claim is to be restored from (`dataSourceRef`, else `dataSource`).
fn snapshot_source(pvc: &PersistentVolumeClaim) -> Option<String> {
    let spec = pvc.spec.as_ref()?;
    let (kind, group, name) = match (&spec.data_source_ref, &spec.data_source) {
        (Some(r), _) => (r.kind.as_str(), r.api_group.as_deref(), r.name.as_str()),
        (None, Some(d)) => (d.kind.as_str(), d.api_group.as_deref(), d.name.as_str()),
        (None, None) => return None,
    };
    (kind == "VolumeSnapshot" && group == Some(snapshots::GROUP)).then(|| name.to_string())
}

fn quantity_of(pvc: &PersistentVolumeClaim) -> Value {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| json!(q.0))
        .unwrap_or_else(|| json!("1Gi"))
}

async fn provision(
    client: &kube::Client,
    cfg: &ControllerConfig,
    pvc: &PersistentVolumeClaim,
    warned: &std::sync::Mutex<HashSet<String>>,
) -> anyhow::Result<()> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Bound" {
        return Ok(());
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    // Which class? The claim's, or the default class if it names none.
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class_name = spec.storage_class_name.clone();
    let class = match &class_name {
        Some(c) if c.is_empty() => None, // "" means: no dynamic provisioning (static binding only)
        Some(c) => classes.get_opt(c).await?,
        None => classes.list(&ListParams::default()).await?.items.into_iter().find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true")
        }),
    };
    let Some(class) = class.filter(|c| c.provisioner == PROVISIONER) else {
        if warned.lock().expect("warned").insert(uid.clone()) {
            let msg = match &class_name {
                Some(c) if !c.is_empty() => {
                    format!("storageclass.storage.k8s.io \"{c}\" not found or not provisioned by {PROVISIONER}")
                }
                _ => "no storage class named and no default storage class; waiting for a volume to be created manually"
                    .into(),
            };
            event(client, pvc, "ProvisioningFailed", &msg).await;
        }
        return Ok(());
    };
    let class_name = class.metadata.name.clone().unwrap_or_default();
    let pv_name = spec.volume_name.clone().filter(|v| !v.is_empty()).unwrap_or_else(|| format!("pvc-{uid}"));
    let dir = cfg.storage_root.join(&ns).join(format!("{name}-{uid}"));
    if pvs.get_opt(&pv_name).await?.is_none() {
        if let Some(snapshot) = snapshot_source(pvc) {
            // Restored from a snapshot: the new volume starts as a copy of it.
            let restored = match snapshots::restore_source(client, &cfg.storage_root, &ns, &snapshot).await {
                Ok((from, restore_bytes)) => {
                    let requested = validate_quantity(&quantity_of(pvc));
                    if requested < restore_bytes {
                        Err(format!(
                            "requested volume size {requested} is less than the size {restore_bytes} for the source snapshot {snapshot}"
                        ))
                    } else {
                        let _ = std::fs::remove_dir_all(&dir);
                        snapshots::copy_tree(&from, &dir)
                            .await
                            .map_err(|e| format!("restoring snapshot {snapshot} into {}: {e:#}", dir.display()))
                    }
                }
                Err(msg) => Err(msg),
            };
            if let Err(msg) = restored {
                if warned.lock().expect("warned").insert(format!("{uid}:{msg}")) {
                    event(
                        client,
                        pvc,
                        "ProvisioningFailed",
                        &format!("failed to provision volume with StorageClass {class_name:?}: {msg}"),
                    )
                    .await;
                }
                return Ok(());
            }
        }
        std::fs::create_dir_all(&dir).map_err(|source| ControllerError::VolumeDir {
            dir: dir.display().to_string(),
            claim: format!("{ns}/{name}"),
            source,
        })?;
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": quantity_of(pvc)},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class_name,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid,
                             "resourceVersion": pvc.metadata.resource_version},
            },
        }))?;
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(api_err(format!("creating persistentvolume/{pv_name}"))(e).into()),
        }
    }
    let _ =
        pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await;
    let annotations = json!({
        "pv.kubernetes.io/bind-completed": "yes",
        "pv.kubernetes.io/bound-by-controller": "yes",
        "volume.kubernetes.io/storage-provisioner": PROVISIONER,
        "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
    });
    if spec.volume_name.as_deref().is_none_or(str::is_empty) {
        let mut patch = json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}});
        if spec.storage_class_name.is_none() {
            patch["spec"]["storageClassName"] = json!(class_name);
        }
        if claims.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_err() {
            // A server that refuses the retroactive default class still takes the binding.
            let patch = json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv_name}});
            claims
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("binding persistentvolumeclaim/{ns}/{name} to {pv_name}")))?;
        }
    }
    let status = json!({"status": {
        "phase": "Bound",
        "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
        "capacity": {"storage": quantity_of(pvc)},
    }});
    claims
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(api_err(format!("updating status of persistentvolumeclaim/{ns}/{name}")))?;
    tracing::info!(claim = %format!("{ns}/{name}"), volume = %pv_name, "bound");
    Ok(())
}

/// Bytes of a quantity such as `1Gi` (0 when unparsable).
fn validate_quantity(q: &Value) -> u64 {
    q.as_str().and_then(crate::api::validate::parse_quantity).unwrap_or(0.0) as u64
}

/// A deleted claim releases its volume: with reclaim policy Delete, the PV and its
/// directory go too (only volumes this provisioner made).
async fn release(client: &kube::Client, pvc: &PersistentVolumeClaim) -> anyhow::Result<()> {
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let Some(pv) = pvs.get_opt(&pv_name).await? else {
        return Ok(());
    };
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .is_some_and(|p| p == PROVISIONER);
    let same_claim =
        pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|c| c.uid.clone()) == pvc.metadata.uid;
    if !ours || !same_claim {
        return Ok(());
    }
    let spec = pv.spec.clone().unwrap_or_default();
    if spec.persistent_volume_reclaim_policy.as_deref().unwrap_or("Delete") == "Delete" {
        if let Some(path) = spec.host_path.map(|h| h.path) {
            let _ = std::fs::remove_dir_all(path);
        }
        let _ = pvs.delete(&pv_name, &DeleteParams::default()).await;
    } else {
        let _ = pvs
            .patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Released"}})))
            .await;
    }
    Ok(())
}

/// Record a Warning event about a PVC (what `kubectl describe` shows).
async fn event(client: &kube::Client, pvc: &PersistentVolumeClaim, reason: &str, message: &str) {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let ev = K8sEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}.{:x}", rand::random::<u64>())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pvc.metadata.uid.clone(),
            resource_version: pvc.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        ),
        last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("persistentvolume-controller".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording event");
    }
}

/// The status a workload of `kind` with `replicas` desired and generation `gen` reports once
/// every replica is ready (no real pods are needed for that).
pub fn workload_status(kind: &str, replicas: i64, generation: i64, current: &Value) -> Value {
    match kind {
        "DaemonSet" => json!({
            "observedGeneration": generation, "currentNumberScheduled": 1, "desiredNumberScheduled": 1,
            "numberReady": 1, "numberAvailable": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0,
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
        }),
        "ReplicaSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "fullyLabeledReplicas": replicas,
        }),
        "DeploymentConfig" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "updatedReplicas": replicas, "unavailableReplicas": 0,
            "latestVersion": current.get("latestVersion").and_then(Value::as_i64).unwrap_or(1).max(1),
        }),
        _ => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "updatedReplicas": replicas,
        }),
    }
}

/// The first container image of a workload's pod template that no node of the lab can pull:
/// not a simulated or transfer image, and not in a registry on this machine.
fn unpullable_image(workload: &Value) -> Option<String> {
    let spec = workload.pointer("/spec/template/spec")?;
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .find(|image| {
            let local = image.starts_with("127.0.0.1:") || image.starts_with("localhost:");
            !local && crate::node::classify_image(image, &[]) == crate::node::ImageKind::Unknown
        })
        .map(String::from)
}

/// The status of a workload whose pods cannot start: desired replicas exist, none ready.
fn unavailable_status(kind: &str, replicas: i64, generation: i64) -> Value {
    if kind == "DaemonSet" {
        return json!({"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberReady": 0, "numberAvailable": 0, "numberUnavailable": 1});
    }
    json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": 0,
        "availableReplicas": 0, "updatedReplicas": replicas, "unavailableReplicas": replicas})
}

/// Does `current` already carry every field of `desired`?
fn status_matches(current: &Value, desired: &Value) -> bool {
    desired.as_object().is_some_and(|d| d.iter().all(|(k, v)| current.get(k) == Some(v)))
}

async fn workload(client: kube::Client, ar: ApiResource, shutdown: CancellationToken) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let kind = ar.kind.clone();
    watch_each(api, shutdown, |o: DynamicObject, deleted| {
        let (client, ar, kind) = (client.clone(), ar.clone(), kind.clone());
        async move {
            if deleted || o.metadata.deletion_timestamp.is_some() {
                return;
            }
            let (Some(ns), Some(name)) = (o.metadata.namespace.clone(), o.metadata.name.clone()) else { return };
            let replicas = o.data.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let generation = o.metadata.generation.unwrap_or(1);
            let current = o.data.get("status").cloned().unwrap_or_else(|| json!({}));
            // Pods of an image no node can pull never become ready, as on a real cluster.
            if let Some(image) = unpullable_image(&o.data) {
                let mut desired = unavailable_status(&kind, replicas, generation);
                let flagged = current.get("conditions").and_then(Value::as_array).is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "Available" && c["status"] == "False")
                });
                if !status_matches(&current, &desired) || (!flagged && matches!(kind.as_str(), "Deployment" | "DeploymentConfig")) {
                    if matches!(kind.as_str(), "Deployment" | "DeploymentConfig") {
                        let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        desired["conditions"] = json!([{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                            "message": format!("Deployment does not have minimum availability: image {image} cannot be pulled (ErrImagePull)"),
                            "lastUpdateTime": t, "lastTransitionTime": t}]);
                    }
                    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
                    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": desired}))).await;
                }
                return;
            }
            let mut desired = workload_status(&kind, replicas, generation, &current);
            if status_matches(&current, &desired) {
                return;
            }
            if kind == "Deployment" || kind == "DeploymentConfig" {
                let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                desired["conditions"] = json!([
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.", "lastUpdateTime": t, "lastTransitionTime": t},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "replicas are available", "lastUpdateTime": t, "lastTransitionTime": t},
                ]);
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": desired}))).await {
                tracing::debug!(object = %format!("{}/{ns}/{name}", ar.kind), error = %e, "workload status");
            }
            // Give the watch a moment so a burst of applies is not answered twice.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_replicas_follow_spec_and_status_is_not_rewritten_when_current() {
        let s = workload_status("Deployment", 3, 2, &json!({}));
        assert_eq!(s["readyReplicas"], 3);
        assert_eq!(s["observedGeneration"], 2);
        let mut current = s.clone();
        current["conditions"] = json!([]);
        assert!(status_matches(&current, &s));
        assert!(!status_matches(&current, &workload_status("Deployment", 0, 3, &current)));
        assert_eq!(workload_status("DeploymentConfig", 1, 1, &json!({"latestVersion": 4}))["latestVersion"], 4);
        assert_eq!(workload_status("StatefulSet", 2, 1, &json!({}))["currentReplicas"], 2);
    }
}
