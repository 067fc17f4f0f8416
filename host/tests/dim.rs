//! Direct Image Migration against two real registries (Debian's docker-registry, the one
//! the lab runs), started per test on free loopback ports with temporary storage.
//!
//! Fixtures are pushed with plain HTTP calls written here, not with the engine under test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use mtcd::actions::dim::{self, DimError, DimEvent, ImageCopy, ImageRef, RegistryClient};
use mtcd::spec::{DimOptions, Registry, RegistryAuth, RegistryTls};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A running docker-registry; killed and its storage removed on drop.
struct TestRegistry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestRegistry {
    fn start(htpasswd: Option<(&str, &str)>) -> TestRegistry {
        Self::launch(|dir| match htpasswd {
            None => String::new(),
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("htpasswd (apache2-utils) is needed for the auth test: apt-get install -y apache2-utils");
                assert!(out.status.success());
                let path = dir.join("htpasswd");
                std::fs::write(&path, out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", path.display())
            }
        })
    }

    /// Starts a registry whose config is the base plus what `extra` returns (YAML written
    /// into the registry's own temp dir, passed as argument).
    fn launch(extra: impl FnOnce(&std::path::Path) -> String) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        config += &extra(dir.path());
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry must be installed (apt-get install -y docker-registry)");
        let reg = TestRegistry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "registry on {} did not start", reg.addr);
            std::thread::sleep(Duration::from_millis(25));
        }
        reg
    }

    fn spec(&self, auth: RegistryAuth) -> Registry {
        Registry { address: self.addr.clone(), internal_address: None, auth, tls: RegistryTls::Insecure }
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(&self.spec(RegistryAuth::Anonymous), None)
            .unwrap()
            .with_retries(1, Duration::from_millis(50))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Pushes fixtures with raw distribution calls (basic auth optional).
struct Pusher {
    http: reqwest::Client,
    addr: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    fn new(reg: &TestRegistry) -> Pusher {
        mtcd::tls::init();
        Pusher { http: reqwest::Client::new(), addr: reg.addr.clone(), auth: None }
    }

    fn req(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha(data);
        let resp =
            self.req(self.http.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr))).send().await.unwrap();
        assert_eq!(resp.status(), 202, "open upload");
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let mut url = url::Url::parse(&format!("http://{}", self.addr)).unwrap().join(&loc).unwrap();
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self.req(self.http.put(url)).body(data.to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 201, "put blob");
        digest
    }

    async fn manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let resp = self
            .req(self.http.put(format!("http://{}/v2/{repo}/manifests/{reference}", self.addr)))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 201, "put manifest: {}", resp.text().await.unwrap());
        sha(body)
    }

    async fn get(&self, path: &str, accept: &str) -> (u16, Vec<u8>) {
        let resp = self
            .req(self.http.get(format!("http://{}/v2/{path}", self.addr)))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
    }

    /// Pushes a single-platform image; returns (manifest bytes, digest, blob sizes incl. config).
    async fn image(&self, repo: &str, tag: &str, layers: &[Vec<u8>], oci: bool, arch: &str) -> Image {
        let config = serde_json::to_vec(&json!({"architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()}}))
        .unwrap();
        let config_digest = self.blob(repo, &config).await;
        let mut descs = vec![];
        for l in layers {
            let d = self.blob(repo, l).await;
            descs.push(json!({"mediaType": if oci { OCI_LAYER } else { DOCKER_LAYER }, "digest": d, "size": l.len()}));
        }
        let (mt, cmt) = if oci { (OCI_MANIFEST, OCI_CONFIG) } else { (DOCKER_MANIFEST, DOCKER_CONFIG) };
        let manifest = serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cmt, "digest": config_digest, "size": config.len()},
            "layers": descs}))
        .unwrap();
        let digest = self.manifest(repo, tag, mt, &manifest).await;
        let mut sizes = vec![config.len() as u64];
        sizes.extend(layers.iter().map(|l| l.len() as u64));
        Image { manifest, digest, config_digest, sizes }
    }
}

struct Image {
    manifest: Vec<u8>,
    digest: String,
    config_digest: String,
    sizes: Vec<u64>,
}

impl Image {
    fn bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }
}

fn opts(concurrency: usize) -> DimOptions {
    DimOptions { concurrency, blob_concurrency: 4, ..Default::default() }
}

