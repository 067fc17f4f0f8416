//! End-to-end tests: the real `mtcd` binary against the lab. One test binary (each extra one
//! would link kube again); one module per area.

mod lab_node;

use mtcd_tests::bin;

#[test]
fn mtcd_binary_runs() {
    let out = std::process::Command::new(bin("mtcd")).arg("--help").output().expect("run mtcd");
    // Until the CLI exists the binary says so and exits non-zero; once it does, --help works.
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.is_empty());
}
