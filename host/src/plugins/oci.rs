//! oci:// plugins: pulled by manifest digest, verified, kept in a content-addressed cache.

/// Why an oci:// plugin could not be resolved, pulled or pushed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry could not be reached or answered with an error.
    #[error("{reference}: registry {registry}: {reason}")]
    Registry { reference: String, registry: String, reason: String },
}

use std::path::Path;

use super::PluginError;
use super::engine::Shared;
use crate::spec::OciPlugin;

/// A pulled (or cached) component.
pub(crate) struct Fetched {
    pub(crate) wasm: Vec<u8>,
    /// Hex sha256 of the wasm layer.
    pub(crate) layer_hex: String,
    /// Served from the blob cache without contacting the registry.
    pub(crate) cached: bool,
}

pub(crate) fn fetch(
    _shared: &Shared,
    _dir: Option<&Path>,
    o: &OciPlugin,
    _label: &str,
) -> Result<Fetched, PluginError> {
    Err(OciError::Registry {
        reference: o.reference.to_string(),
        registry: o.reference.registry.clone(),
        reason: "not implemented".into(),
    }
    .into())
}

/// Pushes `file` to `reference` (a tag) and returns the pinned reference.
pub fn push(
    _file: &Path,
    reference: &str,
    _registry: &crate::spec::Registry,
    _legacy: bool,
) -> Result<String, PluginError> {
    Err(OciError::Registry { reference: reference.into(), registry: String::new(), reason: "todo".into() }.into())
}

/// The pinned form of `reference`.
pub fn resolve(reference: &str, _registry: &crate::spec::Registry) -> Result<String, PluginError> {
    Err(OciError::Registry { reference: reference.into(), registry: String::new(), reason: "todo".into() }.into())
}

/// Fills the cache.
pub fn pull(reference: &str, _registry: &crate::spec::Registry, _dir: Option<&Path>) -> Result<String, PluginError> {
    Err(OciError::Registry { reference: reference.into(), registry: String::new(), reason: "todo".into() }.into())
}
