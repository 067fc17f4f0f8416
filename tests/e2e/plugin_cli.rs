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
