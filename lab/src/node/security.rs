//! The parts of a pod's `securityContext` the node agent honours, as a container runtime and
//! a kubelet would: the user and groups a container runs as (`runAsUser`, `runAsGroup`,
//! `supplementalGroups`, `fsGroup`), its capabilities (`privileged`, `capabilities.add/drop`
//! over the runtime's default set), `allowPrivilegeEscalation: false` (no_new_privs), and the
//! kubelet's fsGroup ownership of writable PVC volumes. `seLinuxOptions` are recorded only
//! (the lab host has no SELinux). A container whose pod and container state none of these
//! runs as before: root with every capability.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

/// Who a container's process is and what it may do; applied by the `__container` child just
/// before exec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (fsGroup and supplementalGroups).
    pub groups: Vec<u32>,
    /// Capability names (`CHOWN`) kept in the bounding set; `None`: all (privileged).
    pub capabilities: Option<Vec<String>>,
    pub no_new_privs: bool,
}

/// containerd's and CRI-O's default capability set.
const RUNTIME_DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The identity of container `c` of `pod`; `None` when neither states a security context
/// (the lab's historical behaviour: root, every capability).
pub fn identity(pod: &Pod, c: &Container) -> Option<Identity> {
    let ps = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let cs = c.security_context.clone()?;
    let uid = cs.run_as_user.or(ps.run_as_user).unwrap_or(0);
    let gid = cs.run_as_group.or(ps.run_as_group).unwrap_or(0);
    let mut groups: Vec<u32> =
        ps.fs_group.into_iter().chain(ps.supplemental_groups.into_iter().flatten()).map(|g| g as u32).collect();
    groups.sort_unstable();
    groups.dedup();
    let capabilities = if cs.privileged == Some(true) {
        None
    } else {
        let caps = cs.capabilities.clone().unwrap_or_default();
        let norm = |s: &String| s.trim_start_matches("CAP_").to_ascii_uppercase();
        let drop: Vec<String> = caps.drop.iter().flatten().map(norm).collect();
        let mut keep: Vec<String> = if drop.iter().any(|d| d == "ALL") {
            Vec::new()
        } else {
            RUNTIME_DEFAULT.iter().map(|s| s.to_string()).filter(|c| !drop.contains(c)).collect()
        };
        keep.extend(caps.add.iter().flatten().map(norm));
        keep.sort();
        keep.dedup();
        Some(keep)
    };
    Some(Identity {
        uid: uid as u32,
        gid: gid as u32,
        groups,
        capabilities,
        no_new_privs: cs.allow_privilege_escalation == Some(false),
    })
}

/// Becomes `id` (in the single-threaded container child, after chroot): the bounding set
/// first, so that exec gives even a root process only the kept capabilities, then the
/// groups and the user (a non-root user loses every capability there).
pub fn become_identity(id: &Identity) -> Result<(), String> {
    use rustix::thread::{CapabilitySet, remove_capability_from_bounding_set};
    if let Some(keep) = &id.capabilities {
        let keep: Vec<CapabilitySet> = keep.iter().filter_map(|n| CapabilitySet::from_name(n)).collect();
        for cap in CapabilitySet::all().iter() {
            if !keep.contains(&cap) && rustix::thread::capability_is_in_bounding_set(cap).unwrap_or(false) {
                remove_capability_from_bounding_set(cap).map_err(|e| format!("dropping capability {cap:?}: {e}"))?;
            }
        }
    }
    let groups: Vec<nix::unistd::Gid> = id.groups.iter().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", id.groups))?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(id.gid)).map_err(|e| format!("setgid {}: {e}", id.gid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(id.uid)).map_err(|e| format!("setuid {}: {e}", id.uid))?;
    if id.no_new_privs {
        rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    }
    Ok(())
}

/// The kubelet's fsGroup ownership of a writable volume (`SetVolumeOwnership`): group
/// `fs_group` and group read/write on everything (directories also group-execute and
/// setgid), symlinks only re-grouped. `OnRootMismatch` skips it when the root already has
/// the group and those bits.
pub fn apply_fs_group(root: &Path, fs_group: u32, on_root_mismatch: bool) -> Result<(), String> {
    const DIR_MASK: u32 = 0o2770;
    if on_root_mismatch
        && let Ok(m) = std::fs::metadata(root)
        && m.gid() == fs_group
        && m.mode() & DIR_MASK == DIR_MASK
    {
        return Ok(());
    }
    fn walk(p: &Path, fs_group: u32) -> Result<(), String> {
        let m = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        std::os::unix::fs::lchown(p, None, Some(fs_group)).map_err(|e| format!("chgrp {}: {e}", p.display()))?;
        if m.file_type().is_symlink() {
            return Ok(());
        }
        let mask = if m.is_dir() { DIR_MASK } else { 0o660 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode((m.mode() & 0o7777) | mask))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
        if m.is_dir() {
            for e in std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))? {
                walk(&e.map_err(|e| e.to_string())?.path(), fs_group)?;
            }
        }
        Ok(())
    }
    walk(root, fs_group)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn identity_follows_pod_and_container_security_contexts() {
        let p = pod(
            "spec:\n  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, supplementalGroups: [5]}\n  containers:\n  - name: a\n    securityContext: {capabilities: {drop: [ALL]}, allowPrivilegeEscalation: false}\n  - name: b\n  - name: c\n    securityContext: {runAsUser: 0, capabilities: {drop: [MKNOD], add: [SYS_ADMIN]}}\n",
        );
        let cs = &p.spec.as_ref().unwrap().containers;
        let a = identity(&p, &cs[0]).unwrap();
        assert_eq!((a.uid, a.gid, a.groups.clone()), (1000, 3000, vec![5, 2000]));
        assert_eq!(a.capabilities, Some(vec![]));
        assert!(a.no_new_privs);
        assert_eq!(identity(&p, &cs[1]), None, "no container context: as before");
        let c = identity(&p, &cs[2]).unwrap();
        assert_eq!(c.uid, 0);
        let caps = c.capabilities.unwrap();
        assert!(caps.contains(&"SYS_ADMIN".to_string()) && caps.contains(&"CHOWN".to_string()));
        assert!(!caps.contains(&"MKNOD".to_string()));
    }

    #[test]
    fn fs_group_makes_a_volume_group_writable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        apply_fs_group(&root, 4242, true).unwrap();
        let m = std::fs::metadata(&root).unwrap();
        assert_eq!((m.gid(), m.mode() & 0o7777), (4242, 0o2775));
        let f = std::fs::metadata(root.join("sub/f")).unwrap();
        assert_eq!((f.gid(), f.mode() & 0o777), (4242, 0o660));
    }
}
