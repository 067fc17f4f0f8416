//! Copying one image: manifests (and indexes with every platform) byte for byte, blobs
//! streamed from the source GET into the destination PUT.
//!
//! Order matters for the destination's consistency: blobs first, then child manifests by
//! digest, then the top manifest by digest, and the tag last, so a tag never points at
//! content the destination does not fully hold.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use reqwest::{Method, Response, StatusCode, header};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::registry::{Access, RegistryClient};
use super::{DimError, ImageCopy};

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest as the registry served it: the bytes are pushed unchanged so digests hold.
#[derive(Debug, Clone)]
pub(crate) struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    pub digest: String,
    pub size: u64,
    /// Non-distributable (foreign) layers live elsewhere and are not copied.
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ManifestJson {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// Who is asking, for error messages: registry, repository and reference.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub reference: &'a str,
}

impl At<'_> {
    pub(crate) fn http(&self, operation: &'static str, status: StatusCode, body: String) -> DimError {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return DimError::Unauthorized {
                registry: self.registry.into(),
                repository: self.repository.into(),
                reference: self.reference.into(),
                operation,
                status: status.as_u16(),
            };
        }
        DimError::Http {
            registry: self.registry.into(),
            repository: self.repository.into(),
            reference: self.reference.into(),
            operation,
            status: status.as_u16(),
            message: short(&body),
        }
    }

    pub(crate) fn transport(&self, operation: &'static str, source: reqwest::Error) -> DimError {
        DimError::Transport {
            registry: self.registry.into(),
            repository: self.repository.into(),
            reference: self.reference.into(),
            operation,
            source,
        }
    }

    pub(crate) fn invalid(&self, reason: String) -> DimError {
        DimError::InvalidManifest {
            registry: self.registry.into(),
            repository: self.repository.into(),
            reference: self.reference.into(),
            reason,
        }
    }

    pub(crate) fn with_ref<'b>(&self, reference: &'b str) -> At<'b>
    where
        Self: 'b,
    {
        At { reference, ..*self }
    }
}

/// The registry's error body, trimmed: enough to see `DIGEST_INVALID` or `DENIED`.
fn short(body: &str) -> String {
    let b = body.trim();
    if b.len() > 300 { format!("{}…", &b[..b.floor_char_boundary(300)]) } else { b.to_string() }
}

pub(crate) async fn fail(at: At<'_>, op: &'static str, resp: Response) -> DimError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    at.http(op, status, body)
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Fetches a manifest by tag or digest and checks it against the digest asked for (or the
/// one the registry announced): a manifest is never trusted by its name alone.
pub(crate) async fn get_manifest(client: &RegistryClient, at: At<'_>) -> Result<RawManifest, DimError> {
    // By digest, a manifest is what it was when first read (and verified): read it once.
    if at.reference.starts_with("sha256:")
        && let Some(m) = client.facts().manifest(at.repository, at.reference)
    {
        return Ok(m);
    }
    let resp = client
        .get(Method::GET, at.repository, Access::Pull, &format!("manifests/{}", at.reference), Some(ACCEPT))
        .await
        .map_err(|e| at.transport("GET manifest", e))?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(DimError::ManifestNotFound {
                registry: at.registry.into(),
                repository: at.repository.into(),
                reference: at.reference.into(),
            });
        }
        _ => return Err(fail(at, "GET manifest", resp).await),
    }
    let announced = header_str(&resp, "docker-content-digest");
    let content_type = header_str(&resp, header::CONTENT_TYPE.as_str());
    let bytes = resp.bytes().await.map_err(|e| at.transport("GET manifest", e))?;
    let digest = sha256_digest(&bytes);
    let expected = if at.reference.contains(':') { Some(at.reference.to_string()) } else { announced };
    if let Some(expected) = expected
        && expected.starts_with("sha256:")
        && expected != digest
    {
        return Err(DimError::DigestMismatch {
            registry: at.registry.into(),
            repository: at.repository.into(),
            digest: expected,
            actual: digest,
        });
    }
    let parsed: ManifestJson =
        serde_json::from_slice(&bytes).map_err(|e| at.invalid(format!("manifest is not JSON: {e}")))?;
    let media_type = parsed
        .media_type
        .or(content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string()))
        .unwrap_or_default();
    if ![DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX].contains(&media_type.as_str()) {
        return Err(DimError::UnsupportedManifest {
            registry: at.registry.into(),
            repository: at.repository.into(),
            reference: at.reference.into(),
            media_type,
        });
    }
    let m = RawManifest { bytes, media_type, digest };
    client.facts().keep_manifest(at.repository, &m);
    Ok(m)
}

