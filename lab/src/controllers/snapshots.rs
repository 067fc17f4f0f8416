//! CSI snapshots for the local-path provisioner: what the snapshot-controller and the
//! driver's csi-snapshotter sidecar do together, as one API client.
//!
//! A VolumeSnapshot of a Bound claim whose volume this provisioner made gets a
//! VolumeSnapshotContent `snapcontent-<snapshot uid>` and a copy of the volume directory under
//! `<storage_root>/snapshots/<content name>` — `cp -a --reflink=auto`, so symlinks, hard
//! links, modes, owners, times, xattrs and ACLs are kept, and a reflink-capable filesystem
//! shares the blocks — then `status.readyToUse: true`. A snapshot bound to an existing content
//! (`spec.source.volumeSnapshotContentName`, pre-provisioned) is ready once that content's
//! `snapshotHandle` directory exists. Deleting a snapshot whose content has `deletionPolicy:
//! Delete` removes the content and its copy; `Retain` keeps both. Errors are reported as the
//! snapshot-controller reports them: `status.error` plus a Warning Event.
//!
//! The provisioner ([`super::provision`]) restores a claim whose `dataSource` is a ready
//! VolumeSnapshot from the copy ([`snapshot_dir`], [`copy_tree`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as K8sEvent, ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{PROVISIONER, is_status};

/// The snapshot API group.
pub const GROUP: &str = "snapshot.storage.k8s.io";
const VS_FINALIZERS: [&str; 2] = [
    "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection",
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection",
];
const CONTENT_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

fn ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

pub(super) fn snapshots_ar() -> ApiResource {
    ar("VolumeSnapshot", "volumesnapshots")
}

fn contents_ar() -> ApiResource {
    ar("VolumeSnapshotContent", "volumesnapshotcontents")
}

fn classes_ar() -> ApiResource {
    ar("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// Where the copy behind a snapshot handle lives.
pub fn snapshot_dir(storage_root: &Path, handle: &str) -> PathBuf {
    storage_root.join("snapshots").join(handle)
}

/// Copies the contents of `from` into `to` (created; must not exist) preserving everything
/// `cp -a` preserves (links, hard links, modes, owners, times, xattrs, ACLs), through a
/// temporary sibling renamed at the end so a half copy never looks complete.
pub async fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let tmp = to.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // `cp -a from/. tmp` would need tmp to exist with from's own attributes: copy the
    // directory itself instead, so the root's mode, owner and times come along too.
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg("--no-target-directory")
        .arg(from)
        .arg(&tmp)
        .output()
        .await?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        anyhow::bail!("cp -a {} {}: {}", from.display(), tmp.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    std::fs::rename(&tmp, to)?;
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Bytes as a canonical quantity (`1Gi`, `512Mi`, or plain bytes).
pub fn quantity(bytes: u64) -> String {
    for (suffix, unit) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Run the snapshot controller until `shutdown`: every change to a VolumeSnapshot, plus a
/// resync each second for snapshots still waiting (a claim that is not bound yet).
pub(super) async fn run(
    client: kube::Client,
    storage_root: PathBuf,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &snapshots_ar());
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let batch: Vec<DynamicObject> = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = events.next() => match ev {
                None => return Ok(()),
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => vec![o],
                Some(Ok(_)) => vec![],
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "snapshot watch error; retrying");
                    vec![]
                }
            },
            _ = tick.tick() => match api.list(&ListParams::default()).await {
                Ok(l) => l.items.into_iter().filter(|o| o.metadata.deletion_timestamp.is_some() || o.data.pointer("/status/readyToUse") != Some(&json!(true))).collect(),
                Err(_) => vec![],
            },
        };
        for vs in batch {
            let id = format!(
                "volumesnapshot/{}/{}",
                vs.metadata.namespace.as_deref().unwrap_or(""),
                vs.metadata.name.as_deref().unwrap_or("")
            );
            if let Err(e) = sync(&client, &storage_root, vs).await {
                tracing::debug!(snapshot = %id, error = %format!("{e:#}"), "snapshot");
            }
        }
    }
}

