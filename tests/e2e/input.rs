//! Hostile and careless input through the real binary: every file mtcd reads is a regular
//! file under a size limit (a device, a FIFO or a huge file fails at once, naming the rule),
//! validation stays linear and capped, values are strict, and errors point at the right
//! line. Every run has a deadline: a regression that blocks or reads without end fails the
//! test instead of hanging CI.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mtcd_tests::{bin, repo_root};

/// What a finished command printed.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with no stdin, killing it (and failing the test) after `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Out {
    let what = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Drain both pipes on threads, so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    }
}

/// `mtcd ARGS` in tests/fixtures (kubeconfig `kubeconfig`: two contexts on a closed port),
/// within 20 s (a debug build on a busy machine; the bounded reads take milliseconds).
fn mtcd(args: &[&str]) -> Out {
    mtcd_in(&repo_root().join("tests/fixtures"), args)
}

fn mtcd_in(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin("mtcd"));
    cmd.args(args).current_dir(dir).env_remove("MTCD_KUBECONFIG").env_remove("KUBECONFIG");
    run_within(cmd, Duration::from_secs(20))
}

fn fifo(dir: &Path) -> PathBuf {
    let p = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
    p
}

/// The failure a user sees: exit 1, the message on stderr, nothing on stdout.
#[track_caller]
fn assert_fails_with(out: &Out, expected: &str) {
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(out.stderr.contains(expected), "expected {expected:?} in:\n{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    assert!(out.stderr.len() < 2000, "a one-screen message, got {} bytes", out.stderr.len());
}

#[test]
fn desired_files_that_are_not_small_regular_files_fail_at_once_naming_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = fifo(tmp.path());
    // 17 MiB, sparse: over the 16 MiB limit without writing it.
    let huge = tmp.path().join("huge.toml");
    std::fs::File::create(&huge).unwrap().set_len(17 << 20).unwrap();
    let k = ["--kubeconfig", "kubeconfig", "plan"];
    for (file, expected) in [
        (
            "/dev/zero",
            "cannot read desired-state file /dev/zero: it is a character device, not a regular file (a desired-state file must be a regular file of at most 16 MiB)",
        ),
        ("/dev/urandom", "cannot read desired-state file /dev/urandom: it is a character device, not a regular file"),
        (fifo.to_str().unwrap(), "fifo: it is a FIFO (named pipe), not a regular file"),
        (tmp.path().to_str().unwrap(), "it is a directory, not a regular file"),
        (
            huge.to_str().unwrap(),
            "huge.toml: it is 17 MiB (17825792 bytes), over the 16 MiB limit for a desired-state file",
        ),
    ] {
        let out = mtcd(&[&k[..], &[file]].concat());
        assert_fails_with(&out, expected);
    }
}

#[test]
fn kubeconfigs_and_the_files_they_name_are_read_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = fifo(tmp.path());
    for (kubeconfig, expected) in [
        (
            "/dev/zero",
            "cannot read kubeconfig /dev/zero: it is a character device, not a regular file (a kubeconfig must be a regular file of at most 16 MiB)",
        ),
        (fifo.to_str().unwrap(), "it is a FIFO (named pipe), not a regular file"),
    ] {
        assert_fails_with(&mtcd(&["--kubeconfig", kubeconfig, "plan", "valid.toml"]), expected);
    }
    // The environment variables are the same path in.
    let mut cmd = Command::new(bin("mtcd"));
    cmd.args(["plan", "valid.toml"]).current_dir(repo_root().join("tests/fixtures")).env("KUBECONFIG", "/dev/zero");
    assert_fails_with(&run_within(cmd, Duration::from_secs(20)), "cannot read kubeconfig /dev/zero");

    // A certificate-authority file and a client key that are devices: refused before any
    // connection (kube would read them itself, without a limit).
    let fixtures = repo_root().join("tests/fixtures");
    let kc = std::fs::read_to_string(fixtures.join("kubeconfig")).unwrap();
    let with_ca =
        kc.replace("server: https://127.0.0.1:9", "server: https://127.0.0.1:9\n    certificate-authority: /dev/zero");
    std::fs::write(tmp.path().join("ca-kubeconfig"), with_ca).unwrap();
    std::fs::copy(fixtures.join("valid.toml"), tmp.path().join("valid.toml")).unwrap();
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "ca-kubeconfig", "plan", "valid.toml"]);
    assert_fails_with(&out, "cannot read certificate-authority file /dev/zero: it is a character device");
    let with_key =
        kc.replace("user: {token: not-a-secret}", "user: {client-certificate: cert.pem, client-key: key-fifo}");
    std::fs::write(tmp.path().join("key-kubeconfig"), with_key).unwrap();
    std::fs::write(tmp.path().join("cert.pem"), "not used\n").unwrap();
    assert!(Command::new("mkfifo").arg(tmp.path().join("key-fifo")).status().unwrap().success());
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "key-kubeconfig", "plan", "valid.toml"]);
    // Relative to the kubeconfig's folder, as kubectl resolves it.
    let key = tmp.path().join("key-fifo");
    assert_fails_with(&out, &format!("cannot read client-key file {}: it is a FIFO (named pipe)", key.display()));
}