pub(crate) fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == DOCKER_LIST || media_type == OCI_INDEX
}

/// The child manifests of an index, or the config and layers of an image manifest.
pub(crate) fn references(m: &RawManifest, at: At<'_>) -> Result<Vec<Descriptor>, DimError> {
    let parsed: ManifestJson =
        serde_json::from_slice(&m.bytes).map_err(|e| at.invalid(format!("manifest is not JSON: {e}")))?;
    if is_index(&m.media_type) {
        return Ok(parsed.manifests);
    }
    let config = parsed.config.ok_or_else(|| at.invalid("image manifest has no config".into()))?;
    Ok(std::iter::once(config).chain(parsed.layers.into_iter().filter(|l| l.urls.is_empty())).collect())
}

/// The digest the destination holds under `reference`, if any.
pub(crate) async fn head_manifest(client: &RegistryClient, at: At<'_>) -> Result<Option<String>, DimError> {
    let resp = client
        .get(Method::HEAD, at.repository, Access::Pull, &format!("manifests/{}", at.reference), Some(ACCEPT))
        .await
        .map_err(|e| at.transport("HEAD manifest", e))?;
    match resp.status() {
        s if s.is_success() => Ok(header_str(&resp, "docker-content-digest")),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(fail(at, "HEAD manifest", resp).await),
    }
}

pub(crate) async fn blob_exists(
    client: &RegistryClient,
    repo: &str,
    access: Access,
    digest: &str,
    at: At<'_>,
) -> Result<bool, DimError> {
    let resp = client
        .get(Method::HEAD, repo, access, &format!("blobs/{digest}"), None)
        .await
        .map_err(|e| at.transport("HEAD blob", e))?;
    let found = match resp.status() {
        s if s.is_success() => true,
        StatusCode::NOT_FOUND => false,
        _ => return Err(fail(at, "HEAD blob", resp).await),
    };
    client.facts().set_absent(repo, digest, !found);
    Ok(found)
}

/// Pushes a manifest's exact bytes under `at.reference`. Returns whether the registry
/// announced `OCI-Subject` (it indexes referrers itself: the referrers API).
pub(crate) async fn put_manifest(client: &RegistryClient, at: At<'_>, m: &RawManifest) -> Result<bool, DimError> {
    let url = client.url(&format!("/v2/{}/manifests/{}", at.repository, at.reference));
    let resp = client
        .send(&[(at.repository, Access::Push)], |c| {
            c.put(&url).header(header::CONTENT_TYPE, &m.media_type).body(m.bytes.clone())
        })
        .await
        .map_err(|e| at.transport("PUT manifest", e))?;
    if !resp.status().is_success() {
        return Err(fail(at, "PUT manifest", resp).await);
    }
    if let Some(d) = header_str(&resp, "docker-content-digest")
        && d != m.digest
    {
        return Err(at.invalid(format!("destination stored the manifest as {d}, expected {}", m.digest)));
    }
    Ok(resp.headers().contains_key("oci-subject"))
}