fn copies(src: &TestRegistry, dst: &TestRegistry, refs: &[&str]) -> Vec<ImageCopy> {
    let images: Vec<ImageRef> = refs.iter().map(|r| ImageRef::parse(&format!("{}/{r}", src.addr)).unwrap()).collect();
    let map: IndexMap<String, String> = [("shop".to_string(), "shop-prod".to_string())].into();
    dim::plan_copies(&images, &src.addr, &dst.addr, &map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_multi_layer_image_byte_for_byte() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let layers: Vec<Vec<u8>> = (0..5).map(|i| random(1_000_000 + i * 300_000)).collect();
    let img = push.image("shop/web", "v1", &layers, false, "amd64").await;

    let events = Mutex::new(vec![]);
    let c = copies(&src, &dst, &["shop/web:v1"]);
    let report = dim::copy_all(&src.client(), &dst.client(), &c, &opts(2), |e| events.lock().unwrap().push(e)).await;

    let stats = report.images[0].outcome.as_ref().expect("copy succeeds");
    assert_eq!(stats.digest, img.digest);
    assert_eq!(stats.blobs_sent, 6, "config + 5 layers");
    assert_eq!(stats.bytes_sent, img.bytes());
    assert_eq!((stats.blobs_skipped, stats.blobs_mounted), (0, 0));

    let check = Pusher::new(&dst);
    let (status, body) = check.get("shop-prod/web/manifests/v1", DOCKER_MANIFEST).await;
    assert_eq!(status, 200);
    assert_eq!(body, img.manifest, "manifest is byte-identical under the mapped namespace");
    let (status, body) = check.get(&format!("shop-prod/web/manifests/{}", img.digest), DOCKER_MANIFEST).await;
    assert_eq!((status, body), (200, img.manifest.clone()), "pushed by digest too");
    for (i, l) in layers.iter().enumerate() {
        let (status, body) = check.get(&format!("shop-prod/web/blobs/{}", sha(l)), "*/*").await;
        assert_eq!(status, 200);
        assert!(body == *l, "layer {i} differs");
    }
    let (status, _) = check.get(&format!("shop-prod/web/blobs/{}", img.config_digest), "*/*").await;
    assert_eq!(status, 200);

    let events = events.into_inner().unwrap();
    assert!(matches!(&events[0], DimEvent::Started { blobs_total: 6, bytes_total, .. } if *bytes_total == img.bytes()));
    let last_progress = events.iter().rev().find_map(|e| match e {
        DimEvent::Progress { blobs_done, bytes_done, bytes_sent, .. } => Some((*blobs_done, *bytes_done, *bytes_sent)),
        _ => None,
    });
    assert_eq!(last_progress, Some((6, img.bytes(), img.bytes())), "final progress is complete");
    assert!(matches!(events.last(), Some(DimEvent::Finished { outcome: Ok(_), .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_multi_arch_index_with_all_platforms() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let base = random(800_000);
    let amd = push.image("shop/multi", "amd64-only", &[base.clone(), random(500_000)], true, "amd64").await;
    let arm = push.image("shop/multi", "arm64-only", &[base.clone(), random(600_000)], true, "arm64").await;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}}
    ]}))
    .unwrap();
    let index_digest = push.manifest("shop/multi", "v1", OCI_INDEX, &index).await;

    let c = copies(&src, &dst, &["shop/multi:v1"]);
    let report = dim::copy_all(&src.client(), &dst.client(), &c, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy succeeds");
    assert_eq!(stats.digest, index_digest);
    assert_eq!(stats.blobs_sent, 5, "2 configs + shared base once + 2 platform layers");
    assert_eq!(stats.bytes_sent, amd.bytes() + arm.bytes() - base.len() as u64);
    assert_eq!(stats.manifests_pushed, 3);

    let check = Pusher::new(&dst);
    let (status, body) = check.get("shop-prod/multi/manifests/v1", OCI_INDEX).await;
    assert_eq!((status, body), (200, index), "index digest preserved");
    for m in [&amd, &arm] {
        let (status, body) = check.get(&format!("shop-prod/multi/manifests/{}", m.digest), OCI_MANIFEST).await;
        assert_eq!((status, body), (200, m.manifest.clone()), "every platform copied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_layers_are_skipped_or_mounted_not_sent() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let (a, b, c) = (random(700_000), random(900_000), random(400_000));
    let base = push.image("shop/base", "1", &[a.clone(), b.clone()], false, "amd64").await;
    let app = push.image("shop/app", "1", &[a.clone(), b.clone(), c.clone()], false, "amd64").await;
    // The destination already runs an older app sharing layer `a`.
    let old = Pusher::new(&dst).image("shop-prod/app", "0", std::slice::from_ref(&a), false, "amd64").await;
    assert_ne!(old.digest, app.digest);

    let cs = copies(&src, &dst, &["shop/base:1", "shop/app:1"]);
    let report = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(1), |_| {}).await;
    let base_stats = report.images[0].outcome.as_ref().expect("base copies");
    assert_eq!(base_stats.bytes_sent, base.bytes(), "base: nothing in shop-prod/base yet");
    let app_stats = report.images[1].outcome.as_ref().expect("app copies");
    // `a` and `b` were put into shop-prod/base earlier in the run: mounted from there
    // without an existence check (for `a`, already in shop-prod/app, the mount is a no-op).
    assert_eq!((app_stats.blobs_skipped, app_stats.blobs_mounted), (0, 2));
    assert_eq!(app_stats.blobs_sent, 2, "config and `c` are sent");
    assert_eq!(app_stats.bytes_sent, app.sizes[0] + c.len() as u64);
    assert_eq!(report.bytes_sent(), base.bytes() + app.sizes[0] + c.len() as u64);

    let check = Pusher::new(&dst);
    let (status, body) = check.get(&format!("shop-prod/app/blobs/{}", sha(&b)), "*/*").await;
    assert_eq!(status, 200);
    assert!(body == b, "mounted blob readable in the new repository");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_sends_nothing() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(600_000), random(600_000)], false, "amd64").await;
    // Same content under a second tag: a new tag on the destination, still no blob bytes.
    push.manifest("shop/web", "v1-alias", DOCKER_MANIFEST, &img.manifest).await;
    let (srcc, dstc) = (src.client(), dst.client());

    let first = dim::copy_all(&srcc, &dstc, &copies(&src, &dst, &["shop/web:v1"]), &opts(2), |_| {}).await;
    assert_eq!(first.bytes_sent(), img.bytes());

    let second = dim::copy_all(&srcc, &dstc, &copies(&src, &dst, &["shop/web:v1"]), &opts(2), |_| {}).await;
    let stats = second.images[0].outcome.as_ref().unwrap();
    assert_eq!(stats.bytes_sent, 0);
    assert!(stats.up_to_date, "destination tag already at the digest");

    let alias = dim::copy_all(&srcc, &dstc, &copies(&src, &dst, &["shop/web:v1-alias"]), &opts(2), |_| {}).await;
    let stats = alias.images[0].outcome.as_ref().unwrap();
    assert_eq!((stats.bytes_sent, stats.blobs_skipped), (0, 3), "all blobs HEAD-skipped");
    let (status, body) = Pusher::new(&dst).get("shop-prod/web/manifests/v1-alias", DOCKER_MANIFEST).await;
    assert_eq!((status, body), (200, img.manifest));

    // plan's view agrees: everything present.
    let ins = dim::inspect(&srcc, &dstc, &copies(&src, &dst, &["shop/web:v1"]), &opts(2)).await;
    let ins = ins[0].1.as_ref().unwrap();
    assert!(ins.present);
    assert_eq!(ins.bytes_to_copy, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_sizes_before_copy() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let shared = random(300_000);
    let img = push.image("shop/web", "v1", &[shared.clone(), random(500_000)], false, "amd64").await;
    Pusher::new(&dst).image("shop-prod/web", "old", std::slice::from_ref(&shared), false, "amd64").await;
    let ins = dim::inspect(&src.client(), &dst.client(), &copies(&src, &dst, &["shop/web:v1"]), &opts(1)).await;
    let ins = ins[0].1.as_ref().unwrap();
    assert!(!ins.present);
    assert_eq!((ins.blobs_total, ins.bytes_total), (3, img.bytes()));
    assert_eq!((ins.blobs_missing, ins.bytes_to_copy), (2, img.bytes() - shared.len() as u64));
    let (status, _) = Pusher::new(&dst).get("shop-prod/web/manifests/v1", DOCKER_MANIFEST).await;
    assert_eq!(status, 404, "inspect writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_registry_needs_credentials_and_names_the_image_when_denied() {
    let src = TestRegistry::start(None);
    let dst = TestRegistry::start(Some(("alice", "s3cret")));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(400_000)], false, "amd64").await;
    let cs = copies(&src, &dst, &["shop/web:v1"]);

    let report = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(1), |_| {}).await;
    match &report.images[0].outcome {
        Err(e @ DimError::Unauthorized { registry, repository, status, .. }) => {
            assert_eq!((registry.as_str(), repository.as_str(), *status), (dst.addr.as_str(), "shop-prod/web", 401));
            let msg = e.to_string();
            assert!(msg.contains(&dst.addr) && msg.contains("shop-prod/web") && msg.contains("v1"), "{msg}");
        }
        other => panic!("expected 401, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, json!({"auths": {dst.addr.clone(): {"username": "alice", "password": "s3cret"}}}).to_string())
        .unwrap();
    let authed = RegistryClient::new(&dst.spec(RegistryAuth::DockerConfig(cfg.clone())), None).unwrap();
    let report = dim::copy_all(&src.client(), &authed, &cs, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy with credentials");
    assert_eq!(stats.bytes_sent, img.bytes());
    assert!(!format!("{authed:?}").contains("s3cret"), "credentials never printed");

    // Wrong password: still a clear 401, not a hang or a retry storm.
    std::fs::write(&cfg, json!({"auths": {dst.addr.clone(): {"username": "alice", "password": "nope"}}}).to_string())
        .unwrap();
    let wrong = RegistryClient::new(&dst.spec(RegistryAuth::DockerConfig(cfg)), None).unwrap();
    let cs2 = copies(&src, &dst, &["shop/web:v1"]);
    let report = dim::copy_all(&src.client(), &wrong, &cs2, &opts(1), |_| {}).await;
    assert!(
        matches!(report.images[0].outcome, Err(DimError::Unauthorized { status: 401, .. })),
        "{:?}",
        report.images[0].outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_source_blob_is_detected_and_not_committed() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let bad_layer = random(2_000_000);
    push.image("shop/web", "v1", &[random(300_000), bad_layer.clone()], false, "amd64").await;
    let good = push.image("shop/other", "v1", &[random(300_000)], false, "amd64").await;
    // Flip bytes in the middle of the stored layer: same size, different content.
    let path = src.blob_path(&sha(&bad_layer));
    let mut data = std::fs::read(&path).unwrap();
    for b in &mut data[1_000_000..1_000_016] {
        *b ^= 0xff;
    }
    std::fs::write(&path, data).unwrap();

    let cs = copies(&src, &dst, &["shop/web:v1", "shop/missing:v9", "shop/other:v1"]);
    let report = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(2), |_| {}).await;
    match &report.images[0].outcome {
        Err(e @ DimError::DigestMismatch { registry, repository, digest, .. }) => {
            assert_eq!((registry.as_str(), repository.as_str()), (src.addr.as_str(), "shop/web"));
            assert_eq!(digest, &sha(&bad_layer));
            assert!(e.to_string().contains(&sha(&bad_layer)), "{e}");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    match &report.images[1].outcome {
        Err(e @ DimError::ManifestNotFound { registry, repository, reference }) => {
            assert_eq!(
                (registry.as_str(), repository.as_str(), reference.as_str()),
                (src.addr.as_str(), "shop/missing", "v9")
            );
            assert!(e.to_string().contains("shop/missing"));
        }
        other => panic!("expected manifest not found, got {other:?}"),
    }
    assert_eq!(report.images[2].outcome.as_ref().expect("other images still copy").bytes_sent, good.bytes());

    let check = Pusher::new(&dst);
    let (status, _) = check.get(&format!("shop-prod/web/blobs/{}", sha(&bad_layer)), "*/*").await;
    assert_eq!(status, 404, "the corrupt blob was not committed");
    let (status, _) = check.get("shop-prod/web/manifests/v1", DOCKER_MANIFEST).await;
    assert_eq!(status, 404, "no manifest for an image with a corrupt blob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_a_per_image_transport_error() {
    let dst = TestRegistry::start(None);
    let gone = free_port();
    let spec = Registry {
        address: format!("127.0.0.1:{gone}"),
        internal_address: None,
        auth: RegistryAuth::Anonymous,
        tls: RegistryTls::Insecure,
    };
    let src = RegistryClient::new(&spec, None).unwrap().with_retries(2, Duration::from_millis(10));
    let cs = vec![ImageCopy {
        source: ImageRef::parse(&format!("127.0.0.1:{gone}/shop/web:v1")).unwrap(),
        destination: ImageRef::parse(&format!("{}/shop/web:v1", dst.addr)).unwrap(),
    }];
    let report = dim::copy_all(&src, &dst.client(), &cs, &opts(1), |_| {}).await;
    let err = report.images[0].outcome.as_ref().unwrap_err();
    assert!(matches!(err, DimError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{gone}/shop/web:v1")), "{err}");
}

/// A registry token service (the bearer flow): checks basic credentials, then signs an
/// ES256 JWT granting what was asked, with the signing certificate in `x5c` so the
/// registry trusts it through its `rootcertbundle`.
struct TokenServer {
    realm: String,
    cert_pem: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn der_signature_to_fixed(der: &[u8]) -> Vec<u8> {
    // SEQUENCE { INTEGER r, INTEGER s } → r || s, each 32 bytes big-endian.
    let mut out = vec![];
    let mut i = 2;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

async fn start_token_server(service: &str, user: &str, password: &str) -> TokenServer {
    use base64::Engine as _;
    use rcgen::SigningKey as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mtcd-test-token-issuer".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
    let (service, counter) = (service.to_string(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = vec![];
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf).to_string();
            let target = req.split_whitespace().nth(1).unwrap_or_default().to_string();
            let authorized =
                req.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == expected);
            let (status, body) = if authorized {
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
                let access: Vec<serde_json::Value> = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "scope")
                    .filter_map(|(_, v)| {
                        let mut parts = v.splitn(3, ':');
                        let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let b64 = |v: &serde_json::Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
                };
                let input = format!(
                    "{}.{}",
                    b64(&json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]})),
                    b64(&json!({"iss": "mtcd-test-issuer", "sub": "alice", "aud": service,
                        "exp": now + 600, "nbf": now - 60, "iat": now - 60, "jti": format!("{now}-{}", rand::random::<u64>()),
                        "access": access}))
                );
                let sig = der_signature_to_fixed(&key.sign(input.as_bytes()).unwrap());
                let jwt = format!("{input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig));
                ("200 OK", json!({"token": jwt}).to_string())
            } else {
                ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    TokenServer { realm, cert_pem: cert.pem(), requests, task }
}

impl TestRegistry {
    /// A registry with the token auth of distribution (bearer tokens from `token`).
    fn start_with_token_auth(token: &TokenServer, service: &str) -> TestRegistry {
        Self::launch(|dir| {
            let bundle = dir.join("token-ca.pem");
            std::fs::write(&bundle, &token.cert_pem).unwrap();
            format!(
                "auth:\n  token:\n    realm: {}\n    service: {service}\n    issuer: mtcd-test-issuer\n    rootcertbundle: {}\n",
                token.realm,
                bundle.display()
            )
        })
    }

    /// A registry serving HTTPS with a certificate for 127.0.0.1 from a fresh test CA;
    /// returns the CA's PEM path too.
    fn start_tls() -> (TestRegistry, tempfile::TempDir, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca_path = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let reg = Self::launch(|dir| {
            let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display())
        });
        (reg, ca_dir, ca_path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_cached_tokens() {
    let token = start_token_server("mtcd-test-registry", "alice", "s3cret").await;
    let src = TestRegistry::start(None);
    let dst = TestRegistry::start_with_token_auth(&token, "mtcd-test-registry");
    let push = Pusher::new(&src);
    let layers: Vec<Vec<u8>> = (0..4).map(|_| random(300_000)).collect();
    let img = push.image("shop/web", "v1", &layers, false, "amd64").await;
    let cs = copies(&src, &dst, &["shop/web:v1"]);

    let report = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(1), |_| {}).await;
    assert!(
        matches!(report.images[0].outcome, Err(DimError::Unauthorized { status: 401, .. })),
        "anonymous: {:?}",
        report.images[0].outcome
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    };
    std::fs::write(&cfg, json!({"auths": {format!("http://{}", dst.addr): {"auth": auth}}}).to_string()).unwrap();
    let authed = RegistryClient::new(&dst.spec(RegistryAuth::DockerConfig(cfg)), None).unwrap();
    let before = token.requests.load(std::sync::atomic::Ordering::SeqCst);
    let report = dim::copy_all(&src.client(), &authed, &cs, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy with a bearer token");
    assert_eq!((stats.blobs_sent, stats.bytes_sent), (5, img.bytes()));
    let fetched = token.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    // ~20 registry requests; the token is fetched once per scope set, not per request.
    assert!((1..=3).contains(&fetched), "{fetched} token requests");
    // Reading back needs a token too: the engine's own view of the destination.
    let ins = dim::inspect(&src.client(), &authed, &cs, &opts(1)).await;
    let ins = ins[0].1.as_ref().expect("inspect with a bearer token");
    assert!(ins.present, "destination holds the image under the tag");
    assert_eq!(ins.digest, img.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_trusted_through_ca_bundle_only() {
    let src = TestRegistry::start(None);
    let (dst, _ca_dir, ca) = TestRegistry::start_tls();
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(500_000)], false, "amd64").await;
    let cs = copies(&src, &dst, &["shop/web:v1"]);
    let spec = |tls| Registry { address: dst.addr.clone(), internal_address: None, auth: RegistryAuth::Anonymous, tls };

    // System roots do not know the test CA: the copy fails, it does not fall back to HTTP.
    let verify = RegistryClient::new(&spec(RegistryTls::Verify), None).unwrap().with_retries(0, Duration::ZERO);
    let report = dim::copy_all(&src.client(), &verify, &cs, &opts(1), |_| {}).await;
    let err = report.images[0].outcome.as_ref().unwrap_err();
    assert!(matches!(err, DimError::Transport { .. }), "{err:?}");

    let trusted = RegistryClient::new(&spec(RegistryTls::CaBundle(ca)), None).unwrap();
    let report = dim::copy_all(&src.client(), &trusted, &cs, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy over TLS with the CA bundle");
    assert_eq!((stats.digest.as_str(), stats.bytes_sent), (img.digest.as_str(), img.bytes()));

    let missing = RegistryClient::new(&spec(RegistryTls::CaBundle("/nonexistent/ca.pem".into())), None).unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/ca.pem"), "{missing}");
}

/// A TCP proxy in front of a registry whose first `fail_first` connections get a 503
/// (a registry having a bad moment); later connections pass through untouched.
async fn flaky_proxy(
    upstream: String,
    fail_first: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if n < fail_first {
                    let mut buf = vec![0u8; 8192];
                    let _ = sock.read(&mut buf).await;
                    let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#;
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                } else if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                }
            });
        }
    });
    (addr, conns, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported_per_image() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let img = Pusher::new(&src).image("shop/web", "v1", &[random(300_000)], false, "amd64").await;
    let client_via = |addr: &str| {
        let spec = Registry {
            address: addr.to_string(),
            internal_address: None,
            auth: RegistryAuth::Anonymous,
            tls: RegistryTls::Insecure,
        };
        RegistryClient::new(&spec, None).unwrap().with_retries(3, Duration::from_millis(10))
    };
    let copy_via = |addr: &str| {
        vec![ImageCopy {
            source: ImageRef::parse(&format!("{addr}/shop/web:v1")).unwrap(),
            destination: ImageRef::parse(&format!("{}/shop/web:v1", dst.addr)).unwrap(),
        }]
    };

    // Two 503s, then the registry answers: the copy succeeds.
    let (addr, conns, task) = flaky_proxy(src.addr.clone(), 2).await;
    let report = dim::copy_all(&client_via(&addr), &dst.client(), &copy_via(&addr), &opts(1), |_| {}).await;
    task.abort();
    let stats = report.images[0].outcome.as_ref().expect("retried past the 503s");
    assert_eq!(stats.bytes_sent, img.bytes());
    assert!(conns.load(std::sync::atomic::Ordering::SeqCst) >= 3);

    // Always 503: reported for this image after 1 + 3 attempts, naming where.
    let (addr, conns, task) = flaky_proxy(src.addr.clone(), usize::MAX).await;
    let report = dim::copy_all(&client_via(&addr), &dst.client(), &copy_via(&addr), &opts(1), |_| {}).await;
    task.abort();
    match &report.images[0].outcome {
        Err(e @ DimError::Http { status: 503, registry, repository, reference, .. }) => {
            assert_eq!((registry.as_str(), repository.as_str(), reference.as_str()), (addr.as_str(), "shop/web", "v1"));
            assert!(e.to_string().contains("UNAVAILABLE"), "{e}");
        }
        other => panic!("expected a 503 error, got {other:?}"),
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 4, "1 attempt + 3 retries");
}

// ---------------------------------------------------------------------------------------
// Signatures, attestations and OCI 1.1 referrers (issue 19)
// ---------------------------------------------------------------------------------------

const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// A manifest pushed by a fixture: its bytes and digest.
struct Pushed {
    manifest: Vec<u8>,
    digest: String,
}

impl Pushed {
    /// Its descriptor as a referrers listing carries it.
    fn descriptor(&self, artifact_type: &str) -> serde_json::Value {
        json!({"mediaType": OCI_MANIFEST, "digest": self.digest, "size": self.manifest.len(),
            "artifactType": artifact_type, "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}})
    }
}

impl Pusher {
    /// cosign's tag-scheme layout: a manifest at `sha256-<hex>.<suffix>` whose one layer is
    /// the signed payload (`sig`: simple signing; `att`: a DSSE envelope) with the signature
    /// in the `dev.cosignproject.cosign/signature` annotation. The signature is a real
    /// ECDSA P-256 signature over the payload, as cosign makes it.
    async fn cosign(&self, repo: &str, subject: &str, suffix: &str) -> Pushed {
        use base64::Engine as _;
        use rcgen::SigningKey as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let simple = serde_json::to_vec(&json!({"critical": {"identity": {"docker-reference": format!("{}/{repo}", self.addr)},
            "image": {"docker-manifest-digest": subject}, "type": "cosign container image signature"}, "optional": null}))
        .unwrap();
        let (payload, media_type, mut annotations) = match suffix {
            "sig" => (simple, COSIGN_SIMPLESIGNING, serde_json::Map::new()),
            _ => {
                let statement = json!({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                    "subject": [{"name": repo, "digest": {"sha256": subject.trim_start_matches("sha256:")}}], "predicate": {"builder": {"id": "mtcd-test"}}});
                let b64 = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&statement).unwrap());
                let env = serde_json::to_vec(
                    &json!({"payloadType": "application/vnd.in-toto+json", "payload": b64, "signatures": []}),
                )
                .unwrap();
                let mut a = serde_json::Map::new();
                a.insert("predicateType".into(), json!("https://slsa.dev/provenance/v0.2"));
                (env, DSSE_ENVELOPE, a)
            }
        };
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload).unwrap());
        annotations.insert("dev.cosignproject.cosign/signature".into(), json!(signature));
        let layer = self.blob(repo, &payload).await;
        let config = serde_json::to_vec(&json!({"architecture": "", "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "", "rootfs": {"type": "layers", "diff_ids": [layer]}, "config": {}}))
        .unwrap();
        let config_digest = self.blob(repo, &config).await;
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest},
            "layers": [{"mediaType": media_type, "size": payload.len(), "digest": layer, "annotations": annotations}]}))
        .unwrap();
        let tag = format!("{}.{suffix}", digest_tag(subject));
        let digest = self.manifest(repo, &tag, OCI_MANIFEST, &manifest).await;
        Pushed { manifest, digest }
    }

    /// An OCI 1.1 artifact whose `subject` is `subject`, pushed by digest only (what a
    /// registry with the referrers API indexes; others need the fallback tag too).
    async fn referrer(
        &self,
        repo: &str,
        subject: &Pushed,
        subject_type: &str,
        artifact_type: &str,
        content: &[u8],
    ) -> Pushed {
        let empty = self.blob(repo, b"{}").await;
        let layer = self.blob(repo, content).await;
        let manifest =
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2, "data": "e30="},
            "layers": [{"mediaType": artifact_type, "digest": layer, "size": content.len()}],
            "subject": {"mediaType": subject_type, "digest": subject.digest, "size": subject.manifest.len()},
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}))
            .unwrap();
        let digest = sha(&manifest);
        self.manifest(repo, &digest, OCI_MANIFEST, &manifest).await;
        Pushed { manifest, digest }
    }

    /// The tag-schema fallback: an index of `descriptors` under `sha256-<hex>` of `subject`.
    async fn fallback_index(&self, repo: &str, subject: &str, descriptors: Vec<serde_json::Value>) -> Pushed {
        let manifest =
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})).unwrap();
        let digest = self.manifest(repo, &digest_tag(subject), OCI_INDEX, &manifest).await;
        Pushed { manifest, digest }
    }
}

