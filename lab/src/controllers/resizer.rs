//! Volume expansion (the CSI external-resizer's part): a bound claim that asks for more than
//! its volume holds gets the `Resizing` condition, and only after a while — real resizers take
//! seconds to minutes — do its PersistentVolume and its `status.capacity` grow to the request.
//! The lab's volumes are directories, so nothing on disk changes; what a client sees through
//! the API (the condition, then the capacity) is what a real cluster shows, in that order and
//! not at once. Whether a claim may grow at all is the API server's admission
//! (`api::validate::admit_resize`), not this controller's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::validate::parse_quantity;

/// How long an expansion takes from the larger request to the larger capacity.
pub const TAKES: Duration = Duration::from_secs(2);

pub(super) async fn run(client: kube::Client, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Claims (by uid) whose expansion is under way: the status writes it makes come back as
    // watch events and must not start a second one.
    let busy = Arc::new(Mutex::new(HashSet::<String>::new()));
    let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    super::watch_each(api, shutdown.clone(), |pvc, deleted| {
        let (client, busy, shutdown) = (client.clone(), busy.clone(), shutdown.clone());
        async move {
            let Some(request) = wants_more(&pvc).filter(|_| !deleted) else { return };
            let uid = pvc.metadata.uid.clone().unwrap_or_default();
            if !busy.lock().expect("busy").insert(uid.clone()) {
                return;
            }
            tokio::spawn(async move {
                if let Err(e) = expand(&client, &pvc, &request, &shutdown).await {
                    tracing::warn!(claim = ?pvc.metadata.name, error = %e, "resizer");
                }
                busy.lock().expect("busy").remove(&uid);
            });
        }
    })
    .await
}

/// The request of a bound claim whose volume holds less.
fn wants_more(pvc: &PersistentVolumeClaim) -> Option<String> {
    let status = pvc.status.as_ref()?;
    if status.phase.as_deref() != Some("Bound") || pvc.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let request = pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage")?.0.clone();
    let capacity = status.capacity.as_ref()?.get("storage")?.0.clone();
    (parse_quantity(&request)? > parse_quantity(&capacity)?).then_some(request)
}

async fn expand(
    client: &kube::Client,
    pvc: &PersistentVolumeClaim,
    request: &str,
    shutdown: &CancellationToken,
) -> Result<(), kube::Error> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let resizing = json!({"status": {
        "allocatedResources": {"storage": request},
        "conditions": [{"type": "Resizing", "status": "True", "lastTransitionTime": now()}],
    }});
    claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(&resizing)).await?;
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = tokio::time::sleep(TAKES) => {}
    }
    if let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) {
        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        pvs.patch(&pv, &PatchParams::default(), &Patch::Merge(json!({"spec": {"capacity": {"storage": request}}})))
            .await?;
    }
    let done = json!({"status": {"capacity": {"storage": request}, "conditions": null}});
    claims.patch_status(&name, &PatchParams::default(), &Patch::Merge(&done)).await?;
    tracing::info!(claim = %format!("{ns}/{name}"), %request, "expanded");
    Ok(())
}