/// The digest a registry holds under `at.reference` (HEAD; a GET when the registry does not
/// announce `Docker-Content-Digest`), `None` when it has nothing there.
pub(crate) async fn resolve_manifest(client: &RegistryClient, at: At<'_>) -> Result<Option<String>, DimError> {
    let resp = client
        .get(Method::HEAD, at.repository, Access::Pull, &format!("manifests/{}", at.reference), Some(ACCEPT))
        .await
        .map_err(|e| at.transport("HEAD manifest", e))?;
    match resp.status() {
        s if s.is_success() => match header_str(&resp, "docker-content-digest") {
            Some(d) => Ok(Some(d)),
            None => Ok(Some(get_manifest(client, at).await?.digest)),
        },
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(fail(at, "HEAD manifest", resp).await),
    }
}

/// Where a blob ended up on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlobOutcome {
    Present,
    Mounted,
    Sent(u64),
}

/// State shared by every image of one run.
#[derive(Default)]
pub(crate) struct RunState {
    /// Digest → destination repositories known to hold it: mount sources.
    holders: Mutex<HashMap<String, Vec<String>>>,
    /// One transfer per digest at a time, so two images sharing a layer send it once.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RunState {
    fn record(&self, digest: &str, repo: &str) {
        let mut h = self.holders.lock().unwrap();
        let v = h.entry(digest.to_string()).or_default();
        if !v.iter().any(|r| r == repo) {
            v.push(repo.to_string());
        }
    }
    fn mount_source(&self, digest: &str, repo: &str) -> Option<String> {
        self.holders.lock().unwrap().get(digest)?.iter().find(|r| *r != repo).cloned()
    }
    pub(crate) fn lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap().entry(digest.to_string()).or_default().clone()
    }
}

/// Live counters of one image, read by the progress ticker.
#[derive(Default)]
pub(crate) struct Counters {
    /// Bytes streamed to the destination so far (partial blobs included).
    pub sent: AtomicU64,
    /// Bytes of blobs finished (sent, mounted or already present).
    pub done: AtomicU64,
    pub blobs_done: AtomicU64,
}

/// Puts one blob into `dst_repo`, sending its bytes at most once per run:
///
/// - a digest this run already put into another destination repository is mounted from
///   there at once (no existence check: a mount of a blob the repository has is a no-op);
/// - otherwise one existence check (skipped when the plan just found it missing), then the
///   upload, one per digest at a time: images waiting for the same digest mount it when
///   the first upload is committed.
///
/// Transient failures are retried.
pub(crate) async fn copy_blob(
    src: &RegistryClient,
    dst: &RegistryClient,
    src_repo: &str,
    dst_repo: &str,
    desc: &Descriptor,
    state: &RunState,
    counters: &Arc<Counters>,
) -> Result<BlobOutcome, DimError> {
    let digest = desc.digest.as_str();
    if state.mount_source(digest, dst_repo).is_none() {
        let dst_at = At { registry: dst.address(), repository: dst_repo, reference: digest };
        if !dst.facts().absent(dst_repo, digest) && blob_exists(dst, dst_repo, Access::Push, digest, dst_at).await? {
            state.record(digest, dst_repo);
            return Ok(BlobOutcome::Present);
        }
        let lock = state.lock(digest);
        let _first = lock.lock().await;
        if state.mount_source(digest, dst_repo).is_none() {
            return send_blob(src, dst, src_repo, dst_repo, desc, state, counters).await;
        }
    }
    send_blob(src, dst, src_repo, dst_repo, desc, state, counters).await
}

