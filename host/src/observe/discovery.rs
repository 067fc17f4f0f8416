//! What a cluster serves, group by group at its preferred version. A group whose discovery
//! fails (an aggregated API whose backend is down answers 503) is recorded as unavailable
//! after one short attempt: it must neither stop a migration of everything else nor stall it.

use std::time::Duration;

use futures::StreamExt;

use super::ObserveError;
use crate::snapshot::{ApiType, Catalog};

/// How long one group's discovery may take before the group counts as unavailable.
const GROUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Discovers every group at its preferred version.
pub async fn discover(client: &kube::Client, context: &str) -> Result<Catalog, ObserveError> {
    let mut versions = vec![(String::new(), "v1".to_string())];
    let groups = client
        .list_api_groups()
        .await
        .map_err(|source| ObserveError::Discovery { context: context.into(), source: Box::new(source) })?;
    for g in groups.groups {
        let v = g.preferred_version.map(|p| p.version).or_else(|| g.versions.first().map(|v| v.version.clone()));
        if let Some(v) = v {
            versions.push((g.name, v));
        }
    }
    let lists = futures::stream::iter(versions.into_iter().map(|(group, version)| async move {
        let api_version = if group.is_empty() { version.clone() } else { format!("{group}/{version}") };
        let call = async {
            if group.is_empty() {
                client.list_core_api_resources(&version).await
            } else {
                client.list_api_group_resources(&api_version).await
            }
        };
        let res = match tokio::time::timeout(GROUP_TIMEOUT, call).await {
            Ok(r) => r.map_err(|e| crate::cluster::short_error(&e)),
            Err(_) => Err(format!("no answer within {}s", GROUP_TIMEOUT.as_secs())),
        };
        (group, version, api_version, res)
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let mut catalog = Catalog::default();
    for (group, version, api_version, res) in lists {
        match res {
            Err(reason) => catalog.unavailable.push((api_version, reason)),
            Ok(list) => {
                for r in list.resources {
                    if r.name.contains('/') {
                        continue; // subresources
                    }
                    catalog.types.push(ApiType {
                        group: group.clone(),
                        version: version.clone(),
                        api_version: api_version.clone(),
                        kind: r.kind,
                        plural: r.name,
                        namespaced: r.namespaced,
                        verbs: r.verbs,
                    });
                }
            }
        }
    }
    catalog.types.sort_by(|a, b| (&a.group, &a.kind).cmp(&(&b.group, &b.kind)));
    catalog.unavailable.sort();
    Ok(catalog)
}
