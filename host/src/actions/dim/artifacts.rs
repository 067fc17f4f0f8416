//! What hangs off a copied manifest: cosign's tag-scheme artifacts (`sha256-<hex>.sig`,
//! `.att`, `.sbom`) and OCI 1.1 referrers (manifests whose `subject` is the image).
//!
//! Both travel byte for byte, so every digest — the image's, the signature's, the
//! attestation's — is the same on both sides and signatures stay valid.
//!
//! Referrers are read through the referrers API where the source serves it
//! (`GET /v2/<repo>/referrers/<digest>`), else from the tag-schema fallback: an index under
//! the tag `sha256-<hex>`. On the destination, a registry that announces the API
//! (`OCI-Subject` on the manifest PUT, or a referrers listing) indexes them itself; for one
//! that does not (distribution 2.8, the lab's), the `sha256-<hex>` index is written — the
//! source's own bytes when the destination has none and the sets agree, else the
//! destination's index with the missing descriptors appended.
//!
//! The walk is recursive (a signature of an SBOM is an artifact of the SBOM), a few levels
//! deep, each digest once.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use super::copy::{At, OCI_INDEX, RawManifest, fail, get_manifest, header_str, put_manifest, resolve_manifest};
use super::registry::{Access, RegistryClient};
use super::{DimError, ImageCopy, ImageRef};

/// cosign's tag suffixes: signatures, attestations, SBOMs.
pub(crate) const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];
/// Artifacts of artifacts are followed this deep (image → signature of an SBOM of it → …).
const MAX_DEPTH: usize = 4;
/// Tags asked for per page of `tags/list`.
const TAGS_PAGE: usize = 1000;