/// [`transfer`] with retries of transient failures; records where the blob now is.
async fn send_blob(
    src: &RegistryClient,
    dst: &RegistryClient,
    src_repo: &str,
    dst_repo: &str,
    desc: &Descriptor,
    state: &RunState,
    counters: &Arc<Counters>,
) -> Result<BlobOutcome, DimError> {
    let mut attempt = 0;
    loop {
        let before = counters.sent.load(Ordering::Relaxed);
        match transfer(src, dst, src_repo, dst_repo, desc, state, counters).await {
            Ok(outcome) => {
                state.record(&desc.digest, dst_repo);
                dst.facts().set_absent(dst_repo, &desc.digest, false);
                return Ok(outcome);
            }
            Err(e) if e.is_transient() && attempt < dst.retries() => {
                // Bytes of the failed attempt were not committed; progress shows real work.
                let now = counters.sent.load(Ordering::Relaxed);
                counters.sent.fetch_sub(now.saturating_sub(before), Ordering::Relaxed);
                tracing::debug!(digest = %desc.digest, error = %e, attempt, "retrying blob");
                tokio::time::sleep(dst.backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn transfer(
    src: &RegistryClient,
    dst: &RegistryClient,
    src_repo: &str,
    dst_repo: &str,
    desc: &Descriptor,
    state: &RunState,
    counters: &Arc<Counters>,
) -> Result<BlobOutcome, DimError> {
    let digest = desc.digest.as_str();
    let dst_at = At { registry: dst.address(), repository: dst_repo, reference: digest };
    let src_at = At { registry: src.address(), repository: src_repo, reference: digest };
    // 1. Cross-repository mount from a destination repository that holds the blob.
    let mut location = None;
    if let Some(from) = state.mount_source(digest, dst_repo) {
        let url = dst.url(&format!("/v2/{dst_repo}/blobs/uploads/"));
        let resp = dst
            .send(&[(dst_repo, Access::Push), (&from, Access::Pull)], |c| {
                c.post(&url).query(&[("mount", digest), ("from", from.as_str())])
            })
            .await
            .map_err(|e| dst_at.transport("POST blob mount", e))?;
        match resp.status() {
            StatusCode::CREATED => return Ok(BlobOutcome::Mounted),
            // Mount refused (e.g. no pull access on `from`): the registry opened an upload.
            StatusCode::ACCEPTED => location = header_str(&resp, "location"),
            _ => {}
        }
    }
    // 2. Open an upload.
    let location = match location {
        Some(l) => l,
        None => {
            let url = dst.url(&format!("/v2/{dst_repo}/blobs/uploads/"));
            let resp = dst
                .send(&[(dst_repo, Access::Push)], |c| c.post(&url).header(header::CONTENT_LENGTH, "0"))
                .await
                .map_err(|e| dst_at.transport("POST blob upload", e))?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(fail(dst_at, "POST blob upload", resp).await);
            }
            header_str(&resp, "location")
                .ok_or_else(|| dst_at.http("POST blob upload", resp.status(), "no Location header".into()))?
        }
    };
    let mut put_url = dst.resolve(&location).map_err(|e| {
        dst_at.http("POST blob upload", StatusCode::ACCEPTED, format!("bad Location {location:?}: {e}"))
    })?;
    put_url.query_pairs_mut().append_pair("digest", digest);
    // 3. Source GET, streamed through the verifier into the destination PUT.
    let resp = src
        .get(Method::GET, src_repo, Access::Pull, &format!("blobs/{digest}"), None)
        .await
        .map_err(|e| src_at.transport("GET blob", e))?;
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(DimError::BlobNotFound {
                registry: src.address().into(),
                repository: src_repo.into(),
                digest: digest.into(),
            });
        }
        _ => return Err(fail(src_at, "GET blob", resp).await),
    }
    let verdict: Arc<Mutex<Option<DimError>>> = Arc::default();
    let verifier = Verifier {
        inner: Box::pin(resp.bytes_stream()),
        hasher: Some(Sha256::new()),
        held: None,
        buf: BytesMut::new(),
        seen: 0,
        expected_size: desc.size,
        expected_digest: digest.to_string(),
        registry: src.address().to_string(),
        repository: src_repo.to_string(),
        verdict: verdict.clone(),
        counters: counters.clone(),
    };
    let req = dst
        .client()
        .put(put_url)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, desc.size)
        .body(reqwest::Body::wrap_stream(verifier));
    let result = dst.send_once(&[(dst_repo, Access::Push)], req).await;
    // The verifier's verdict explains a failed PUT better than the aborted request does.
    if let Some(e) = verdict.lock().unwrap().take() {
        return Err(e);
    }
    let resp = result.map_err(|e| dst_at.transport("PUT blob", e))?;
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        return Err(fail(dst_at, "PUT blob", resp).await);
    }
    Ok(BlobOutcome::Sent(desc.size))
}