async fn sync(client: &kube::Client, root: &Path, vs: DynamicObject) -> anyhow::Result<()> {
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let name = vs.metadata.name.clone().unwrap_or_default();
    let snapshots: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &snapshots_ar());
    if vs.metadata.deletion_timestamp.is_some() {
        return finalize(client, root, &snapshots, &vs).await;
    }
    if vs.data.pointer("/status/readyToUse") == Some(&json!(true)) {
        return Ok(());
    }
    let source = vs.data.pointer("/spec/source").cloned().unwrap_or(Value::Null);
    if let Some(content) = s(&source, "/volumeSnapshotContentName") {
        return bind_existing(client, root, &snapshots, &vs, content).await;
    }
    let Some(claim_name) = s(&source, "/persistentVolumeClaimName") else {
        let msg = "Exactly one of volumeSnapshotContentName and persistentVolumeClaimName should be specified";
        return report(client, &snapshots, &vs, "SnapshotValidationError", msg).await;
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let Some(claim) = claims.get_opt(claim_name).await? else {
        let msg = format!(
            "Failed to create snapshot content with error failed to get input parameters to create snapshot {name}: \"failed to retrieve PVC {claim_name} from the lister: \\\"persistentvolumeclaim \\\\\\\"{claim_name}\\\\\\\" not found\\\"\""
        );
        return report(client, &snapshots, &vs, "SnapshotContentCreationFailed", &msg).await;
    };
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(pv_name) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| bound && !v.is_empty())
    else {
        // The snapshot-controller waits for the claim to be bound (resynced each second).
        return Ok(());
    };
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&pv_name).await?;
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .is_some_and(|p| p == PROVISIONER);
    let classes: Api<DynamicObject> = Api::all_with(client.clone(), &classes_ar());
    let class = match s(&vs.data, "/spec/volumeSnapshotClassName") {
        Some(c) => match classes.get_opt(c).await? {
            Some(class) => class,
            None => {
                let msg = format!(
                    "Failed to get snapshot class with error failed to retrieve snapshot class {c} from the informer: \"volumesnapshotclass.snapshot.storage.k8s.io \\\"{c}\\\" not found\""
                );
                return report(client, &snapshots, &vs, "GetSnapshotClassFailed", &msg).await;
            }
        },
        None => {
            let default = classes.list(&ListParams::default()).await?.items.into_iter().find(|c| {
                c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS)).is_some_and(|v| v == "true")
                    && ours
                    && s(&c.data, "/driver") == Some(PROVISIONER)
            });
            match default {
                Some(c) => {
                    // The snapshot-controller writes the default class into the spec.
                    let cname = c.metadata.name.clone().unwrap_or_default();
                    let patch = json!({"spec": {"volumeSnapshotClassName": cname}});
                    snapshots.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                    c
                }
                None => {
                    let msg = "Failed to set default snapshot class with error cannot find default snapshot class";
                    return report(client, &snapshots, &vs, "SetDefaultSnapshotClassFailed", msg).await;
                }
            }
        }
    };
    if s(&class.data, "/driver") != Some(PROVISIONER) {
        return Ok(()); // another driver's sidecar would take it from here
    }
    let Some(volume_dir) =
        pv.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| PathBuf::from(&h.path)).filter(|_| ours)
    else {
        let msg = format!(
            "Failed to create snapshot content with error the volume {pv_name} of claim {claim_name} was not provisioned by {PROVISIONER}"
        );
        return report(client, &snapshots, &vs, "SnapshotContentCreationFailed", &msg).await;
    };
    let uid = vs.metadata.uid.clone().unwrap_or_default();
    let content_name = format!("snapcontent-{uid}");
    let class_name = class.metadata.name.clone().unwrap_or_default();
    let policy = s(&class.data, "/deletionPolicy").unwrap_or("Delete").to_string();
    add_finalizers(&snapshots, &vs).await?;
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &contents_ar());
    if contents.get_opt(&content_name).await?.is_none() {
        let content: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshotContent",
        "metadata": {"name": content_name, "finalizers": [CONTENT_FINALIZER]},
        "spec": {
            "volumeSnapshotRef": {"apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshot", "name": name,
                "namespace": ns, "uid": uid, "resourceVersion": vs.metadata.resource_version},
            "source": {"volumeHandle": pv_name},
            "driver": PROVISIONER, "deletionPolicy": policy, "volumeSnapshotClassName": class_name,
        }}))?;
        match contents.create(&PostParams::default(), &content).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let dir = snapshot_dir(root, &content_name);
    if !dir.exists()
        && let Err(e) = copy_tree(&volume_dir, &dir).await
    {
        let msg = format!(
            "Failed to check and update snapshot content: failed to take snapshot of the volume {pv_name}: {e:#}"
        );
        return report(client, &snapshots, &vs, "SnapshotContentCheckandUpdateFailed", &msg).await;
    }
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "0".into());
    let bytes = crate::api::validate::parse_quantity(&capacity).unwrap_or(0.0) as u64;
    let created = chrono::Utc::now();
    let content_status = json!({"status": {"snapshotHandle": content_name, "readyToUse": true, "restoreSize": bytes,
        "creationTime": created.timestamp_nanos_opt().unwrap_or(0)}});
    contents.patch_status(&content_name, &PatchParams::default(), &Patch::Merge(&content_status)).await?;
    let status = json!({"status": {"boundVolumeSnapshotContentName": content_name, "readyToUse": true,
        "restoreSize": quantity(bytes), "creationTime": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "error": null}});
    snapshots.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    tracing::info!(snapshot = %format!("{ns}/{name}"), content = %content_name, "snapshot ready");
    Ok(())
}

