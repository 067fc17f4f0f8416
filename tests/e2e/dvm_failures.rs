//! DVM failures: success needs positive evidence, rsync's exit codes are named, what a retry
//! cannot fix ends a PVC's transfer at the first attempt, and a failure repeated by every
//! attempt is reported once with its count.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use mtcd_tests::Lab;

use super::dvm_tree::{SEED, pv_dir};

fn desired(lab: &Lab, dvm: &str) -> PathBuf {
    lab.desired(
        "desired.toml",
        &format!(
            "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = {{ shop = \"shop-prod\" }}\nvolumes = \"direct\"\n[migration.dvm]\n{dvm}"
        ),
    )
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

/// Runs a command on the host, panicking with its output if it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Undoes a host-side change (an immutable flag, a mount) when the test ends, pass or fail,
/// before the lab's directory is removed.
struct Undo(Vec<Vec<String>>);
impl Drop for Undo {
    fn drop(&mut self) {
        for cmd in &self.0 {
            let _ = Command::new(&cmd[0]).args(&cmd[1..]).status();
        }
    }
}

/// Starts `mtcd ARGS` in the background.
fn spawn(lab: &Lab, args: &[&str]) -> std::process::Child {
    Command::new(mtcd_tests::bin("mtcd"))
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the client pod of `claim` has copied for a moment (it is Running and its log
/// says the tunnel is up).
async fn client_copying(lab: &Lab, claim: &str) {
    let pods: Api<Pod> = Api::namespaced(lab.client("lab-src").await, "shop");
    let name = format!("mtcd-transfer-{claim}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = pods.logs(&name, &Default::default()).await.unwrap_or_default();
        if log.contains("tunnel up") {
            break;
        }
        assert!(Instant::now() < deadline, "client pod {name} never brought its tunnel up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn output(child: std::process::Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rsync_exit_23_is_named_and_not_retried() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    std::fs::write(src.join("locked.txt"), b"version 1\n").unwrap();
    let file = desired(&lab, "retries = 3");
    assert_eq!(lab.mtcd(&["apply", file.to_str().unwrap()]).code, 0);
    // The destination file cannot be replaced: rsync copies everything else and exits 23.
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    let locked = dst.join("locked.txt");
    sh(&["chattr", "+i", locked.to_str().unwrap()]);
    let _undo = Undo(vec![vec!["chattr".into(), "-i".into(), locked.display().to_string()]]);
    std::fs::write(src.join("locked.txt"), b"version 2, longer\n").unwrap();
    let started = Instant::now();
    let run = lab.mtcd(&["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("volume shop/data: FAILED after 1 attempt(s)")
            && run.stdout.contains("rsync exit 23 (partial transfer due to error)"),
        "exit 23 named, one attempt:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("locked.txt"), "rsync's own line names the file:\n{}", run.stdout);
    assert!(!run.stderr.contains("attempt 2/4"), "not retried:\n{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(30), "no backoff: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_vanish_warn_during_a_stage_sync_and_fail_the_final_sync() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    // rsync sends files in name order: a-big.bin takes ~3 s at 8 MiB/s, z-late.txt comes
    // after it, and is deleted meanwhile.
    std::fs::write(src.join("a-big.bin"), random_bytes(1, 24 << 20)).unwrap();
    std::fs::write(src.join("z-late.txt"), b"deleted while the copy runs\n").unwrap();
    let file = desired(&lab, "retries = 0\nbandwidth_limit = \"8MiB\"");
    let child = spawn(&lab, &["--output", "json", "apply", file.to_str().unwrap()]);
    client_copying(&lab, "data").await;
    std::fs::remove_file(src.join("z-late.txt")).unwrap();
    let (code, stdout, stderr) = output(child);
    assert_eq!(code, 0, "a stage sync with vanished files is done:\n{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let v = &summary["migrations"][0]["volumes"][0];
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("rsync exit 24, partial transfer due to vanished source files")),
        "the warning names exit 24: {v}"
    );

    // The cutover's final sync: the same thing is an error.
    std::fs::write(src.join("a-big.bin"), random_bytes(2, 24 << 20)).unwrap();
    std::fs::write(src.join("z-late.txt"), b"deleted while the final sync runs\n").unwrap();
    let child = spawn(&lab, &["cutover", file.to_str().unwrap()]);
    client_copying(&lab, "data").await;
    std::fs::remove_file(src.join("z-late.txt")).unwrap();
    let (code, stdout, stderr) = output(child);
    assert_ne!(code, 0, "the final sync fails:\n{stdout}\n{stderr}");
    assert!(
        // The final sync's failure is part of the cutover's error (stderr), with the volume's line.
        format!("{stdout}{stderr}").contains("rsync exit 24") && stderr.contains("during the final sync"),
        "named as exit 24 during the final sync:\n{stdout}\n{stderr}"
    );
}

/// Mounts a small tmpfs on `dir` (the destination volume's directory), so a copy fills it.
fn small_filesystem(dir: &Path, size: &str) -> Undo {
    sh(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "mtcd-test-full", dir.to_str().unwrap()]);
    Undo(vec![vec!["umount".into(), "-l".into(), dir.display().to_string()]])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_destination_fails_at_the_first_attempt_with_one_message() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    // The destination PVC exists (1Gi on paper) but its file system holds 2 MiB.
    lab.seed_yaml(
        "lab-dst",
        &SEED.replace("name: shop}", "name: shop-prod}").replace("namespace: shop}", "namespace: shop-prod}"),
    )
    .await
    .unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    std::fs::write(src.join("big.bin"), random_bytes(3, 8 << 20)).unwrap();
    let dst = pv_dir(&lab.client("lab-dst").await, "shop-prod", "data").await;
    let _full = small_filesystem(&dst, "2m");
    let file = desired(&lab, "retries = 3");
    let started = Instant::now();
    // The destination claim was not made by mtcd: taking it over is asked for explicitly.
    let run = lab.mtcd(&["apply", "--adopt", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("volume shop/data: FAILED after 1 attempt(s)")
            && run.stdout.contains("the destination volume is full"),
        "one attempt, the reason named:\n{all}"
    );
    assert_eq!(all.matches("No space left on device").count(), 2, "once as it happens, once in the summary:\n{all}");
    assert!(started.elapsed() < Duration::from_secs(30), "no retries with backoff: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_becomes_reachable_is_never_done_and_its_repeated_failure_is_counted() {
    let lab = Lab::up();
    lab.seed_yaml("lab-src", SEED).await.unwrap();
    let src = pv_dir(&lab.client("lab-src").await, "shop", "data").await;
    std::fs::write(src.join("a.txt"), b"a\n").unwrap();
    let file = desired(&lab, "retries = 2\ntunnel_timeout = \"2s\"");
    let child = spawn(&lab, &["apply", file.to_str().unwrap()]);
    // The transfer server loses the label its Service selects, as soon as it exists: the
    // router finds no pod behind the Route, the tunnel never comes up.
    let pods: Api<Pod> = Api::namespaced(lab.client("lab-dst").await, "shop-prod");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unlabel = serde_json::json!({"metadata": {"labels": {"mtcd.io/transfer-server": null}}});
        if pods.patch("mtcd-transfer", &PatchParams::default(), &Patch::Merge(&unlabel)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer server pod never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, stdout, stderr) = output(child);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("volume shop/data: FAILED after 3 attempt(s)"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "attempts 1–3 of 3 (3×): pod shop/mtcd-transfer-data: the TLS tunnel to the destination did not come up"
        ),
        "one line with a count:\n{stdout}"
    );
    assert_eq!(stdout.matches("tunnel not up after 2s").count(), 1, "printed once in the summary:\n{stdout}");
    assert_eq!(stderr.matches("tunnel not up after 2s").count(), 1, "and once as it happened:\n{stderr}");
    assert_eq!(stderr.matches("failed the same way").count(), 2, "{stderr}");
}
