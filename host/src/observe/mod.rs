//! Observing both clusters once: discovery, paged lists of every copyable namespaced type,
//! the CRDs of custom types in use, PVCs, cutover markers and registry facts — the
//! [`Snapshot`] the pure plan is computed from. Actions never observe again (the one
//! exception: discovery after a CRD mtcd created is Established).
//!
//! A list that fails is not an empty list. Any type that could not be read completely is
//! recorded as unread, so the plan neither creates, updates nor prunes from partial
//! knowledge (DESIGN.md, safety rule 1).

mod api;
mod discovery;

use std::collections::BTreeSet;

use futures::StreamExt;
use serde_json::Value;

pub use api::{api_resource, get, list, resource, to_value};
pub use discovery::discover;

use crate::actions::dim;
use crate::cluster::Cluster;
use crate::plan::dependencies;
use crate::snapshot::{ApiType, Catalog, ImageFacts, MigrationSnapshot, Snapshot, Unread};
use crate::spec::{ImageMode, Migration, ResourceMode, Spec, VolumeMode};
use crate::transform::object;

/// Errors reading a cluster, naming what was being read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The list of API groups could not be read: nothing can be planned.
    #[error("{context}: discovery failed: {}", crate::cluster::short_error(source))]
    Discovery {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A read that the plan cannot do without failed (a namespace, the PVCs of a migration
    /// that moves volumes, or the cluster stopped answering).
    #[error("{context}: reading {what} failed: {}", crate::cluster::short_error(source))]
    List {
        context: String,
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A source namespace of the file does not exist.
    #[error("{context}: namespace {namespace:?} does not exist")]
    MissingNamespace { context: String, namespace: String },
}

pub use crate::labels::CUTOVER;

/// API groups whose types every cluster has (or OLM installs): their CRDs are never copied.
fn builtin_group(group: &str) -> bool {
    group.is_empty()
        || !group.contains('.')
        || group.ends_with(".k8s.io")
        || group.ends_with(".openshift.io")
        || matches!(group, "operators.coreos.com" | "monitoring.coreos.com" | "velero.io")
}

/// Groups that hold nothing a migration copies (metrics, events): a failure to discover them
/// is a warning, not an unknown.
fn never_copied_group(group_version: &str) -> bool {
    let group = group_version.rsplit_once('/').map_or("", |(g, _)| g);
    matches!(group, "metrics.k8s.io" | "custom.metrics.k8s.io" | "external.metrics.k8s.io" | "events.k8s.io")
}

/// CRDs an operator installed are the operator's to install on the destination (crane#361).
fn operator_managed(crd: &Value) -> bool {
    object::label(crd, "olm.managed") == Some("true")
        || object::label(crd, "app.kubernetes.io/managed-by").is_some()
        || crd
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.keys().any(|k| k.starts_with("operators.operatorframework.io/")))
        || crd.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| !o.is_empty())
}

fn kind_matches(pattern: &str, ty: &ApiType) -> bool {
    match pattern.split_once('.') {
        Some((kind, group)) => kind == ty.kind && group == ty.group,
        None => pattern == ty.kind,
    }
}

fn crd_type() -> kube::discovery::ApiResource {
    api_resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions")
}

fn namespace_type() -> kube::discovery::ApiResource {
    api_resource("", "v1", "Namespace", "namespaces")
}

fn pvc_type() -> kube::discovery::ApiResource {
    api_resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims")
}

fn list_error(c: &Cluster, what: impl Into<String>) -> impl FnOnce(kube::Error) -> ObserveError {
    let context = c.context.clone();
    move |source| ObserveError::List { context, what: what.into(), source: Box::new(source) }
}

/// Registry clients of both clusters, for migrations that copy images.
pub type Registries = (dim::RegistryClient, dim::RegistryClient);