/// A snapshot bound to a content made beforehand (for instance restored from elsewhere):
/// ready once the content points back at it and its handle's copy exists.
async fn bind_existing(
    client: &kube::Client,
    root: &Path,
    snapshots: &Api<DynamicObject>,
    vs: &DynamicObject,
    content_name: &str,
) -> anyhow::Result<()> {
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &contents_ar());
    let Some(content) = contents.get_opt(content_name).await? else {
        return Ok(()); // the snapshot-controller waits for the content to appear
    };
    let name = vs.metadata.name.as_deref().unwrap_or_default();
    let ns = vs.metadata.namespace.as_deref().unwrap_or_default();
    if s(&content.data, "/spec/volumeSnapshotRef/name") != Some(name)
        || s(&content.data, "/spec/volumeSnapshotRef/namespace") != Some(ns)
    {
        let msg = format!("VolumeSnapshotContent {content_name} is bound to a different snapshot");
        return report(client, snapshots, vs, "SnapshotBindFailed", &msg).await;
    }
    if s(&content.data, "/spec/driver") != Some(PROVISIONER) {
        return Ok(());
    }
    let handle = s(&content.data, "/spec/source/snapshotHandle")
        .or(s(&content.data, "/status/snapshotHandle"))
        .unwrap_or(content_name);
    if !snapshot_dir(root, handle).is_dir() {
        let msg = format!(
            "Failed to check and update snapshot content: snapshot {handle} does not exist on driver {PROVISIONER}"
        );
        return report(client, snapshots, vs, "SnapshotContentCheckandUpdateFailed", &msg).await;
    }
    add_finalizers(snapshots, vs).await?;
    let bytes = content.data.pointer("/status/restoreSize").and_then(Value::as_u64).unwrap_or(0);
    let created = chrono::Utc::now();
    let content_status = json!({"status": {"snapshotHandle": handle, "readyToUse": true, "restoreSize": bytes,
        "creationTime": created.timestamp_nanos_opt().unwrap_or(0)}});
    contents.patch_status(content_name, &PatchParams::default(), &Patch::Merge(&content_status)).await?;
    let status = json!({"status": {"boundVolumeSnapshotContentName": content_name, "readyToUse": true,
        "restoreSize": quantity(bytes), "creationTime": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}});
    snapshots.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