/// One artifact found on the source.
#[derive(Debug, Clone)]
pub(crate) struct Artifact {
    pub kind: ArtifactKind,
    /// Its manifest's digest on the source (and, once copied, on the destination).
    pub digest: String,
    /// The destination already has it (tag at this digest, or referrer listed).
    pub present: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum ArtifactKind {
    /// cosign's `sha256-<hex>.<suffix>`: copied under the same tag.
    Tag(String),
    /// An OCI 1.1 referrer of `subject`: copied by digest and listed for the subject.
    Referrer {
        subject: String,
        /// Its descriptor as the source listed it (mediaType, size, artifactType, annotations).
        descriptor: Value,
        /// The source's fallback index for the subject, when the listing came from it.
        source_index: Option<RawManifest>,
    },
}

impl Artifact {
    /// For messages: `signature sha256-….sig`, `referrer sha256:… (application/spdx+json)`.
    pub fn describe(&self) -> String {
        match &self.kind {
            ArtifactKind::Tag(t) => {
                let what = match t.rsplit('.').next() {
                    Some("sig") => "signature",
                    Some("att") => "attestation",
                    Some("sbom") => "SBOM",
                    _ => "artifact",
                };
                format!("{what} {t}")
            }
            ArtifactKind::Referrer { descriptor, .. } => match descriptor.get("artifactType").and_then(Value::as_str) {
                Some(t) => format!("referrer {} ({t})", self.digest),
                None => format!("referrer {}", self.digest),
            },
        }
    }
}

/// The tag the tag-schema fallback (and cosign) derive from a digest: `sha256-<hex>`.
pub(crate) fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Every artifact hanging off `subjects` (the image's manifests) in the source repository,
/// with whether the destination repository has it. Reads only.
pub(crate) async fn survey(
    src: &RegistryClient,
    dst: &RegistryClient,
    copy: &ImageCopy,
    subjects: Vec<String>,
) -> Result<Vec<Artifact>, DimError> {
    let src_repo = copy.source.repository.as_str();
    let dst_repo = copy.destination.repository.as_str();
    let tags = source_tags(src, src_repo).await?;
    let mut seen: HashSet<String> = subjects.iter().cloned().collect();
    let mut level: Vec<String> = subjects;
    let mut out = Vec::new();
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for subject in &level {
            let src_at = At { registry: src.address(), repository: src_repo, reference: subject };
            let dst_at = At { registry: dst.address(), repository: dst_repo, reference: subject };
            // cosign's tags.
            let base = digest_tag(subject);
            for suffix in COSIGN_SUFFIXES {
                let tag = format!("{base}.{suffix}");
                let listed = match &tags {
                    Some(t) => t.contains(&tag),
                    None => true, // not listable: ask for the tag itself
                };
                if !listed {
                    continue;
                }
                let Some(digest) = resolve_manifest(src, src_at.with_ref(&tag)).await? else {
                    continue;
                };
                let present = resolve_manifest(dst, dst_at.with_ref(&tag)).await?.as_deref() == Some(digest.as_str());
                if seen.insert(digest.clone()) {
                    next.push(digest.clone());
                }
                out.push(Artifact { kind: ArtifactKind::Tag(tag), digest, present });
            }
            // OCI 1.1 referrers.
            let (listed, source_index) = source_referrers(src, src_at, tags.as_deref()).await?;
            if listed.is_empty() {
                continue;
            }
            let on_dst = destination_referrers(dst, dst_at).await?.0;
            for descriptor in listed {
                let Some(digest) = descriptor.get("digest").and_then(Value::as_str).map(str::to_string) else {
                    continue;
                };
                if !seen.insert(digest.clone()) {
                    continue;
                }
                next.push(digest.clone());
                let present = on_dst.iter().any(|d| d.get("digest").and_then(Value::as_str) == Some(digest.as_str()));
                out.push(Artifact {
                    kind: ArtifactKind::Referrer {
                        subject: subject.clone(),
                        descriptor,
                        source_index: source_index.clone(),
                    },
                    digest,
                    present,
                });
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    Ok(out)
}

/// The copy an artifact needs: same repositories, the artifact's tag or digest.
pub(crate) fn artifact_copy(copy: &ImageCopy, a: &Artifact) -> ImageCopy {
    let tag = match &a.kind {
        ArtifactKind::Tag(t) => Some(t.clone()),
        ArtifactKind::Referrer { .. } => None,
    };
    let at = |r: &ImageRef| ImageRef {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        tag: tag.clone(),
        digest: Some(a.digest.clone()),
    };
    ImageCopy { source: at(&copy.source), destination: at(&copy.destination) }
}

/// Makes the destination list the referrers of `subject` that were just copied (or were
/// there unlisted): nothing when it serves the referrers API, else its `sha256-<hex>` index.
pub(crate) async fn list_on_destination(
    dst: &RegistryClient,
    dst_repo: &str,
    subject: &str,
    referrers: &[&Artifact],
) -> Result<(), DimError> {
    if referrers.is_empty() || dst.facts().referrers_api() == Some(true) {
        return Ok(());
    }
    let at = At { registry: dst.address(), repository: dst_repo, reference: subject };
    let (listed, index) = destination_referrers(dst, at).await?;
    if dst.facts().referrers_api() == Some(true) {
        return Ok(());
    }
    let missing: Vec<&Artifact> = referrers
        .iter()
        .copied()
        .filter(|a| !listed.iter().any(|d| d.get("digest").and_then(Value::as_str) == Some(a.digest.as_str())))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tag = digest_tag(subject);
    let manifest = match index {
        // The destination has no index: the source's own, when it lists exactly these.
        None => {
            let source_index = referrers.iter().find_map(|a| match &a.kind {
                ArtifactKind::Referrer { source_index, .. } => source_index.clone(),
                _ => None,
            });
            match source_index {
                Some(si) if same_set(&index_descriptors(&si), referrers) => si,
                _ => new_index(referrers.iter().map(|a| descriptor_of(a)).collect()),
            }
        }
        Some(existing) => {
            let mut doc: Value = serde_json::from_slice(&existing.bytes)
                .map_err(|e| at.with_ref(&tag).invalid(format!("referrers index is not JSON: {e}")))?;
            match doc.get_mut("manifests").and_then(Value::as_array_mut) {
                Some(list) => list.extend(missing.iter().map(|a| descriptor_of(a))),
                None => doc["manifests"] = Value::Array(missing.iter().map(|a| descriptor_of(a)).collect()),
            }
            to_manifest(&doc)
        }
    };
    put_manifest(dst, at.with_ref(&tag), &manifest).await.map(|_| ())
}

fn descriptor_of(a: &Artifact) -> Value {
    match &a.kind {
        ArtifactKind::Referrer { descriptor, .. } => descriptor.clone(),
        ArtifactKind::Tag(_) => serde_json::json!({"digest": a.digest}),
    }
}

fn same_set(descriptors: &[Value], referrers: &[&Artifact]) -> bool {
    let a: HashSet<&str> = descriptors.iter().filter_map(|d| d.get("digest").and_then(Value::as_str)).collect();
    let b: HashSet<&str> = referrers.iter().map(|r| r.digest.as_str()).collect();
    a == b
}

fn new_index(manifests: Vec<Value>) -> RawManifest {
    to_manifest(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
}

fn to_manifest(doc: &Value) -> RawManifest {
    let bytes = bytes::Bytes::from(serde_json::to_vec(doc).unwrap_or_default());
    RawManifest { digest: super::copy::sha256_digest(&bytes), bytes, media_type: OCI_INDEX.to_string() }
}

fn index_descriptors(m: &RawManifest) -> Vec<Value> {
    serde_json::from_slice::<Value>(&m.bytes)
        .ok()
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// The source repository's `sha256-*` tags, listed once per run; `None` when the registry
/// will not list them (the caller then asks for each tag).
async fn source_tags(src: &RegistryClient, repo: &str) -> Result<Option<Arc<HashSet<String>>>, DimError> {
    let cell = src.facts().tags(repo);
    let tags = cell
        .get_or_try_init(|| async {
            match list_tags(src, repo).await {
                Ok(t) => Ok(Some(Arc::new(t))),
                Err(DimError::Http { status, .. }) if status == 404 || status == 405 || status == 501 => Ok(None),
                Err(DimError::Unauthorized { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    Ok(tags.clone())
}

/// `GET /v2/<repo>/tags/list`, every page, keeping the `sha256-` tags.
async fn list_tags(src: &RegistryClient, repo: &str) -> Result<HashSet<String>, DimError> {
    let at = At { registry: src.address(), repository: repo, reference: "tags/list" };
    let mut url = src.url(&format!("/v2/{repo}/tags/list?n={TAGS_PAGE}"));
    let mut out = HashSet::new();
    for _ in 0..10_000 {
        let resp =
            src.send(&[(repo, Access::Pull)], |c| c.get(&url)).await.map_err(|e| at.transport("GET tags/list", e))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND if out.is_empty() => {
                // NAME_UNKNOWN (no tags at all) or no listing at all: tell them apart.
                let body = resp.text().await.unwrap_or_default();
                if body.contains("NAME_UNKNOWN") {
                    return Ok(out);
                }
                return Err(at.http("GET tags/list", StatusCode::NOT_FOUND, body));
            }
            _ => return Err(fail(at, "GET tags/list", resp).await),
        }
        let next = header_str(&resp, header::LINK.as_str()).and_then(|l| next_link(&l));
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let page: Tags = resp.json().await.map_err(|e| at.transport("GET tags/list", e))?;
        out.extend(page.tags.unwrap_or_default().into_iter().filter(|t| t.starts_with("sha256-")));
        match next {
            Some(n) => match src.resolve(&n) {
                Ok(u) => url = u.to_string(),
                Err(_) => break,
            },
            None => break,
        }
    }
    Ok(out)
}

/// `<…>; rel="next"` of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|p| p.contains("rel=\"next\"") || p.contains("rel=next")).and_then(|p| {
        let start = p.find('<')? + 1;
        let end = p[start..].find('>')? + start;
        Some(p[start..end].to_string())
    })
}

/// The referrers of `at.reference` on the source: the referrers API where served, else the
/// `sha256-<hex>` index (returned too, so the destination can get the same bytes).
async fn source_referrers(
    src: &RegistryClient,
    at: At<'_>,
    tags: Option<&HashSet<String>>,
) -> Result<(Vec<Value>, Option<RawManifest>), DimError> {
    if src.facts().referrers_api() != Some(false) {
        match referrers_api(src, at).await? {
            Some(list) => {
                src.facts().set_referrers_api(true);
                return Ok((list, None));
            }
            None => src.facts().set_referrers_api(false),
        }
    }
    let tag = digest_tag(at.reference);
    if tags.is_some_and(|t| !t.contains(&tag)) {
        return Ok((Vec::new(), None));
    }
    fallback_index(src, at.with_ref(&tag)).await.map(|m| match m {
        Some(m) => (index_descriptors(&m), Some(m)),
        None => (Vec::new(), None),
    })
}

/// What the destination lists for `at.reference`, and its fallback index if that is where
/// the listing came from.
async fn destination_referrers(
    dst: &RegistryClient,
    at: At<'_>,
) -> Result<(Vec<Value>, Option<RawManifest>), DimError> {
    if dst.facts().referrers_api() != Some(false) {
        match referrers_api(dst, at).await? {
            Some(list) => {
                dst.facts().set_referrers_api(true);
                return Ok((list, None));
            }
            // A 404 from a registry known to serve the API (OCI-Subject seen) does not
            // count against it.
            None if dst.facts().referrers_api().is_none() => dst.facts().set_referrers_api(false),
            None => {}
        }
    }
    let tag = digest_tag(at.reference);
    fallback_index(dst, at.with_ref(&tag)).await.map(|m| match m {
        Some(m) => (index_descriptors(&m), Some(m)),
        None => (Vec::new(), None),
    })
}

/// `GET /v2/<repo>/referrers/<digest>`: `Some(descriptors)` when the registry serves the
/// API, `None` when it does not (a registry that does never answers 404 here).
async fn referrers_api(client: &RegistryClient, at: At<'_>) -> Result<Option<Vec<Value>>, DimError> {
    let resp = client
        .get(Method::GET, at.repository, Access::Pull, &format!("referrers/{}", at.reference), Some(OCI_INDEX))
        .await
        .map_err(|e| at.transport("GET referrers", e))?;
    match resp.status() {
        s if s.is_success() => {
            let bytes = resp.bytes().await.map_err(|e| at.transport("GET referrers", e))?;
            let doc: Value = serde_json::from_slice(&bytes)
                .map_err(|e| at.invalid(format!("referrers listing is not JSON: {e}")))?;
            Ok(Some(doc.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default()))
        }
        StatusCode::NOT_FOUND
        | StatusCode::METHOD_NOT_ALLOWED
        | StatusCode::NOT_IMPLEMENTED
        | StatusCode::BAD_REQUEST => Ok(None),
        _ => Err(fail(at, "GET referrers", resp).await),
    }
}

/// The index under a `sha256-<hex>` tag, if any.
async fn fallback_index(client: &RegistryClient, at: At<'_>) -> Result<Option<RawManifest>, DimError> {
    match get_manifest(client, at).await {
        Ok(m) if super::copy::is_index(&m.media_type) => Ok(Some(m)),
        Ok(m) => Err(at.invalid(format!("referrers tag holds a {} instead of an index", m.media_type))),
        Err(DimError::ManifestNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The subjects of an image: its top manifest and, for an index, every child manifest.
pub(crate) fn subjects(top: &RawManifest, at: At<'_>) -> Result<Vec<String>, DimError> {
    let mut out = vec![top.digest.clone()];
    if super::copy::is_index(&top.media_type) {
        out.extend(super::copy::references(top, at)?.into_iter().map(|d| d.digest));
    }
    Ok(out)
}

/// Why artifacts were not put in place.
pub(crate) fn artifact_error(
    dst: &RegistryClient,
    copy: &ImageCopy,
    subject: &str,
    a: &Artifact,
    e: DimError,
) -> DimError {
    DimError::Artifact {
        registry: dst.address().to_string(),
        repository: copy.destination.repository.clone(),
        subject: subject.to_string(),
        artifact: a.describe(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next_page() {
        assert_eq!(
            next_link(r#"</v2/shop/web/tags/list?last=sha256-ab&n=1000>; rel="next""#).as_deref(),
            Some("/v2/shop/web/tags/list?last=sha256-ab&n=1000")
        );
        assert_eq!(next_link(r#"<https://x/a>; rel="prev""#), None);
    }

    #[test]
    fn digest_tags_follow_cosign() {
        assert_eq!(digest_tag("sha256:abcd"), "sha256-abcd");
    }
}