#[test]
fn registry_files_plugins_and_seed_yaml_are_read_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = fifo(tmp.path());
    let desired = format!(
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\nregistry = {{ address = \"r.example:5000\", tls = {{ ca_bundle = \"/dev/zero\" }} }}\n\
         [clusters.destination]\ncontext = \"lab-dst\"\nregistry = {{ address = \"d.example:5000\", auth = {{ docker_config = \"{}\" }} }}\n\
         [[migration]]\nname = \"m\"\nnamespaces = [\"shop\"]\n",
        fifo.display()
    );
    std::fs::write(tmp.path().join("d.toml"), desired).unwrap();
    std::fs::copy(repo_root().join("tests/fixtures/kubeconfig"), tmp.path().join("kubeconfig")).unwrap();
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "kubeconfig", "plan", "d.toml"]);
    assert_fails_with(&out, "d.toml:4:62: `ca_bundle`: cannot read CA bundle /dev/zero: it is a character device");
    assert!(out.stderr.contains("d.toml:7:67: `docker_config`: cannot read docker config"), "{}", out.stderr);
    assert!(out.stderr.contains("it is a FIFO (named pipe), not a regular file"), "{}", out.stderr);

    // `mtcd plugin test`: the component and the objects file.
    let out = mtcd_in(tmp.path(), &["plugin", "test", "/dev/zero", "/dev/zero"]);
    assert_fails_with(
        &out,
        "cannot read objects file /dev/zero: it is a character device, not a regular file (an objects file must be a regular file of at most 64 MiB)",
    );
    std::fs::write(tmp.path().join("objects.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n").unwrap();
    let out = mtcd_in(tmp.path(), &["plugin", "test", fifo.to_str().unwrap(), "objects.yaml"]);
    assert_fails_with(&out, "is a FIFO (named pipe)");

    // `mtcd-lab seed`: the file is read before anything else is done.
    let mut cmd = Command::new(bin("mtcd-lab"));
    cmd.args(["seed", "--dir"]).arg(tmp.path()).arg(&fifo);
    let out = run_within(cmd, Duration::from_secs(20));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot read seed file") && out.stderr.contains("FIFO"), "{}", out.stderr);
}

fn head(migration_extra: &str) -> String {
    format!(
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n\
         [[migration]]\nname = \"m\"\nnamespaces = [\"shop\"]\n{migration_extra}"
    )
}

fn plan_text(text: &str, extra_args: &[&str]) -> Out {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("d.toml"), text).unwrap();
    std::fs::copy(repo_root().join("tests/fixtures/kubeconfig"), tmp.path().join("kubeconfig")).unwrap();
    let args = [&["--kubeconfig", "kubeconfig"][..], extra_args, &["plan", "d.toml"]].concat();
    mtcd_in(tmp.path(), &args)
}

