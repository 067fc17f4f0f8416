//! One migration, end to end: observe both clusters, compute the whole plan (plugins
//! included), then execute it. The CLI calls this; tests and automation can too.

use std::collections::BTreeSet;

use serde::Serialize;
use tracing::Instrument;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::observe::{self, ApiType, Catalog, ObserveError};
use crate::plan::{self, ResourcePlan, TransformFailure, Transformed};
use crate::spec::{Migration, Spec};
use crate::transform::{object, rules::RuleSettings};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Dvm(crate::actions::dvm::DvmError),
    /// A transform failed: nothing was written.
    #[error("migration {migration:?}: transform failed on {source}; nothing was changed")]
    Transform {
        migration: String,
        #[source]
        source: TransformFailure,
    },
}

/// The plan for every migration in the file.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub migrations: Vec<MigrationPlan>,
}

impl Plan {
    /// Changes `apply` would make: objects to write, and PVCs to sync (a sync is always
    /// pending: only rsync can tell whether data changed).
    pub fn pending(&self) -> usize {
        self.migrations.iter().map(|m| m.resources.pending() + m.volumes.len()).sum()
    }
}

#[derive(Debug, Serialize)]
pub struct MigrationPlan {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub resources: ResourcePlan,
    /// PVCs whose data DVM copies (empty with `volumes = "skip"`).
    pub volumes: Vec<crate::actions::dvm::VolumeTransfer>,
}

/// API groups whose types every cluster has (or OLM installs): their CRDs are never copied.
fn builtin_group(group: &str) -> bool {
    group.is_empty()
        || !group.contains('.')
        || group.ends_with(".k8s.io")
        || group.ends_with(".openshift.io")
        || matches!(group, "operators.coreos.com" | "monitoring.coreos.com" | "velero.io")
}

/// CRDs an operator installed are the operator's to install on the destination (crane#361).
fn operator_managed(crd: &Value) -> bool {
    object::label(crd, "olm.managed") == Some("true")
        || object::label(crd, "app.kubernetes.io/managed-by").is_some()
        || crd.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(|a| a.keys().any(|k| k.starts_with("operators.operatorframework.io/")))
        || crd.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| !o.is_empty())
}

fn kind_matches(pattern: &str, ty: &ApiType) -> bool {
    match pattern.split_once('.') {
        Some((kind, group)) => kind == ty.resource.kind && group == ty.resource.group,
        None => pattern == ty.resource.kind,
    }
}

fn crd_type() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    }
}

fn namespace_type() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource { group: "".into(), version: "v1".into(), api_version: "v1".into(), kind: "Namespace".into(), plural: "namespaces".into() }
}

/// Everything observed on the source for one migration: namespaces, CRDs of custom types
/// in use, and every copyable object.
pub async fn observe_source(src: &Cluster, catalog: &Catalog, m: &Migration) -> Result<(Vec<Value>, Vec<String>), EngineError> {
    let mut objects = Vec::new();
    for ns in &m.namespaces {
        let o = observe::get(&src.client, &namespace_type(), None, ns)
            .await
            .map_err(|source| ObserveError::List { context: src.context.clone(), what: format!("namespace {ns}"), source })?
            .ok_or_else(|| ObserveError::MissingNamespace { context: src.context.clone(), namespace: ns.clone() })?;
        objects.push(o);
    }
    let types: Vec<&ApiType> = observe::copyable(catalog)
        .into_iter()
        .filter(|t| m.filter.include_kinds.is_empty() || m.filter.include_kinds.iter().any(|p| kind_matches(p, t)))
        .filter(|t| !m.filter.exclude_kinds.iter().any(|p| kind_matches(p, t)))
        .collect();
    let (listed, mut warnings) = observe::list_many(&src.client, &src.context, &types, &m.namespaces, m.filter.label_selector.as_deref()).await?;
    let custom: BTreeSet<(String, String)> = listed
        .iter()
        .map(|o| (object::group(o).to_string(), object::kind(o).to_string()))
        .filter(|(g, _)| !builtin_group(g))
        .collect();
    for (group, kind) in custom {
        let Some(ty) = catalog.find(&group, &kind) else { continue };
        let name = format!("{}.{}", ty.resource.plural, group);
        match observe::get(&src.client, &crd_type(), None, &name).await {
            Ok(Some(crd)) if !operator_managed(&crd) => objects.push(crd),
            Ok(Some(_)) => warnings.push(format!("CRD {name} is managed by an operator: install the operator on the destination")),
            Ok(None) => warnings.push(format!("{}: CRD {name} not found; its objects are copied if the destination serves the type", src.context)),
            Err(e) => warnings.push(format!("{}: cannot read CRD {name}: {e}", src.context)),
        }
    }
    objects.extend(listed);
    Ok((objects, warnings))
}

