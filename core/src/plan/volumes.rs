//! Which PVCs Direct Volume Migration copies, and the destination claim each one gets. Pure:
//! the PVCs come from the snapshot, so the action never lists them again.

use serde::Serialize;
use serde_json::{Value, json};

use crate::spec::{DvmOptions, Migration, VolumeMode, parse_size};
use crate::transform::{mapping, object, rules};

/// Every volume copy of one migration, with the options the transfer runs with. It
/// serializes as the list of transfers (the options are in the desired file).
#[derive(Debug, Clone)]
pub struct VolumePlan {
    pub migration: String,
    pub options: DvmOptions,
    pub transfers: Vec<VolumeTransfer>,
    /// The cutover's last copy (the source is quiesced): files that vanish while it runs
    /// (rsync exit 24) mean the application still writes, an error; during stage syncs they
    /// are a warning. The engine sets this during cutover.
    pub final_sync: bool,
}

impl Serialize for VolumePlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.transfers.serialize(s)
    }
}

/// One source PVC to copy.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeTransfer {
    pub namespace: String,
    pub claim: String,
    pub destination_namespace: String,
    pub destination_claim: String,
    /// Requested capacity as written on the source (`10Gi`).
    pub capacity: String,
    pub storage_class: Option<String>,
    pub block: bool,
    /// The source PVC as observed.
    #[serde(skip)]
    pub source: Value,
    /// The PVC to create on the destination when it does not exist yet: cleaned, mapped,
    /// stamped, and never smaller than the source's bound volume.
    #[serde(skip)]
    pub destination: Value,
}

/// The volume copies of `m`, from the source PVCs of its namespaces (`volumes = "skip"`: none).
pub fn plan_volumes(m: &Migration, pvcs: &[Value]) -> VolumePlan {
    let transfers = if m.volumes == VolumeMode::Skip {
        Vec::new()
    } else {
        pvcs.iter()
            .filter(|p| object::kind(p) == "PersistentVolumeClaim")
            .filter(|p| object::namespace(p).is_some_and(|ns| m.namespaces.iter().any(|n| n == ns)))
            .map(|pvc| transfer(m, pvc))
            .collect()
    };
    VolumePlan { migration: m.name.clone(), options: m.dvm.clone(), transfers, final_sync: false }
}

fn transfer(m: &Migration, pvc: &Value) -> VolumeTransfer {
    let ns = object::namespace(pvc).unwrap_or_default().to_string();
    let claim = object::name(pvc).to_string();
    let capacity = pvc.pointer("/spec/resources/requests/storage").and_then(Value::as_str).unwrap_or("").to_string();
    VolumeTransfer {
        destination_namespace: m.namespace_map.get(&ns).cloned().unwrap_or_else(|| ns.clone()),
        destination_claim: m.pvc_name_map.get(&claim).cloned().unwrap_or_else(|| claim.clone()),
        storage_class: pvc.pointer("/spec/storageClassName").and_then(Value::as_str).map(String::from),
        block: pvc.pointer("/spec/volumeMode").and_then(Value::as_str) == Some("Block"),
        destination: destination_pvc(m, pvc, &capacity),
        capacity,
        namespace: ns,
        claim,
        source: pvc.clone(),
    }
}

/// The destination PVC for a source PVC: cleaned, mapped, and never smaller than the source.
fn destination_pvc(m: &Migration, source: &Value, capacity: &str) -> Value {
    let mut pvc = source.clone();
    let settings = rules::RuleSettings {
        storage_class_map: m.storage_class_map.clone(),
        access_mode_map: m.access_mode_map.clone(),
        pvc_name_map: m.pvc_name_map.clone(),
    };
    rules::clean(&mut pvc, &settings);
    mapping::map_namespace(&mut pvc, &m.namespace_map);
    // The bound PV may be larger than the request (rounded up by the provisioner); ask for
    // what the data may need.
    if let Some(cap) = source.pointer("/status/capacity/storage").and_then(Value::as_str)
        && parse_size(cap).unwrap_or(0) > parse_size(capacity).unwrap_or(0)
    {
        pvc["spec"]["resources"]["requests"]["storage"] = json!(cap);
    }
    super::hash::stamp(&mut pvc, &m.name);
    pvc
}
