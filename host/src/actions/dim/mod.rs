//! Direct Image Migration: images of the source's internal registry copied straight into
//! the destination's over the distribution API.
//!
//! The pure parts (finding images, planning copies, rewriting references) take plain
//! values so `mtcd plan` and tests use them without a registry. The copy streams every
//! blob from the source GET into the destination PUT, verifying its sha256 on the way, so
//! memory stays flat whatever the layer size; manifests travel byte for byte, which keeps
//! every digest (index included) identical on both sides.
//!
//! Per-image failures (401/403, missing manifest, corrupt blob, 5xx after retries) are
//! reported for that image only; the other images still copy.

mod artifacts;
mod copy;
pub mod registry;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indexmap::IndexMap;

pub use crate::image::{
    Found, ImageCopy, ImageRef, ReferenceError, SkipReason, SkippedImage, discover, internal_hosts, plan_copies,
    reference, rewrite_object, select,
};
pub use copy::ImageStats;
pub use registry::RegistryClient;

use crate::spec::{DimOptions, SignatureMode};
use copy::{At, BlobOutcome, Counters, ImageContent, RunState};

/// Why an image (or a registry client) failed. Every variant names the registry and
/// repository, and the reference or digest, so the user can find the image.
#[derive(Debug, thiserror::Error)]
pub enum DimError {
    /// The registry settings cannot be used (credentials, CA bundle).
    #[error("registry {registry}: {reason}")]
    Config { registry: String, reason: String },
    /// 401/403: credentials missing, wrong, or without access to the repository.
    #[error(
        "{registry}/{repository}:{reference}: {operation} was denied (HTTP {status}); check the credentials configured for registry {registry} and their access to {repository}"
    )]
    Unauthorized { registry: String, repository: String, reference: String, operation: &'static str, status: u16 },
    #[error("{registry}/{repository}: manifest {reference} not found")]
    ManifestNotFound { registry: String, repository: String, reference: String },
    #[error("{registry}/{repository}: blob {digest} not found (the manifest references it)")]
    BlobNotFound { registry: String, repository: String, digest: String },
    /// Content does not hash to its digest: corruption at the source or on the way.
    /// Nothing was committed on the destination for this blob.
    #[error(
        "{registry}/{repository}: content of {digest} is corrupt: it hashes to {actual}; nothing was committed on the destination"
    )]
    DigestMismatch { registry: String, repository: String, digest: String, actual: String },
    #[error(
        "{registry}/{repository}: blob {digest} has {actual} bytes, the manifest says {expected}; nothing was committed on the destination"
    )]
    SizeMismatch { registry: String, repository: String, digest: String, expected: u64, actual: u64 },
    #[error(
        "{registry}/{repository}:{reference}: unsupported manifest type {media_type:?} (Docker schema 2 and OCI manifests and indexes are supported)"
    )]
    UnsupportedManifest { registry: String, repository: String, reference: String, media_type: String },
    #[error("{registry}/{repository}:{reference}: invalid manifest: {reason}")]
    InvalidManifest { registry: String, repository: String, reference: String, reason: String },
    /// Any other HTTP status (5xx after retries included).
    #[error("{registry}/{repository}:{reference}: {operation} failed with HTTP {status}: {message}")]
    Http {
        registry: String,
        repository: String,
        reference: String,
        operation: &'static str,
        status: u16,
        message: String,
    },
    /// The image was copied, but one of its signatures, attestations, SBOMs or referrers
    /// could not be read or stored (e.g. the destination refuses manifests with a
    /// `subject`): a destination that enforces signatures would reject the image.
    #[error("{registry}/{repository}@{subject}: the image was copied but its {artifact} was not: {source}")]
    Artifact {
        registry: String,
        repository: String,
        /// The digest the artifact belongs to (the image's, or another artifact's).
        subject: String,
        /// What it is: `signature sha256-….sig`, `referrer sha256:… (type)`.
        artifact: String,
        source: Box<DimError>,
    },
    /// Connection-level failure after retries.
    #[error("{registry}/{repository}:{reference}: {operation} failed: {source}")]
    Transport {
        registry: String,
        repository: String,
        reference: String,
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

impl DimError {
    /// Worth another attempt: the network or a registry having a bad moment.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DimError::Transport { .. } => true,
            DimError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Progress of the copy, for the progress renderer. `index` is the position in the
/// `copies` slice given to [`copy_all`]; `image` its destination reference.
#[derive(Debug, Clone, PartialEq)]
pub enum DimEvent {
    Started {
        index: usize,
        image: String,
        blobs_total: usize,
        bytes_total: u64,
    },
    Progress {
        index: usize,
        image: String,
        blobs_done: usize,
        blobs_total: usize,
        /// Bytes of blobs finished (sent, mounted or already there).
        bytes_done: u64,
        bytes_total: u64,
        /// Bytes actually streamed so far.
        bytes_sent: u64,
        /// `bytes_sent` per second since the image started.
        throughput: f64,
    },
    Finished {
        index: usize,
        image: String,
        /// The stats, or the error rendered for display.
        outcome: Result<ImageStats, String>,
        elapsed: Duration,
    },
}

/// The result of one image.
#[derive(Debug)]
pub struct ImageResult {
    pub copy: ImageCopy,
    pub outcome: Result<ImageStats, DimError>,
    pub elapsed: Duration,
}

/// Results in the order of the `copies` given.
#[derive(Debug, Default)]
pub struct DimReport {
    pub images: Vec<ImageResult>,
}

impl DimReport {
    pub fn bytes_sent(&self) -> u64 {
        self.images.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|s| s.bytes_sent).sum()
    }
    pub fn failed(&self) -> impl Iterator<Item = &ImageResult> {
        self.images.iter().filter(|r| r.outcome.is_err())
    }
}

pub use crate::snapshot::Inspection;

/// Reads sizes and presence for every copy, without writing anything.
pub async fn inspect(
    src: &RegistryClient,
    dst: &RegistryClient,
    copies: &[ImageCopy],
    opts: &DimOptions,
) -> Vec<(ImageCopy, Result<Inspection, DimError>)> {
    futures::stream::iter(copies.iter())
        .map(|c| async move { (c.clone(), inspect_one(src, dst, c, opts).await) })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await
}

async fn inspect_one(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    opts: &DimOptions,
) -> Result<Inspection, DimError> {
    let plan = copy::plan_image(src, dst, copy).await?;
    let present = plan.dst_current.as_deref() == Some(plan.top.digest.as_str());
    let mut ins = Inspection {
        digest: plan.top.digest.clone(),
        present,
        blobs_total: plan.blobs.len(),
        bytes_total: plan.blobs.iter().map(|b| b.size).sum(),
        blobs_missing: 0,
        bytes_to_copy: 0,
        artifacts: 0,
        artifacts_missing: 0,
    };
    let at = At { registry: dst.address(), repository: &copy.destination.repository, reference: &plan.top.digest };
    let checks = futures::stream::iter(plan.blobs.iter())
        .map(|b| async move {
            let have =
                copy::blob_exists(dst, &copy.destination.repository, registry::Access::Pull, &b.digest, at).await?;
            Ok::<_, DimError>((b.size, have))
        })
        .buffer_unordered(opts.blob_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for c in checks {
        let (size, have) = c?;
        if !have {
            ins.blobs_missing += 1;
            ins.bytes_to_copy += size;
        }
    }
    if opts.signatures == SignatureMode::Copy {
        let found = find_artifacts(src, dst, copy, &plan).await?;
        ins.artifacts = found.len();
        ins.artifacts_missing = found.iter().filter(|a| !a.present).count();
    }
    Ok(ins)
}

/// How often in-flight images report byte progress.
const TICK: Duration = Duration::from_millis(500);

/// Copies every image, `opts.concurrency` at a time with `opts.blob_concurrency` blobs in
/// flight each. Never fails as a whole: each image has its own outcome in the report.
pub async fn copy_all(
    src: &RegistryClient,
    dst: &RegistryClient,
    copies: &[ImageCopy],
    opts: &DimOptions,
    events: impl Fn(DimEvent) + Send + Sync,
) -> DimReport {
    let state = RunState::default();
    let in_flight: std::sync::Mutex<IndexMap<usize, Live>> = Default::default();
    let events = &events;
    let work = futures::stream::iter(copies.iter().enumerate())
        .map(|(index, copy)| {
            let state = &state;
            let in_flight = &in_flight;
            async move {
                let started = Instant::now();
                let image = copy.destination.to_string();
                let outcome = copy_image(src, dst, copy, opts, state, |blobs_total, bytes_total, counters| {
                    in_flight
                        .lock()
                        .unwrap()
                        .insert(index, Live { image: image.clone(), started, blobs_total, bytes_total, counters });
                    events(DimEvent::Started { index, image: image.clone(), blobs_total, bytes_total });
                })
                .await;
                if let Some(live) = in_flight.lock().unwrap().shift_remove(&index) {
                    events(live.event(index));
                }
                let elapsed = started.elapsed();
                events(DimEvent::Finished {
                    index,
                    image,
                    outcome: outcome.as_ref().map(Clone::clone).map_err(ToString::to_string),
                    elapsed,
                });
                if let Err(e) = &outcome {
                    // Reported by the Finished event and the report: logged, not printed again.
                    tracing::debug!(image = %copy.destination, error = %e, "image copy failed");
                }
                (index, ImageResult { copy: copy.clone(), outcome, elapsed })
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<_>>();
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    let mut results = loop {
        tokio::select! {
            done = &mut work => break done,
            _ = tick.tick() => {
                let snapshot: Vec<DimEvent> =
                    in_flight.lock().unwrap().iter().map(|(i, l)| l.event(*i)).collect();
                snapshot.into_iter().for_each(events);
            }
        }
    };
    results.sort_by_key(|(i, _)| *i);
    DimReport { images: results.into_iter().map(|(_, r)| r).collect() }
}

/// An image in flight, as the ticker sees it.
struct Live {
    image: String,
    started: Instant,
    blobs_total: usize,
    bytes_total: u64,
    counters: Arc<Counters>,
}

impl Live {
    fn event(&self, index: usize) -> DimEvent {
        let sent = self.counters.sent.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        DimEvent::Progress {
            index,
            image: self.image.clone(),
            blobs_done: self.counters.blobs_done.load(Ordering::Relaxed) as usize,
            blobs_total: self.blobs_total,
            bytes_done: self.counters.done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
            bytes_sent: sent,
            throughput: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        }
    }
}

async fn copy_image(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    opts: &DimOptions,
    state: &RunState,
    on_start: impl FnOnce(usize, u64, Arc<Counters>),
) -> Result<ImageStats, DimError> {
    let plan = copy::plan_image(src, dst, copy).await?;
    let counters = Arc::new(Counters::default());
    on_start(plan.blobs.len(), plan.blobs.iter().map(|b| b.size).sum(), counters.clone());
    let mut stats = copy_content(src, dst, copy, &plan, opts, state, &counters).await?;
    if opts.signatures == SignatureMode::Copy {
        copy_artifacts(src, dst, copy, &plan, opts, state, &mut stats).await?;
    }
    stats.up_to_date = stats.up_to_date && stats.artifacts_copied == 0;
    Ok(stats)
}

/// Blobs, then child manifests, then the top manifest and its tag; nothing when the
/// destination already holds the manifest under the tag (`up_to_date`).
async fn copy_content(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    plan: &ImageContent,
    opts: &DimOptions,
    state: &RunState,
    counters: &Arc<Counters>,
) -> Result<ImageStats, DimError> {
    let mut stats = ImageStats { digest: plan.top.digest.clone(), ..Default::default() };
    if plan.dst_current.as_deref() == Some(plan.top.digest.as_str()) {
        stats.up_to_date = true;
        return Ok(stats);
    }
    let src_repo = copy.source.repository.as_str();
    let dst_repo = copy.destination.repository.as_str();
    let mut blobs = futures::stream::iter(plan.blobs.iter())
        .map(|b| async move {
            let r = copy::copy_blob(src, dst, src_repo, dst_repo, b, state, counters).await;
            if r.is_ok() {
                counters.done.fetch_add(b.size, Ordering::Relaxed);
                counters.blobs_done.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
        .buffer_unordered(opts.blob_concurrency.max(1));
    // The first failure ends the image: dropping the stream aborts the other uploads,
    // which the destination then never commits.
    while let Some(outcome) = blobs.next().await {
        match outcome? {
            BlobOutcome::Present => stats.blobs_skipped += 1,
            BlobOutcome::Mounted => stats.blobs_mounted += 1,
            BlobOutcome::Sent(n) => {
                stats.blobs_sent += 1;
                stats.bytes_sent += n;
            }
        }
    }
    drop(blobs);
    stats.manifests_pushed = copy::push_manifests(dst, dst_repo, plan).await?;
    Ok(stats)
}

/// The artifacts of the image's manifests on the source, with what the destination has.
async fn find_artifacts(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    plan: &ImageContent,
) -> Result<Vec<artifacts::Artifact>, DimError> {
    let src_at = At { registry: src.address(), repository: &copy.source.repository, reference: &plan.top.digest };
    let subjects = artifacts::subjects(&plan.top, src_at)?;
    artifacts::survey(src, dst, copy, subjects).await.map_err(|e| DimError::Artifact {
        registry: src.address().to_string(),
        repository: copy.source.repository.clone(),
        subject: plan.top.digest.clone(),
        artifact: "signatures and referrers".into(),
        source: Box::new(e),
    })
}

/// Copies the artifacts the destination lacks (each as an image of its own, digests kept),
/// then lists new referrers for their subjects where the destination needs it.
async fn copy_artifacts(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    plan: &ImageContent,
    opts: &DimOptions,
    state: &RunState,
    stats: &mut ImageStats,
) -> Result<(), DimError> {
    let found = find_artifacts(src, dst, copy, plan).await?;
    // Artifact bytes are not part of the image's progress bar.
    let counters = Arc::new(Counters::default());
    for a in &found {
        let subject = match &a.kind {
            artifacts::ArtifactKind::Referrer { subject, .. } => subject.as_str(),
            artifacts::ArtifactKind::Tag(_) => plan.top.digest.as_str(),
        };
        if a.present {
            stats.artifacts_present += 1;
            continue;
        }
        let ac = artifacts::artifact_copy(copy, a);
        let result = async {
            let content = copy::plan_image(src, dst, &ac).await?;
            copy_content(src, dst, &ac, &content, opts, state, &counters).await
        }
        .await
        .map_err(|e| artifacts::artifact_error(dst, copy, subject, a, e))?;
        stats.artifacts_copied += 1;
        stats.bytes_sent += result.bytes_sent;
        stats.blobs_sent += result.blobs_sent;
        stats.blobs_skipped += result.blobs_skipped;
        stats.blobs_mounted += result.blobs_mounted;
        stats.manifests_pushed += result.manifests_pushed;
    }
    // Referrers by subject, in the order found; listed when one of them was not.
    let mut by_subject: IndexMap<&str, Vec<&artifacts::Artifact>> = IndexMap::new();
    for a in &found {
        if let artifacts::ArtifactKind::Referrer { subject, .. } = &a.kind {
            by_subject.entry(subject.as_str()).or_default().push(a);
        }
    }
    for (subject, referrers) in by_subject {
        if referrers.iter().all(|a| a.present) {
            continue;
        }
        artifacts::list_on_destination(dst, &copy.destination.repository, subject, &referrers).await.map_err(|e| {
            DimError::Artifact {
                registry: dst.address().to_string(),
                repository: copy.destination.repository.clone(),
                subject: subject.to_string(),
                artifact: format!("referrers index {}", artifacts::digest_tag(subject)),
                source: Box::new(e),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_maps_registry_and_namespace() {
        let int = "image-registry.openshift-image-registry.svc:5000";
        let imgs = vec![
            ImageRef::parse(&format!("{int}/shop/web:v1")).unwrap(),
            ImageRef::parse(&format!("{int}/shop/web:v1")).unwrap(),
            ImageRef::parse(&format!("{int}/other/db@sha256:{}", "a".repeat(64))).unwrap(),
        ];
        let map: IndexMap<String, String> = [("shop".into(), "shop-prod".into())].into();
        let copies = plan_copies(&imgs, "registry.src.example", "registry.dst.example:5000", &map);
        assert_eq!(copies.len(), 2, "duplicates dropped");
        assert_eq!(copies[0].source.to_string(), "registry.src.example/shop/web:v1");
        assert_eq!(copies[0].destination.to_string(), "registry.dst.example:5000/shop-prod/web:v1");
        assert_eq!(copies[1].destination.repository, "other/db");
        assert_eq!(copies[1].destination.digest, copies[1].source.digest);
    }

    #[test]
    fn transient_errors_are_5xx_and_transport_only() {
        let http = |status| DimError::Http {
            registry: "r".into(),
            repository: "p".into(),
            reference: "t".into(),
            operation: "GET manifest",
            status,
            message: String::new(),
        };
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        let e = DimError::Unauthorized {
            registry: "reg.example".into(),
            repository: "shop/web".into(),
            reference: "v1".into(),
            operation: "GET manifest",
            status: 401,
        };
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(msg.contains("reg.example") && msg.contains("shop/web") && msg.contains("v1"), "{msg}");
    }
}