/// Observes everything the plan of `spec` needs, on both clusters.
pub async fn observe(
    spec: &Spec,
    src: &Cluster,
    dst: &Cluster,
    registries: Option<&Registries>,
) -> Result<Snapshot, ObserveError> {
    let (source_catalog, destination_catalog) =
        futures::try_join!(discover(&src.client, &src.context), discover(&dst.client, &dst.context))?;
    let mut warnings = Vec::new();
    for (c, catalog) in [(src, &source_catalog), (dst, &destination_catalog)] {
        for (gv, reason) in &catalog.unavailable {
            warnings.push(format!("{}: cannot discover {gv}: {reason}", c.context));
        }
    }
    let same_cluster =
        spec.migrations.iter().any(|m| m.resources == ResourceMode::Direct) && same_cluster(src, dst).await;
    let mut migrations = Vec::with_capacity(spec.migrations.len());
    for m in &spec.migrations {
        let span = tracing::info_span!("observe", migration = %m.name);
        let seen = tracing::Instrument::instrument(
            observe_migration(spec, m, src, dst, &source_catalog, &destination_catalog, registries),
            span,
        )
        .await?;
        migrations.push(seen);
    }
    Ok(Snapshot {
        source_context: src.context.clone(),
        destination_context: dst.context.clone(),
        source_catalog,
        destination_catalog,
        migrations,
        warnings,
        same_cluster,
    })
}

/// Whether both contexts reach one cluster (same server URL, or the same `kube-system` UID):
/// a namespace clone, whose cluster-scoped objects are the source's own.
async fn same_cluster(src: &Cluster, dst: &Cluster) -> bool {
    if src.config.cluster_url == dst.config.cluster_url {
        return true;
    }
    let (a, b) = futures::join!(cluster_uid(src), cluster_uid(dst));
    a.is_some() && a == b
}

async fn cluster_uid(c: &Cluster) -> Option<String> {
    let ns = get(&c.client, &namespace_type(), None, "kube-system").await.ok().flatten()?;
    ns.pointer("/metadata/uid").and_then(Value::as_str).filter(|u| !u.is_empty()).map(String::from)
}