/// The destination objects a plan compares against: every object of the desired types in
/// the destination namespaces, and anything else this migration stamped (for prunes).
pub async fn observe_destination(dst: &Cluster, catalog: &Catalog, m: &Migration, desired: &[Value]) -> Result<(Vec<Value>, Vec<String>), EngineError> {
    let namespaces: Vec<String> = m.namespace_map.values().cloned().collect();
    let mut live = Vec::new();
    for ns in &namespaces {
        if let Ok(Some(o)) = observe::get(&dst.client, &namespace_type(), None, ns).await {
            live.push(o);
        }
    }
    for crd in desired.iter().filter(|o| object::kind(o) == "CustomResourceDefinition") {
        if let Ok(Some(o)) = observe::get(&dst.client, &crd_type(), None, object::name(crd)).await {
            live.push(o);
        }
    }
    let wanted: BTreeSet<(&str, &str)> = desired.iter().map(|o| (object::group(o), object::kind(o))).collect();
    let copyable = observe::copyable(catalog);
    let (desired_types, other_types): (Vec<&ApiType>, Vec<&ApiType>) =
        copyable.into_iter().partition(|t| wanted.contains(&(t.resource.group.as_str(), t.resource.kind.as_str())));
    let (a, mut warnings) = observe::list_many(&dst.client, &dst.context, &desired_types, &namespaces, None).await?;
    let selector = format!("{}={}", plan::hash::MIGRATION, m.name);
    let (b, w) = observe::list_many(&dst.client, &dst.context, &other_types, &namespaces, Some(&selector)).await?;
    warnings.extend(w);
    live.extend(a);
    live.extend(b);
    Ok((live, warnings))
}

/// Plans one migration's resources. `transform` runs the user's plugins on each object.
pub async fn plan_resources(
    src: &Cluster,
    dst: &Cluster,
    m: &Migration,
    released: bool,
    transform: &mut dyn FnMut(Value) -> Result<Transformed, TransformFailure>,
) -> Result<ResourcePlan, EngineError> {
    let ((src_catalog, mut warnings), (dst_catalog, w2)) = tokio::try_join!(observe::discover(&src.client, &src.context), observe::discover(&dst.client, &dst.context))?;
    warnings.extend(w2);
    let (source, w) = observe_source(src, &src_catalog, m).await?;
    warnings.extend(w);
    let settings = RuleSettings {
        storage_class_map: m.storage_class_map.clone(),
        access_mode_map: m.access_mode_map.clone(),
        pvc_name_map: m.pvc_name_map.clone(),
    };
    let (desired, skipped) = plan::desired(source, m, &settings, released, transform).map_err(|source| EngineError::Transform { migration: m.name.clone(), source })?;
    let (live, w) = observe_destination(dst, &dst_catalog, m, &desired).await?;
    warnings.extend(w);
    let changes = plan::compare(desired, &live, &m.name, m.prune);
    Ok(ResourcePlan { changes, skipped, warnings })
}

/// Identity transform for migrations without plugins.
pub fn no_transform(o: Value) -> Result<Transformed, TransformFailure> {
    Ok(Transformed::Keep(o, Vec::new()))
}

/// Plans every migration in the file. Workloads are held at 0 on the destination until the
/// migration's cutover is recorded there, or when `cutover` asks for the released form.
pub async fn plan(spec: &Spec, src: &Cluster, dst: &Cluster, cutover: bool) -> Result<Plan, EngineError> {
    let mut migrations = Vec::new();
    for m in &spec.migrations {
        let span = tracing::info_span!("plan", migration = %m.name);
        let dest_namespaces: Vec<String> = m.namespace_map.values().cloned().collect();
        let released = cutover || crate::actions::quiesce::is_cut_over(dst, &dest_namespaces).await;
        let resources = plan_resources(src, dst, m, released, &mut no_transform).instrument(span).await?;
        let volumes = crate::actions::dvm::discover(src, m).await.map_err(EngineError::Dvm)?;
        migrations.push(MigrationPlan { name: m.name.clone(), source: src.context.clone(), destination: dst.context.clone(), resources, volumes });
    }
    Ok(Plan { migrations })
}
