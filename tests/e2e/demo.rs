//! `scripts/demo.sh`, the one command a newcomer runs, shows every built-in action and stays
//! quick: objects through a transform plugin, a volume, an image moved from the source's
//! internal registry with its workload rewritten, a re-sync of a change by `apply --watch`,
//! cutover and status, each step timed.

use std::process::Command;

use mtcd_tests::{bin, repo_root};

#[test]
fn the_demo_shows_every_action_each_step_timed() {
    // The binaries first (the demo's own `cargo build` is then a no-op).
    bin("mtcd");
    let state = tempfile::Builder::new().prefix("mtcd-demo-").tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/demo.sh"))
        .env("LAB_DIR", state.path().join("lab"))
        .env_remove("KEEP_LAB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for shown in [
        // plan -v: the objects left out, and why.
        "skipped (",
        // The image: copied registry to registry, the workload on the destination runs it,
        // and the add-label plugin's label is on the object.
        "shop-prod/simulated/catalog:2.1: copied",
        "/shop-prod/simulated/catalog:2.1  migrated-by=mtcd",
        // The change made in the source arrives through `apply --watch`.
        "cycle 1: ",
        "SHOP_CURRENCY=CHF",
        "cutover done",
        "migration shop: ",
    ] {
        assert!(stdout.contains(shown), "{shown:?} missing from the demo's output:\n{stdout}\n{stderr}");
    }
    let timed = stdout.lines().filter(|l| l.contains(" took ")).count();
    assert!(timed >= 10, "every step prints its time ({timed}):\n{stdout}");
    let total: f64 = stdout
        .lines()
        .find_map(|l| l.split("demo done: ").nth(1)?.split('s').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no total time:\n{stdout}"));
    // Under a minute on an idle 2-core machine; the margin is for CI sharing its cores.
    assert!(total < 120.0, "the demo took {total}s after the build");
}
