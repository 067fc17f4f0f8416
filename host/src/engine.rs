//! One migration, end to end: observe both clusters, compute the whole plan (plugins
//! included), then execute it. The CLI calls this; tests and automation can too.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::observe::{self, ApiType, Catalog, ObserveError};
use crate::plan::{self, ResourcePlan, TransformFailure, Transformed};

use crate::actions::dim;
use crate::spec::{ImageMode, Migration, Spec};
use crate::transform::{object, rules::RuleSettings};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Dvm(crate::actions::dvm::DvmError),
    #[error(transparent)]
    Dim(dim::DimError),
    #[error(transparent)]
    Plugin(crate::plugins::PluginError),
    /// A transform failed: nothing was written.
    #[error("migration {migration:?}: transform failed on {source}; nothing was changed")]
    Transform {
        migration: String,
        #[source]
        source: TransformFailure,
    },
}

/// The plan for every migration in the file.
#[derive(Serialize)]
pub struct Plan {
    pub migrations: Vec<MigrationPlan>,
    /// Registry clients for the copies, built once with the plan and reused by apply
    /// (their connection pools and token caches are what make the copies cheap).
    #[serde(skip)]
    pub registries: Option<(dim::RegistryClient, dim::RegistryClient)>,
}

impl Plan {
    /// Changes `apply` would make: objects to write and images to copy. PVC syncs are
    /// listed but not counted: only rsync can tell whether data changed, and a plan that
    /// never reached 0 would be useless in automation.
    pub fn pending(&self) -> usize {
        self.migrations.iter().map(|m| m.resources.pending() + m.images.iter().filter(|i| !i.present).count()).sum()
    }
}

#[derive(Debug, Serialize)]
pub struct MigrationPlan {
    pub name: String,
    pub source: String,
    pub destination: String,
    pub resources: ResourcePlan,
    /// PVCs whose data DVM copies (empty with `volumes = "skip"`).
    pub volumes: crate::plan::volumes::VolumePlan,
    /// Images DIM copies, with what the destination already has.
    pub images: Vec<ImagePlan>,
    /// The copies themselves, for apply.
    #[serde(skip)]
    pub image_copies: Vec<dim::ImageCopy>,
    /// The destination records this migration's cutover (workloads planned released).
    #[serde(skip)]
    pub cut_over: bool,
}

/// One image to copy, as `mtcd plan` shows it.
#[derive(Debug, Serialize)]
pub struct ImagePlan {
    pub source: String,
    pub destination: String,
    /// The destination already has this manifest under the tag.
    pub present: bool,
    pub bytes_total: u64,
    pub bytes_to_copy: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How workload image references are rewritten when images are copied.
pub struct ImageRewrite {
    pub from_hosts: Vec<String>,
    pub to_host: String,
}

/// Registry clients for both clusters, when a migration copies images.
pub fn registry_clients(
    spec: &Spec,
    src: &Cluster,
    dst: &Cluster,
) -> Result<Option<(dim::RegistryClient, dim::RegistryClient)>, EngineError> {
    if !spec.migrations.iter().any(|m| m.images == ImageMode::Direct) {
        return Ok(None);
    }
    let (Some(s), Some(d)) = (&spec.source.registry, &spec.destination.registry) else {
        return Ok(None); // the spec parser already refused this
    };
    let token = |c: &Cluster| {
        use secrecy::ExposeSecret;
        c.config.auth_info.token.as_ref().map(|t| t.expose_secret().to_string())
    };
    let sc = dim::RegistryClient::new(s, token(src)).map_err(EngineError::Dim)?;
    let dc = dim::RegistryClient::new(d, token(dst)).map_err(EngineError::Dim)?;
    Ok(Some((sc, dc)))
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
        || crd
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.keys().any(|k| k.starts_with("operators.operatorframework.io/")))
        || crd.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|o| !o.is_empty())
}

fn kind_matches(pattern: &str, ty: &ApiType) -> bool {
    match pattern.split_once('.') {
        Some((kind, group)) => kind == ty.resource.kind && group == ty.resource.group,
        None => pattern == ty.resource.kind,
    }
}

fn crd_type() -> kube::discovery::ApiResource {
    observe::api_resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions")
}

fn namespace_type() -> kube::discovery::ApiResource {
    observe::api_resource("", "v1", "Namespace", "namespaces")
}

