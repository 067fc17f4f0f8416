//! A volume arrives byte for byte: every kind of file system entry a user volume can hold,
//! compared between source and destination by content, type, link target bytes, mode,
//! owner, mtime (to the nanosecond), device numbers, hard-link groups, extended attributes
//! and POSIX ACLs (`system.posix_acl_*`, compared as the raw xattr bytes).
//!
//! The tree is written by the test process (root) straight into the source PV's directory.
//! Regression: rsyncd with `use chroot = no` rewrote `abs-link -> /var/lib/app/current` to
//! `var/lib/app/current` and `a/b/up-escape -> ../../../outside` to `../../outside`, and
//! mtcd reported Done (VolSync #1162).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;
use mtcd_tests::Lab;
use rustix::fs::{self, Timespec};
use sha2::{Digest, Sha256};

pub(crate) const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: standard
  resources: {requests: {storage: 1Gi}}
"#;

pub(crate) async fn pv_dir(client: &kube::Client, ns: &str, name: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pv = loop {
        if let Ok(c) = claims.get(name).await
            && c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        {
            break c.spec.unwrap().volume_name.unwrap();
        }
        assert!(Instant::now() < deadline, "{ns}/{name} not bound");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&pv).await.unwrap().spec.unwrap();
    PathBuf::from(pv.host_path.map(|h| h.path).or(pv.local.map(|l| l.path)).unwrap())
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

/// Sets atime and mtime (seconds, nanoseconds) without following a symlink.
fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec };
    fs::utimensat(fs::CWD, p, &fs::Timestamps { last_access: t, last_modification: t }, fs::AtFlags::SYMLINK_NOFOLLOW)
        .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    fs::lsetxattr(p, name, value, fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("lsetxattr {name} {}: {e}", p.display()));
}

fn mknod(p: &Path, kind: fs::FileType, perm: u32, dev: (u32, u32)) {
    fs::mknodat(fs::CWD, p, kind, fs::Mode::from_raw_mode(perm), fs::makedev(dev.0, dev.1))
        .unwrap_or_else(|e| panic!("mknod {}: {e}", p.display()));
}

/// Every extended attribute of `p` (not following a symlink), name → value.
fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let size = fs::llistxattr_query(p).unwrap_or(0);
    let mut names = vec![0u8; size];
    let size = fs::llistxattr(p, &mut names[..]).unwrap_or(0);
    names.truncate(size);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let len = fs::lgetxattr_query(p, name).unwrap_or(0);
        let mut value = vec![0u8; len];
        let len = fs::lgetxattr(p, name, &mut value[..]).unwrap_or(0);
        value.truncate(len);
        out.insert(name.to_string_lossy().into_owned(), value);
    }
    out
}

/// A POSIX ACL in the kernel's xattr form (`system.posix_acl_access` / `_default`):
/// version 2, then (tag, perm, id) entries sorted by tag and id.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

