//! Binding of statically provisioned volumes, as kube-controller-manager's PV controller
//! does it: a claim that names a volume (`spec.volumeName`) binds to that PersistentVolume
//! when the volume is free or reserved for it (`claimRef` to the claim's namespace and name,
//! without a uid or with the claim's), their storage classes match and the volume holds the
//! request; a volume reserved for a claim that names no volume yet gets that claim's
//! `volumeName`. Volumes the lab's provisioner made (`pv.kubernetes.io/provisioned-by`)
//! are the provisioner's.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{api_err, validate_quantity};

/// Resyncs every second until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = sync(&client).await {
            tracing::debug!(error = %e, "static volume binder");
        }
    }
}

fn class(c: Option<&String>) -> &str {
    c.map_or("", String::as_str)
}

async fn sync(client: &kube::Client) -> anyhow::Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes = pvs.list(&ListParams::default()).await?.items;
    for pvc in claims.list(&ListParams::default()).await?.items {
        let (Some(ns), Some(name)) = (pvc.metadata.namespace.clone(), pvc.metadata.name.clone()) else { continue };
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound || pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let spec = pvc.spec.clone().unwrap_or_default();
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        let reserved = |pv: &PersistentVolume| {
            let r = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            r.is_none_or(|r| {
                r.namespace.as_deref() == Some(&ns)
                    && r.name.as_deref() == Some(&name)
                    && r.uid.as_deref().is_none_or(|u| u.is_empty() || u == uid)
            })
        };
        let fits = |pv: &PersistentVolume| {
            let s = pv.spec.clone().unwrap_or_default();
            let want = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage"));
            let has = s.capacity.as_ref().and_then(|c| c.get("storage"));
            let big_enough = match (want, has) {
                (Some(w), Some(h)) => validate_quantity(&json!(h.0)) >= validate_quantity(&json!(w.0)),
                _ => true,
            };
            class(s.storage_class_name.as_ref()) == class(spec.storage_class_name.as_ref()) && big_enough
        };
        let manual = |pv: &PersistentVolume| {
            pv.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key("pv.kubernetes.io/provisioned-by"))
        };
        let volume = match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => volumes.iter().find(|pv| pv.metadata.name.as_deref() == Some(v)),
            // A volume reserved for this claim by name (claimRef without a uid).
            None => volumes.iter().find(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| r.namespace.as_deref() == Some(&ns) && r.name.as_deref() == Some(&name))
            }),
        };
        let Some(pv) = volume.filter(|pv| manual(pv) && reserved(pv) && fits(pv)) else { continue };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let claim_ref = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
            "uid": uid, "resourceVersion": pvc.metadata.resource_version});
        pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"claimRef": claim_ref}})))
            .await
            .map_err(api_err(format!("binding persistentvolume/{pv_name}")))?;
        pvs.patch_status(&pv_name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}})))
            .await
            .map_err(api_err(format!("updating status of persistentvolume/{pv_name}")))?;
        let ns_claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": pv_name}});
        ns_claims
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("binding persistentvolumeclaim/{ns}/{name}")))?;
        let s = pv.spec.clone().unwrap_or_default();
        let status = json!({"status": {"phase": "Bound", "accessModes": s.access_modes, "capacity": s.capacity}});
        ns_claims
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(api_err(format!("updating status of persistentvolumeclaim/{ns}/{name}")))?;
        tracing::info!(claim = %format!("{ns}/{name}"), volume = %pv_name, "bound (static)");
    }
    Ok(())
}
