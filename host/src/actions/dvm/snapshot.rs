//! A point-in-time source (`dvm.source = "snapshot"`): a CSI VolumeSnapshot of the source PVC,
//! a clone PVC restored from it, the copy read from the clone, both deleted after (they carry
//! the transfer labels, so the end of the run, the next run's start and `mtcd cleanup` remove
//! them). Stage syncs of a running database then copy one consistent instant instead of files
//! caught at different moments.

use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use super::{apply, objects, wait};
use crate::cluster::Cluster;
use crate::plan::volumes::{VolumePlan, VolumeTransfer};

const GROUP: &str = "snapshot.storage.k8s.io";
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
/// How long a snapshot may take to become ready to use (a CSI driver copies or freezes the
/// volume meanwhile).
const READY_TIMEOUT: Duration = Duration::from_secs(600);

pub fn snapshots() -> ApiResource {
    crate::observe::api_resource(GROUP, "v1", "VolumeSnapshot", "volumesnapshots")
}

fn classes() -> ApiResource {
    crate::observe::api_resource(GROUP, "v1", "VolumeSnapshotClass", "volumesnapshotclasses")
}

fn storage_classes() -> ApiResource {
    crate::observe::api_resource("storage.k8s.io", "v1", "StorageClass", "storageclasses")
}

/// `mtcd-snap-<claim>` / `mtcd-clone-<claim>`, hashed when long.
pub fn names(claim: &str) -> (String, String) {
    let name = |prefix: &str| {
        let n = format!("{prefix}-{claim}");
        if n.len() <= 63 {
            return n;
        }
        let h = crate::plan::hash::hash(&json!(claim));
        format!("{prefix}-{}-{}", &claim[..30].trim_end_matches('-'), &h[..8])
    };
    (name("mtcd-snap"), name("mtcd-clone"))
}

/// The VolumeSnapshotClass for a volume of `provisioner`: the one named by the user (it must
/// exist and serve that driver), else the only class of that driver, else the default one
/// among several. Pure, over the listed classes.
pub fn choose_class(classes: &[Value], provisioner: &str, wanted: Option<&str>) -> Result<String, String> {
    let name = |c: &Value| c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let driver = |c: &Value| c.get("driver").and_then(Value::as_str).unwrap_or_default().to_string();
    if let Some(w) = wanted {
        return match classes.iter().find(|c| name(c) == w) {
            Some(c) if driver(c) == provisioner => Ok(w.to_string()),
            Some(c) => Err(format!(
                "VolumeSnapshotClass {w} (dvm.snapshot_class) is for driver {}, not {provisioner}",
                driver(c)
            )),
            None => Err(format!("VolumeSnapshotClass {w} (dvm.snapshot_class) does not exist")),
        };
    }
    let matching: Vec<&Value> = classes.iter().filter(|c| driver(c) == provisioner).collect();
    match matching.as_slice() {
        [] => Err(format!("no VolumeSnapshotClass serves driver {provisioner}")),
        [one] => Ok(name(one)),
        several => several
            .iter()
            .find(|c| c.pointer(&format!("/metadata/annotations/{}", DEFAULT_CLASS.replace('/', "~1"))) == Some(&json!("true")))
            .map(|c| name(c))
            .ok_or_else(|| {
                format!(
                    "several VolumeSnapshotClasses serve driver {provisioner} ({}) and none is the default: set dvm.snapshot_class",
                    several.iter().map(|c| name(c)).collect::<Vec<_>>().join(", ")
                )
            }),
    }
}

/// The VolumeSnapshot of the source claim.
pub fn snapshot_object(t: &VolumeTransfer, migration: &str, class: &str) -> Value {
    let (snap, _) = names(&t.claim);
    json!({
        "apiVersion": format!("{GROUP}/v1"), "kind": "VolumeSnapshot",
        "metadata": {"name": snap, "namespace": t.namespace, "labels": objects::labels(migration), "annotations": {"mtcd.io/pvc": t.claim}},
        "spec": {"volumeSnapshotClassName": class, "source": {"persistentVolumeClaimName": t.claim}},
    })
}