/// Fills `root` with every kind of entry a copy can get wrong. Top-level entries `top1` and
/// `top2` share a hard link (what splitting a volume into streams by top-level entry breaks).
pub(crate) fn build_tree(root: &Path) {
    // Regular files: content, odd modes, owners, nanosecond mtimes.
    write(&root.join("file.txt"), b"plain file\n");
    write(&root.join("empty-file"), b"");
    write(&root.join("bin/setuid"), b"#!/bin/sh\n");
    mode(&root.join("bin/setuid"), 0o4755);
    write(&root.join("bin/setgid"), b"#!/bin/sh\n");
    mode(&root.join("bin/setgid"), 0o2750);
    write(&root.join("bin/both"), b"x");
    mode(&root.join("bin/both"), 0o6711);
    write(&root.join("private.key"), b"secret\n");
    mode(&root.join("private.key"), 0o600);
    lchown(&root.join("private.key"), 1000, 1000);
    write(&root.join("owned/by-1234"), b"owned\n");
    lchown(&root.join("owned/by-1234"), 1234, 5678);
    lchown(&root.join("owned"), 1000, 2000);
    mode(&root.join("owned"), 0o2775);
    std::fs::create_dir_all(root.join("tmp-like")).unwrap();
    mode(&root.join("tmp-like"), 0o1777);
    write(
        &root.join("big/random.bin"),
        &(0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>(),
    );
    // Empty directories, nested.
    std::fs::create_dir_all(root.join("empty/nested/deeper")).unwrap();
    // Symlinks of every kind, one owned by someone else.
    let a_b = root.join("a/b");
    std::fs::create_dir_all(&a_b).unwrap();
    write(&a_b.join("target.txt"), b"in a/b\n");
    std::os::unix::fs::symlink("/var/lib/app/current", root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("abs-dir-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", a_b.join("up-escape")).unwrap();
    std::os::unix::fs::symlink("../../file.txt", a_b.join("up-inside")).unwrap();
    std::os::unix::fs::symlink("target.txt", a_b.join("relative")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("a", root.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("a/b/../b/./target.txt", root.join("dotted-link")).unwrap();
    std::os::unix::fs::symlink(os(b"odd\nname\xff"), root.join("link-to-odd-bytes")).unwrap();
    std::os::unix::fs::symlink("/rsyncd-munged/looks-munged", root.join("munged-looking")).unwrap();
    lchown(&root.join("dangling"), 4321, 4321);
    // Hard links: in one directory, and across two top-level entries.
    write(&root.join("hard/original"), b"linked\n");
    std::fs::hard_link(root.join("hard/original"), root.join("hard/second")).unwrap();
    write(&root.join("top1/shared"), b"shared between top-level entries\n");
    std::fs::create_dir_all(root.join("top2")).unwrap();
    std::fs::hard_link(root.join("top1/shared"), root.join("top2/same-inode")).unwrap();
    // Special files: a FIFO, a socket, character and block devices.
    std::fs::create_dir_all(root.join("special")).unwrap();
    mknod(&root.join("special/fifo"), fs::FileType::Fifo, 0o640, (0, 0));
    drop(std::os::unix::net::UnixListener::bind(root.join("special/socket")).unwrap());
    mknod(&root.join("special/null"), fs::FileType::CharacterDevice, 0o666, (1, 3));
    mknod(&root.join("special/loop7"), fs::FileType::BlockDevice, 0o660, (7, 7));
    // A sparse file: 64 MiB, data only at 1 MiB and at the end.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(root.join("sparse.img")).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[0xAB; 4096]).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start((64 << 20) - 4096)).unwrap();
        f.write_all(&[0xCD; 4096]).unwrap();
    }
    // File names: newline, invalid UTF-8, leading dash, spaces, non-ASCII, a dot file.
    let names = root.join("names");
    std::fs::create_dir_all(&names).unwrap();
    for n in [
        &b"new\nline"[..],
        b"bad-\xff\xfe-utf8",
        b"-leading-dash",
        b"with  spaces ",
        "caf\u{e9}-\u{1F600}".as_bytes(),
        b".hidden",
        b"back\\slash",
    ] {
        write(&names.join(OsStr::from_bytes(n)), n);
    }
    std::fs::create_dir_all(names.join(os(b"dir\nwith-newline\x80"))).unwrap();
    // Extended attributes and POSIX ACLs.
    set_xattr(&root.join("file.txt"), "user.comment", b"kept byte for byte \x00\xff");
    set_xattr(&root.join("file.txt"), "user.mime_type", b"text/plain");
    set_xattr(&root.join("a"), "user.dir-attr", b"on a directory");
    set_xattr(
        &root.join("private.key"),
        "system.posix_acl_access",
        &acl(&[
            (ACL_USER_OBJ, 6, NO_ID),
            (ACL_USER, 4, 2001),
            (ACL_GROUP_OBJ, 0, NO_ID),
            (ACL_GROUP, 4, 3001),
            (ACL_MASK, 4, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ]),
    );
    let shared = root.join("shared-dir");
    std::fs::create_dir_all(&shared).unwrap();
    let dacl = acl(&[
        (ACL_USER_OBJ, 7, NO_ID),
        (ACL_USER, 7, 2001),
        (ACL_GROUP_OBJ, 5, NO_ID),
        (ACL_MASK, 7, NO_ID),
        (ACL_OTHER, 5, NO_ID),
    ]);
    set_xattr(&shared, "system.posix_acl_access", &dacl);
    set_xattr(&shared, "system.posix_acl_default", &dacl);
    // Times last (writing into a directory changes its mtime), children before parents.
    let mut all = Vec::new();
    walk(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 7919, (i as i64 * 123_456_789) % 1_000_000_000);
    }
    set_mtime(root, 1_500_000_000, 987_654_321);
    mode(root, 0o750);
    lchown(root, 1000, 3000);
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

/// Every entry under `root` (the root itself as `.`), keyed by the raw bytes of its relative
/// path, described by everything a byte-for-byte copy keeps.
pub(crate) fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut paths = vec![root.to_path_buf()];
    walk(root, &mut paths);
    let rel = |p: &Path| match p.strip_prefix(root).unwrap().as_os_str().as_bytes() {
        b"" => b".".to_vec(),
        r => r.to_vec(),
    };
    // A hard-link group is named by its smallest path (directory order differs between trees).
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for p in &paths {
        let m = std::fs::symlink_metadata(p).unwrap();
        if !m.is_dir() && m.nlink() > 1 {
            let r = rel(p);
            let e = inodes.entry(m.ino()).or_insert_with(|| r.clone());
            if r < *e {
                *e = r;
            }
        }
    }
    let mut out = BTreeMap::new();
    for p in paths {
        let rel = rel(&p);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap().as_os_str().as_bytes().escape_ascii().to_string())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            let mut h = Sha256::new();
            h.update(std::fs::read(&p).unwrap());
            format!("file {} bytes sha256 {}", m.len(), hex::encode(h.finalize()))
        } else if ft.is_fifo() {
            "fifo".into()
        } else if ft.is_socket() {
            "socket".into()
        } else if ft.is_char_device() {
            format!("char {}:{}", fs::major(m.rdev()), fs::minor(m.rdev()))
        } else if ft.is_block_device() {
            format!("block {}:{}", fs::major(m.rdev()), fs::minor(m.rdev()))
        } else {
            "unknown".into()
        };
        let links = if !ft.is_dir() && m.nlink() > 1 {
            format!(" hard-link-group {}", inodes[&m.ino()].escape_ascii())
        } else {
            String::new()
        };
        let perms = if ft.is_symlink() { String::new() } else { format!(" mode {:o}", m.mode() & 0o7777) };
        let xattrs: Vec<String> = xattrs(&p).into_iter().map(|(k, v)| format!("{k}={}", v.escape_ascii())).collect();
        out.insert(
            rel,
            format!(
                "{what}{perms} owner {}:{} mtime {}.{:09}{links} xattrs [{}]",
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                xattrs.join(", ")
            ),
        );
    }
    out
}

/// Compares two trees entry by entry and lists every difference.
#[track_caller]
pub(crate) fn assert_identical(src: &Path, dst: &Path) {
    let (a, b) = (describe(src), describe(dst));
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{}\n    source:      {:?}\n    destination: {:?}", k.escape_ascii(), a.get(k), b.get(k)))
        .collect();
    assert!(diffs.is_empty(), "{} of {} entries differ:\n{}", diffs.len(), a.len(), diffs.join("\n"));
}

/// The sparse file of [`build_tree`] stays sparse: about 8 KiB of data, never 64 MiB of zeros.
#[track_caller]
fn assert_sparse(dst: &Path) {
    let sparse = std::fs::metadata(dst.join("sparse.img")).unwrap();
    assert!(sparse.blocks() * 512 <= 1 << 20, "sparse.img is no longer sparse: {} blocks", sparse.blocks());
}

fn desired(lab: &Lab, dvm: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\n[migration.dvm]\n{dvm}"
        ),
    )
}