/// Size of the frames written to the destination.
const COALESCE: usize = 256 * 1024;

/// Passes the source's bytes through while hashing them, and holds back the last chunk
/// until the digest is checked: a corrupt blob never reaches the destination whole, so
/// the destination cannot commit it.
struct Verifier {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    hasher: Option<Sha256>,
    held: Option<Bytes>,
    /// Source frames (a few KiB each) gathered into larger writes: fewer syscalls and
    /// wake-ups on the destination connection for the price of one memcpy.
    buf: BytesMut,
    seen: u64,
    expected_size: u64,
    expected_digest: String,
    registry: String,
    repository: String,
    verdict: Arc<Mutex<Option<DimError>>>,
    counters: Arc<Counters>,
}

#[derive(Debug, thiserror::Error)]
#[error("source blob failed verification")]
struct Rejected;

impl Verifier {
    fn reject(&mut self, e: DimError) -> Poll<Option<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>> {
        *self.verdict.lock().unwrap() = Some(e);
        self.hasher = None;
        self.held = None;
        self.buf = BytesMut::new();
        Poll::Ready(Some(Err(Box::new(Rejected))))
    }
}

impl Stream for Verifier {
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.hasher.is_none() {
            // Finished (or rejected): release what was held, then end.
            return Poll::Ready(this.held.take().map(Ok));
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.hasher = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if this.seen > this.expected_size {
                        let e = DimError::SizeMismatch {
                            registry: this.registry.clone(),
                            repository: this.repository.clone(),
                            digest: this.expected_digest.clone(),
                            expected: this.expected_size,
                            actual: this.seen,
                        };
                        return this.reject(e);
                    }
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    this.counters.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    let out = if this.buf.is_empty() && chunk.len() >= COALESCE {
                        chunk
                    } else {
                        this.buf.extend_from_slice(&chunk);
                        if this.buf.len() < COALESCE {
                            continue;
                        }
                        this.buf.split().freeze()
                    };
                    if let Some(prev) = this.held.replace(out) {
                        return Poll::Ready(Some(Ok(prev)));
                    }
                }
                Poll::Ready(None) => {
                    let actual = format!("sha256:{}", hex::encode(this.hasher.take().unwrap().finalize()));
                    if this.seen != this.expected_size {
                        let e = DimError::SizeMismatch {
                            registry: this.registry.clone(),
                            repository: this.repository.clone(),
                            digest: this.expected_digest.clone(),
                            expected: this.expected_size,
                            actual: this.seen,
                        };
                        return this.reject(e);
                    }
                    if this.expected_digest.starts_with("sha256:") && actual != this.expected_digest {
                        let e = DimError::DigestMismatch {
                            registry: this.registry.clone(),
                            repository: this.repository.clone(),
                            digest: this.expected_digest.clone(),
                            actual,
                        };
                        return this.reject(e);
                    }
                    // Verified: release the held frame, then the gathered tail.
                    let tail = this.buf.split().freeze();
                    let tail = (!tail.is_empty()).then_some(tail);
                    return match this.held.take() {
                        Some(held) => {
                            this.held = tail;
                            Poll::Ready(Some(Ok(held)))
                        }
                        None => Poll::Ready(tail.map(Ok)),
                    };
                }
            }
        }
    }
}