async fn observe_migration(
    spec: &Spec,
    m: &Migration,
    src: &Cluster,
    dst: &Cluster,
    source_catalog: &Catalog,
    destination_catalog: &Catalog,
    registries: Option<&Registries>,
) -> Result<MigrationSnapshot, ObserveError> {
    let mut seen = MigrationSnapshot { name: m.name.clone(), ..Default::default() };

    // The source: namespaces (each must exist), every copyable type the filters keep, and
    // the CRDs of the custom types in use.
    for ns in &m.namespaces {
        let o = get(&src.client, &namespace_type(), None, ns)
            .await
            .map_err(list_error(src, format!("namespace {ns}")))?
            .ok_or_else(|| ObserveError::MissingNamespace { context: src.context.clone(), namespace: ns.clone() })?;
        seen.source.push(o);
    }
    let types: Vec<&ApiType> = source_catalog
        .copyable()
        .into_iter()
        .filter(|t| m.filter.include_kinds.is_empty() || m.filter.include_kinds.iter().any(|p| kind_matches(p, t)))
        .filter(|t| !m.filter.exclude_kinds.iter().any(|p| kind_matches(p, t)))
        .collect();
    let (listed, unread) = list_many(src, &types, &m.namespaces, m.filter.label_selector.as_deref()).await?;
    seen.source_unread = unread;
    seen.source_types = types.iter().map(|t| (t.group.clone(), t.kind.clone())).collect();
    // A group the source could not discover may hold types the destination has objects of:
    // all of them are unknown.
    for (gv, reason) in &source_catalog.unavailable {
        if !never_copied_group(gv) {
            let group = gv.rsplit_once('/').map_or("", |(g, _)| g).to_string();
            seen.source_unread.push(Unread {
                group: group.clone(),
                kind: "*".into(),
                resource: format!("*.{group}"),
                namespace: None,
                reason: format!("discovery failed: {reason}"),
            });
        }
    }
    let custom: BTreeSet<(String, String)> = listed
        .iter()
        .map(|o| (object::group(o).to_string(), object::kind(o).to_string()))
        .filter(|(g, _)| !builtin_group(g))
        .collect();
    let mut crd_names = Vec::new();
    for (group, kind) in custom {
        let Some(ty) = source_catalog.find(&group, &kind) else { continue };
        let name = format!("{}.{}", ty.plural, group);
        match get(&src.client, &crd_type(), None, &name).await {
            Ok(Some(crd)) if !operator_managed(&crd) => {
                crd_names.push(name);
                seen.source.push(crd);
            }
            Ok(Some(_)) => seen
                .warnings
                .push(format!("CRD {name} is managed by an operator: install the operator on the destination")),
            Ok(None) => seen.warnings.push(format!(
                "{}: CRD {name} not found; its objects are copied if the destination serves the type",
                src.context
            )),
            Err(e) => seen.warnings.push(format!(
                "{}: cannot read CRD {name}: {}; its objects are copied if the destination serves the type",
                src.context,
                crate::cluster::short_error(&e)
            )),
        }
    }

    // PVCs whatever the kind filters say: DVM copies the data of every claim.
    if m.volumes == VolumeMode::Direct {
        let listed_pvcs = types.iter().any(|t| t.group.is_empty() && t.kind == "PersistentVolumeClaim")
            && m.filter.label_selector.is_none();
        if listed_pvcs {
            seen.pvcs = listed.iter().filter(|o| object::kind(o) == "PersistentVolumeClaim").cloned().collect();
        } else {
            for ns in &m.namespaces {
                let pvcs = list(&src.client, &pvc_type(), Some(ns), None)
                    .await
                    .map_err(list_error(src, format!("PersistentVolumeClaims in {ns}")))?;
                seen.pvcs.extend(pvcs);
            }
        }
    }
    seen.source.extend(listed);

    // The destination: its namespaces (absent is fine), the CRDs the source brings, and
    // every object of every copyable type in the destination namespaces.
    let namespaces: Vec<String> = m.namespace_map.values().cloned().collect();
    let mut marked = 0;
    for ns in &namespaces {
        if let Some(o) =
            get(&dst.client, &namespace_type(), None, ns).await.map_err(list_error(dst, format!("namespace {ns}")))?
        {
            if object::annotation(&o, CUTOVER).is_some() {
                marked += 1;
            }
            seen.destination.push(o);
        }
    }
    seen.cut_over = !namespaces.is_empty() && marked == namespaces.len();
    for name in &crd_names {
        if let Some(o) = get(&dst.client, &crd_type(), None, name)
            .await
            .map_err(list_error(dst, format!("CustomResourceDefinition {name}")))?
        {
            seen.destination.push(o);
        }
    }
    let (live, unread) = list_many(dst, &destination_catalog.copyable(), &namespaces, None).await?;
    seen.destination.extend(live);
    seen.destination_unread = unread;
    for (gv, reason) in &destination_catalog.unavailable {
        if !never_copied_group(gv) {
            let group = gv.rsplit_once('/').map_or("", |(g, _)| g).to_string();
            seen.destination_unread.push(Unread {
                group: group.clone(),
                kind: "*".into(),
                resource: format!("*.{group}"),
                namespace: None,
                reason: format!("discovery failed: {reason}"),
            });
        }
    }

    if m.resources == ResourceMode::Direct {
        observe_cluster(m, src, dst, source_catalog, destination_catalog, &mut seen).await?;
    }

    // Images of the source's internal registry, and what both registries hold of them.
    if let (ImageMode::Direct, Some((sc, dc)), Some(s), Some(d)) =
        (m.images, registries, &spec.source.registry, &spec.destination.registry)
    {
        let found = dim::select(&seen.source, &dim::internal_hosts(s, &m.dim), &m.dim);
        seen.images_skipped = found.iter().filter_map(dim::Found::skipped).collect();
        let images: Vec<dim::ImageRef> = found.into_iter().filter(|f| f.skip.is_none()).map(|f| f.image).collect();
        let copies = dim::plan_copies(&images, &s.address, &d.address, &m.namespace_map);
        seen.images = dim::inspect(sc, dc, &copies, &m.dim)
            .await
            .into_iter()
            .map(|(copy, r)| ImageFacts { copy, inspection: r.map_err(|e| e.to_string()) })
            .collect();
    }
    Ok(seen)
}

