//! `cleanup`: remove every transfer object mtcd created for the file's migrations, on both
//! clusters, found by label — so it works after mtcd was killed mid-transfer.

use super::{CleanupReport, Engine, EngineError};
use crate::actions::dvm;

impl Engine {
    pub async fn cleanup(&self) -> Result<CleanupReport, EngineError> {
        let mut removed = 0;
        for m in &self.spec.migrations {
            for ns in &m.namespaces {
                removed += dvm::cleanup_namespace(&self.source, ns, &m.name).await?;
            }
            for ns in m.namespace_map.values() {
                removed += dvm::cleanup_namespace(&self.destination, ns, &m.name).await?;
            }
        }
        Ok(CleanupReport { removed })
    }
}