impl Image {
    fn pushed(&self) -> Pushed {
        Pushed { manifest: self.manifest.clone(), digest: self.digest.clone() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_signatures_and_attestations_arrive_with_their_digests() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(300_000), random(200_000)], true, "amd64").await;
    let sig = push.cosign("shop/web", &img.digest, "sig").await;
    let att = push.cosign("shop/web", &img.digest, "att").await;
    let unsigned = push.image("shop/plain", "v1", &[random(100_000)], true, "amd64").await;
    let (srcc, dstc) = (src.client(), dst.client());
    let cs = copies(&src, &dst, &["shop/web:v1", "shop/plain:v1"]);

    let ins = dim::inspect(&srcc, &dstc, &cs, &opts(2)).await;
    let i = ins[0].1.as_ref().unwrap();
    assert_eq!((i.artifacts, i.artifacts_missing), (2, 2), "plan sees the signature and the attestation");
    assert_eq!(ins[1].1.as_ref().unwrap().artifacts, 0);

    let report = dim::copy_all(&srcc, &dstc, &cs, &opts(2), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("signed image copies");
    assert_eq!((stats.artifacts_copied, stats.artifacts_present), (2, 0));
    let plain = report.images[1].outcome.as_ref().unwrap();
    assert_eq!((plain.digest.as_str(), plain.artifacts_copied), (unsigned.digest.as_str(), 0), "unsigned: image only");
    let check = Pusher::new(&dst);
    let (status, body) = check.get("shop-prod/web/manifests/v1", OCI_MANIFEST).await;
    assert_eq!((status, sha(&body)), (200, img.digest.clone()), "image digest kept");
    for (suffix, art) in [("sig", &sig), ("att", &att)] {
        let tag = format!("{}.{suffix}", digest_tag(&img.digest));
        let (status, body) = check.get(&format!("shop-prod/web/manifests/{tag}"), OCI_MANIFEST).await;
        assert_eq!(status, 200, "{tag} copied");
        assert_eq!(body, art.manifest, "{tag} byte for byte: digest {} kept", art.digest);
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
            let (status, _) = check.get(&format!("shop-prod/web/blobs/{}", d.as_str().unwrap()), "*/*").await;
            assert_eq!(status, 200, "{suffix} blob {d} copied");
        }
    }

