//! `mtcd-lab seed`: create objects from multi-document YAML through the API (kube-rs dynamic
//! API with discovery, like any client), fill bound PVC directories with files (`VolumeData`),
//! and push generated images to a cluster's registry (`Image`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::lab::{LabError, LabInfo, client_for};

/// Errors of `seed`, each naming the document or object it is about.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The lab directory could not be read.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A YAML document could not be parsed.
    #[error("document {index}: {message}")]
    Document { index: usize, message: String },
    /// The apiVersion/kind is not served by the cluster.
    #[error("{kind} {name}: apiVersion {api_version} kind {kind} is not served by context {context}")]
    UnknownKind { api_version: String, kind: String, name: String, context: String },
    /// The API rejected an object.
    #[error("creating {kind}/{namespace}/{name} in {context}: {source}")]
    Create {
        kind: String,
        namespace: String,
        name: String,
        context: String,
        #[source]
        source: kube::Error,
    },
    /// Discovery failed.
    #[error("discovering the API of {context}: {source}")]
    Discovery {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A VolumeData claim did not become Bound.
    #[error("VolumeData {namespace}/{claim}: {message}")]
    Volume { namespace: String, claim: String, message: String },
    /// Writing a VolumeData file failed.
    #[error("VolumeData {namespace}/{claim}: writing {path}: {source}")]
    File {
        namespace: String,
        claim: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Pushing an Image failed.
    #[error("Image {repository}:{tag} to registry {registry}: {message}")]
    Push { repository: String, tag: String, registry: String, message: String },
}

/// One file of a `VolumeData` document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub symlink: Option<String>,
    #[serde(default)]
    pub hardlink_to: Option<String>,
    #[serde(default)]
    pub directory: bool,
    /// Octal string ("0640") or number.
    #[serde(default)]
    pub mode: Option<Value>,
    /// Unix seconds.
    #[serde(default)]
    pub mtime: Option<i64>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct VolumeData {
    namespace: String,
    claim: String,
    files: Vec<FileSpec>,
}

#[derive(Debug, Deserialize)]
pub struct LayerSpec {
    pub size: u64,
    pub seed: u64,
}

#[derive(Debug, Deserialize)]
pub struct ImageSpec {
    pub repository: String,
    #[serde(default = "latest")]
    pub tag: String,
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
}

fn latest() -> String {
    "latest".into()
}

/// Deterministic bytes for `size` + `seed` (splitmix64), so tests can recompute expected data.
pub fn generated_bytes(seed: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    let mut state = seed;
    while (out.len() as u64) < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let take = ((size - out.len() as u64) as usize).min(8);
        out.extend_from_slice(&z.to_le_bytes()[..take]);
    }
    out
}

/// What a seed run did.
#[derive(Debug, Default, Clone)]
pub struct SeedReport {
    pub created: Vec<String>,
    pub files_written: usize,
    /// `repository:tag@digest` per pushed image.
    pub images: Vec<String>,
}