async fn add_finalizers(snapshots: &Api<DynamicObject>, vs: &DynamicObject) -> anyhow::Result<()> {
    let mut finalizers = vs.metadata.finalizers.clone().unwrap_or_default();
    if VS_FINALIZERS.iter().all(|f| finalizers.iter().any(|x| x == f)) {
        return Ok(());
    }
    for f in VS_FINALIZERS {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": vs.metadata.resource_version}});
    let name = vs.metadata.name.as_deref().unwrap_or_default();
    snapshots.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// A deleted snapshot: its content (and copy) go when the policy is Delete, then the
/// snapshot's finalizers are released.
async fn finalize(
    client: &kube::Client,
    root: &Path,
    snapshots: &Api<DynamicObject>,
    vs: &DynamicObject,
) -> anyhow::Result<()> {
    let finalizers = vs.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| VS_FINALIZERS.contains(&f.as_str())) {
        return Ok(());
    }
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &contents_ar());
    if let Some(content_name) = s(&vs.data, "/status/boundVolumeSnapshotContentName")
        && let Some(content) = contents.get_opt(content_name).await?
        && s(&content.data, "/spec/volumeSnapshotRef/uid") == vs.metadata.uid.as_deref()
    {
        let release = json!({"metadata": {"finalizers": content.metadata.finalizers.clone().unwrap_or_default()
            .into_iter().filter(|f| f != CONTENT_FINALIZER).collect::<Vec<_>>()}});
        contents.patch(content_name, &PatchParams::default(), &Patch::Merge(&release)).await?;
        if s(&content.data, "/spec/deletionPolicy") == Some("Delete") {
            let handle = s(&content.data, "/status/snapshotHandle").unwrap_or(content_name);
            let dir = snapshot_dir(root, handle);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            match contents.delete(content_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let rest: Vec<String> = finalizers.into_iter().filter(|f| !VS_FINALIZERS.contains(&f.as_str())).collect();
    let name = vs.metadata.name.as_deref().unwrap_or_default();
    match snapshots.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": rest}}))).await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `status.error` and a Warning Event, once per distinct message.
async fn report(
    client: &kube::Client,
    snapshots: &Api<DynamicObject>,
    vs: &DynamicObject,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    if s(&vs.data, "/status/error/message") == Some(message) {
        return Ok(());
    }
    let name = vs.metadata.name.as_deref().unwrap_or_default();
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let status = json!({"status": {"readyToUse": false, "error": {"message": message, "time": now()}}});
    snapshots.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let ev = K8sEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{name}.{:x}", rand::random::<u64>())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(format!("{GROUP}/v1")),
            kind: Some("VolumeSnapshot".into()),
            name: Some(name.to_string()),
            namespace: Some(ns.clone()),
            uid: vs.metadata.uid.clone(),
            resource_version: vs.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(t.clone()),
        last_timestamp: Some(t),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("snapshot-controller".into()),
            host: None,
        }),
        ..Default::default()
    };
    if let Err(e) = Api::<K8sEvent>::namespaced(client.clone(), &ns).create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "recording snapshot event");
    }
    Ok(())
}

/// What a claim with a VolumeSnapshot `dataSource` is restored from: the snapshot's copy and
/// its size in bytes, or the provisioner's error (the claim stays Pending and is retried).
pub(super) async fn restore_source(
    client: &kube::Client,
    root: &Path,
    ns: &str,
    snapshot: &str,
) -> Result<(PathBuf, u64), String> {
    let snapshots: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &snapshots_ar());
    let prefix = format!("error getting handle for DataSource Type VolumeSnapshot by Name {snapshot}");
    let vs = match snapshots.get_opt(snapshot).await {
        Ok(Some(vs)) => vs,
        Ok(None) => {
            return Err(format!(
                "{prefix}: error getting snapshot {snapshot} from api server: volumesnapshots.snapshot.storage.k8s.io \"{snapshot}\" not found"
            ));
        }
        Err(e) => return Err(format!("{prefix}: error getting snapshot {snapshot} from api server: {e}")),
    };
    if vs.data.pointer("/status/readyToUse") != Some(&json!(true)) {
        return Err(format!("{prefix}: snapshot {snapshot} is not Ready"));
    }
    let content_name = s(&vs.data, "/status/boundVolumeSnapshotContentName").unwrap_or_default();
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &contents_ar());
    let content = contents
        .get_opt(content_name)
        .await
        .map_err(|e| format!("{prefix}: {e}"))?
        .ok_or_else(|| format!("{prefix}: error getting snapshot content {content_name}: not found"))?;
    if s(&content.data, "/spec/driver") != Some(PROVISIONER) {
        return Err(format!("{prefix}: snapshot {snapshot} is not of driver {PROVISIONER}"));
    }
    let handle = s(&content.data, "/status/snapshotHandle").unwrap_or(content_name);
    let bytes = content.data.pointer("/status/restoreSize").and_then(Value::as_u64).unwrap_or(0);
    Ok((snapshot_dir(root, handle), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(quantity(1 << 30), "1Gi");
        assert_eq!(quantity(3 << 20), "3Mi");
        assert_eq!(quantity(1000), "1000");
        assert_eq!(quantity(0), "0");
    }
}
