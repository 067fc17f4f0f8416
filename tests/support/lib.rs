//! Shared support for the end-to-end tests: the real `mtcd` and `mtcd-lab` binaries.
//!
//! Cargo builds a package's own binaries for its integration tests, but not another
//! package's, so the first test that needs them builds both with the same cargo and profile
//! that is running the tests. Cargo has released its build lock by then.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory the test binary's profile writes binaries to (`target/debug` or `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/e2e-<hash>
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

fn build_binaries() -> PathBuf {
    let dir = profile_dir();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "mtcd", "-p", "mtcd-lab", "--bins"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let status = cmd.status().expect("run cargo build for mtcd binaries");
    assert!(status.success(), "building mtcd and mtcd-lab failed");
    dir
}

/// Path of a workspace binary (`mtcd` or `mtcd-lab`), built on first use.
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let path = DIR.get_or_init(build_binaries).join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The repository root (for examples/ and fixtures).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}
pub mod plugins;
