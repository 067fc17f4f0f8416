//! Snapshots of both clusters through discovery and paged lists; the only reads the plan
//! needs. Types a user may not list (403) or that vanish (404) are warnings, not failures,
//! as in Crane's export.

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;

/// Errors reading a cluster, naming what was being read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("{context}: discovery failed: {source}")]
    Discovery {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{context}: listing {what} failed: {source}")]
    List {
        context: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{context}: namespace {namespace:?} does not exist")]
    MissingNamespace { context: String, namespace: String },
}

/// Types that are never copied and not worth listing (they are large and generated).
const NEVER_LISTED: &[(&str, &str)] = &[
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("coordination.k8s.io", "Lease"),
    ("", "Binding"),
    ("", "ComponentStatus"),
    ("metrics.k8s.io", "PodMetrics"),
    ("authorization.k8s.io", "LocalSubjectAccessReview"),
];

/// A type by name, for the few built-in types mtcd reads or writes directly (namespaces,
/// CRDs, transfer pods…) without a discovery round trip.
pub fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    ApiResource { group: group.into(), version: version.into(), api_version, kind: kind.into(), plural: plural.into() }
}

/// One served type, at its preferred version.
#[derive(Debug, Clone)]
pub struct ApiType {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ApiType {
    pub fn supports(&self, verbs: &[&str]) -> bool {
        verbs.iter().all(|v| self.verbs.iter().any(|x| x == v))
    }
}

/// Everything a cluster serves.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub types: Vec<ApiType>,
}

impl Catalog {
    pub fn find(&self, group: &str, kind: &str) -> Option<&ApiType> {
        self.types.iter().find(|t| t.resource.group == group && t.resource.kind == kind)
    }
}

/// Discovers every group at its preferred version. A group whose discovery fails is a
/// warning (an aggregated API that is down must not stop a migration of everything else).
pub async fn discover(client: &kube::Client, context: &str) -> Result<(Catalog, Vec<String>), ObserveError> {
    let mut warnings = Vec::new();
    let mut versions = vec![("".to_string(), "v1".to_string())];
    let groups =
        client.list_api_groups().await.map_err(|source| ObserveError::Discovery { context: context.into(), source })?;
    for g in groups.groups {
        let v = g.preferred_version.map(|p| p.version).or_else(|| g.versions.first().map(|v| v.version.clone()));
        if let Some(v) = v {
            versions.push((g.name, v));
        }
    }
    let lists = futures::stream::iter(versions.into_iter().map(|(group, version)| async move {
        let api_version = if group.is_empty() { version.clone() } else { format!("{group}/{version}") };
        let res = if group.is_empty() {
            client.list_core_api_resources(&version).await
        } else {
            client.list_api_group_resources(&api_version).await
        };
        (group, version, api_version, res)
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    let mut types = Vec::new();
    for (group, version, api_version, res) in lists {
        match res {
            Err(e) => warnings.push(format!("{context}: cannot discover {api_version}: {e}")),
            Ok(list) => {
                for r in list.resources {
                    if r.name.contains('/') {
                        continue; // subresources
                    }
                    types.push(ApiType {
                        resource: ApiResource {
                            group: group.clone(),
                            version: version.clone(),
                            api_version: api_version.clone(),
                            kind: r.kind,
                            plural: r.name,
                        },
                        namespaced: r.namespaced,
                        verbs: r.verbs,
                    });
                }
            }
        }
    }
    types.sort_by(|a, b| (&a.resource.group, &a.resource.kind).cmp(&(&b.resource.group, &b.resource.kind)));
    Ok((Catalog { types }, warnings))
}

/// The namespaced types worth copying: listable, creatable, not generated.
pub fn copyable(catalog: &Catalog) -> Vec<&ApiType> {
    catalog
        .types
        .iter()
        .filter(|t| t.namespaced && t.supports(&["list", "get", "create", "patch"]))
        .filter(|t| !NEVER_LISTED.contains(&(t.resource.group.as_str(), t.resource.kind.as_str())))
        .collect()
}

/// Every object of `ty` in `namespace` (paged), as JSON with apiVersion and kind set.
pub async fn list(
    client: &kube::Client,
    ty: &ApiResource,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Value>, kube::Error> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ty),
        None => Api::all_with(client.clone(), ty),
    };
    let mut params = ListParams::default().limit(500);
    if let Some(s) = selector {
        params = params.labels(s);
    }
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await?;
        for item in page.items {
            out.push(to_value(item, ty));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// One object, or `None` if it does not exist.
pub async fn get(
    client: &kube::Client,
    ty: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>, kube::Error> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ty),
        None => Api::all_with(client.clone(), ty),
    };
    Ok(api.get_opt(name).await?.map(|o| to_value(o, ty)))
}

pub fn to_value(obj: DynamicObject, ty: &ApiResource) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), Value::String(ty.api_version.clone()));
        o.insert("kind".into(), Value::String(ty.kind.clone()));
    }
    v
}

/// Lists `types` in each of `namespaces`, eight requests at a time. Forbidden and
/// not-found types become warnings naming the type.
pub async fn list_many(
    client: &kube::Client,
    context: &str,
    types: &[&ApiType],
    namespaces: &[String],
    selector: Option<&str>,
) -> Result<(Vec<Value>, Vec<String>), ObserveError> {
    let jobs = types.iter().flat_map(|t| namespaces.iter().map(move |ns| (*t, ns.clone())));
    let results: Vec<_> = futures::stream::iter(jobs.map(|(t, ns)| async move {
        let r = list(client, &t.resource, Some(&ns), selector).await;
        (t, ns, r)
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    for (t, ns, r) in results {
        match r {
            Ok(items) => objects.extend(items),
            Err(kube::Error::Api(e)) if matches!(e.code, 403..=405) => warnings.push(format!(
                "{context}: cannot list {}.{} in {ns}: {} (skipped)",
                t.resource.plural, t.resource.group, e.message
            )),
            Err(source) => {
                return Err(ObserveError::List {
                    context: context.into(),
                    what: format!("{} in {ns}", t.resource.plural),
                    source,
                });
            }
        }
    }
    Ok((objects, warnings))
}