    // A re-run finds everything in place; so does the plan.
    let again = dim::copy_all(&srcc, &dstc, &cs, &opts(2), |_| {}).await;
    let stats = again.images[0].outcome.as_ref().unwrap();
    assert!(stats.up_to_date, "{stats:?}");
    assert_eq!((stats.artifacts_copied, stats.artifacts_present, stats.bytes_sent), (0, 2, 0));
    let i = dim::inspect(&srcc, &dstc, &cs[..1], &opts(1)).await.remove(0).1.unwrap();
    assert_eq!((i.present, i.artifacts, i.artifacts_missing), (true, 2, 0));

    // A signature added later (cosign appends to the .sig manifest) is copied by the next
    // run although the image itself is up to date.
    let resigned = push.cosign("shop/web", &img.digest, "sig").await;
    let again = dim::copy_all(&srcc, &dstc, &cs[..1], &opts(1), |_| {}).await;
    let stats = again.images[0].outcome.as_ref().unwrap();
    assert!(!stats.up_to_date);
    assert_eq!((stats.artifacts_copied, stats.artifacts_present), (1, 1));
    let (_, body) = check.get(&format!("shop-prod/web/manifests/{}.sig", digest_tag(&img.digest)), OCI_MANIFEST).await;
    assert_eq!(sha(&body), resigned.digest);

