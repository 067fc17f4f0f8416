//! Which copies DIM makes: the images of the source's internal registry, moved to the
//! destination registry with namespaces mapped. Pure; the host inspects and copies them.

use indexmap::IndexMap;

use super::ImageRef;
use crate::spec::{DimOptions, Registry};

/// The registry hosts whose images count as internal for a source registry: its reachable
/// address, the address pods use, and the extra hosts of the DIM options.
pub fn internal_hosts(registry: &Registry, opts: &DimOptions) -> Vec<String> {
    let mut hosts = vec![registry.address.clone()];
    hosts.extend(registry.internal_address.clone());
    hosts.extend(opts.internal_hosts.iter().cloned());
    hosts.dedup();
    hosts
}

/// One image to copy: where it is read and where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageCopy {
    pub source: ImageRef,
    pub destination: ImageRef,
}

/// Turns discovered images into copies between the two registries' reachable addresses,
/// mapping namespaces (`src-ns/app` → `dst-ns/app`). Duplicates (same destination and
/// content) are dropped.
pub fn plan_copies(
    images: &[ImageRef],
    src_registry: &str,
    dst_registry: &str,
    namespace_map: &IndexMap<String, String>,
) -> Vec<ImageCopy> {
    let mut out: indexmap::IndexSet<ImageCopy> = indexmap::IndexSet::new();
    for img in images {
        out.insert(ImageCopy {
            source: img.moved(src_registry, img.repository.clone()),
            destination: img.moved(dst_registry, super::reference::map_repository(&img.repository, namespace_map)),
        });
    }
    out.into_iter().collect()
}
