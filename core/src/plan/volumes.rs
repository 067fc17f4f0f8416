//! Which PVCs Direct Volume Migration copies, and the destination claim each one gets. Pure:
//! the PVCs come from the snapshot, so the action never lists them again.

use serde::Serialize;
use serde_json::{Value, json};

use crate::spec::{DvmOptions, Migration, VolumeMode, VolumeSource, parse_size};
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
    /// Where the data is read from: the live PVC, or a clone of a CSI snapshot of it taken
    /// just before the copy (`dvm.source`, or `dvm.pvc_source` for this PVC).
    pub read_from: VolumeSource,
    /// What the source volume's data takes, once measured (`None`: not measured yet; DVM
    /// measures before copying).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Space a volume's data takes, measured on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes allocated (holes of sparse files not counted, hard links once).
    pub bytes: u64,
    /// Files, directories, links… (inodes in use).
    pub inodes: u64,
    /// `df` (the volume is its own file system) or `du` (it shares one, e.g. a hostPath).
    pub method: UsageMethod,
}

/// How a volume's usage was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageMethod {
    Df,
    Du,
}

/// Headroom on top of the measured bytes, for file-system overhead that differs between the
/// two sides (MTC adds the same 3%).
pub const HEADROOM_PERCENT: u64 = 3;

/// The destination capacity `usage` needs: the bytes plus [`HEADROOM_PERCENT`], rounded up to
/// a whole MiB.
pub fn required_bytes(usage: &Usage) -> u64 {
    let with_headroom = usage.bytes + usage.bytes.div_ceil(100) * HEADROOM_PERCENT;
    with_headroom.div_ceil(1 << 20) * (1 << 20)
}

/// What a destination PVC of `capacity` bytes means for `usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityCheck {
    /// The data fits.
    Fits,
    /// It does not, and `grow` raises the request to this quantity (`"17Mi"`, `"11Gi"`).
    Grow { request: String },
    /// It does not: a preflight error.
    TooSmall { needed: u64, capacity: u64 },
}

/// Compares the measured usage with the destination's capacity (pure: the caller reads the
/// PVC).
pub fn check_capacity(usage: &Usage, capacity: u64, grow: bool) -> CapacityCheck {
    let needed = required_bytes(usage);
    if needed <= capacity {
        CapacityCheck::Fits
    } else if grow {
        CapacityCheck::Grow { request: quantity(needed) }
    } else {
        CapacityCheck::TooSmall { needed, capacity }
    }
}

/// Bytes as a Kubernetes quantity: whole GiB when exact, otherwise MiB (rounded up).
pub fn quantity(bytes: u64) -> String {
    let mib = bytes.div_ceil(1 << 20);
    if mib.is_multiple_of(1024) { format!("{}Gi", mib / 1024) } else { format!("{mib}Mi") }
}

/// The message of a [`CapacityCheck::TooSmall`], with the numbers.
pub fn too_small_message(t: &VolumeTransfer, usage: &Usage, needed: u64, capacity: u64) -> String {
    format!(
        "the data of {}/{} takes {} in {} inodes (measured with {}); with {}% headroom it needs {}, but destination PVC {}/{} holds {}. Set dvm.grow = true (the destination request becomes {}), or make the destination PVC larger, and run again",
        t.namespace,
        t.claim,
        human(usage.bytes),
        usage.inodes,
        match usage.method {
            UsageMethod::Df => "df",
            UsageMethod::Du => "du",
        },
        HEADROOM_PERCENT,
        human(needed),
        t.destination_namespace,
        t.destination_claim,
        human(capacity),
        quantity(needed)
    )
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {} ({n} bytes)", UNITS[i]) }
}

/// The storage a PVC holds: `status.capacity` once bound, else its request.
pub fn pvc_capacity(pvc: &Value) -> Option<u64> {
    pvc.pointer("/status/capacity/storage")
        .or_else(|| pvc.pointer("/spec/resources/requests/storage"))
        .and_then(Value::as_str)
        .and_then(parse_size)
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
    let read_from = m
        .dvm
        .pvc_source
        .get(&format!("{ns}/{claim}"))
        .or_else(|| m.dvm.pvc_source.get(&claim))
        .copied()
        .unwrap_or(m.dvm.source);
    VolumeTransfer {
        read_from,
        destination_namespace: m.namespace_map.get(&ns).cloned().unwrap_or_else(|| ns.clone()),
        destination_claim: m.pvc_name_map.get(&claim).cloned().unwrap_or_else(|| claim.clone()),
        storage_class: pvc.pointer("/spec/storageClassName").and_then(Value::as_str).map(String::from),
        block: pvc.pointer("/spec/volumeMode").and_then(Value::as_str) == Some("Block"),
        destination: destination_pvc(m, pvc, &capacity),
        capacity,
        namespace: ns,
        claim,
        source: pvc.clone(),
        usage: None,
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

#[cfg(test)]
mod capacity_tests {
    use super::*;

    fn usage(bytes: u64) -> Usage {
        Usage { bytes, inodes: 10, method: UsageMethod::Du }
    }

    #[test]
    fn three_percent_headroom_rounded_to_a_mebibyte() {
        assert_eq!(required_bytes(&usage(100 << 20)), 103 << 20);
        assert_eq!(required_bytes(&usage(1)), 1 << 20);
        assert_eq!(required_bytes(&usage(0)), 0);
    }

    #[test]
    fn fits_grows_or_is_too_small() {
        let gi = 1u64 << 30;
        assert_eq!(check_capacity(&usage(gi / 2), gi, false), CapacityCheck::Fits);
        assert_eq!(check_capacity(&usage(gi), gi, false), CapacityCheck::TooSmall { needed: 1055 << 20, capacity: gi });
        assert_eq!(check_capacity(&usage(gi), gi, true), CapacityCheck::Grow { request: "1055Mi".into() });
        assert_eq!(
            check_capacity(&usage(10 * gi - (100 << 20)), 9 * gi, true),
            CapacityCheck::Grow { request: "10445Mi".into() }
        );
        assert_eq!(quantity(11 << 30), "11Gi");
    }

    #[test]
    fn capacity_is_the_bound_size_else_the_request() {
        let bound = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"capacity": {"storage": "2Gi"}}});
        assert_eq!(pvc_capacity(&bound), Some(2 << 30));
        let pending = json!({"spec": {"resources": {"requests": {"storage": "10Mi"}}}});
        assert_eq!(pvc_capacity(&pending), Some(10 << 20));
    }
}