/// The clone restored from the snapshot: the source's class and access modes, at least the
/// source's size (a restore may not be smaller than the snapshot).
pub fn clone_object(t: &VolumeTransfer, migration: &str, restore_size: Option<&str>) -> Value {
    let (snap, clone) = names(&t.claim);
    let spec = t.source.get("spec").cloned().unwrap_or_default();
    let mut size = spec.pointer("/resources/requests/storage").and_then(Value::as_str).unwrap_or("1Gi").to_string();
    for candidate in
        [t.source.pointer("/status/capacity/storage").and_then(Value::as_str), restore_size].into_iter().flatten()
    {
        if crate::spec::parse_size(candidate) > crate::spec::parse_size(&size) {
            size = candidate.to_string();
        }
    }
    let mut pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": clone, "namespace": t.namespace, "labels": objects::labels(migration), "annotations": {"mtcd.io/pvc": t.claim}},
        "spec": {
            "accessModes": spec.get("accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
            "resources": {"requests": {"storage": size}},
            "dataSource": {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": snap},
        },
    });
    if let Some(class) = spec.get("storageClassName") {
        pvc["spec"]["storageClassName"] = class.clone();
    }
    if let Some(mode) = spec.get("volumeMode") {
        pvc["spec"]["volumeMode"] = mode.clone();
    }
    pvc
}

/// Preflight of a snapshot source: the API is served and the source PVC's storage class has
/// a VolumeSnapshotClass. Returns the class.
pub async fn preflight(src: &Cluster, m: &VolumePlan, t: &VolumeTransfer) -> Result<String, String> {
    let pvc = format!("{}/{}", t.namespace, t.claim);
    let Some(sc) = t.source.pointer("/spec/storageClassName").and_then(Value::as_str) else {
        return Err(format!(
            "PVC {pvc} has no storage class, so no CSI driver to snapshot it: dvm.source = \"snapshot\" cannot be used for it (set dvm.pvc_source = {{ {:?} = \"live\" }})",
            t.claim
        ));
    };
    let sc_obj = crate::observe::get(&src.client, &storage_classes(), None, sc)
        .await
        .map_err(|e| format!("{}: reading storage class {sc} of PVC {pvc}: {e}", src.context))?
        .ok_or_else(|| format!("storage class {sc} of PVC {pvc} does not exist on {}", src.context))?;
    let provisioner = sc_obj.get("provisioner").and_then(Value::as_str).unwrap_or_default();
    let listed = Api::<DynamicObject>::all_with(src.client.clone(), &classes()).list(&Default::default()).await;
    let classes: Vec<Value> = match listed {
        Ok(l) => l.items.into_iter().map(|o| crate::observe::to_value(o, &self::classes())).collect(),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(format!(
                "{} does not serve {GROUP}/v1 (no CSI snapshot controller): dvm.source = \"snapshot\" cannot be used for PVC {pvc}",
                src.context
            ));
        }
        Err(e) => return Err(format!("{}: listing VolumeSnapshotClasses: {e}", src.context)),
    };
    choose_class(&classes, provisioner, m.options.snapshot_class.as_deref()).map_err(|why| {
        format!(
            "PVC {pvc} cannot be read from a snapshot: its storage class {sc} (provisioner {provisioner}): {why}. Install or name a VolumeSnapshotClass for that driver, or read this PVC live (dvm.pvc_source = {{ {:?} = \"live\" }})",
            t.claim
        )
    })
}