/// The volume summary of a `--output json` run's last line.
fn volume_summary(stdout: &str) -> serde_json::Value {
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    summary["migrations"][0]["volumes"][0].clone()
}

async fn copy_and_compare(dvm: &str) -> (Lab, String) {
    assert!(nix_is_root(), "this test writes owners, devices and ACLs: run it as root");
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    build_tree(&src);
    let file = desired(&lab, dvm);
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    assert_identical(&src, &dst);
    assert_sparse(&dst);
    // A second run finds nothing to do and changes nothing (no link is rewritten on the way).
    let again = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let v = volume_summary(&again.stdout);
    assert_eq!(v["stats"]["files_transferred"], 0, "a re-run copies nothing: {v}");
    assert_identical(&src, &dst);
    (lab, run.stdout)
}

fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_arrives_byte_for_byte_links_owners_devices_xattrs_acls_and_odd_names() {
    copy_and_compare("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_split_into_streams_keeps_hard_links_across_top_level_entries() {
    let (lab, stdout) = copy_and_compare("streams_per_pvc = 4").await;
    assert!(
        stdout.contains("hard links between top-level entries"),
        "the fallback to one stream is reported:\n{stdout}"
    );
    // Without the shared inode the volume is split into streams, and still arrives identical.
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    std::fs::remove_file(src.join("top2/same-inode")).unwrap();
    let run = lab.mtcd(&["--output", "json", "apply", lab.dir.join("desired.toml").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("hard links between top-level entries"), "split into streams:\n{}", run.stdout);
    assert_eq!(run.stdout.matches("mtcd-transfer: rsync exit").count(), 0, "script lines stay in the pod");
    assert_identical(&src, &dst);
}

/// A file rewritten at the same size within the second of the previous sync (a database page
/// during a stage sync) arrives: rsync's default compares mtimes in whole seconds, and kept
/// the old contents while reporting success.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_at_the_same_size_within_the_same_second_is_copied_again() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    let page = src.join("db.page");
    write(&page, &[1u8; 8192]);
    set_mtime(&page, 1_700_000_000, 100_000_000);
    let file = desired(&lab, "");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    assert!(std::fs::read(dst.join("db.page")).unwrap() == [1u8; 8192], "the first copy arrives");

    write(&page, &[2u8; 8192]);
    set_mtime(&page, 1_700_000_000, 700_000_000);
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        std::fs::read(dst.join("db.page")).unwrap() == [2u8; 8192],
        "the rewritten page arrives (the destination kept the old one)"
    );
    assert_identical(&src, &dst);
}
