//! oci:// plugins: pushed and pulled with `oci-client`, pinned by manifest digest, verified,
//! and kept in a content-addressed cache.
//!
//! A plugin artifact is an OCI image manifest with exactly one layer, the component, of
//! media type `application/wasm` (the CNCF TAG Runtime wasm artifact layout, config
//! `application/vnd.wasm.config.v0+json`) or `application/vnd.wasm.content.layer.v1+wasm`
//! (oci-client's and wasm-to-oci's older layout). The manifest digest in desired.toml is
//! the trust anchor: the manifest pulled must hash to it, and the layer must hash to the
//! digest the manifest names, and be no larger than its descriptor says (checked before
//! the pull) nor than [`MAX_COMPONENT_SIZE`].
//!
//! Cache: `DIR/blobs/sha256/<hex>` (default `$XDG_CACHE_HOME/mtcd/oci`), manifests and
//! layers alike, each written to a temporary file and renamed into place, and opened only
//! through a `cap-std` directory handle, so no name taken from a manifest can reach outside
//! it (names are also checked to be 64 hex digits). A cached blob is re-hashed when read; a
//! plugin whose manifest and layer are cached loads without any network. The compiled
//! component is cached under the same content (the layer's sha256).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use serde_json::{Value, json};

use super::PluginError;
use super::engine::{self, Shared};
use crate::spec::{MAX_COMPONENT_SIZE, OciPlugin, OciReference, Registry, RegistryAuth, RegistryTls};

/// Layer media type of the CNCF TAG Runtime wasm artifact layout.
pub const WASM_LAYER: &str = "application/wasm";
/// Config media type of the CNCF TAG Runtime wasm artifact layout.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// oci-client's and wasm-to-oci's layer media type (`mtcd plugin push --legacy-media-types`).
pub const LEGACY_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// oci-client's config media type.
pub const LEGACY_WASM_CONFIG: &str = "application/vnd.wasm.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A manifest larger than this is not a plugin manifest (one config, one layer).
const MAX_MANIFEST: usize = 64 * 1024;