/// Everything observed on the source for one migration: namespaces, CRDs of custom types
/// in use, and every copyable object.
pub async fn observe_source(
    src: &Cluster,
    catalog: &Catalog,
    m: &Migration,
) -> Result<(Vec<Value>, Vec<String>), EngineError> {
    let mut objects = Vec::new();
    for ns in &m.namespaces {
        let o = observe::get(&src.client, &namespace_type(), None, ns)
            .await
            .map_err(|source| ObserveError::List {
                context: src.context.clone(),
                what: format!("namespace {ns}"),
                source,
            })?
            .ok_or_else(|| ObserveError::MissingNamespace { context: src.context.clone(), namespace: ns.clone() })?;
        objects.push(o);
    }
    let types: Vec<&ApiType> = observe::copyable(catalog)
        .into_iter()
        .filter(|t| m.filter.include_kinds.is_empty() || m.filter.include_kinds.iter().any(|p| kind_matches(p, t)))
        .filter(|t| !m.filter.exclude_kinds.iter().any(|p| kind_matches(p, t)))
        .collect();
    let (listed, mut warnings) =
        observe::list_many(&src.client, &src.context, &types, &m.namespaces, m.filter.label_selector.as_deref())
            .await?;
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
            Ok(Some(_)) => {
                warnings.push(format!("CRD {name} is managed by an operator: install the operator on the destination"))
            }
            Ok(None) => warnings.push(format!(
                "{}: CRD {name} not found; its objects are copied if the destination serves the type",
                src.context
            )),
            Err(e) => warnings.push(format!("{}: cannot read CRD {name}: {e}", src.context)),
        }
    }
    objects.extend(listed);
    Ok((objects, warnings))
}

/// The destination objects a plan compares against: every object of the desired types in
/// the destination namespaces, and anything else this migration stamped (for prunes).
pub async fn observe_destination(
    dst: &Cluster,
    catalog: &Catalog,
    m: &Migration,
    desired: &[Value],
) -> Result<(Vec<Value>, Vec<String>), EngineError> {
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
    rewrite: Option<&ImageRewrite>,
    mut chain: Option<&mut crate::plugins::TransformChain>,
) -> Result<(ResourcePlan, Vec<dim::ImageRef>), EngineError> {
    let ((src_catalog, mut warnings), (dst_catalog, w2)) =
        tokio::try_join!(observe::discover(&src.client, &src.context), observe::discover(&dst.client, &dst.context))?;
    warnings.extend(w2);
    let (source, w) = observe_source(src, &src_catalog, m).await?;
    warnings.extend(w);
    let settings = RuleSettings {
        storage_class_map: m.storage_class_map.clone(),
        access_mode_map: m.access_mode_map.clone(),
        pvc_name_map: m.pvc_name_map.clone(),
    };
    let images = match rewrite {
        Some(r) => dim::discover(&source, &r.from_hosts, m.dim.tag_history),
        None => Vec::new(),
    };
    // Images move to the destination registry: references to them follow, after the user's
    // transforms (which see the source as it is).
    // Plugins may look up other source objects: they see the snapshot, read-only.
    let lookup: Vec<Value> = if chain.is_some() { source.clone() } else { Vec::new() };
    let ctx = crate::plugins::TransformContext {
        source_cluster: src.context.clone(),
        destination_cluster: dst.context.clone(),
        namespace_map: m.namespace_map.clone(),
    };
    let mut transform_and_rewrite = |o: Value| -> Result<Transformed, TransformFailure> {
        let out = match chain.as_deref_mut() {
            None => Transformed::Keep(o, Vec::new()),
            Some(c) => {
                let name = object::display(&o);
                match c.run(o, &ctx, &lookup) {
                    Ok(crate::plugins::TransformOutput::Keep { object, extra }) => Transformed::Keep(object, extra),
                    Ok(crate::plugins::TransformOutput::Skip) => Transformed::Skip,
                    Err(e) => return Err(TransformFailure { object: name, message: e.to_string() }),
                }
            }
        };
        Ok(match (out, rewrite) {
            (Transformed::Keep(mut o, mut extra), Some(r)) => {
                dim::rewrite_object(&mut o, &r.from_hosts, &r.to_host, &m.namespace_map);
                for e in &mut extra {
                    dim::rewrite_object(e, &r.from_hosts, &r.to_host, &m.namespace_map);
                }
                Transformed::Keep(o, extra)
            }
            (other, _) => other,
        })
    };
    let (desired, skipped) = plan::desired(source, m, &settings, released, &mut transform_and_rewrite)
        .map_err(|source| EngineError::Transform { migration: m.name.clone(), source })?;
    let (live, w) = observe_destination(dst, &dst_catalog, m, &desired).await?;
    warnings.extend(w);
    let changes = plan::compare(desired, &live, &m.name, m.prune);
    Ok((ResourcePlan { changes, skipped, warnings }, images))
}