    // signatures = "skip": the image only.
    let dst2 = TestRegistry::start(None);
    let skip = DimOptions { signatures: mtcd::spec::SignatureMode::Skip, ..opts(1) };
    let r = dim::copy_all(&srcc, &dst2.client(), &copies(&src, &dst2, &["shop/web:v1"]), &skip, |_| {}).await;
    assert_eq!(r.images[0].outcome.as_ref().unwrap().artifacts_copied, 0);
    let (status, _) =
        Pusher::new(&dst2).get(&format!("shop-prod/web/manifests/{}.sig", digest_tag(&img.digest)), OCI_MANIFEST).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_referrers_through_the_tag_fallback_keep_their_digests() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    // A two-platform index: referrers may hang off the index and off a platform manifest.
    let amd = push.image("shop/multi", "amd", &[random(200_000)], true, "amd64").await;
    let arm = push.image("shop/multi", "arm", &[random(200_000)], true, "arm64").await;
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd.digest, "size": amd.manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": arm.digest, "size": arm.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}}
    ]}))
    .unwrap();
    let top = Pushed { digest: push.manifest("shop/multi", "v1", OCI_INDEX, &index).await, manifest: index };
    let sbom =
        push.referrer("shop/multi", &top, OCI_INDEX, "application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#).await;
    let vex = push.referrer("shop/multi", &amd.pushed(), OCI_MANIFEST, "application/vnd.openvex+json", b"{}").await;
    // A signature of the SBOM: a referrer of a referrer.
    let sbom_sig =
        push.referrer("shop/multi", &sbom, OCI_MANIFEST, "application/vnd.dev.sigstore.bundle.v0.3+json", b"sig").await;
    let top_index =
        push.fallback_index("shop/multi", &top.digest, vec![sbom.descriptor("application/spdx+json")]).await;
    push.fallback_index("shop/multi", &amd.digest, vec![vex.descriptor("application/vnd.openvex+json")]).await;
    push.fallback_index(
        "shop/multi",
        &sbom.digest,
        vec![sbom_sig.descriptor("application/vnd.dev.sigstore.bundle.v0.3+json")],
    )
    .await;

    let cs = copies(&src, &dst, &["shop/multi:v1"]);
    let ins = dim::inspect(&src.client(), &dst.client(), &cs, &opts(1)).await.remove(0).1.unwrap();
    assert_eq!((ins.artifacts, ins.artifacts_missing), (3, 3), "{ins:?}");
    let report = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy with referrers");
    assert_eq!(stats.artifacts_copied, 3);

    let check = Pusher::new(&dst);
    for r in [&sbom, &vex, &sbom_sig] {
        let (status, body) = check.get(&format!("shop-prod/multi/manifests/{}", r.digest), OCI_MANIFEST).await;
        assert_eq!((status, sha(&body)), (200, r.digest.clone()), "referrer copied by digest, byte for byte");
    }
    // The destination (no referrers API) lists them under the fallback tags: the source's
    // own index bytes, since the destination had none.
    let (status, body) = check.get(&format!("shop-prod/multi/manifests/{}", digest_tag(&top.digest)), OCI_INDEX).await;
    assert_eq!((status, body), (200, top_index.manifest.clone()));
    for (subject, child) in [(&amd.digest, &vex), (&sbom.digest, &sbom_sig)] {
        let (status, body) = check.get(&format!("shop-prod/multi/manifests/{}", digest_tag(subject)), OCI_INDEX).await;
        assert_eq!(status, 200);
        let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(listed["manifests"][0]["digest"], json!(child.digest));
    }
    let again = dim::copy_all(&src.client(), &dst.client(), &cs, &opts(1), |_| {}).await;
    let stats = again.images[0].outcome.as_ref().unwrap();
    assert!(stats.up_to_date);
    assert_eq!((stats.artifacts_present, stats.artifacts_copied), (3, 0));
}