#[test]
fn ten_thousand_namespaces_validate_and_problems_stop_at_fifty_with_a_count() {
    // 10,000 namespaces, all valid: validation passes and mtcd goes on to the clusters (a
    // closed port here). Before the line index and the linear checks this took seconds.
    let names: Vec<String> = (0..10_000).map(|i| format!("\"ns-{i}\"")).collect();
    let map: Vec<String> = (0..10_000).map(|i| format!("\"ns-{i}\" = \"dst-{i}\"")).collect();
    let valid = format!(
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n\
         [[migration]]\nname = \"m\"\nnamespaces = [\n{}\n]\nnamespace_map = {{ {} }}\n",
        names.join(",\n"),
        map.join(", ")
    );
    let out = plan_text(&valid, &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("could not be reached"), "the file is valid, the cluster is not: {}", out.stderr);

    // 10,000 invalid names, one per line: the first 50 by position, then the count.
    let bad: Vec<String> = (0..10_000).map(|i| format!("\"NS_{i}\"")).collect();
    let invalid = format!(
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n\
         [[migration]]\nname = \"m\"\nnamespaces = [\n{}\n]\n",
        bad.join(",\n")
    );
    let out = plan_text(&invalid, &[]);
    assert_eq!(out.code, Some(1));
    let located: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("d.toml:")).collect();
    assert_eq!(located.len(), 50, "{}", out.stderr);
    assert!(located[0].starts_with("d.toml:9:1: \"NS_0\" is not a valid namespace name"), "{}", located[0]);
    assert!(located[49].starts_with("d.toml:58:1: \"NS_49\""), "{}", located[49]);
    assert!(out.stderr.contains("... and 9950 more problems (the first 50 are listed)"), "{}", out.stderr);
    assert!(out.stderr.contains("d.toml has 10000 problems; nothing was changed"), "{}", out.stderr);
    // JSON: the same 50 and the total.
    let out = plan_text(&invalid, &["--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(v["problems"].as_array().unwrap().len(), 50);
    assert_eq!(v["problem_count"], 10_000);
    assert!(out.stderr.is_empty(), "JSON only: {}", out.stderr);
}

#[test]
fn durations_accept_only_the_documented_forms() {
    for ok in ["90s", "10m", "1h30m", "1h 30m", "250ms", "2d"] {
        let out = plan_text(&format!("{}[sync]\ninterval = \"{ok}\"\n", head("")), &[]);
        assert!(out.stderr.contains("could not be reached"), "{ok:?} is valid: {}", out.stderr);
    }
    for (bad, why) in [
        ("10 minutes", "no space between a number and its unit"),
        ("1.5h", "whole numbers only (write 1h30m, not 1.5h)"),
        ("10", "10 has no unit (ms, s, m, h or d)"),
        ("30m1h", "units go from largest to smallest"),
        ("10mins", "unknown unit \"mins\""),
    ] {
        let out = plan_text(&format!("{}[sync]\ninterval = \"{bad}\"\n", head("")), &[]);
        assert_fails_with(&out, &format!("d.toml:10:12: `sync.interval`: cannot parse duration {bad:?}: {why}"));
        assert!(out.stderr.contains("hint: write durations as whole numbers with a unit"), "{}", out.stderr);
    }
}

#[test]
fn names_that_would_change_a_request_path_or_are_empty_are_rejected() {
    let out =
        plan_text(&head("pvc_name_map = { data = \"../secrets/x\" }\nstorage_class_map = { standard = \"\" }\n"), &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(
            "d.toml:9:25: `pvc_name_map`: \"../secrets/x\" is not a valid destination PVC name: '/' is not allowed"
        ),
        "pvc_name_map value located: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "d.toml:10:34: `storage_class_map`: \"\" is not a valid destination storage class name: it is empty"
        ),
        "empty storage class located: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("could not be reached"), "nothing is contacted for a broken file");
    let out = plan_text(
        &format!("{}[migration.dvm]\nsubdomain = \"apps/evil\"\ntransfer_image = \"Not An Image\"\n", head("")),
        &[],
    );
    assert!(out.stderr.contains("`dvm.subdomain` \"apps/evil\" is not a DNS subdomain"), "{}", out.stderr);
    assert!(
        out.stderr.contains("d.toml:11:18: `dvm.transfer_image` \"Not An Image\" is not an image reference"),
        "transfer_image located: {}",
        out.stderr
    );
}

#[test]
fn a_duplicate_key_is_named_and_deep_nesting_points_where_it_starts() {
    let out = plan_text(&head("namespaces = [\"other\"]\n"), &[]);
    assert_fails_with(&out, "d.toml:9:1: invalid TOML: duplicate key `namespaces`");

    let deep = format!("{}labels = {}\n", head(""), "[".repeat(500));
    let out = plan_text(&deep, &[]);
    assert_fails_with(&out, "d.toml:9:");
    assert!(out.stderr.contains("invalid TOML: nesting deeper than 80 levels starts here"), "{}", out.stderr);
    assert!(!out.stderr.contains("d.toml:1:1:"), "{}", out.stderr);
}

#[test]
fn text_from_outside_is_cut_to_a_readable_length_and_whole_at_vv() {
    // A 10 MB context name, in the kubeconfig and the desired file alike: the error about
    // reaching it keeps both ends of the message and says how much was cut.
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("lab-{}", "x".repeat(10_000_000));
    let kc = std::fs::read_to_string(repo_root().join("tests/fixtures/kubeconfig")).unwrap();
    std::fs::write(tmp.path().join("kubeconfig"), kc.replace("- name: lab-src\n", &format!("- name: {name}\n")))
        .unwrap();
    let desired = std::fs::read_to_string(repo_root().join("tests/fixtures/valid.toml")).unwrap();
    std::fs::write(tmp.path().join("d.toml"), desired.replace("\"lab-src\"", &format!("{name:?}"))).unwrap();
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "kubeconfig", "plan", "d.toml"]);
    assert_eq!(out.code, Some(1), "{}", &out.stderr[..out.stderr.len().min(2000)]);
    assert!(out.stderr.len() < 2000, "{} bytes of error", out.stderr.len());
    assert!(out.stderr.contains("bytes cut; -vv logs the whole text]"), "{}", out.stderr);
    assert!(
        out.stderr.contains("context \"lab-dst\": API server https://127.0.0.1:9/ could not be reached"),
        "{}",
        out.stderr
    );
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "kubeconfig", "-vv", "plan", "d.toml"]);
    assert!(out.stderr.contains(&name), "-vv logs the whole text");

    // JSON: one document on stdout, the same cut, nothing on stderr.
    let out = mtcd_in(tmp.path(), &["--kubeconfig", "kubeconfig", "--output", "json", "plan", "d.toml"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.is_empty(), "never both human text and JSON: {}", &out.stderr[..out.stderr.len().min(2000)]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let error = v["error"].as_str().unwrap();
    assert!(error.len() < 1000 && error.contains("bytes cut"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_says_which_objects_it_skips_and_why() {
    let lab = mtcd_tests::Lab::up();
    lab.seed_yaml("lab-src", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {a: b}\n").await.unwrap();
    let file = lab.desired(
        "desired.toml",
        "version = 1\n[clusters.source]\ncontext = \"lab-src\"\n[clusters.destination]\ncontext = \"lab-dst\"\n[[migration]]\nname = \"shop\"\nnamespaces = [\"shop\"]\nnamespace_map = { shop = \"shop-prod\" }\n",
    );
    let f = file.to_str().unwrap();
    // The default ServiceAccount and kube-root-ca.crt are the destination's own.
    let plan = lab.mtcd(&["plan", f]);
    assert_eq!(plan.code, 2, "{}\n{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains(", 2 skipped\n"), "{}", plan.stdout);
    assert!(plan.stdout.contains("(`mtcd plan -v` lists the skipped objects and why)"), "{}", plan.stdout);
    let plan = lab.mtcd(&["plan", "-v", f]);
    assert!(
        plan.stdout.contains(
            "  skipped (2):\n    created by the destination in every namespace (1):\n      ServiceAccount/shop/default\n"
        ),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("      ConfigMap/shop/kube-root-ca.crt\n"), "{}", plan.stdout);
    let plan = lab.mtcd(&["--output", "json", "plan", f]);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).expect("the plan as one JSON document");
    let skipped = v["migrations"][0]["resources"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().any(|s| s["kind"] == "ServiceAccount"
            && s["name"] == "default"
            && s["reason"] == "created by the destination in every namespace"),
        "{skipped:?}"
    );
    assert!(plan.stderr.is_empty(), "JSON only: {}", plan.stderr);
}

#[test]
fn the_release_profile_builds_an_installable_binary() {
    // Line tables made the release binary 207 MB: the profile keeps symbols, not DWARF.
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let release = manifest.split("[profile.release]").nth(1).expect("a release profile");
    let release = release.split("\n[").next().unwrap();
    assert!(release.contains("debug = false") && release.contains("strip = \"debuginfo\""), "{release}");
    // When a release build newer than the profile is at hand (docs/benchmarks.md measures
    // one), it is under 60 MB.
    let built = repo_root().join("target/release/mtcd");
    let profile_changed = std::fs::metadata(repo_root().join("Cargo.toml")).and_then(|m| m.modified()).unwrap();
    if let Ok(meta) = std::fs::metadata(&built)
        && meta.modified().is_ok_and(|t| t > profile_changed)
    {
        assert!(meta.len() < 60_000_000, "{} is {} bytes", built.display(), meta.len());
    }
}
