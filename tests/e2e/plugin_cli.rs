//! `mtcd plugin test` and `mtcd plugin new` through the real binary, offline.

use std::process::Command;

use mtcd_tests::bin;
use mtcd_tests::plugins::plugin_wasm;

#[test]
fn plugin_test_prints_a_diff_per_object_and_fails_on_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\ndata: {a: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: boom, namespace: shop}\n",
    )
    .unwrap();
    let out = Command::new(bin("mtcd"))
        .args(["plugin", "test"])
        .arg(plugin_wasm("add-label"))
        .arg(&objects)
        .args(["--config", "labels.migrated-by=mtcd"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ConfigMap/shop/cfg: changed"), "{stdout}");
    assert!(stdout.contains("+    migrated-by: mtcd") || stdout.contains("migrated-by: mtcd"), "{stdout}");

    let out =
        Command::new(bin("mtcd")).args(["plugin", "test"]).arg(plugin_wasm("trap")).arg(&objects).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failing object fails the command");
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(all.contains("boom") && all.contains("trap"), "{all}");
}

#[test]
fn plugin_new_scaffolds_a_crate() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(bin("mtcd")).args(["plugin", "new", "team-label", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("team-label/Cargo.toml").is_file());
    assert!(String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2"));
}

fn objects_file(dir: &std::path::Path) -> std::path::PathBuf {
    let objects = dir.join("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {ready: \"yes\"}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\n",
    )
    .unwrap();
    objects
}

/// Issue 16, point 12: limits as in desired.toml; the report on stdout, only the summary on
/// stderr; a sleeping plugin stops at `--timeout`.
#[test]
fn plugin_test_takes_limits_and_keeps_the_report_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects_file(dir.path());
    let sleep = || {
        Command::new(bin("mtcd"))
            .args(["plugin", "test"])
            .arg(plugin_wasm("sleep-forever"))
            .arg(&objects)
            .args(["--timeout", "300ms"])
            .output()
            .unwrap()
    };
    // The first run compiles the component (slow in a debug build); time the second.
    sleep();
    let started = std::time::Instant::now();
    let out = sleep();
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("ConfigMap/shop/cfg") && stdout.contains("time limit of 300ms"), "{stdout}");
    assert_eq!(stderr.trim(), "error: 2 of 2 objects failed", "stderr has only the summary");

    let out = Command::new(bin("mtcd"))
        .args(["plugin", "test"])
        .arg(plugin_wasm("memory-bomb"))
        .arg(&objects)
        .args(["--memory", "8MiB", "--fuel", "1000000000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("memory limit of 8388608 bytes"), "{stdout}");
}

/// Issue 16, point 12: `--phase` runs a hook; a hook sleeping for ever stops at `--timeout`.
#[test]
fn plugin_test_runs_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let objects = objects_file(dir.path());
    let run = |plugin: &str, extra: &[&str]| {
        let out = Command::new(bin("mtcd"))
            .args(["plugin", "test"])
            .arg(plugin_wasm(plugin))
            .arg(&objects)
            .args(["--phase", "pre-cutover"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run("require-annotation", &["--config", "annotation=ready"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("hook pre-cutover: ok"), "{stdout}");
    let (code, stdout, stderr) = run("require-annotation", &["--config", "annotation=missing"]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("stopped the migration at pre-cutover") && stdout.contains("missing"), "{stdout}");
    assert_eq!(stderr.trim(), "error: the hook failed");
    run("sleep-forever-hook", &["--timeout", "1s"]); // compiles it (slow in a debug build)
    let started = std::time::Instant::now();
    let (code, stdout, _) = run("sleep-forever-hook", &["--timeout", "1s"]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("hook pre-cutover of migration test") && stdout.contains("time limit of 1s"), "{stdout}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
}

/// Issue 16, point 11: `plugin new --help` lists only its own options; `--hook` makes a hook.
#[test]
fn plugin_new_help_lists_only_its_options() {
    let out = Command::new(bin("mtcd")).args(["plugin", "new", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--dir") && help.contains("--hook"), "{help}");
    for global in ["--kubeconfig", "--output", "--verbose"] {
        assert!(!help.contains(global), "{global} listed:\n{help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(bin("mtcd")).args(["plugin", "new", "gate", "--hook", "--dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lib = std::fs::read_to_string(dir.path().join("gate/src/lib.rs")).unwrap();
    assert!(lib.contains("export_hook!"), "{lib}");
    let readme = std::fs::read_to_string(dir.path().join("gate/README.md")).unwrap();
    assert!(readme.contains("plugin = \"gate/target/wasm32-wasip2/release/gate.wasm\"") && !readme.contains("path ="));
}