/// Takes the snapshot, waits until it is ready to use, and creates the clone PVC restored from
/// it. Returns the clone's name: the probe and client pods read it instead of the source PVC.
pub async fn take(
    src: &Cluster,
    m: &VolumePlan,
    t: &VolumeTransfer,
    class: &str,
    interrupt: &crate::stop::Stop,
) -> Result<String, String> {
    let (snap, clone) = names(&t.claim);
    let api: Api<DynamicObject> = Api::namespaced_with(src.client.clone(), &t.namespace, &snapshots());
    // A snapshot of an earlier run is of an earlier instant.
    if api.get_opt(&snap).await.ok().flatten().is_some() {
        let _ = api.delete(&snap, &Default::default()).await;
        let _ = wait::until(api.clone(), &snap, Duration::from_secs(60), |o: Option<&DynamicObject>| o.is_none()).await;
    }
    apply(src, &snapshot_object(t, &m.migration, class)).await.map_err(|e| e.to_string())?;
    let settled = |o: &DynamicObject| {
        o.data.pointer("/status/readyToUse") == Some(&json!(true)) || o.data.pointer("/status/error/message").is_some()
    };
    let ready = crate::stop::unless(
        interrupt,
        wait::until(api.clone(), &snap, READY_TIMEOUT, move |o: Option<&DynamicObject>| o.is_none_or(settled)),
    )
    .await
    .map_err(|why| format!("stopped while VolumeSnapshot {}/{snap} was being taken: {why}", t.namespace))?;
    let restore_size = match ready {
        Ok(Some(o)) => match o.data.pointer("/status/error/message").and_then(Value::as_str) {
            Some(why) if o.data.pointer("/status/readyToUse") != Some(&json!(true)) => {
                return Err(format!("VolumeSnapshot {}/{snap} of PVC {}/{}: {why}", t.namespace, t.namespace, t.claim));
            }
            _ => o.data.pointer("/status/restoreSize").and_then(Value::as_str).map(String::from),
        },
        Ok(None) => return Err(format!("VolumeSnapshot {}/{snap} was deleted before it was ready", t.namespace)),
        Err(wait::WaitError::Timeout) => {
            return Err(format!(
                "VolumeSnapshot {}/{snap} of PVC {}/{} not ready to use within {} min",
                t.namespace,
                t.namespace,
                t.claim,
                READY_TIMEOUT.as_secs() / 60
            ));
        }
        Err(wait::WaitError::Watch(e)) => return Err(format!("watching VolumeSnapshot {}/{snap}: {e}", t.namespace)),
    };
    let pvcs = super::resource_of("PersistentVolumeClaim");
    if crate::observe::get(&src.client, &pvcs, Some(&t.namespace), &clone).await.ok().flatten().is_some() {
        let api: Api<DynamicObject> = Api::namespaced_with(src.client.clone(), &t.namespace, &pvcs);
        let _ = api.delete(&clone, &Default::default()).await;
        let _ = wait::until(api, &clone, Duration::from_secs(60), |o: Option<&DynamicObject>| o.is_none()).await;
    }
    apply(src, &clone_object(t, &m.migration, restore_size.as_deref())).await.map_err(|e| e.to_string())?;
    Ok(clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, driver: &str, default: bool) -> Value {
        let mut c = json!({"metadata": {"name": name}, "driver": driver});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS: "true"});
        }
        c
    }

    #[test]
    fn the_class_is_the_drivers_own_or_its_default_or_the_named_one() {
        let cs = [class("a", "x.csi", false), class("b", "y.csi", false), class("c", "y.csi", true)];
        assert_eq!(choose_class(&cs, "x.csi", None), Ok("a".into()));
        assert_eq!(choose_class(&cs, "y.csi", None), Ok("c".into()));
        assert_eq!(choose_class(&cs, "y.csi", Some("b")), Ok("b".into()));
        assert!(choose_class(&cs, "z.csi", None).unwrap_err().contains("no VolumeSnapshotClass serves driver z.csi"));
        assert!(choose_class(&cs, "x.csi", Some("b")).unwrap_err().contains("is for driver y.csi"));
        let two = [class("b", "y.csi", false), class("c", "y.csi", false)];
        assert!(choose_class(&two, "y.csi", None).unwrap_err().contains("set dvm.snapshot_class"));
    }

    #[test]
    fn the_clone_is_restored_from_the_snapshot_at_the_source_size() {
        let t = VolumeTransfer {
            namespace: "shop".into(),
            claim: "db".into(),
            destination_namespace: "shop".into(),
            destination_claim: "db".into(),
            capacity: "1Gi".into(),
            storage_class: Some("standard".into()),
            block: false,
            read_from: crate::spec::VolumeSource::Snapshot,
            source: json!({"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard", "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"capacity": {"storage": "2Gi"}}}),
            destination: Value::Null,
            usage: None,
        };
        let c = clone_object(&t, "m", Some("1Gi"));
        assert_eq!(c["metadata"]["name"], "mtcd-clone-db");
        assert_eq!(c["spec"]["resources"]["requests"]["storage"], "2Gi", "never smaller than the bound volume");
        assert_eq!(
            c["spec"]["dataSource"],
            json!({"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": "mtcd-snap-db"})
        );
        assert_eq!(c["spec"]["storageClassName"], "standard");
        assert_eq!(c["metadata"]["labels"]["mtcd.io/component"], "transfer", "removed with the transfer");
        let s = snapshot_object(&t, "m", "lab-snapclass");
        assert_eq!(
            s["spec"],
            json!({"volumeSnapshotClassName": "lab-snapclass", "source": {"persistentVolumeClaimName": "db"}})
        );
    }
}