/// The plugin host, with compiled components cached under the user's cache folder.
pub fn plugin_host() -> Result<crate::plugins::PluginHost, crate::plugins::PluginError> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .map(|c| c.join("mtcd").join("components"));
    crate::plugins::PluginHost::new(cache)
}

/// Plans every migration in the file. Workloads are held at 0 on the destination until the
/// migration's cutover is recorded there, or when `cutover` asks for the released form.
pub async fn plan(spec: &Spec, src: &Cluster, dst: &Cluster, cutover: bool) -> Result<Plan, EngineError> {
    let registries = registry_clients(spec, src, dst)?;
    let mut migrations = Vec::new();
    for m in &spec.migrations {
        let span = tracing::info_span!("plan", migration = %m.name);
        let dest_namespaces: Vec<String> = m.namespace_map.values().cloned().collect();
        let cut_over = crate::actions::quiesce::is_cut_over(dst, &dest_namespaces).await;
        let released = cutover || cut_over;
        let rewrite = match (m.images, &spec.source.registry, &spec.destination.registry) {
            (ImageMode::Direct, Some(s), Some(d)) => Some(ImageRewrite {
                from_hosts: dim::internal_hosts(s, &m.dim),
                to_host: d.internal_address.clone().unwrap_or_else(|| d.address.clone()),
            }),
            _ => None,
        };
        // Plugins load (and compile, once) before anything is observed: a broken component
        // fails the plan at once.
        let mut chain = if m.transforms.is_empty() {
            None
        } else {
            let host = plugin_host().map_err(EngineError::Plugin)?;
            Some(host.load_transforms(&m.transforms).map_err(EngineError::Plugin)?)
        };
        let (resources, images) =
            plan_resources(src, dst, m, released, rewrite.as_ref(), chain.as_mut()).instrument(span).await?;
        let pvc_type = observe::api_resource("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims");
        let mut pvcs = Vec::new();
        if m.volumes == crate::spec::VolumeMode::Direct {
            for ns in &m.namespaces {
                pvcs.extend(observe::list(&src.client, &pvc_type, Some(ns), None).await.map_err(|source| {
                    ObserveError::List { context: src.context.clone(), what: format!("PVCs in {ns}"), source }
                })?);
            }
        }
        let mut volumes = crate::plan::volumes::plan_volumes(m, &pvcs);
        // The cutover's sync is the final one: files vanishing then are an error (dvm).
        volumes.final_sync = cutover;
        let (mut image_plans, mut image_copies) = (Vec::new(), Vec::new());
        if let (Some((sc, dc)), Some(s), Some(d)) = (&registries, &spec.source.registry, &spec.destination.registry)
            && m.images == ImageMode::Direct
        {
            image_copies = dim::plan_copies(&images, &s.address, &d.address, &m.namespace_map);
            for (copy, r) in dim::inspect(sc, dc, &image_copies, &m.dim).await {
                let (present, bytes_total, bytes_to_copy, error) = match r {
                    Ok(i) => (i.present, i.bytes_total, i.bytes_to_copy, None),
                    Err(e) => (false, 0, 0, Some(e.to_string())),
                };
                image_plans.push(ImagePlan {
                    source: copy.source.to_string(),
                    destination: copy.destination.to_string(),
                    present,
                    bytes_total,
                    bytes_to_copy,
                    error,
                });
            }
        }
        migrations.push(MigrationPlan {
            name: m.name.clone(),
            source: src.context.clone(),
            destination: dst.context.clone(),
            resources,
            volumes,
            images: image_plans,
            image_copies,
            cut_over,
        });
    }
    Ok(Plan { migrations, registries })
}