/// What copying one image did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageStats {
    /// Digest of the top manifest (index or image), identical on both registries.
    pub digest: String,
    /// Blob bytes streamed to the destination.
    pub bytes_sent: u64,
    pub blobs_sent: usize,
    /// Blobs the destination already had (HEAD).
    pub blobs_skipped: usize,
    /// Blobs cross-repository mounted within the destination.
    pub blobs_mounted: usize,
    pub manifests_pushed: usize,
    /// The destination already had this manifest under the tag and every artifact of it:
    /// nothing was written.
    pub up_to_date: bool,
    /// Signatures, attestations, SBOMs and referrers copied (`signatures = "copy"`).
    pub artifacts_copied: usize,
    /// Artifacts the destination already had.
    pub artifacts_present: usize,
}

/// Everything an image needs on the destination, read from the source.
pub(crate) struct ImageContent {
    pub top: RawManifest,
    /// Child manifests of an index (empty for a single image), with whether the
    /// destination already holds each.
    pub children: Vec<(RawManifest, bool)>,
    /// Unique blobs of the manifests the destination lacks.
    pub blobs: Vec<Descriptor>,
    /// The tag to set on the destination, if any.
    pub tag: Option<String>,
    /// The destination's current digest under that tag (or the digest).
    pub dst_current: Option<String>,
}

pub(crate) async fn plan_image(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
) -> Result<ImageContent, DimError> {
    let src_at =
        At { registry: src.address(), repository: &copy.source.repository, reference: copy.source.reference() };
    let dst_repo = copy.destination.repository.as_str();
    let top = get_manifest(src, src_at).await?;
    let tag = copy.destination.tag.clone().or_else(|| copy.destination.digest.is_none().then(|| "latest".to_string()));
    let dst_ref = tag.clone().unwrap_or_else(|| top.digest.clone());
    let dst_at = At { registry: dst.address(), repository: dst_repo, reference: &dst_ref };
    let dst_current = head_manifest(dst, dst_at).await?;
    let mut plan = ImageContent { top, children: vec![], blobs: vec![], tag, dst_current };
    if plan.dst_current.as_deref() == Some(plan.top.digest.as_str()) {
        return Ok(plan);
    }
    let mut manifests = vec![];
    if is_index(&plan.top.media_type) {
        // Platforms are independent: fetch them together (an index may list a dozen).
        let children = references(&plan.top, src_at)?;
        let fetched = futures::future::try_join_all(children.iter().map(|child| async move {
            let m = get_manifest(src, src_at.with_ref(&child.digest)).await?;
            let present =
                head_manifest(dst, dst_at.with_ref(&child.digest)).await?.as_deref() == Some(m.digest.as_str());
            Ok::<_, DimError>((m, present))
        }))
        .await?;
        for (m, present) in fetched {
            if !present {
                manifests.push(m.clone());
            }
            plan.children.push((m, present));
        }
    } else {
        manifests.push(plan.top.clone());
    }
    let mut seen = std::collections::HashSet::new();
    for m in &manifests {
        for d in references(m, src_at.with_ref(&m.digest))? {
            if seen.insert(d.digest.clone()) {
                plan.blobs.push(d);
            }
        }
    }
    Ok(plan)
}

/// Pushes child manifests by digest, then the top one under its tag (which stores it by
/// digest too: one request), or by digest when it has no tag.
pub(crate) async fn push_manifests(
    dst: &RegistryClient,
    dst_repo: &str,
    plan: &ImageContent,
) -> Result<usize, DimError> {
    let at = At { registry: dst.address(), repository: dst_repo, reference: &plan.top.digest };
    // Platform manifests are independent of each other: all at once, before the top one.
    let missing: Vec<&RawManifest> = plan.children.iter().filter(|(_, present)| !present).map(|(m, _)| m).collect();
    futures::future::try_join_all(missing.iter().map(|m| put_manifest(dst, at.with_ref(&m.digest), m))).await?;
    let pushed = missing.len();
    let reference = plan.tag.as_deref().unwrap_or(&plan.top.digest);
    if put_manifest(dst, at.with_ref(reference), &plan.top).await? {
        // The destination indexes referrers itself (`OCI-Subject`): no fallback tags.
        dst.facts().set_referrers_api(true);
    }
    Ok(pushed + 1)
}