/// Why an oci:// plugin could not be resolved, pulled or pushed. Every variant names the
/// reference (or registry); none carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Not a usable `oci://REGISTRY/REPOSITORY[:TAG][@sha256:…]` reference.
    #[error("{reference}: {reason}")]
    Reference { reference: String, reason: String },
    /// `mtcd plugin pull` (or a plugin) needs the manifest digest.
    #[error("{reference} is not pinned by digest; run `mtcd plugin resolve {reference}` for the pinned reference")]
    NotPinned { reference: String },
    /// The registry settings cannot be used (a CA bundle that is not PEM, a credentials
    /// variable that is unset, an unreadable docker config).
    #[error("registry {registry}: {reason}")]
    Config { registry: String, reason: String },
    /// The registry could not be reached or answered with an error (including "manifest
    /// unknown" for a digest it does not have).
    #[error("{reference}: {reason}")]
    Registry { reference: String, reason: String },
    /// What the registry sent does not hash to the digest that names it.
    #[error("{reference}: {what} has digest {actual}, expected {expected}; refusing it")]
    DigestMismatch { reference: String, what: &'static str, expected: String, actual: String },
    /// The manifest is not a plugin artifact (an index, an image, several layers, another
    /// media type).
    #[error("{reference} is not an mtcd plugin artifact: {reason}")]
    NotAPlugin { reference: String, reason: String },
    /// The layer is larger than a component may be.
    #[error("{reference}: the wasm layer is {size} bytes, more than the {limit} bytes a component may have")]
    TooLarge { reference: String, size: u64, limit: u64 },
    /// The blob cache directory is unusable.
    #[error("OCI cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A pulled (or cached) component.
pub(crate) struct Fetched {
    pub(crate) wasm: Vec<u8>,
    /// Hex sha256 of the wasm layer.
    pub(crate) layer_hex: String,
    /// Served from the blob cache without contacting the registry.
    pub(crate) cached: bool,
}

/// The one layer a plugin manifest names.
#[derive(Debug, Clone)]
struct Layer {
    digest: String,
    size: u64,
}

/// Checks a manifest is a plugin artifact and returns its layer. Never follows an index.
fn plugin_layer(reference: &str, manifest: &[u8]) -> Result<Layer, OciError> {
    let not = |reason: String| OciError::NotAPlugin { reference: reference.to_string(), reason };
    let m: Value = serde_json::from_slice(manifest).map_err(|e| not(format!("the manifest is not JSON: {e}")))?;
    let media = m.get("mediaType").and_then(Value::as_str).unwrap_or(OCI_MANIFEST);
    if media != OCI_MANIFEST {
        return Err(not(format!("its manifest has media type {media}, expected {OCI_MANIFEST}")));
    }
    let config = m.pointer("/config/mediaType").and_then(Value::as_str).unwrap_or_default();
    if ![WASM_CONFIG, LEGACY_WASM_CONFIG, "application/vnd.oci.empty.v1+json"].contains(&config) {
        return Err(not(format!("config media type {config:?} is not a wasm config ({WASM_CONFIG})")));
    }
    let layers = m.get("layers").and_then(Value::as_array).ok_or_else(|| not("the manifest has no layers".into()))?;
    if layers.len() != 1 {
        return Err(not(format!("the manifest has {} layers; a plugin has exactly one wasm layer", layers.len())));
    }
    let layer = &layers[0];
    let media = layer.get("mediaType").and_then(Value::as_str).unwrap_or_default();
    if media != WASM_LAYER && media != LEGACY_WASM_LAYER {
        return Err(not(format!("its layer has media type {media:?}, expected {WASM_LAYER} or {LEGACY_WASM_LAYER}")));
    }
    let digest = layer.get("digest").and_then(Value::as_str).unwrap_or_default();
    if !crate::spec::oci::is_sha256_digest(digest) {
        return Err(not(format!("its layer digest {digest:?} is not sha256:<64 hex digits>")));
    }
    let size = layer.get("size").and_then(Value::as_u64).ok_or_else(|| not("its layer has no size".into()))?;
    if size > MAX_COMPONENT_SIZE {
        return Err(OciError::TooLarge { reference: reference.to_string(), size, limit: MAX_COMPONENT_SIZE });
    }
    Ok(Layer { digest: digest.to_string(), size })
}

/// The content-addressed blob cache, reached only through a directory handle.
struct BlobStore {
    root: PathBuf,
    dir: Dir,
}

impl BlobStore {
    fn open(root: &Path) -> Result<Self, OciError> {
        let err = |source| OciError::Cache { path: root.to_path_buf(), source };
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(err)?;
        let dir = Dir::open_ambient_dir(&blobs, ambient_authority()).map_err(err)?;
        Ok(BlobStore { root: root.to_path_buf(), dir })
    }

    fn name(digest: &str) -> &str {
        // Callers pass digests already checked by `is_sha256_digest`.
        digest.trim_start_matches("sha256:")
    }

    /// The blob with this digest if cached and intact (a corrupt entry is removed).
    fn get(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>, OciError> {
        debug_assert!(crate::spec::oci::is_sha256_digest(digest));
        let name = Self::name(digest);
        let file = match self.dir.open(name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(OciError::Cache { path: self.root.clone(), source }),
        };
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| OciError::Cache { path: self.root.clone(), source })?;
        if bytes.len() as u64 > limit || engine::sha256_hex(&bytes) != name {
            tracing::warn!(cache = %self.root.display(), %digest, "corrupt OCI cache entry removed");
            let _ = self.dir.remove_file(name);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` (whose sha256 is `digest`) by writing a temporary file and renaming it.
    fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), OciError> {
        let name = Self::name(digest);
        let err = |source| OciError::Cache { path: self.root.clone(), source };
        let tmp = format!(".tmp-{name}-{}-{:08x}", std::process::id(), rand::random::<u32>());
        let mut file = self.dir.create(&tmp).map_err(err)?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(err)?;
        drop(file);
        self.dir.rename(&tmp, &self.dir, name).map_err(|e| {
            let _ = self.dir.remove_file(&tmp);
            err(e)
        })
    }
}

/// The oci-client client and credentials for a registry of the desired state. Built with
/// `Client::try_from`, not `Client::new`, which would silently fall back to defaults on a
/// CA bundle it cannot use.
fn client(registry: &Registry) -> Result<(Client, OciAuth), OciError> {
    crate::tls::init();
    let config_err = |reason: String| OciError::Config { registry: registry.address.clone(), reason };
    let mut config = ClientConfig {
        protocol: ClientProtocol::Https,
        connect_timeout: Some(Duration::from_secs(15)),
        read_timeout: Some(Duration::from_secs(60)),
        user_agent: concat!("mtcd/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    match &registry.tls {
        RegistryTls::Verify => {}
        RegistryTls::Insecure => config.protocol = ClientProtocol::Http,
        RegistryTls::CaBundle(path) => {
            let pem = crate::spec::read_bounded_string(path, crate::spec::files::MAX_CA_BUNDLE, "CA bundle")
                .map_err(|e| config_err(e.to_string()))?;
            let certs = pem_certificates(&pem);
            if certs.is_empty() {
                return Err(config_err(format!("CA bundle {} holds no PEM certificate", path.display())));
            }
            for cert in &certs {
                reqwest::Certificate::from_pem(cert.as_bytes())
                    .map_err(|e| config_err(format!("CA bundle {} is not usable: {e}", path.display())))?;
            }
            config.extra_root_certificates = certs
                .into_iter()
                .map(|c| Certificate { encoding: CertificateEncoding::Pem, data: c.into_bytes() })
                .collect();
        }
    }
    let auth = match &registry.auth {
        RegistryAuth::Anonymous => OciAuth::Anonymous,
        RegistryAuth::BasicEnv { username_env, password_env } => {
            let get = |name: &str| {
                std::env::var(name)
                    .map_err(|_| config_err(format!("environment variable {name} (registry credentials) is not set")))
            };
            OciAuth::Basic(get(username_env)?, get(password_env)?)
        }
        RegistryAuth::DockerConfig(path) => {
            use crate::actions::dim::registry::{Credentials, docker_config_credentials};
            match docker_config_credentials(path, &registry.address).map_err(config_err)? {
                Credentials::Basic { username, password } => OciAuth::Basic(username, password),
                Credentials::Bearer(token) => OciAuth::Bearer(token),
            }
        }
        RegistryAuth::KubeconfigToken => {
            return Err(config_err(
                "the kubeconfig token cannot be used for plugins; use a docker config or environment variables".into(),
            ));
        }
    };
    let client = Client::try_from(config).map_err(|e| config_err(format!("cannot build the client: {e}")))?;
    Ok((client, auth))
}

/// The `-----BEGIN CERTIFICATE-----` blocks of a PEM bundle.
fn pem_certificates(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else { break };
        out.push(format!("{}\n", &rest[start..start + len + END.len()]));
        rest = &rest[start + len + END.len()..];
    }
    out
}

fn oci_reference(r: &OciReference) -> Reference {
    match (&r.tag, &r.digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(r.registry.clone(), r.repository.clone(), t.clone(), d.clone())
        }
        (None, Some(d)) => Reference::with_digest(r.registry.clone(), r.repository.clone(), d.clone()),
        (tag, None) => Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

fn registry_error(reference: &OciReference) -> impl Fn(oci_client::errors::OciDistributionError) -> OciError + '_ {
    move |e| OciError::Registry { reference: reference.to_string(), reason: e.to_string() }
}

/// Pulls the manifest by reference, checks it hashes to the pinned digest (when there is
/// one) and is a plugin artifact. Returns its bytes, digest and layer.
async fn pull_manifest(
    client: &Client,
    auth: &OciAuth,
    reference: &OciReference,
) -> Result<(Vec<u8>, String, Layer), OciError> {
    let text = reference.to_string();
    let (bytes, _) = client
        .pull_manifest_raw(&oci_reference(reference), auth, &[OCI_MANIFEST, "application/vnd.oci.image.index.v1+json"])
        .await
        .map_err(registry_error(reference))?;
    if bytes.len() > MAX_MANIFEST {
        return Err(OciError::NotAPlugin { reference: text, reason: format!("its manifest is {} bytes", bytes.len()) });
    }
    let actual = format!("sha256:{}", engine::sha256_hex(&bytes));
    if let Some(expected) = &reference.digest
        && *expected != actual
    {
        return Err(OciError::DigestMismatch {
            reference: text,
            what: "the manifest",
            expected: expected.clone(),
            actual,
        });
    }
    let layer = plugin_layer(&text, &bytes)?;
    Ok((bytes.to_vec(), actual, layer))
}

/// Collects a blob, refusing more bytes than its descriptor declared.
struct Capped {
    buf: Vec<u8>,
    limit: u64,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if (self.buf.len() + data.len()) as u64 > self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest declares",
                self.limit
            ))));
        }
        self.buf.extend_from_slice(data);
        std::task::Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Pulls the layer a verified manifest names and verifies its size and digest.
async fn pull_layer(client: &Client, reference: &OciReference, layer: &Layer) -> Result<Vec<u8>, OciError> {
    let mut out = Capped { buf: Vec::with_capacity(layer.size as usize), limit: layer.size };
    client
        .pull_blob(&oci_reference(reference), layer.digest.as_str(), &mut out)
        .await
        .map_err(registry_error(reference))?;
    let actual = format!("sha256:{}", engine::sha256_hex(&out.buf));
    if actual != layer.digest || out.buf.len() as u64 != layer.size {
        return Err(OciError::DigestMismatch {
            reference: reference.to_string(),
            what: "the wasm layer",
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(out.buf)
}

/// The component of a pinned oci:// plugin: from the cache when both its manifest and
/// layer are there (no network), else pulled, verified and cached.
pub(crate) fn fetch(shared: &Shared, dir: Option<&Path>, o: &OciPlugin, label: &str) -> Result<Fetched, PluginError> {
    let reference = &o.reference;
    let text = reference.to_string();
    let digest = reference.digest.clone().ok_or_else(|| OciError::NotPinned { reference: text.clone() })?;
    let store = dir.map(BlobStore::open).transpose()?;
    if let Some(store) = &store
        && let Some(manifest) = store.get(&digest, MAX_MANIFEST as u64)?
    {
        let layer = plugin_layer(&text, &manifest)?;
        if let Some(wasm) = store.get(&layer.digest, layer.size)? {
            engine::check_header(label, &wasm)?;
            tracing::debug!(plugin = %text, "oci plugin served from the cache");
            return Ok(Fetched { wasm, layer_hex: BlobStore::name(&layer.digest).to_string(), cached: true });
        }
    }
    let (client, auth) = client(&o.registry)?;
    let (manifest, layer, wasm) = shared.block_on(async {
        let (manifest, _, layer) = pull_manifest(&client, &auth, reference).await?;
        let wasm = pull_layer(&client, reference, &layer).await?;
        Ok::<_, OciError>((manifest, layer, wasm))
    })?;
    engine::check_header(label, &wasm)?;
    if let Some(store) = &store {
        store.put(&digest, &manifest)?;
        store.put(&layer.digest, &wasm)?;
    }
    tracing::info!(plugin = %text, bytes = wasm.len(), "oci plugin pulled");
    Ok(Fetched { wasm, layer_hex: BlobStore::name(&layer.digest).to_string(), cached: false })
}

/// Runs `future` for a CLI command on a runtime of its own (from inside mtcd's runtime, the
/// worker is handed over first).
fn run_blocking<F: std::future::Future + Send>(future: F) -> Result<F::Output, PluginError>
where
    F::Output: Send,
{
    let engine = wasmtime::Engine::default();
    let shared = Shared::new(engine)?;
    Ok(shared.block_on(future))
}

fn parse(reference: &str) -> Result<OciReference, OciError> {
    OciReference::parse(reference).map_err(|reason| OciError::Reference { reference: reference.to_string(), reason })
}

/// What a component exports and imports, and which mtcd world it fits, for the artifact's
/// config (so a registry UI or `crane config` shows what the plugin is).
fn component_description(wasm: &[u8]) -> Result<Value, PluginError> {
    let (engine, _) =
        engine::new_engine(engine::default_cache_dir("components").as_deref()).or_else(|_| engine::new_engine(None))?;
    let component = wasmtime::component::Component::new(&engine, wasm)
        .map_err(|e| PluginError::Compile { plugin: "the component".into(), reason: format!("{e:#}") })?;
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(&engine).map(|(name, _)| name.to_string()).collect();
    let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_string()).collect();
    let has = |i: &str| exports.iter().any(|e| e.starts_with(i));
    let world = match (has("mtcd:plugin/transform@"), has("mtcd:plugin/hooks@")) {
        (true, true) => "mtcd:plugin/rust-sdk@0.1.0",
        (true, false) => "mtcd:plugin/transformer@0.1.0",
        (false, true) => "mtcd:plugin/hook@0.1.0",
        (false, false) => "none",
    };
    Ok(json!({"world": world, "exports": exports, "imports": imports}))
}

/// `mtcd plugin push FILE oci://REGISTRY/REPO:TAG`: pushes the component as a wasm artifact
/// (CNCF media types, or oci-client's with `legacy`) and returns the pinned reference.
pub fn push(file: &Path, reference: &str, registry: &Registry, legacy: bool) -> Result<String, PluginError> {
    let target = parse(reference)?;
    if target.digest.is_some() {
        return Err(OciError::Reference {
            reference: reference.into(),
            reason: "push to a tag (oci://REGISTRY/REPO:TAG); the digest is what push prints".into(),
        }
        .into());
    }
    let target = OciReference { tag: Some(target.tag.clone().unwrap_or_else(|| "latest".into())), ..target };
    let wasm = engine::read_component(&crate::spec::PluginRef::file(file), file)?;
    let layer_digest = format!("sha256:{}", engine::sha256_hex(&wasm));
    let (layer_type, config_type) =
        if legacy { (LEGACY_WASM_LAYER, LEGACY_WASM_CONFIG) } else { (WASM_LAYER, WASM_CONFIG) };
    let description = component_description(&wasm)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": description,
    }))
    .expect("JSON serializes");
    let config_digest = format!("sha256:{}", engine::sha256_hex(&config));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": config_type,
        "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": layer_type,
            "digest": layer_digest,
            "size": wasm.len(),
            "annotations": {"org.opencontainers.image.title": file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()},
        }],
    }))
    .expect("JSON serializes");
    let manifest_digest = format!("sha256:{}", engine::sha256_hex(&manifest));
    let (client, auth) = client(registry)?;
    let image = oci_reference(&target);
    run_blocking(async {
        let err = registry_error(&target);
        client.auth(&image, &auth, oci_client::RegistryOperation::Push).await.map_err(&err)?;
        client.push_blob(&image, wasm.clone(), &layer_digest).await.map_err(&err)?;
        client.push_blob(&image, config.clone(), &config_digest).await.map_err(&err)?;
        let content_type = reqwest::header::HeaderValue::from_static(OCI_MANIFEST);
        client.push_manifest_raw(&image, manifest.clone(), content_type).await.map_err(&err)?;
        Ok::<_, OciError>(())
    })??;
    Ok(target.pinned(&manifest_digest).to_string())
}