/// Seeds `yaml` into the cluster of `context` (e.g. `lab-src`).
pub async fn seed(dir: &Path, context: &str, yaml: &str) -> Result<SeedReport, SeedError> {
    let info = LabInfo::read(dir)?;
    let client = client_for(&info.kubeconfig, context).await?;
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(de).map_err(|e| SeedError::Document { index, message: e.to_string() })?;
        if !v.is_null() {
            docs.push((index, v));
        }
    }
    let rank = |v: &Value| match (v["apiVersion"].as_str(), v["kind"].as_str()) {
        (Some("lab.mtcd.io/v1"), _) => 4,
        (_, Some("Namespace")) => 0,
        (_, Some("CustomResourceDefinition")) => 1,
        (_, Some("PersistentVolume" | "StorageClass")) => 2,
        _ => 3,
    };
    docs.sort_by_key(|(i, v)| (rank(v), *i));
    let mut report = SeedReport::default();
    let mut discovery: Option<Discovery> = None;
    for (index, doc) in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if api_version == "lab.mtcd.io/v1" {
            match kind.as_str() {
                "VolumeData" => {
                    let vd: VolumeData = serde_json::from_value(doc)
                        .map_err(|e| SeedError::Document { index, message: format!("VolumeData: {e}") })?;
                    report.files_written += fill_volume(&client, &vd).await?;
                }
                "Image" => {
                    let img: ImageSpec = serde_json::from_value(doc)
                        .map_err(|e| SeedError::Document { index, message: format!("Image: {e}") })?;
                    let cluster = info.cluster(context).ok_or_else(|| SeedError::Document {
                        index,
                        message: format!("no cluster for context {context} in lab.json"),
                    })?;
                    let registry = cluster.registry.clone().ok_or_else(|| SeedError::Push {
                        repository: img.repository.clone(),
                        tag: img.tag.clone(),
                        registry: "(none)".into(),
                        message: format!(
                            "cluster {context} has no registry in lab.json (this build runs without the node feature)"
                        ),
                    })?;
                    let digest = push_image(&registry, &img).await?;
                    report.images.push(format!("{}:{}@{digest}", img.repository, img.tag));
                }
                other => {
                    return Err(SeedError::Document {
                        index,
                        message: format!("unknown lab.mtcd.io/v1 kind {other:?} (VolumeData or Image)"),
                    });
                }
            }
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &kind);
        if discovery.as_ref().is_none_or(|d| d.resolve_gvk(&gvk).is_none()) {
            discovery = Some(
                Discovery::new(client.clone())
                    .run()
                    .await
                    .map_err(|source| SeedError::Discovery { context: context.into(), source })?,
            );
        }
        let (ar, caps) =
            discovery.as_ref().and_then(|d| d.resolve_gvk(&gvk)).ok_or_else(|| SeedError::UnknownKind {
                api_version: api_version.clone(),
                kind: kind.clone(),
                name: name.clone(),
                context: context.into(),
            })?;
        let obj: DynamicObject =
            serde_json::from_value(doc).map_err(|e| SeedError::Document { index, message: e.to_string() })?;
        let namespace = obj.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), &namespace, &ar),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        match api.create(&PostParams { field_manager: Some("mtcd-lab-seed".into()), ..Default::default() }, &obj).await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 && kind == "Namespace" => {}
            Err(source) => {
                return Err(SeedError::Create {
                    kind,
                    namespace: if caps.scope == Scope::Namespaced { namespace } else { String::new() },
                    name,
                    context: context.into(),
                    source,
                });
            }
        }
        report.created.push(if caps.scope == Scope::Namespaced {
            format!("{kind}/{namespace}/{name}")
        } else {
            format!("{kind}/{name}")
        });
    }
    Ok(report)
}