/// The cluster-scoped objects the namespaces may depend on (plan::dependencies): every
/// ClusterRoleBinding, ClusterRole and SCC of both sides, and their PersistentVolumes when a
/// migrated claim is bound, for each of these kinds the source serves and the filters keep.
/// A list the API server refuses makes the kind unread cluster-wide (`namespace: None`), so
/// nothing of it is written or pruned, and the plan says so.
async fn observe_cluster(
    m: &Migration,
    src: &Cluster,
    dst: &Cluster,
    source_catalog: &Catalog,
    destination_catalog: &Catalog,
    seen: &mut MigrationSnapshot,
) -> Result<(), ObserveError> {
    let bound_claims = seen.source.iter().chain(&seen.pvcs).any(|o| {
        object::kind(o) == "PersistentVolumeClaim"
            && o.pointer("/spec/volumeName").and_then(Value::as_str).is_some_and(|v| !v.is_empty())
    });
    for (group, kind) in dependencies::CLUSTER_KINDS {
        let Some(ty) = source_catalog.find(group, kind).filter(|t| !t.namespaced) else { continue };
        let kept = (m.filter.include_kinds.is_empty() || m.filter.include_kinds.iter().any(|p| kind_matches(p, ty)))
            && !m.filter.exclude_kinds.iter().any(|p| kind_matches(p, ty));
        if !kept || (*kind == "PersistentVolume" && !bound_claims) {
            continue;
        }
        let unread = |e: &kube::Error, t: &ApiType| Unread {
            group: t.group.clone(),
            kind: t.kind.clone(),
            resource: t.resource_name(),
            namespace: None,
            reason: crate::cluster::short_error(e),
        };
        match list(&src.client, &resource(ty), None, None).await {
            Ok(items) => {
                seen.source_cluster.extend(items);
                seen.cluster_types.push((ty.group.clone(), ty.kind.clone()));
            }
            Err(e) if crate::cluster::is_answer(&e) => seen.source_unread.push(unread(&e, ty)),
            Err(e) => return Err(list_error(src, ty.resource_name())(e)),
        }
        let Some(dty) = destination_catalog.find(group, kind).filter(|t| !t.namespaced) else { continue };
        match list(&dst.client, &resource(dty), None, None).await {
            Ok(items) => seen.destination_cluster.extend(items),
            Err(e) if crate::cluster::is_answer(&e) => seen.destination_unread.push(unread(&e, dty)),
            Err(e) => return Err(list_error(dst, dty.resource_name())(e)),
        }
    }
    Ok(())
}

