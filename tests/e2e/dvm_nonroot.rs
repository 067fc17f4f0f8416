//! Non-root transfer pods (`run_as_user`, `run_as_group`, `fs_group`, `selinux_type`), as a
//! restricted cluster (OpenShift restricted-v2, Pod Security "restricted") runs them. The lab
//! honours the security context: the pods' processes run as that user, without capabilities.
//! The data still arrives as it was — links untouched although the daemon cannot chroot —
//! except what only root can keep (owners: files belong to the pods' user; device nodes, which
//! fail the copy loudly) and the volume root's own attributes.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use mtcd_tests::Lab;
use rustix::fs;

use super::dvm_tree::{SEED, describe, pv_dir};

const APP_UID: u32 = 1000;

fn desired(lab: &Lab) -> PathBuf {
    lab.desired(
        "desired.toml",
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\nvolumes = \"direct\"\n[migration.dvm]\nretries = 0\nrun_as_user = 1000\nrun_as_group = 1000\nfs_group = 2000\nselinux_type = \"spc_t\"\nbandwidth_limit = \"4MiB\"\nverify = true\n",
    )
}

fn chown(p: &Path) {
    std::os::unix::fs::lchown(p, Some(APP_UID), Some(APP_UID)).unwrap();
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = fs::Timespec { tv_sec: sec, tv_nsec: nsec };
    fs::utimensat(fs::CWD, p, &fs::Timestamps { last_access: t, last_modification: t }, fs::AtFlags::SYMLINK_NOFOLLOW)
        .unwrap();
}

/// What an application running as uid 1000 keeps in its volume.
fn build_app_tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    };
    w("big.bin", &(0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<_>>());
    w("conf/app.conf", b"key = value\n");
    w("private/secret.key", b"k\n");
    w("data/a/b/target.txt", b"target\n");
    w("names/new\nline", b"n");
    std::fs::hard_link(root.join("conf/app.conf"), root.join("conf/app.conf.hard")).unwrap();
    std::os::unix::fs::symlink("/var/lib/app/current", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", root.join("data/a/b/up-escape")).unwrap();
    std::os::unix::fs::symlink("target.txt", root.join("data/a/b/relative")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("data/dangling")).unwrap();
    std::os::unix::fs::symlink("/rsyncd-munged/looks-munged", root.join("conf/munged-looking")).unwrap();
    std::fs::create_dir_all(root.join("empty/dir")).unwrap();
    fs::mknodat(fs::CWD, root.join("conf/fifo"), fs::FileType::Fifo, fs::Mode::from_raw_mode(0o640), 0).unwrap();
    fs::lsetxattr(root.join("conf/app.conf"), "user.origin", b"app", fs::XattrFlags::empty()).unwrap();
    let mut all = Vec::new();
    walk(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        chown(p);
        let meta = std::fs::symlink_metadata(p).unwrap();
        if !meta.file_type().is_symlink() {
            let mode = if p.ends_with("private") {
                0o700
            } else if p.ends_with("secret.key") {
                0o600
            } else {
                meta.mode() & 0o777
            };
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        set_mtime(p, 1_650_000_000 + i as i64 * 61, i as i64 * 1_000_003 % 1_000_000_000);
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let is_dir = std::fs::symlink_metadata(&p).unwrap().is_dir();
        out.push(p.clone());
        if is_dir {
            walk(&p, out);
        }
    }
}

/// [`describe`] without owners and without the volume root (neither is kept without root).
fn describe_entries(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut d = describe(root);
    d.remove(b".".as_slice());
    for v in d.values_mut() {
        let (head, rest) = v.split_once(" owner ").unwrap();
        let rest = rest.split_once(' ').unwrap().1;
        *v = format!("{head} {rest}");
    }
    d
}

async fn captured_pod(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = pods.get_opt(name).await.unwrap() {
            return p;
        }
        assert!(Instant::now() < deadline, "{name} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn non_root_pods_move_a_volume_with_links_intact_and_state_their_security_context() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    build_app_tree(&src);
    let file = desired(&lab);
    let child = Command::new(mtcd_tests::bin("mtcd"))
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["apply", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = captured_pod(&Api::namespaced(lab.client("lab-src").await, "shop"), "mtcd-transfer-data").await;
    let server = captured_pod(&Api::namespaced(lab.client("lab-dst").await, "shop-prod"), "mtcd-transfer").await;
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    // Every pod states its security context in full.
    for (pod, fs_group) in [(&client, None), (&server, Some(2000))] {
        let spec = pod.spec.as_ref().unwrap();
        let sc = spec.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group, sc.run_as_non_root), (Some(1000), Some(1000), Some(true)));
        assert_eq!(sc.fs_group, fs_group, "fsGroup only on the destination");
        assert_eq!(sc.se_linux_options.as_ref().and_then(|s| s.type_.as_deref()), Some("spc_t"));
        assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
        for c in &spec.containers {
            let cs = c.security_context.as_ref().unwrap();
            assert_eq!(cs.allow_privilege_escalation, Some(false), "{}", c.name);
            let caps = cs.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]), "{}", c.name);
            assert!(caps.add.as_ref().is_none_or(|a| a.is_empty()), "no capability added to {}", c.name);
        }
    }

    // The data: everything but owners and the root, byte for byte.
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    let (a, b) = (describe_entries(&src), describe_entries(&dst));
    let diffs: Vec<String> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{}\n    source:      {:?}\n    destination: {:?}", k.escape_ascii(), a.get(k), b.get(k)))
        .collect();
    assert!(diffs.is_empty(), "{} entries differ:\n{}", diffs.len(), diffs.join("\n"));
    // Written by the pods' user: the lab ran them as 1000.
    let mut entries = Vec::new();
    walk(&dst, &mut entries);
    for p in &entries {
        assert_eq!(std::fs::symlink_metadata(p).unwrap().uid(), APP_UID, "{} owned by the pods' user", p.display());
    }
    assert!(!stdout.contains("rsyncd-munged//"), "{stdout}");

    // A device node cannot be made without root: the copy fails loudly instead of skipping it.
    fs::mknodat(
        fs::CWD,
        src.join("conf/null"),
        fs::FileType::CharacterDevice,
        fs::Mode::from_raw_mode(0o666),
        fs::makedev(1, 3),
    )
    .unwrap();
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("rsync exit 23") && run.stdout.contains("conf/null"),
        "the device node is named:\n{}",
        run.stdout
    );
}
