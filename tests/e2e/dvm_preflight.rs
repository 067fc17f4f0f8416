//! DVM checks before any data moves: leftovers of a killed run removed and reported, the
//! destination PVC's state (Terminating, mounted by a running pod), and the source's data
//! measured against the destination's capacity (`grow` raises it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use mtcd_tests::Lab;

use super::dvm::{leftovers, until_transfer_object};
use super::dvm_tree::{SEED, assert_identical, pv_dir};

fn desired(lab: &Lab, dvm: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\n[migration.dvm]\nretries = 0\n{dvm}"
        ),
    )
}

/// [`desired`] with the resource plan leaving PVCs alone: the destination PVC a test made by
/// hand stays as it is, and only DVM acts on it.
fn desired_without_pvcs(lab: &Lab, dvm: &str) -> PathBuf {
    let f = desired(lab, dvm);
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("[migration.dvm]", "exclude_kinds = [\"PersistentVolumeClaim\"]\n[migration.dvm]");
    std::fs::write(&f, text).unwrap();
    f
}

fn pvc(ns: &str, name: &str, size: &str, extra_metadata: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}{extra_metadata}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: standard\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

fn namespace(ns: &str) -> String {
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
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

fn is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_too_small_for_the_data_is_a_preflight_error_and_grow_raises_it() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    // 1Gi on the destination would do; this one was made by hand at 10Mi (and the resource
    // plan leaves PVCs alone here).
    lab.seed_yaml("lab-dst", &format!("{}{}", namespace("shop-prod"), pvc("shop-prod", "data", "10Mi", "")))
        .await
        .unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    std::fs::write(src.join("db.bin"), random_bytes(1, 16 << 20)).unwrap();
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    let file = |dvm: &str| desired_without_pvcs(&lab, dvm);
    let run = lab.mtcd(&["apply", file("").to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        // Measured by the client pod on its way to the copy (the destination PVC is there and
        // grow is off): one attempt, not retried, nothing copied.
        run.stdout.contains("volume shop/data: FAILED after 1 attempt(s)")
            && run.stdout.contains("with 3% headroom it needs 17.0 MiB")
            && run.stdout.contains("but destination PVC shop-prod/data holds 10.0 MiB")
            && run.stdout.contains("Set dvm.grow = true (the destination request becomes 17Mi)"),
        "a preflight error with the numbers:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("inodes (measured with du)"), "{}", run.stdout);
    assert!(is_empty(&dst), "nothing was copied");

    let run = lab.mtcd(&["apply", file("grow = true").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("request raised from 10.0 MiB to 17Mi"), "{}", run.stderr);
    // The copy waited for the expansion (the lab's resizer takes 2 s, as real ones take a
    // while): the volume holds the new size before any data arrives.
    let claim =
        Api::<PersistentVolumeClaim>::namespaced(lab.client("lab-dst").await, "shop-prod").get("data").await.unwrap();
    let request = claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0.clone();
    assert_eq!(request, "17Mi");
    let capacity = claim.status.unwrap().capacity.unwrap()["storage"].0.clone();
    assert_eq!(capacity, "17Mi", "grown before the copy");
    assert!(run.stderr.contains("waiting for destination PVC shop-prod/data to grow to 17Mi"), "{}", run.stderr);
    assert_eq!(std::fs::read(dst.join("db.bin")).unwrap(), random_bytes(1, 16 << 20));
    // And the next run finds a PVC that holds what it asks for.
    let run = lab.mtcd(&["apply", file("grow = true").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn grow_on_a_class_that_does_not_allow_expansion_is_refused_by_the_server_and_named() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let fixed = "---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fixed}\nprovisioner: lab.mtcd.io/local-path\nallowVolumeExpansion: false\n";
    let claim = pvc("shop-prod", "data", "10Mi", "").replace("storageClassName: standard", "storageClassName: fixed");
    lab.seed_yaml("lab-dst", &format!("{fixed}{}{claim}", namespace("shop-prod"))).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    std::fs::write(src.join("db.bin"), random_bytes(2, 16 << 20)).unwrap();
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    let f = desired_without_pvcs(&lab, "grow = true");
    let run = lab.mtcd(&["apply", f.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("volume shop/data: FAILED")
            && run.stdout.contains("dvm.grow could not raise destination PVC shop-prod/data to 17Mi")
            && run.stdout.contains("the storageclass that provisions the pvc must support resize"),
        "the server's refusal, with the PVC and the size:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(is_empty(&dst), "nothing was copied");
    let claim =
        Api::<PersistentVolumeClaim>::namespaced(lab.client("lab-dst").await, "shop-prod").get("data").await.unwrap();
    assert_eq!(claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0, "10Mi");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminating_destination_pvc_fails_at_once_and_the_other_pvcs_still_move() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", &format!("{SEED}{}", pvc("shop", "uploads", "1Gi", ""))).await.unwrap();
    let src = lab.client("lab-src").await;
    std::fs::write(pv_dir(&src, "shop", "data").await.join("a.txt"), b"a\n").unwrap();
    std::fs::write(pv_dir(&src, "shop", "uploads").await.join("b.txt"), b"b\n").unwrap();
    let held = pvc("shop-prod", "data", "1Gi", ", finalizers: [example.com/hold]");
    lab.seed_yaml("lab-dst", &format!("{}{held}", namespace("shop-prod"))).await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    claims.delete("data", &DeleteParams::default()).await.unwrap();
    let started = Instant::now();
    // The destination claim was not made by mtcd: taking it over is asked for explicitly.
    let run = lab.mtcd(&["apply", "--adopt", desired(&lab, "").to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("volume shop/data: FAILED after 0 attempt(s)")
            && run.stdout.contains("destination PVC shop-prod/data is Terminating")
            && run.stdout.contains("held by finalizers example.com/hold"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("volume shop/uploads: done"), "the other PVC moves:\n{}", run.stdout);
    assert!(started.elapsed() < Duration::from_secs(30), "at once, not after a timeout: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_pvc_mounted_by_a_running_pod_fails_naming_the_pod() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    std::fs::write(pv_dir(&lab.client("lab-src").await, "shop", "data").await.join("a.txt"), b"a\n").unwrap();
    let web = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop-prod}\nspec:\n  containers:\n  - name: web\n    image: registry.example.com/simulated/shop-web:1.4\n    volumeMounts: [{name: data, mountPath: /data}]\n  volumes:\n  - name: data\n    persistentVolumeClaim: {claimName: data}\n";
    lab.seed_yaml("lab-dst", &format!("{}{}{web}", namespace("shop-prod"), pvc("shop-prod", "data", "1Gi", "")))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.get("web").await.unwrap().status.and_then(|s| s.phase).as_deref() != Some("Running") {
        assert!(Instant::now() < deadline, "web never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    // The destination claim was not made by mtcd: taking it over is asked for explicitly.
    let run = lab.mtcd(&["apply", "--adopt", desired(&lab, "").to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("destination PVC shop-prod/data (ReadWriteOnce) is mounted by running pod shop-prod/web"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(30), "at once, not after a timeout: {:?}", started.elapsed());
    let transfer = pods.list(&ListParams::default().labels("mtcd.io/component=transfer")).await.unwrap();
    assert!(transfer.items.is_empty(), "no transfer server was started beside it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_apply_first_removes_what_a_killed_run_left_behind_and_says_so() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src_client = lab.client("lab-src").await;
    let src = pv_dir(&src_client, "shop", "data").await;
    std::fs::write(src.join("big.bin"), random_bytes(2, 30 << 20)).unwrap();
    let mut child = Command::new(mtcd_tests::bin("mtcd"))
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["apply", desired(&lab, "bandwidth_limit = \"2MiB\"").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(src_client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt("mtcd-transfer-data").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the transfer never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let run = lab.mtcd(&["apply", desired(&lab, "").to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("transfer object(s) an earlier run left behind in lab-src/shop: ")
            && run.stderr.contains("Pod/mtcd-transfer-data")
            && run.stderr.contains("transfer object(s) an earlier run left behind in lab-dst/shop-prod: ")
            && run.stderr.contains("Pod/mtcd-transfer"),
        "what was removed is reported:\n{}",
        run.stderr
    );
    assert_identical(&src, &pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await);
    // What the killed run left on the source was never copied as a resource (its client
    // Secret holds the rsync password and a client key).
    let secrets: Api<Secret> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    assert!(secrets.get_opt("mtcd-transfer-client-tls").await.unwrap().is_none());
    let pods: Api<Pod> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    assert!(pods.get_opt("mtcd-transfer-data").await.unwrap().is_none());
}

/// Ctrl-C while the probe pod is still starting (its image pull takes a minute): the run stops
/// at once instead of after the pull and the measurement, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_the_probe_pod_is_starting_stops_at_once_and_leaves_nothing() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    lab.slow_pulls("lab-src", "quay.io/konveyor/rsync-transfer:latest", 60_000).await;
    let src = lab.client("lab-src").await;
    std::fs::write(pv_dir(&src, "shop", "data").await.join("a.txt"), b"a\n").unwrap();
    // grow: the probe pod measures before anything else starts.
    let file = desired(&lab, "grow = true");
    let child = lab.spawn_mtcd(&["apply", file.to_str().unwrap()]);
    until_transfer_object(&src, "shop", |o| o.starts_with("Pod/")).await;
    let stopped_at = Instant::now();
    let run = mtcd_tests::stop_with(child, "INT");
    let text = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{text}");
    assert!(stopped_at.elapsed() < Duration::from_secs(20), "stopped at once, not after the pull: {text}");
    assert!(text.contains("volume shop/data: FAILED") && text.contains("stopped while probe pod"), "{text}");
    let dst = lab.client("lab-dst").await;
    let (src_left, dst_left) = (leftovers(&src, "shop").await, leftovers(&dst, "shop-prod").await);
    assert!(src_left.is_empty() && dst_left.is_empty(), "left behind: {src_left:?} {dst_left:?}\n{text}");
}
