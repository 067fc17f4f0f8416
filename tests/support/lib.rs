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

/// The output of a finished command.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Sends `signal` (`"INT"`, `"TERM"`) to a [`Lab::spawn_mtcd`] child and waits for its end.
pub fn stop_with(child: std::process::Child, signal: &str) -> Run {
    Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().expect("run kill");
    let out = child.wait_with_output().expect("wait for mtcd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running lab in a temporary directory; `Drop` runs `mtcd-lab down` so no process,
/// network namespace or mount outlives the test.
pub struct Lab {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// DIR/lab.json: `clusters.{src,dst}.{context,api,registry,router,service_cidr,storage_root,profile}`.
    pub info: serde_json::Value,
    _tmp: tempfile::TempDir,
}

impl Lab {
    /// Both clusters with the default profiles (openshift → openshift).
    pub fn up() -> Lab {
        Lab::up_with(("openshift", "openshift"))
    }

    /// Both clusters with the given (source, destination) profiles: "openshift" or "kubernetes".
    pub fn up_with(profiles: (&str, &str)) -> Lab {
        let tmp = tempfile::Builder::new().prefix("mtcd-lab-").tempdir().expect("temp dir for the lab");
        let dir = tmp.path().to_path_buf();
        let out = Command::new(bin("mtcd-lab"))
            .args(["up", "--detach", "--dir"])
            .arg(&dir)
            .args(["--source-profile", profiles.0, "--destination-profile", profiles.1])
            .output()
            .expect("run mtcd-lab up");
        assert!(
            out.status.success(),
            "mtcd-lab up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("lab.json")).expect("lab.json"))
                .expect("lab.json is JSON");
        Lab { kubeconfig: dir.join("kubeconfig"), dir, info, _tmp: tmp }
    }

    /// A kube client for `lab-src` or `lab-dst`.
    pub async fn client(&self, ctx: &str) -> kube::Client {
        mtcd_lab::lab::client_for(&self.kubeconfig, ctx).await.expect("lab client")
    }

    /// The kube-rs configuration of a context, to adjust before building a client (e.g.
    /// `default_retry = false`: kube-rs retries 429/503/504 up to 15 times with backoff,
    /// about five minutes, before a 503 reaches the caller).
    pub async fn client_config(&self, ctx: &str) -> kube::Config {
        mtcd_lab::pki::init_crypto();
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("lab kubeconfig");
        let opts = kube::config::KubeConfigOptions { context: Some(ctx.into()), ..Default::default() };
        kube::Config::from_custom_kubeconfig(kc, &opts).await.expect("lab context")
    }

    /// A kube client for the server of context `ctx` that presents `token` instead of the
    /// context's own credentials (a service-account token, a wrong token).
    pub async fn client_with_token(&self, ctx: &str, token: &str) -> kube::Client {
        mtcd_lab::pki::init_crypto();
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("lab kubeconfig");
        let opts = kube::config::KubeConfigOptions { context: Some(ctx.into()), ..Default::default() };
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await.expect("lab context");
        cfg.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(cfg).expect("lab client")
    }

    /// Seeds multi-document YAML (plus lab.mtcd.io/v1 VolumeData and Image) into a context.
    pub async fn seed_yaml(&self, ctx: &str, yaml: &str) -> anyhow::Result<mtcd_lab::seed::SeedReport> {
        Ok(mtcd_lab::seed::seed(&self.dir, ctx, yaml).await?)
    }

    /// Runs the mtcd binary with `--kubeconfig` pointing at this lab.
    pub fn mtcd(&self, args: &[&str]) -> Run {
        let out = Command::new(bin("mtcd"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run mtcd");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the mtcd binary against this lab without waiting, its output piped (for a
    /// test that signals it mid-run: [`stop_with`]).
    pub fn spawn_mtcd(&self, args: &[&str]) -> std::process::Child {
        Command::new(bin("mtcd"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start mtcd")
    }

    /// Makes every create, update and patch of `plural` in `ctx` take `ms` longer, as a slow
    /// admission webhook does (mtcd_lab::api::ADMISSION_DELAY).
    pub async fn slow_writes(&self, ctx: &str, plural: &str, ms: u64) {
        let (ns, name) = mtcd_lab::api::ADMISSION_DELAY;
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{{plural}: \"{ms}\"}}\n"
        );
        self.seed_yaml(ctx, &cm).await.expect("seed the admission delay");
    }

    /// Keeps pods using `image` in `ctx` in ContainerCreating for `ms`, as a slow image pull
    /// does (mtcd_lab::node::PULL_DELAY).
    pub async fn slow_pulls(&self, ctx: &str, image: &str, ms: u64) {
        let (ns, name) = mtcd_lab::node::PULL_DELAY;
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{pulls: \"{image} {ms}\"}}\n"
        );
        self.seed_yaml(ctx, &cm).await.expect("seed the image pull delay");
    }

    /// Writes a desired-state file into the lab directory and returns its path.
    pub fn desired(&self, name: &str, toml_text: &str) -> PathBuf {
        let file = if name.ends_with(".toml") { name.to_string() } else { format!("{name}.toml") };
        let path = self.dir.join(file);
        std::fs::write(&path, toml_text).expect("write desired-state file");
        path
    }

    /// The supervisor's pid (DIR/lab.pid).
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("lab.pid")).ok()?.trim().parse().ok()
    }

    /// Runs `mtcd-lab down` now (also done on drop; running it twice is fine).
    pub fn down(&self) -> Run {
        let out =
            Command::new(bin("mtcd-lab")).args(["down", "--dir"]).arg(&self.dir).output().expect("run mtcd-lab down");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The supervisor's log is the first thing to read when a lab test fails.
            let log = std::fs::read_to_string(self.dir.join("lab.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {}/lab.log (last lines) ---", self.dir.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let run = self.down();
        if run.code != 0 {
            eprintln!("mtcd-lab down --dir {} failed: {}", self.dir.display(), run.stderr);
        }
    }
}
pub mod plugins;

/// Whether a recent `kubectl` (1.26 or newer) is installed: tests that check what kubectl
/// itself does against the lab (protobuf, exec over WebSocket, strict field validation) skip
/// without one. An older client — setup.sh installs Debian's 1.20 where none is present, for
/// the demo — predates those features.
pub fn has_kubectl() -> bool {
    let Ok(out) = Command::new("kubectl").args(["version", "--client", "-o", "json"]).output() else {
        return false;
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let minor = v["clientVersion"]["minor"].as_str().unwrap_or("");
    let minor: u32 = minor.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap_or(0);
    out.status.success() && v["clientVersion"]["major"] == "1" && minor >= 26
}

impl Lab {
    /// Runs the installed kubectl against this lab (`--kubeconfig`, `--context ctx`, a
    /// discovery cache of its own), with `stdin` as standard input when given.
    pub fn kubectl(&self, ctx: &str, args: &[&str], stdin: Option<&str>) -> Run {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(["--context", ctx])
            .args(args)
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child.stdin.take().expect("kubectl stdin").write_all(input.as_bytes()).expect("write kubectl stdin");
        }
        let out = child.wait_with_output().expect("wait for kubectl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