/// Waits until the claim is Bound and returns the directory of its volume.
async fn volume_dir(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, SeedError> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let verr = |message: String| SeedError::Volume { namespace: ns.into(), claim: claim.into(), message };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let volume = loop {
        let pvc = pvcs.get_opt(claim).await.map_err(|e| verr(e.to_string()))?;
        if let Some(pvc) = &pvc
            && pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone())
        {
            break v;
        }
        if Instant::now() > deadline {
            return Err(verr(match pvc {
                None => "the claim does not exist".into(),
                Some(_) => "the claim was not Bound within 60s (is its storage class provisioned by the lab?)".into(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&volume).await.map_err(|e| verr(format!("reading PersistentVolume {volume}: {e}")))?;
    let spec = pv.spec.unwrap_or_default();
    let path =
        spec.host_path.map(|h| h.path).or_else(|| spec.local.map(|l| l.path)).ok_or_else(|| {
            verr(format!("PersistentVolume {volume} has neither spec.hostPath.path nor spec.local.path"))
        })?;
    Ok(PathBuf::from(path))
}

fn parse_mode(v: &Value) -> Option<u32> {
    match v {
        Value::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        _ => None,
    }
}

/// Writes one file spec below `root`.
pub fn write_file(root: &Path, f: &FileSpec) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let rel = f.path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "path may not contain '..'"));
    }
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if f.directory {
        std::fs::create_dir_all(&path)?;
    } else if let Some(target) = &f.symlink {
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path)?;
    } else if let Some(target) = &f.hardlink_to {
        let _ = std::fs::remove_file(&path);
        std::fs::hard_link(root.join(target.trim_start_matches('/')), &path)?;
    } else {
        let data = match (&f.content, f.size) {
            (Some(c), _) => c.clone().into_bytes(),
            (None, Some(size)) => generated_bytes(f.seed.unwrap_or(0), size),
            (None, None) => Vec::new(),
        };
        std::fs::write(&path, data)?;
    }
    if f.symlink.is_none()
        && let Some(mode) = f.mode.as_ref().and_then(parse_mode)
    {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    if f.uid.is_some() || f.gid.is_some() {
        std::os::unix::fs::lchown(&path, f.uid, f.gid)?;
    }
    if let Some(mtime) = f.mtime {
        use nix::sys::stat::{UtimensatFlags, utimensat};
        use nix::sys::time::TimeSpec;
        let ts = TimeSpec::new(mtime, 0);
        utimensat(nix::fcntl::AT_FDCWD, &path, &ts, &ts, UtimensatFlags::NoFollowSymlink)
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

async fn fill_volume(client: &kube::Client, vd: &VolumeData) -> Result<usize, SeedError> {
    let root = volume_dir(client, &vd.namespace, &vd.claim).await?;
    // mtimes of directories change as files are added: set file mtimes after all writes.
    let (with_mtime, rest): (Vec<&FileSpec>, Vec<&FileSpec>) =
        vd.files.iter().partition(|f| f.mtime.is_some() && f.directory);
    for f in rest.into_iter().chain(with_mtime) {
        write_file(&root, f).map_err(|source| SeedError::File {
            namespace: vd.namespace.clone(),
            claim: vd.claim.clone(),
            path: root.join(&f.path),
            source,
        })?;
    }
    Ok(vd.files.len())
}

fn tar_single(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], off: usize, s: &[u8]| h[off..off + s.len()].copy_from_slice(s);
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes());
    put(&mut h, 136, b"00000000000\0");
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pushes a generated image (uncompressed tar layers) over the OCI distribution API; returns
/// the manifest digest.
pub async fn push_image(registry: &str, img: &ImageSpec) -> Result<String, SeedError> {
    crate::pki::init_crypto();
    let perr = |message: String| SeedError::Push {
        repository: img.repository.clone(),
        tag: img.tag.clone(),
        registry: registry.into(),
        message,
    };
    let http = reqwest::Client::builder().build().map_err(|e| perr(e.to_string()))?;
    let base = format!("http://{registry}");
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let tar = tar_single(&format!("layer{i}/data.bin"), &generated_bytes(l.seed, l.size));
        diff_ids.push(sha(&tar));
        layers.push(tar);
    }
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .expect("config");
    let push_blob = |data: Vec<u8>| {
        let http = http.clone();
        let base = base.clone();
        let repo = img.repository.clone();
        async move {
            let digest = sha(&data);
            let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.map_err(|e| e.to_string())?;
            if r.status().as_u16() != 202 {
                return Err(format!("starting upload: HTTP {}", r.status()));
            }
            let loc =
                r.headers().get("location").and_then(|l| l.to_str().ok()).ok_or("upload without Location")?.to_string();
            let loc = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
            let sep = if loc.contains('?') { '&' } else { '?' };
            let r = http
                .put(format!("{loc}{sep}digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(data.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status().as_u16() != 201 {
                return Err(format!("uploading blob {digest}: HTTP {}", r.status()));
            }
            Ok::<_, String>((digest, data.len()))
        }
    };
    let (cfg_digest, cfg_size) = push_blob(config).await.map_err(perr)?;
    let mut layer_desc = Vec::new();
    for l in layers {
        let (d, s) = push_blob(l).await.map_err(perr)?;
        layer_desc.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}));
    }
    let manifest =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_size},
        "layers": layer_desc}))
        .expect("manifest");
    let digest = sha(&manifest);
    let r = http
        .put(format!("{base}/v2/{}/manifests/{}", img.repository, img.tag))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .map_err(|e| perr(e.to_string()))?;
    if r.status().as_u16() != 201 {
        return Err(perr(format!("putting manifest: HTTP {}", r.status())));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_bytes_are_deterministic() {
        assert_eq!(generated_bytes(7, 100), generated_bytes(7, 100));
        assert_ne!(generated_bytes(7, 100), generated_bytes(8, 100));
        assert_eq!(generated_bytes(1, 13).len(), 13);
    }

    #[test]
    fn tar_layout() {
        let t = tar_single("a/b", b"hello");
        assert_eq!(t.len(), 512 * 4);
        assert_eq!(&t[512..517], b"hello");
    }
}