/// Lists `types` in each of `namespaces`, eight requests at a time. A list the API server
/// refuses or breaks off (403, 404, 5xx, a bad page) makes that type unread in that
/// namespace; a cluster that stops answering is an error.
pub async fn list_many(
    c: &Cluster,
    types: &[&ApiType],
    namespaces: &[String],
    selector: Option<&str>,
) -> Result<(Vec<Value>, Vec<Unread>), ObserveError> {
    let jobs = types.iter().flat_map(|t| namespaces.iter().map(move |ns| (*t, ns.clone())));
    let results: Vec<_> = futures::stream::iter(jobs.map(|(t, ns)| async move {
        let r = list(&c.client, &resource(t), Some(&ns), selector).await;
        (t, ns, r)
    }))
    .buffer_unordered(8)
    .collect()
    .await;
    let mut objects = Vec::new();
    let mut unread = Vec::new();
    for (t, ns, r) in results {
        match r {
            Ok(items) => objects.extend(items),
            Err(e) if crate::cluster::is_answer(&e) => unread.push(Unread {
                group: t.group.clone(),
                kind: t.kind.clone(),
                resource: t.resource_name(),
                namespace: Some(ns),
                reason: crate::cluster::short_error(&e),
            }),
            Err(source) => return Err(list_error(c, format!("{} in {ns}", t.resource_name()))(source)),
        }
    }
    unread.sort_by(|a, b| (&a.group, &a.kind, &a.namespace).cmp(&(&b.group, &b.kind, &b.namespace)));
    Ok((objects, unread))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn configmaps() -> ApiType {
        ApiType {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespaced: true,
            verbs: vec!["list".into()],
        }
    }

    fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message})
    }

    #[tokio::test]
    async fn a_refused_or_failed_list_is_unread_not_empty() {
        let c = crate::testing::fake_cluster(vec![
            (
                "/api/v1/namespaces/a/configmaps",
                200,
                json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [{"metadata": {"name": "x", "namespace": "a"}}]}),
            ),
            (
                "/api/v1/namespaces/b/configmaps",
                403,
                status(403, "Forbidden", "configmaps is forbidden: User \"limited\" cannot list resource \"configmaps\""),
            ),
            ("/api/v1/namespaces/c/configmaps", 503, status(503, "ServiceUnavailable", "try later")),
        ])
        .await;
        let ty = configmaps();
        let (objects, unread) = list_many(&c, &[&ty], &["a".into(), "b".into(), "c".into()], None).await.unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0]["kind"], "ConfigMap");
        let got: Vec<(Option<&str>, bool)> =
            unread.iter().map(|u| (u.namespace.as_deref(), u.reason.contains("forbidden"))).collect();
        assert_eq!(got, [(Some("b"), true), (Some("c"), false)]);
        assert!(unread[1].reason.contains("503"), "{:?}", unread[1]);
    }

    fn cluster_type(group: &str, kind: &str, plural: &str) -> ApiType {
        ApiType {
            group: group.into(),
            version: "v1".into(),
            api_version: format!("{group}/v1"),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: false,
            verbs: vec!["list".into()],
        }
    }

    #[tokio::test]
    async fn a_refused_cluster_wide_list_is_unread_without_a_namespace_and_filters_apply() {
        let roles = json!({"kind": "ClusterRoleList", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {},
            "items": [{"metadata": {"name": "node-reader"}}]});
        let forbidden = status(
            403,
            "Forbidden",
            "clusterrolebindings.rbac.authorization.k8s.io is forbidden: User \"limited\" cannot list resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope",
        );
        let routes = vec![
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", 403, forbidden),
            ("/apis/rbac.authorization.k8s.io/v1/clusterroles", 200, roles),
        ];
        let src = crate::testing::fake_cluster(routes.clone()).await;
        let dst = crate::testing::fake_cluster(routes).await;
        let catalog = Catalog {
            types: vec![
                cluster_type("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings"),
                cluster_type("rbac.authorization.k8s.io", "ClusterRole", "clusterroles"),
                cluster_type("security.openshift.io", "SecurityContextConstraints", "securitycontextconstraints"),
                cluster_type("", "PersistentVolume", "persistentvolumes"),
            ],
            unavailable: vec![],
        };
        let text = "version = 1\n[clusters.source]\ncontext = \"a\"\n[clusters.destination]\ncontext = \"b\"\n[[migration]]\nname = \"m\"\nnamespaces = [\"shop\"]\nexclude_kinds = [\"SecurityContextConstraints\"]\n";
        let m = crate::spec::parse(text, std::path::Path::new("d.toml")).unwrap().migrations.remove(0);
        let mut seen = MigrationSnapshot::default();
        observe_cluster(&m, &src, &dst, &catalog, &catalog, &mut seen).await.unwrap();
        let unread: Vec<(&str, Option<&str>)> =
            seen.source_unread.iter().map(|u| (u.kind.as_str(), u.namespace.as_deref())).collect();
        assert_eq!(unread, [("ClusterRoleBinding", None)]);
        assert!(seen.source_unread[0].reason.contains("forbidden"), "{:?}", seen.source_unread);
        assert_eq!(seen.destination_unread.len(), 1);
        assert_eq!(seen.cluster_types, [("rbac.authorization.k8s.io".to_string(), "ClusterRole".to_string())]);
        assert_eq!(seen.source_cluster.len(), 1);
        assert_eq!(seen.source_cluster[0]["kind"], "ClusterRole");
    }

    #[tokio::test]
    async fn a_cluster_that_does_not_answer_is_an_error_not_unread() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener); // nothing listens there now: connection refused
        let c = Cluster::from_config("dead", kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
        let ty = configmaps();
        let e = list_many(&c, &[&ty], &["a".into()], None).await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("dead: reading configmaps in a failed"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "the root cause, not 'client error': {text}");
    }
}