/// `mtcd plugin resolve oci://REGISTRY/REPO:TAG`: the pinned reference of what the tag
/// names now, after checking it is a plugin artifact.
pub fn resolve(reference: &str, registry: &Registry) -> Result<String, PluginError> {
    let target = parse(reference)?;
    let (client, auth) = client(registry)?;
    let digest = run_blocking(async { pull_manifest(&client, &auth, &target).await.map(|(_, d, _)| d) })??;
    Ok(target.pinned(&digest).to_string())
}

/// `mtcd plugin pull oci://…@sha256:…`: fills the cache (`dir`, default
/// `$XDG_CACHE_HOME/mtcd/oci`) and says what it did.
pub fn pull(reference: &str, registry: &Registry, dir: Option<&Path>) -> Result<String, PluginError> {
    let target = parse(reference)?;
    if target.digest.is_none() {
        return Err(OciError::NotPinned { reference: reference.into() }.into());
    }
    let dir = dir.map(Path::to_path_buf).or_else(|| engine::default_cache_dir("oci"));
    let plugin = OciPlugin { reference: target.clone(), registry: registry.clone() };
    let shared = Shared::new(wasmtime::Engine::default())?;
    let fetched = fetch(&shared, dir.as_deref(), &plugin, reference)?;
    Ok(format!(
        "{} {target}: {} bytes, layer sha256:{}{}",
        if fetched.cached { "cached" } else { "pulled" },
        fetched.wasm.len(),
        fetched.layer_hex,
        dir.map(|d| format!(", in {}", d.display())).unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn manifest(layers: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": D, "size": 2}, "layers": layers}))
        .unwrap()
    }

    #[test]
    fn only_one_wasm_layer_of_a_known_media_type_is_a_plugin() {
        let ok = manifest(json!([{"mediaType": WASM_LAYER, "digest": D, "size": 100}]));
        assert_eq!(plugin_layer("r", &ok).unwrap().size, 100);
        let legacy = manifest(json!([{"mediaType": LEGACY_WASM_LAYER, "digest": D, "size": 1}]));
        plugin_layer("r", &legacy).unwrap();
        let two = manifest(
            json!([{"mediaType": WASM_LAYER, "digest": D, "size": 1}, {"mediaType": WASM_LAYER, "digest": D, "size": 1}]),
        );
        assert!(plugin_layer("r", &two).unwrap_err().to_string().contains("has 2 layers"));
        let tar = manifest(json!([{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D, "size": 1}]));
        assert!(plugin_layer("r", &tar).unwrap_err().to_string().contains("media type"));
        let big = manifest(json!([{"mediaType": WASM_LAYER, "digest": D, "size": MAX_COMPONENT_SIZE + 1}]));
        assert!(matches!(plugin_layer("r", &big), Err(OciError::TooLarge { .. })));
        let escape = manifest(json!([{"mediaType": WASM_LAYER, "digest": "sha256:../../etc/passwd", "size": 1}]));
        assert!(plugin_layer("r", &escape).unwrap_err().to_string().contains("not sha256"));
        let index = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}),
        )
        .unwrap();
        assert!(plugin_layer("r", &index).unwrap_err().to_string().contains("index"));
    }

    #[test]
    fn the_blob_cache_is_content_addressed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let bytes = b"component bytes";
        let digest = format!("sha256:{}", engine::sha256_hex(bytes));
        assert_eq!(store.get(&digest, 100).unwrap(), None);
        store.put(&digest, bytes).unwrap();
        let file = dir.path().join("blobs/sha256").join(&digest[7..]);
        assert!(file.is_file());
        assert_eq!(store.get(&digest, 100).unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap().count(), 1, "no temp file left");
        std::fs::write(&file, b"tampered").unwrap();
        assert_eq!(store.get(&digest, 100).unwrap(), None, "a corrupt entry is a miss");
        assert!(!file.exists(), "and is removed");
    }

    #[test]
    fn a_ca_bundle_that_is_not_pem_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let reg = Registry {
            address: "registry.example".into(),
            internal_address: None,
            auth: RegistryAuth::Anonymous,
            tls: RegistryTls::CaBundle(ca.clone()),
        };
        let err = client(&reg).err().expect("a bad CA must not fall back to defaults").to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n").unwrap();
        let err = client(&reg).err().expect("a bad CA must not fall back to defaults").to_string();
        assert!(err.contains("not usable") || err.contains("cannot build the client"), "{err}");
    }
}
