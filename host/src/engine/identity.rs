//! Source and destination are never the same object (DESIGN.md, safety rule 2). Two context
//! names can reach one cluster (different users, `localhost` vs `127.0.0.1`), so the test is
//! the server URL or, more reliably, the UID of `kube-system`, which every cluster creates
//! once. A namespace clone within one cluster (`shop` → `shop-copy`) stays allowed.

use super::{Engine, EngineError};
use crate::cluster::Cluster;
use crate::observe::{self, api_resource};

impl Engine {
    /// Refuses, before any object is read, a file whose source and destination are one
    /// cluster while a namespace maps onto itself.
    pub(super) async fn check_distinct(&self) -> Result<(), EngineError> {
        let same = if self.source.config.cluster_url == self.destination.config.cluster_url {
            Some(format!("both use the API server {}", self.source.config.cluster_url))
        } else {
            match (cluster_uid(&self.source).await, cluster_uid(&self.destination).await) {
                (Some(a), Some(b)) if a == b => Some(format!("both have the same kube-system namespace (uid {a})")),
                _ => None,
            }
        };
        let Some(why) = same else { return Ok(()) };
        for m in &self.spec.migrations {
            if let Some((ns, _)) = m.namespace_map.iter().find(|(s, d)| s == d) {
                return Err(EngineError::SameCluster {
                    source_context: self.source.context.clone(),
                    destination_context: self.destination.context.clone(),
                    why,
                    migration: m.name.clone(),
                    namespace: ns.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The UID of `kube-system`, when the user may read it.
async fn cluster_uid(c: &Cluster) -> Option<String> {
    let ns = observe::get(&c.client, &api_resource("", "v1", "Namespace", "namespaces"), None, "kube-system").await;
    let uid = ns.ok().flatten()?.pointer("/metadata/uid")?.as_str()?.to_string();
    (!uid.is_empty()).then_some(uid)
}
