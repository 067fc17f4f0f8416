//! The example and test plugins under `plugins/`, built for `wasm32-wasip2` on first use.
//!
//! Used by the e2e binary and (via `#[path]`) by `host/tests/plugins.rs`, so it depends on
//! std only. The plugins workspace has its own target directory (`plugins/target`), which
//! is set explicitly: the host's `CARGO_TARGET_DIR` must not receive wasm artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn build_plugins() -> PathBuf {
    let root = repo_root();
    let target = root.join("plugins").join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("plugins").join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .status()
        .expect("run cargo build for the plugins workspace");
    assert!(
        status.success(),
        "building plugins/ for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
    target.join("wasm32-wasip2").join("release")
}

/// Path of a built plugin by crate name (`add-label`, `infinite-loop`, ...).
pub fn plugin_wasm(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let path = DIR.get_or_init(build_plugins).join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "plugin {name} was not built: {}", path.display());
    path
}
