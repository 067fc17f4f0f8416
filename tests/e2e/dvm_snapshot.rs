//! A point-in-time source (`dvm.source = "snapshot"`): DVM copies a clone restored from a CSI
//! VolumeSnapshot taken before the copy, so what the application writes meanwhile does not
//! mix into a stage sync, and the snapshot and clone are gone afterwards.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use mtcd_tests::Lab;

use super::dvm_tree::{SEED, pv_dir};

fn desired(lab: &Lab, dvm: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\n[migration.dvm]\nretries = 0\n{dvm}"
        ),
    )
}

fn snapshot_api(group_kind: (&str, &str)) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", group_kind.0),
        group_kind.1,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_source_copies_one_instant_and_leaves_no_snapshot_behind() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src_client = lab.client("lab-src").await;
    let src = pv_dir(&src_client, "shop", "data").await;
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(src.join("a-big.bin"), &big).unwrap();
    std::fs::write(src.join("state.txt"), b"before\n").unwrap();
    let file = desired(&lab, "source = \"snapshot\"\nbandwidth_limit = \"4MiB\"");
    let child = Command::new(mtcd_tests::bin("mtcd"))
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["apply", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the copy runs, the application changes its data.
    let pods: Api<Pod> = Api::namespaced(src_client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods.logs("mtcd-transfer-data", &Default::default()).await.unwrap_or_default().contains("tunnel up") {
        assert!(Instant::now() < deadline, "the copy never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(src.join("state.txt"), b"after\n").unwrap();
    std::fs::write(src.join("written-during-the-copy"), b"new\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("reading a point-in-time copy: VolumeSnapshot shop/mtcd-snap-data (class lab-snapclass), restored as PVC shop/mtcd-clone-data"),
        "{stderr}"
    );
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    assert_eq!(std::fs::read(dst.join("state.txt")).unwrap(), b"before\n", "the instant of the snapshot");
    assert!(!dst.join("written-during-the-copy").exists(), "nothing written after the snapshot");
    assert_eq!(std::fs::read(dst.join("a-big.bin")).unwrap(), big);

    // The snapshot, its content and the clone are gone.
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(src_client.clone(), "shop", &snapshot_api(("VolumeSnapshot", "volumesnapshots")));
    let contents: Api<DynamicObject> =
        Api::all_with(src_client.clone(), &snapshot_api(("VolumeSnapshotContent", "volumesnapshotcontents")));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(src_client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = snaps.list(&ListParams::default()).await.unwrap().items.len()
            + contents.list(&ListParams::default()).await.unwrap().items.len()
            + claims
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|c| c.metadata.name.as_deref() != Some("data"))
                .count();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} snapshot object(s) or clone(s) left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_source_needs_a_snapshot_class_for_the_volumes_driver() {
    let lab = Lab::up();
    // A class whose driver has no VolumeSnapshotClass (its claim stays Pending in the lab).
    let nfs = "---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: nfs}\nprovisioner: example.com/nfs\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: shared, namespace: shop}\nspec:\n  accessModes: [ReadWriteMany]\n  storageClassName: nfs\n  resources: {requests: {storage: 1Gi}}\n";
    lab.seed_yaml("lab-src", &format!("{SEED}{nfs}")).await.unwrap();
    // The destination has the class too (else the plan's own preflight stops first).
    lab.seed_yaml("lab-dst", nfs.split("---\napiVersion: v1").next().unwrap()).await.unwrap();
    std::fs::write(pv_dir(&lab.client("lab-src").await, "shop", "data").await.join("a.txt"), b"a\n").unwrap();
    let run = lab.mtcd(&["apply", desired(&lab, "pvc_source = { shared = \"snapshot\" }").to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("volume shop/shared: FAILED after 0 attempt(s)")
            && run.stdout.contains("PVC shop/shared cannot be read from a snapshot: its storage class nfs (provisioner example.com/nfs): no VolumeSnapshotClass serves driver example.com/nfs"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("volume shop/data: done"), "the live PVC still moves:\n{}", run.stdout);
}
