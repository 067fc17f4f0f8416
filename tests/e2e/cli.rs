//! The CLI on bad input: every broken file in tests/fixtures/broken gives exactly its
//! expected errors (golden files) and exit code 1, before any cluster is contacted.

use std::process::Command;

use mtcd_tests::{bin, repo_root};

#[test]
fn every_broken_file_prints_its_precise_errors_and_exits_1() {
    let dir = repo_root().join("tests/fixtures/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "fixtures missing: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let out = Command::new(bin("mtcd"))
            .args(["--kubeconfig", "../kubeconfig", "plan", name])
            .current_dir(&dir)
            .output()
            .unwrap();
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || stderr != expected || !out.stdout.is_empty() {
            failures.push(format!("{name}: exit {:?}\n--- expected\n{expected}--- got\n{stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn json_output_lists_problems_with_positions() {
    let dir = repo_root().join("tests/fixtures/broken");
    let out = Command::new(bin("mtcd"))
        .args(["--kubeconfig", "../kubeconfig", "--output", "json", "plan", "namespaces.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[1]["line"], 9);
    assert_eq!(problems[1]["column"], 44);
    assert!(problems[1]["message"].as_str().unwrap().contains("both mapped to \"prod\""));
}

#[test]
fn a_valid_file_with_unreachable_clusters_names_the_contexts() {
    let dir = repo_root().join("tests/fixtures");
    let out = Command::new(bin("mtcd"))
        .args(["--kubeconfig", "kubeconfig", "plan", "valid.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("context \"lab-src\": API server https://127.0.0.1:9/ could not be reached: Connection refused"),
        "{stderr}"
    );
    assert!(stderr.contains("context \"lab-dst\""), "{stderr}");
    assert!(!stderr.contains("not-a-secret"), "the token must never be printed: {stderr}");
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let dir = repo_root().join("tests/fixtures");
    let out = Command::new(bin("mtcd"))
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "plan", "valid.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read kubeconfig /nonexistent/kubeconfig"), "{stderr}");
}

#[test]
fn every_command_exists_and_help_describes_it() {
    let out = Command::new(bin("mtcd")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["plan", "apply", "cutover", "rollback", "status", "cleanup", "plugin"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(cmd)), "{cmd} missing from:\n{help}");
    }
    for flag in ["--kubeconfig", "--output", "--verbose"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = Command::new(bin("mtcd")).args(["apply", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--watch"));
}