/// A registry with extra behaviour: a reverse proxy in front of a real docker-registry.
/// `answer` may reply itself; otherwise the request is forwarded and `adjust` may change
/// the upstream's response headers. Location headers are rewritten to the proxy.
struct Proxy {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request as the proxy hooks see it.
struct Seen {
    method: String,
    /// Path and query.
    path: String,
    body: bytes::Bytes,
}

type Answer = Box<dyn Fn(&Seen) -> Option<(u16, Vec<(String, String)>, Vec<u8>)> + Send + Sync>;
type Adjust = Box<dyn Fn(&Seen, u16, &mut Vec<(String, String)>) + Send + Sync>;

async fn proxy(upstream: &str, answer: Answer, adjust: Adjust) -> Proxy {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rules = std::sync::Arc::new((answer, adjust, upstream.to_string(), addr.clone(), reqwest::Client::new()));
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let rules = rules.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let rules = rules.clone();
                    async move {
                        let (answer, adjust, upstream, me, http) = &*rules;
                        let method = req.method().clone();
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let seen = Seen { method: method.to_string(), path, body };
                        let (status, mut out_headers, out_body) = match answer(&seen) {
                            Some(r) => r,
                            None => {
                                let mut fwd = http.request(method.clone(), format!("http://{upstream}{}", seen.path));
                                for (k, v) in &headers {
                                    if k != "host" && k != "content-length" {
                                        fwd = fwd.header(k, v);
                                    }
                                }
                                let resp = fwd.body(seen.body.clone()).send().await.unwrap();
                                let status = resp.status().as_u16();
                                let hs: Vec<(String, String)> = resp
                                    .headers()
                                    .iter()
                                    .filter(|(k, _)| *k != "transfer-encoding" && *k != "connection")
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().replace(upstream, me)))
                                    .collect();
                                let b = resp.bytes().await.unwrap_or_default().to_vec();
                                let mut hs = hs;
                                adjust(&seen, status, &mut hs);
                                (status, hs, b)
                            }
                        };
                        let head = method == hyper::Method::HEAD;
                        if !head {
                            out_headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
                        }
                        let mut resp = hyper::Response::builder().status(status);
                        for (k, v) in out_headers.drain(..) {
                            resp = resp.header(k, v);
                        }
                        let body = if head { Vec::new() } else { out_body };
                        Ok::<_, std::convert::Infallible>(resp.body(Full::new(bytes::Bytes::from(body))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Proxy { addr, task }
}

fn unchanged() -> Adjust {
    Box::new(|_, _, _| {})
}

fn registry_at(addr: &str) -> RegistryClient {
    let spec = Registry {
        address: addr.to_string(),
        internal_address: None,
        auth: RegistryAuth::Anonymous,
        tls: RegistryTls::Insecure,
    };
    RegistryClient::new(&spec, None).unwrap().with_retries(0, Duration::from_millis(10))
}

/// `/v2/<repo>/referrers/<digest>` → (repo, digest).
fn referrers_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v2/")?;
    let rest = rest.split('?').next()?;
    let (repo, digest) = rest.rsplit_once("/referrers/")?;
    Some((repo.to_string(), digest.to_string()))
}

fn listing(descriptors: Vec<serde_json::Value>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})).unwrap();
    (200, vec![("content-type".into(), OCI_INDEX.into())], body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_of_the_source_is_read_and_listed_on_a_destination_without_it() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(200_000)], true, "amd64").await;
    // Pushed by digest only: no fallback tag on the source; the API is the only way to it.
    let sbom = push.referrer("shop/web", &img.pushed(), OCI_MANIFEST, "application/spdx+json", b"{\"spdx\":1}").await;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (subject, desc, count) = (img.digest.clone(), sbom.descriptor("application/spdx+json"), served.clone());
    let front = proxy(
        &src.addr,
        Box::new(move |s| {
            let (repo, digest) = referrers_path(&s.path)?;
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(listing(if repo == "shop/web" && digest == subject { vec![desc.clone()] } else { vec![] }))
        }),
        unchanged(),
    )
    .await;
    let cs = vec![ImageCopy {
        source: ImageRef::parse(&format!("{}/shop/web:v1", front.addr)).unwrap(),
        destination: ImageRef::parse(&format!("{}/shop/web:v1", dst.addr)).unwrap(),
    }];
    let report = dim::copy_all(&registry_at(&front.addr), &dst.client(), &cs, &opts(1), |_| {}).await;
    let stats = report.images[0].outcome.as_ref().expect("copy");
    assert_eq!(stats.artifacts_copied, 1);
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the source's referrers API was asked");
    let check = Pusher::new(&dst);
    let (status, body) = check.get(&format!("shop/web/manifests/{}", sbom.digest), OCI_MANIFEST).await;
    assert_eq!((status, body), (200, sbom.manifest.clone()));
    // docker-registry 2.8 has no referrers API: mtcd wrote the fallback index for it.
    let (status, body) = check.get(&format!("shop/web/manifests/{}", digest_tag(&img.digest)), OCI_INDEX).await;
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["manifests"], json!([sbom.descriptor("application/spdx+json")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_serving_the_referrers_api_gets_no_fallback_tag() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(200_000)], true, "amd64").await;
    let sig = push
        .referrer("shop/web", &img.pushed(), OCI_MANIFEST, "application/vnd.dev.sigstore.bundle.v0.3+json", b"s")
        .await;
    push.fallback_index("shop/web", &img.digest, vec![sig.descriptor("application/vnd.dev.sigstore.bundle.v0.3+json")])
        .await;
    // The destination indexes referrers as a registry with the API does: OCI-Subject on
    // the PUT, and a listing built from what was pushed.
    let indexed: std::sync::Arc<Mutex<Vec<(String, serde_json::Value)>>> = Default::default();
    let (put_seen, get_seen) = (indexed.clone(), indexed.clone());
    let front = proxy(
        &dst.addr,
        Box::new(move |s| {
            let (_, digest) = referrers_path(&s.path)?;
            let list = get_seen.lock().unwrap().iter().filter(|(d, _)| *d == digest).map(|(_, v)| v.clone()).collect();
            Some(listing(list))
        }),
        Box::new(move |s, status, headers| {
            if s.method != "PUT" || !s.path.contains("/manifests/") || status != 201 {
                return;
            }
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(&s.body) else { return };
            if let Some(subject) = m["subject"]["digest"].as_str() {
                headers.push(("OCI-Subject".into(), subject.to_string()));
                let d = json!({"mediaType": OCI_MANIFEST, "digest": sha(&s.body), "size": s.body.len(), "artifactType": m["artifactType"]});
                put_seen.lock().unwrap().push((subject.to_string(), d));
            }
        }),
    )
    .await;
    let cs = vec![ImageCopy {
        source: ImageRef::parse(&format!("{}/shop/web:v1", src.addr)).unwrap(),
        destination: ImageRef::parse(&format!("{}/shop/web:v1", front.addr)).unwrap(),
    }];
    let report = dim::copy_all(&src.client(), &registry_at(&front.addr), &cs, &opts(1), |_| {}).await;
    assert_eq!(report.images[0].outcome.as_ref().expect("copy").artifacts_copied, 1);
    let check = Pusher::new(&dst);
    let (status, body) = check.get(&format!("shop/web/manifests/{}", sig.digest), OCI_MANIFEST).await;
    assert_eq!((status, body), (200, sig.manifest.clone()), "referrer stored by digest");
    let (status, _) = check.get(&format!("shop/web/manifests/{}", digest_tag(&img.digest)), OCI_INDEX).await;
    assert_eq!(status, 404, "the destination indexes referrers itself: no fallback tag written");
    // The next run reads the destination's listing and finds the referrer there.
    let again = dim::copy_all(&src.client(), &registry_at(&front.addr), &cs, &opts(1), |_| {}).await;
    let stats = again.images[0].outcome.as_ref().unwrap();
    assert_eq!((stats.artifacts_present, stats.artifacts_copied), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_cannot_store_referrers_is_reported_per_image() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let img = push.image("shop/web", "v1", &[random(200_000)], true, "amd64").await;
    let sbom = push.referrer("shop/web", &img.pushed(), OCI_MANIFEST, "application/spdx+json", b"{}").await;
    push.fallback_index("shop/web", &img.digest, vec![sbom.descriptor("application/spdx+json")]).await;
    let other = push.image("shop/other", "v1", &[random(100_000)], true, "amd64").await;
    let front = proxy(
        &dst.addr,
        Box::new(|s| {
            let refuses = s.method == "PUT" && s.path.contains("/manifests/") && {
                let m: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
                m.get("subject").is_some()
            };
            refuses.then(|| {
                let body = br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unknown field subject"}]}"#;
                (400, vec![("content-type".to_string(), "application/json".to_string())], body.to_vec())
            })
        }),
        unchanged(),
    )
    .await;
    let cs = vec![
        ImageCopy {
            source: ImageRef::parse(&format!("{}/shop/web:v1", src.addr)).unwrap(),
            destination: ImageRef::parse(&format!("{}/shop/web:v1", front.addr)).unwrap(),
        },
        ImageCopy {
            source: ImageRef::parse(&format!("{}/shop/other:v1", src.addr)).unwrap(),
            destination: ImageRef::parse(&format!("{}/shop/other:v1", front.addr)).unwrap(),
        },
    ];
    let report = dim::copy_all(&src.client(), &registry_at(&front.addr), &cs, &opts(2), |_| {}).await;
    match &report.images[0].outcome {
        Err(e @ DimError::Artifact { registry, repository, subject, artifact, source }) => {
            assert_eq!(
                (registry.as_str(), repository.as_str(), subject.as_str()),
                (front.addr.as_str(), "shop/web", img.digest.as_str())
            );
            assert!(artifact.contains(&sbom.digest) && artifact.contains("application/spdx+json"), "{artifact}");
            assert!(matches!(**source, DimError::Http { status: 400, .. }), "{source:?}");
            let msg = e.to_string();
            assert!(msg.contains("was copied but its referrer") && msg.contains("MANIFEST_INVALID"), "{msg}");
        }
        other => panic!("expected an artifact error, got {other:?}"),
    }
    assert_eq!(report.images[1].outcome.as_ref().expect("the other image copies").digest, other.digest);
    // The image itself arrived; only its referrer is missing.
    let (status, body) = Pusher::new(&dst).get("shop/web/manifests/v1", OCI_MANIFEST).await;
    assert_eq!((status, sha(&body)), (200, img.digest.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_sending_only_the_missing_blobs() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let layers: Vec<Vec<u8>> = (0..4).map(|_| random(400_000)).collect();
    let img = Pusher::new(&src).image("shop/web", "v1", &layers, false, "amd64").await;
    // The source goes away after two blobs have been read.
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = gets.clone();
    let front = proxy(
        &src.addr,
        Box::new(move |s| {
            let blob_get = s.method == "GET" && s.path.contains("/blobs/sha256:");
            (blob_get && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2)
                .then(|| (503, vec![], br#"{"errors":[{"code":"UNAVAILABLE"}]}"#.to_vec()))
        }),
        unchanged(),
    )
    .await;
    let one_at_a_time = DimOptions { blob_concurrency: 1, ..opts(1) };
    let copy_from = |addr: &str| {
        vec![ImageCopy {
            source: ImageRef::parse(&format!("{addr}/shop/web:v1")).unwrap(),
            destination: ImageRef::parse(&format!("{}/shop/web:v1", dst.addr)).unwrap(),
        }]
    };
    let first =
        dim::copy_all(&registry_at(&front.addr), &dst.client(), &copy_from(&front.addr), &one_at_a_time, |_| {}).await;
    assert!(
        matches!(first.images[0].outcome, Err(DimError::Http { status: 503, .. })),
        "{:?}",
        first.images[0].outcome
    );
    let (status, _) = Pusher::new(&dst).get("shop/web/manifests/v1", DOCKER_MANIFEST).await;
    assert_eq!(status, 404, "no manifest for an incomplete image");

    let second = dim::copy_all(&src.client(), &dst.client(), &copy_from(&src.addr), &one_at_a_time, |_| {}).await;
    let stats = second.images[0].outcome.as_ref().expect("the re-run completes");
    assert_eq!(stats.blobs_skipped, 2, "the two blobs committed before the interruption are not sent again");
    assert_eq!(stats.blobs_sent, 3);
    assert_eq!(stats.bytes_sent, img.bytes() - img.sizes[..2].iter().sum::<u64>());
}

/// The many-image path as `mtcd apply` runs it (plan, then copy, with the same clients):
/// five repositories sharing a base layer. The base is uploaded once and mounted into the
/// other four; the copy asks the destination about no blob again (the plan just saw them
/// missing), and the plan asked once per blob and repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_images_sharing_a_base_upload_it_once_and_check_each_blob_once() {
    let (src, dst) = (TestRegistry::start(None), TestRegistry::start(None));
    let push = Pusher::new(&src);
    let base = random(600_000);
    let mut refs = Vec::new();
    for i in 0..5 {
        push.image(&format!("shop/app-{i}"), "v1", &[base.clone(), random(50_000 + i)], false, "amd64").await;
        refs.push(format!("shop/app-{i}:v1"));
    }
    let seen: std::sync::Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let log = seen.clone();
    let front = proxy(
        &dst.addr,
        Box::new(move |s| {
            log.lock().unwrap().push((s.method.clone(), s.path.clone()));
            None
        }),
        unchanged(),
    )
    .await;
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let images: Vec<ImageRef> = refs.iter().map(|r| ImageRef::parse(&format!("{}/{r}", src.addr)).unwrap()).collect();
    let map: IndexMap<String, String> = [("shop".to_string(), "shop-prod".to_string())].into();
    let cs = dim::plan_copies(&images, &src.addr, &front.addr, &map);
    let (sc, dc) = (src.client(), registry_at(&front.addr));
    let o = DimOptions { signatures: mtcd::spec::SignatureMode::Skip, ..opts(4) };

    let inspected = dim::inspect(&sc, &dc, &cs, &o).await;
    assert!(inspected.iter().all(|(_, r)| r.as_ref().is_ok_and(|i| i.blobs_missing == 3)), "{inspected:?}");
    let heads = |log: &[(String, String)]| log.iter().filter(|(m, p)| m == "HEAD" && p.contains("/blobs/")).count();
    assert_eq!(heads(&seen.lock().unwrap()), 15, "the plan: one check per blob and repository");
    seen.lock().unwrap().clear();

    let report = dim::copy_all(&sc, &dc, &cs, &o, |_| {}).await;
    let stats: Vec<&dim::ImageStats> = report.images.iter().map(|r| r.outcome.as_ref().expect("copied")).collect();
    let log = seen.lock().unwrap().clone();
    assert_eq!(heads(&log), 0, "the copy asks about no blob the plan saw missing: {log:?}");
    let mounts = log
        .iter()
        .filter(|(m, p)| m == "POST" && p.contains(&format!("mount={}", sha(&base).replace(':', "%3A"))))
        .count();
    assert_eq!(mounts, 4, "the base is mounted into every repository but the first: {log:?}");
    assert_eq!(stats.iter().map(|s| s.blobs_mounted).sum::<usize>(), 4);
    let base_sent = stats.iter().filter(|s| s.bytes_sent >= base.len() as u64).count();
    assert_eq!(base_sent, 1, "the base's bytes travel once: {stats:?}");
}
