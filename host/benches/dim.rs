//! Direct Image Migration benchmark: mtcd against `skopeo copy --all --preserve-digests`
//! between the same two docker-registry processes, on the same image, runs interleaved.
//!
//! ```text
//! cargo build --release -p mtcd --example dim_copy && cargo bench -p mtcd --bench dim
//! DIM_BENCH_RUNS=5 DIM_BENCH_LAYERS=8 DIM_BENCH_LAYER_MB=50 DIM_BENCH_OUT=results.md
//! ```
//! Cases, per tool and run: `cold` (destination storage wiped, registry restarted, skopeo's
//! blob-info cache empty), `warm` (the same copy again: every blob and the tag present),
//! `new-tag` (every blob present, the tag is new: HEADs plus a manifest push).
//! Each copy runs as its own process under `/usr/bin/time` (peak RSS) inside a shell that
//! reads `/proc/$$/io` after reaping it: `wchar` counts every byte the client wrote to
//! sockets and files, the tool-independent "bytes sent".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const REPO: &str = "bench/app";

struct Registry {
    child: Option<Child>,
    addr: String,
    root: PathBuf,
    config: PathBuf,
}

impl Registry {
    fn new(dir: &Path, name: &str) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let root = dir.join(name);
        let config = dir.join(format!("{name}.yml"));
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                root.display()
            ),
        )
        .unwrap();
        let mut r = Registry { child: None, addr, root, config };
        r.start();
        r
    }

    fn start(&mut self) {
        self.child = Some(
            Command::new("docker-registry")
                .arg("serve")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry"),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "registry {} did not start", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Empty storage, fresh process: the cold state.
    fn reset(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
        self.start();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

async fn push_blob(http: &reqwest::Client, addr: &str, data: Vec<u8>) -> String {
    let digest = sha(&data);
    let resp = http.post(format!("http://{addr}/v2/{REPO}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let loc = resp.headers()["location"].to_str().unwrap().to_string();
    let mut url = url::Url::parse(&format!("http://{addr}")).unwrap().join(&loc).unwrap();
    url.query_pairs_mut().append_pair("digest", &digest);
    let resp = http.put(url).body(data).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    digest
}

/// Pushes an OCI image of `layers` random, uncompressed layers; returns its digest.
async fn push_image(addr: &str, layers: usize, layer_bytes: usize) -> (String, u64) {
    let http = reqwest::Client::new();
    let mut descs = vec![];
    let mut diff_ids = vec![];
    let mut total = 0u64;
    for _ in 0..layers {
        let mut data = vec![0u8; layer_bytes];
        rand::rng().fill_bytes(&mut data);
        let d = push_blob(&http, addr, data).await;
        diff_ids.push(d.clone());
        descs.push(serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": layer_bytes}));
        total += layer_bytes as u64;
    }
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    total += config.len() as u64;
    let clen = config.len();
    let cd = push_blob(&http, addr, config).await;
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": clen}, "layers": descs}))
    .unwrap();
    let resp = http
        .put(format!("http://{addr}/v2/{REPO}/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    (sha(&manifest), total)
}

async fn dst_digest(addr: &str, tag: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .head(format!("http://{addr}/v2/{REPO}/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .ok()?;
    resp.headers().get("docker-content-digest")?.to_str().ok().map(str::to_string)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    wchar: u64,
    /// User + system CPU seconds of the client process.
    client_cpu: f64,
    /// CPU seconds both registries spent meanwhile.
    registry_cpu: f64,
    /// CPU seconds the whole machine spent meanwhile (other jobs included): contention check.
    machine_cpu: f64,
}

/// utime + stime of a process, in seconds.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Busy CPU seconds of the whole machine since boot.
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat.lines().next().unwrap().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    (f[0] + f[1] + f[2] + f[5] + f[6] + f.get(7).copied().unwrap_or(0)) as f64 / 100.0
}

/// Runs `cmd` as a measured process: wall time around it, peak RSS from `/usr/bin/time`,
/// bytes written from the reaping shell's `/proc/$$/io`.
fn measure(cmd: &[String], tmp: &Path, registries: [u32; 2]) -> Sample {
    let time_out = tmp.join("time.out");
    let io_out = tmp.join("io.out");
    let reg_before: f64 = registries.iter().map(|p| proc_cpu(*p)).sum();
    let machine_before = machine_cpu();
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(&time_out)
        .arg("bash")
        .arg("-c")
        .arg(r#"io="$1"; shift; "$@" >/dev/null 2>"$io.err"; rc=$?; cat /proc/$$/io > "$io"; exit $rc"#)
        .arg("bash")
        .arg(&io_out)
        .args(cmd)
        .status()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let registry_cpu = registries.iter().map(|p| proc_cpu(*p)).sum::<f64>() - reg_before;
    let machine_cpu = machine_cpu() - machine_before;
    if !status.success() {
        let err = std::fs::read_to_string(io_out.with_extension("out.err")).unwrap_or_default();
        panic!("{cmd:?} failed: {err}");
    }
    let time = std::fs::read_to_string(&time_out).unwrap();
    let f: Vec<f64> = time.lines().last().unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    let (rss_kib, client_cpu) = (f[0] as u64, f[1] + f[2]);
    let io = std::fs::read_to_string(&io_out).unwrap();
    let wchar = io.lines().find_map(|l| l.strip_prefix("wchar:")).unwrap().trim().parse().unwrap();
    Sample { secs, rss_kib, wchar, client_cpu, registry_cpu, machine_cpu }
}

fn stats(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    (median, s[0])
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: do not run a
    // 400 MB, multi-process benchmark as part of a test run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("dim benchmark: run it with `cargo bench -p mtcd --bench dim`");
        return;
    }
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let runs = env("DIM_BENCH_RUNS", 5);
    let layers = env("DIM_BENCH_LAYERS", 8);
    let layer_mb = env("DIM_BENCH_LAYER_MB", 50);
    let blob_conc = env("DIM_BENCH_BLOB_CONCURRENCY", 6);
    mtcd::tls::init();

    // The measured mtcd process: the dim_copy example, built beforehand in release. (Not
    // built from here: cargo's environment inside a bench changes build-script fingerprints,
    // so a nested `cargo build` would rebuild ring and everything above it.)
    let exe = std::env::current_exe().unwrap();
    let dim_copy = exe.parent().unwrap().parent().unwrap().join("examples/dim_copy");
    assert!(
        dim_copy.exists(),
        "{} missing: run `cargo build --release -p mtcd --example dim_copy` first",
        dim_copy.display()
    );

    // skopeo writes a blob-info cache under /var/lib/containers/cache (root); it runs in its
    // own mount namespace with a per-cold-run directory bound there.
    std::fs::create_dir_all("/var/lib/containers/cache").unwrap();

    let dir = tempfile::Builder::new().prefix("mtcd-dim-bench").tempdir().unwrap();
    let src = Registry::new(dir.path(), "src");
    let mut dst = Registry::new(dir.path(), "dst");
    let rt = tokio::runtime::Runtime::new().unwrap();
    eprintln!("pushing {layers} x {layer_mb} MB to the source registry…");
    let (digest, total) = rt.block_on(push_image(&src.addr, layers, layer_mb * 1_000_000));
    eprintln!("image {digest}, {total} bytes; {runs} runs");

    let dst_addr = dst.addr.clone();
    let mtcd_cmd = |tag: &str| -> Vec<String> {
        // Optional wrapper for profiling the mtcd side only (e.g. `perf record -g -o FILE`).
        let mut v: Vec<String> = std::env::var("DIM_BENCH_MTCD_PREFIX")
            .map(|p| p.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        v.extend([dim_copy.display().to_string(), src.addr.clone(), dst_addr.clone()]);
        v.push(if tag == "v1" { format!("{REPO}:v1") } else { format!("{REPO}:v1,{tag}") });
        v.extend(["--blob-concurrency".into(), blob_conc.to_string()]);
        v
    };
    let skopeo_cmd = |tag: &str, cache: &Path| -> Vec<String> {
        vec![
            "unshare".into(),
            "-m".into(),
            "sh".into(),
            "-c".into(),
            r#"mount --bind "$0" /var/lib/containers/cache && exec "$@""#.into(),
            cache.display().to_string(),
            "skopeo".into(),
            "--insecure-policy".into(),
            "copy".into(),
            "--all".into(),
            "--preserve-digests".into(),
            "--src-tls-verify=false".into(),
            "--dest-tls-verify=false".into(),
            format!("docker://{}/{REPO}:v1", src.addr),
            format!("docker://{dst_addr}/{REPO}:{tag}"),
        ]
    };

    let cases = ["cold", "warm", "new-tag"];
    let tools = ["mtcd", "skopeo"];
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![vec![]; cases.len()]; tools.len()];
    for run in 0..runs {
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            dst.reset();
            let cache = dir.path().join(format!("skopeo-cache-{run}"));
            let _ = std::fs::remove_dir_all(&cache);
            std::fs::create_dir_all(&cache).unwrap();
            for (c, case) in cases.iter().enumerate() {
                let tag = if *case == "new-tag" { format!("r{run}") } else { "v1".to_string() };
                let cmd = if t == 0 { mtcd_cmd(&tag) } else { skopeo_cmd(&tag, &cache) };
                let pids = [src.pid(), dst.pid()];
                let s = measure(&cmd, dir.path(), pids);
                let got = rt.block_on(dst_digest(&dst.addr, &tag));
                assert_eq!(got.as_deref(), Some(digest.as_str()), "{} {case}: digest differs", tools[t]);
                eprintln!(
                    "run {run} {:6} {:7} {:7.3} s  {:6.1} MiB  wchar {:>11}  cpu client {:.2} registries {:.2} machine {:.2}",
                    tools[t],
                    case,
                    s.secs,
                    s.rss_kib as f64 / 1024.0,
                    s.wchar,
                    s.client_cpu,
                    s.registry_cpu,
                    s.machine_cpu
                );
                samples[t][c].push(s);
            }
        }
    }

    let mut out = String::new();
    out += &format!(
        "Image: 1 OCI manifest, {layers} uncompressed layers of {layer_mb} MB random data + config ({:.1} MB). \
         {runs} runs per cell, tools interleaved (order alternates per run). mtcd blob concurrency {blob_conc}.\n\n",
        total as f64 / 1e6
    );
    out += "| Case | Tool | Median s | Min s | mtcd/skopeo (median) | Peak RSS MiB (max) | Bytes written (median) | Client CPU-s | Registries CPU-s | Machine CPU-s |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (c, case) in cases.iter().enumerate() {
        let med = |t: usize| stats(&samples[t][c].iter().map(|s| s.secs).collect::<Vec<_>>());
        let ratio = med(0).0 / med(1).0;
        for (t, tool) in tools.iter().enumerate() {
            let (m, min) = med(t);
            let rss = samples[t][c].iter().map(|s| s.rss_kib).max().unwrap() as f64 / 1024.0;
            let w = stats(&samples[t][c].iter().map(|s| s.wchar as f64).collect::<Vec<_>>()).0;
            let cpu = |f: fn(&Sample) -> f64| stats(&samples[t][c].iter().map(f).collect::<Vec<_>>()).0;
            out += &format!(
                "| {case} | {tool} | {m:.3} | {min:.3} | {} | {rss:.1} | {} | {:.2} | {:.2} | {:.2} |\n",
                if t == 0 { format!("**{ratio:.2}×**") } else { String::new() },
                human(w as u64),
                cpu(|s| s.client_cpu),
                cpu(|s| s.registry_cpu),
                cpu(|s| s.machine_cpu)
            );
        }
    }
    println!("{out}");
    if let Ok(path) = std::env::var("DIM_BENCH_OUT") {
        std::fs::write(path, &out).unwrap();
    }
}

fn human(b: u64) -> String {
    if b >= 1_000_000 { format!("{:.1} MB", b as f64 / 1e6) } else { format!("{:.1} kB", b as f64 / 1e3) }
}
