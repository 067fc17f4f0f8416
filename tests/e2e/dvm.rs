//! Direct Volume Migration against the lab: real rsync and stunnel pods, through a Route.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use mtcd_tests::Lab;
use sha2::{Digest, Sha256};

const NS_YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
"#;

fn pvc_yaml(name: &str, size: &str, mode: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: standard\n  volumeMode: {mode}\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

fn desired(lab: &Lab, dvm: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\nstorage_class_map = {{ standard = \"fast\" }}\n[migration.dvm]\nhard_links = true\n{retries}{dvm}",
            retries = if dvm.contains("retries") { "" } else { "retries = 3\n" }
        ),
    )
}

async fn pvc_dir(client: &kube::Client, ns: &str, name: &str) -> PathBuf {
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

/// Everything a user would check after a copy: type, content, mode, mtime, link targets and
/// which paths share an inode.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let desc = if m.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o} {}", m.mtime())
            } else {
                let mut h = Sha256::new();
                h.update(std::fs::read(&p).unwrap());
                let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
                format!("file {mode:o} {} {} {} same-as:{first}", m.mtime(), m.len(), hex::encode(h.finalize()))
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Compares two trees and names the differing paths (the whole maps are too large to print).
#[track_caller]
fn assert_same_tree(src: &Path, dst: &Path) {
    let (a, b) = (snapshot(src), snapshot(dst));
    let mut diffs: Vec<String> = Vec::new();
    for k in a.keys().chain(b.keys()).collect::<std::collections::BTreeSet<_>>() {
        if a.get(k) != b.get(k) {
            diffs.push(format!("{k}: source {:?} / destination {:?}", a.get(k), b.get(k)));
        }
    }
    assert!(diffs.is_empty(), "{} differences, first: {:#?}", diffs.len(), &diffs[..diffs.len().min(10)]);
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with what trips copies: big files, many small ones, links of both kinds, empty
/// dirs, odd permissions, old mtimes and a sparse file.
fn fill(root: &Path, small_files: usize) {
    write(&root.join("big/a.bin"), &pseudo_random(1, 24 << 20));
    write(&root.join("big/b.bin"), &pseudo_random(2, 8 << 20));
    for i in 0..small_files {
        write(&root.join(format!("small/{:02}/f{i:05}.txt", i % 50)), format!("file {i}\n").repeat(8).as_bytes());
    }
    write(&root.join("conf/app.conf"), b"key = value\n");
    std::os::unix::fs::symlink("app.conf", root.join("conf/current")).unwrap();
    std::os::unix::fs::symlink("../big/a.bin", root.join("conf/data-link")).unwrap();
    std::fs::hard_link(root.join("conf/app.conf"), root.join("conf/app.conf.hard")).unwrap();
    std::fs::create_dir_all(root.join("empty/nested")).unwrap();
    std::fs::set_permissions(root.join("conf/app.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(root.join("small/00"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options().write(true).open(root.join("big/b.bin")).unwrap().set_modified(old).unwrap();
}

fn ar(group: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { "v1".to_string() } else { format!("{group}/v1") };
    ApiResource { group: group.into(), version: "v1".into(), api_version, kind: kind.into(), plural: plural.into() }
}

/// Transfer objects left in a namespace (there must be none after a transfer).
/// Waits (a minute at most) until a transfer object in `ns` satisfies `found`, e.g. a client
/// pod exists: the moment a test interrupts a run.
pub(crate) async fn until_transfer_object(client: &kube::Client, ns: &str, found: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !leftovers(client, ns).await.iter().any(|o| found(o)) {
        assert!(Instant::now() < deadline, "no such transfer object in {ns}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn leftovers(client: &kube::Client, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (g, k, p) in [
        ("", "Pod", "pods"),
        ("", "Secret", "secrets"),
        ("", "ConfigMap", "configmaps"),
        ("", "Service", "services"),
        ("route.openshift.io", "Route", "routes"),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar(g, k, p));
        for o in api.list(&ListParams::default().labels("mtcd.io/component=transfer")).await.unwrap().items {
            out.push(format!("{k}/{}", o.metadata.name.unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_migrate_identically_and_a_resync_moves_only_the_changes() {
    let lab = Lab::up();
    let yaml =
        format!("{NS_YAML}{}{}", pvc_yaml("data", "1Gi", "Filesystem"), pvc_yaml("uploads", "1Gi", "Filesystem"));
    lab.seed_yaml("lab-src", &yaml).await.unwrap();
    let src = lab.client("lab-src").await;
    let dst = lab.client("lab-dst").await;
    let data = pvc_dir(&src, "shop", "data").await;
    let uploads = pvc_dir(&src, "shop", "uploads").await;
    fill(&data, 10_000);
    write(&uploads.join("one.txt"), b"just one file\n");

    let file = desired(&lab, "verify = true");
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(plan.stdout.contains("shop/data → shop-prod/data  1Gi, class standard"), "{}", plan.stdout);
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);
    let dst_data = pvc_dir(&dst, "shop-prod", "data").await;
    assert_same_tree(&data, &dst_data);
    assert_same_tree(&uploads, &pvc_dir(&dst, "shop-prod", "uploads").await);
    let sparse = std::fs::metadata(dst_data.join("sparse.img")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "the sparse file stays sparse ({} blocks)", sparse.blocks());
    let pvc = Api::<PersistentVolumeClaim>::namespaced(dst.clone(), "shop-prod").get("data").await.unwrap();
    assert_eq!(pvc.spec.unwrap().storage_class_name.as_deref(), Some("fast"), "storage class mapped");
    assert!(
        leftovers(&src, "shop").await.is_empty() && leftovers(&dst, "shop-prod").await.is_empty(),
        "transfer objects removed"
    );

    // Change 1% of the small files and delete one: only those cross the wire.
    for i in (0..10_000).step_by(100) {
        write(&data.join(format!("small/{:02}/f{i:05}.txt", i % 50)), format!("changed {i}\n").as_bytes());
    }
    std::fs::remove_file(data.join("conf/current")).unwrap();
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let progress: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "volume" && e["phase"] == "transferring")
        .collect();
    assert!(!progress.is_empty(), "progress events while copying:\n{}", run.stdout);
    for p in &progress {
        let p = &p["progress"];
        assert!(
            p["bytes"].is_u64() && p["percent"].is_u64() && p["rate"].is_number() && p["elapsed_seconds"].is_u64(),
            "bytes, percent, rate, elapsed: {p}"
        );
        assert!(p["percent"].as_u64().unwrap() == 100 || p["eta_seconds"].is_u64(), "an estimate until done: {p}");
    }
    let vols = summary["migrations"][0]["volumes"].as_array().unwrap();
    let v = vols.iter().find(|v| v["pvc"] == "shop/data").unwrap();
    assert_eq!(v["stats"]["files_transferred"], 100, "{v}");
    assert!(v["stats"]["bytes_sent"].as_u64().unwrap() < 2 << 20, "only the changes crossed: {v}");
    assert_same_tree(&data, &dst_data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_pod_killed_mid_transfer_is_retried_and_completes() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    let src = lab.client("lab-src").await;
    let data = pvc_dir(&src, "shop", "data").await;
    write(&data.join("big.bin"), &pseudo_random(7, 40 << 20));
    // 10 MiB/s: about four seconds, long enough to kill the pod in the middle.
    let file = desired(&lab, "bandwidth_limit = \"10MiB\"");
    let mtcd = mtcd_tests::bin("mtcd");
    let child = std::process::Command::new(mtcd)
        .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "apply", file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(src.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = pods
            .get_opt("mtcd-transfer-data")
            .await
            .unwrap()
            .is_some_and(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Running"));
        if running {
            break;
        }
        assert!(Instant::now() < deadline, "client pod never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pods.delete("mtcd-transfer-data", &DeleteParams::default()).await.unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("attempt 1/4"), "the killed attempt is reported: {stderr}");
    let dst = lab.client("lab-dst").await;
    assert_same_tree(&data, &pvc_dir(&dst, "shop-prod", "data").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_everything_after_mtcd_is_killed_mid_transfer() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    let src = lab.client("lab-src").await;
    write(&pvc_dir(&src, "shop", "data").await.join("big.bin"), &pseudo_random(3, 30 << 20));
    let file = desired(&lab, "bandwidth_limit = \"2MiB\"");
    let mut child = std::process::Command::new(mtcd_tests::bin("mtcd"))
        .args(["--kubeconfig", lab.kubeconfig.to_str().unwrap(), "apply", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until_transfer_object(&src, "shop", |o| o == "Pod/mtcd-transfer-data").await;
    child.kill().unwrap();
    child.wait().unwrap();
    let dst = lab.client("lab-dst").await;
    assert!(!leftovers(&dst, "shop-prod").await.is_empty(), "the killed run left its objects (what cleanup is for)");
    let run = lab.mtcd(&["cleanup", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Removed"), "{}", run.stdout);
    assert_eq!(leftovers(&src, "shop").await, Vec::<String>::new());
    assert_eq!(leftovers(&dst, "shop-prod").await, Vec::<String>::new());
}

/// Ctrl-C mid-transfer: the copy stops at its next wait, the transfer objects are removed on
/// both clusters before mtcd exits, and the PVC is reported as stopped.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_mid_transfer_stops_the_copy_and_leaves_nothing() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    let src = lab.client("lab-src").await;
    let dst = lab.client("lab-dst").await;
    write(&pvc_dir(&src, "shop", "data").await.join("big.bin"), &pseudo_random(4, 30 << 20));
    let file = desired(&lab, "bandwidth_limit = \"2MiB\"");
    let child = lab.spawn_mtcd(&["apply", file.to_str().unwrap()]);
    until_transfer_object(&src, "shop", |o| o == "Pod/mtcd-transfer-data").await;
    let stopped_at = Instant::now();
    let run = mtcd_tests::stop_with(child, "INT");
    let text = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{text}");
    assert!(stopped_at.elapsed() < Duration::from_secs(20), "stopped at once, not after the copy: {text}");
    assert!(text.contains("volume shop/data: FAILED") && text.contains("stopped: interrupted"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (src_left, dst_left) = (leftovers(&src, "shop").await, leftovers(&dst, "shop-prod").await);
    assert!(src_left.is_empty() && dst_left.is_empty(), "left behind: {src_left:?} {dst_left:?}\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_volume_is_refused_not_copied_as_files() {
    let lab = Lab::up();
    lab.seed_yaml(
        "lab-src",
        &format!("{NS_YAML}{}{}", pvc_yaml("raw", "1Gi", "Block"), pvc_yaml("data", "1Gi", "Filesystem")),
    )
    .await
    .unwrap();
    let src = lab.client("lab-src").await;
    write(&pvc_dir(&src, "shop", "data").await.join("a.txt"), b"a\n");
    let file = desired(&lab, "");
    let plan = lab.mtcd(&["plan", file.to_str().unwrap()]);
    assert!(
        plan.stdout
            .contains("shop/raw → shop-prod/raw  1Gi, class standard  (volumeMode Block: not supported, will fail)"),
        "{}",
        plan.stdout
    );
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("volume shop/raw: FAILED") && run.stdout.contains("volumeMode Block is not supported"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("volume shop/data: done"), "the filesystem volume still moves: {}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_split_into_streams_arrives_identical_and_mirrors_deletions() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    let src = lab.client("lab-src").await;
    let data = pvc_dir(&src, "shop", "data").await;
    fill(&data, 2_000);
    let file = desired(&lab, "streams_per_pvc = 4");
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let dst = pvc_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    assert_same_tree(&data, &dst);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    let v = &summary["migrations"][0]["volumes"][0];
    assert!(v["stats"]["files_transferred"].as_u64().unwrap() >= 2_000, "stats summed over the streams: {v}");
    // Top-level deletions (a file and a directory) are mirrored too.
    std::fs::remove_file(data.join("sparse.img")).unwrap();
    std::fs::remove_dir_all(data.join("empty")).unwrap();
    assert_eq!(lab.mtcd(&["apply", file.to_str().unwrap()]).code, 0);
    assert_same_tree(&data, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_image_that_cannot_be_pulled_fails_with_the_reason_and_leaves_nothing() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    let src = lab.client("lab-src").await;
    let dst = lab.client("lab-dst").await;
    write(&pvc_dir(&src, "shop", "data").await.join("a.txt"), b"a\n");
    let file = desired(&lab, "transfer_image = \"registry.invalid/no/such-image:1\"");
    let started = Instant::now();
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("ErrImagePull") && out.contains("registry.invalid/no/such-image:1"),
        "the reason is named:\n{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "fails at once, not after a timeout ({:?})",
        started.elapsed()
    );
    let (src_left, dst_left) = (leftovers(&src, "shop").await, leftovers(&dst, "shop-prod").await);
    assert!(
        src_left.is_empty() && dst_left.is_empty(),
        "transfer objects removed: source {src_left:?}, destination {dst_left:?}\n{out}"
    );
}

/// A server pod that cannot start ends the run while a client pod's create is still on its way
/// (a slow admission webhook on the source holds every pod write for a second): the create
/// lands after mtcd gave up on it, and the cleanup must still find it. mtcd never abandons a
/// create in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_start_leaves_no_client_pod_even_when_writes_are_slow() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}", pvc_yaml("data", "1Gi", "Filesystem"))).await.unwrap();
    lab.slow_writes("lab-src", "pods", 3000).await;
    lab.slow_writes("lab-dst", "pods", 300).await;
    let src = lab.client("lab-src").await;
    let dst = lab.client("lab-dst").await;
    write(&pvc_dir(&src, "shop", "data").await.join("a.txt"), b"a\n");
    let file = desired(&lab, "transfer_image = \"registry.invalid/no/such-image:1\"");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains("ErrImagePull"), "the reason is named:\n{out}");
    // Whatever was on its way has landed by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (src_left, dst_left) = (leftovers(&src, "shop").await, leftovers(&dst, "shop-prod").await);
    assert!(
        src_left.is_empty() && dst_left.is_empty(),
        "transfer objects removed: source {src_left:?}, destination {dst_left:?}\n{out}"
    );
}

/// The application using the volume: a pod (the lab's workload controllers report status
/// but do not create pods).
fn workload_yaml(claim: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: web\n    image: registry.example.com/simulated/shop-web:1.4\n    volumeMounts: [{{name: data, mountPath: /data}}]\n  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: {claim}}}\n"
    )
}

/// A desired file that leaves the bare `web` pod on the source: it stands for the application
/// there (migrated, it would run on the destination at once and hold its PVC).
fn desired_without_pods(lab: &Lab, dvm: &str) -> PathBuf {
    let f = desired(lab, dvm);
    let text =
        std::fs::read_to_string(&f).unwrap().replace("[migration.dvm]", "exclude_kinds = [\"Pod\"]\n[migration.dvm]");
    std::fs::write(&f, text).unwrap();
    f
}

/// The `web` pod, once it runs.
async fn running_web_pod(client: &kube::Client) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if let Some(p) = running {
            return p;
        }
        assert!(Instant::now() < deadline, "the web pod never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readwriteonce_volume_in_use_is_read_on_the_node_of_the_pod_using_it() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{}{}", pvc_yaml("data", "1Gi", "Filesystem"), workload_yaml("data")))
        .await
        .unwrap();
    let src = lab.client("lab-src").await;
    write(&pvc_dir(&src, "shop", "data").await.join("in-use.txt"), b"written while the app runs\n");
    let web = running_web_pod(&src).await;
    let node = web.spec.unwrap().node_name.unwrap();
    let file = desired_without_pods(&lab, "");
    let run = lab.mtcd(&["--output", "json", "apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let pinned = format!(
        "client pod on node {node}, beside pod shop/{} which mounts the volume (ReadWriteOnce)",
        web.metadata.name.unwrap()
    );
    assert!(
        run.stdout.lines().any(|l| l.contains("\"event\":\"volume\"") && l.contains(&pinned)),
        "the pinning is reported:\n{}",
        run.stdout
    );
    let dst = pvc_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    assert_eq!(std::fs::read_to_string(dst.join("in-use.txt")).unwrap(), "written while the app runs\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_readwriteoncepod_volume_in_use_is_refused_naming_the_pod() {
    let lab = Lab::up();
    let pvc = pvc_yaml("data", "1Gi", "Filesystem").replace("[ReadWriteOnce]", "[ReadWriteOncePod]");
    lab.seed_yaml("lab-src", &format!("{NS_YAML}{pvc}{}", workload_yaml("data"))).await.unwrap();
    let src = lab.client("lab-src").await;
    let web = running_web_pod(&src).await.metadata.name.unwrap();
    let file = desired_without_pods(&lab, "retries = 0");
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(out.contains(&format!("PVC shop/data is ReadWriteOncePod and pod shop/{web} mounts it")), "{out}");
}
