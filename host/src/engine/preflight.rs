//! Preflight: every check that could fail a cutover later runs before anything is written —
//! `plan` prints them (and exits 1 on a failure) days before the cutover window, `apply`
//! refuses on the ones a stage sync needs, and `cutover` on all of them before it touches
//! the source (DESIGN.md, safety rule 3).

use std::collections::BTreeSet;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use serde_json::Value;

use super::Engine;
use crate::actions::velero;
use crate::cluster::Cluster;
use crate::observe::{self, api_resource};
use crate::plan::{Action, Check, MigrationPlan, Plan};
use crate::snapshot::{Catalog, Snapshot};
use crate::spec::{EndpointKind, ResourceMode};
use crate::transform::object;

/// One access a command needs: verb on a resource in a namespace (or cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    verb: &'static str,
    group: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = if self.group.is_empty() { self.resource.clone() } else { format!("{}.{}", self.resource, self.group) };
        write!(f, "{} {r}", self.verb)?;
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in {ns}"),
            None => Ok(()),
        }
    }
}

fn access(verb: &'static str, group: &str, resource: &str, namespace: Option<&str>) -> Access {
    Access { verb, group: group.into(), resource: resource.into(), namespace: namespace.map(String::from), name: None }
}

/// The workload types quiesce patches on the source.
const QUIESCED: &[(&str, &str)] = &[
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "replicasets"),
    ("apps.openshift.io", "deploymentconfigs"),
    ("batch", "cronjobs"),
];

impl Engine {
    /// Runs every check for `plan` and records the outcomes in it.
    pub(super) async fn preflight(&self, plan: &mut Plan, snapshot: &Snapshot) {
        for m in &mut plan.migrations {
            let checks = self.checks(m, snapshot).await;
            m.preflight = checks;
        }
    }

    async fn checks(&self, m: &MigrationPlan, snapshot: &Snapshot) -> Vec<Check> {
        let mut out = Vec::new();
        let check = |name: &str, result: Result<String, String>, cutover_only: bool| Check {
            name: name.to_string(),
            ok: result.is_ok(),
            detail: result.unwrap_or_else(|e| e),
            cutover_only,
        };
        // The destination: every write the plan makes, the cutover marker.
        let mut dst_needs = BTreeSet::new();
        for c in m.resources.changes.iter().filter(|c| c.action != Action::Unchanged) {
            let Some(ty) = snapshot.destination_catalog.find(&c.key.group, &c.key.kind) else { continue };
            let ns = c.key.namespace.as_deref().filter(|_| ty.namespaced);
            let verbs: &[&'static str] = match c.action {
                Action::Prune => &["delete"],
                Action::Replace => &["delete", "create", "patch"],
                _ => &["create", "patch"],
            };
            for v in verbs {
                dst_needs.insert(access(v, &ty.group, &ty.plural, ns));
            }
        }
        if m.mode == ResourceMode::Direct {
            out.push(check("destination access", self.allowed(&self.destination, dst_needs).await, false));
        }
        let mut marker = BTreeSet::new();
        for ns in &m.destination_namespaces {
            let mut a = access("patch", "", "namespaces", None);
            a.name = Some(ns.clone());
            marker.insert(a);
        }
        out.push(check("destination cutover marker", self.allowed(&self.destination, marker).await, true));
        // The source: what quiesce patches and waits for.
        let mut src_needs = BTreeSet::new();
        for ns in &m.source_namespaces {
            for (g, r) in QUIESCED {
                if snapshot.source_catalog.types.iter().any(|t| t.group == *g && t.plural == *r) {
                    src_needs.insert(access("patch", g, r, Some(ns)));
                    src_needs.insert(access("list", g, r, Some(ns)));
                }
            }
            src_needs.insert(access("list", "", "pods", Some(ns)));
            src_needs.insert(access("watch", "", "pods", Some(ns)));
        }
        out.push(check("source quiesce access", self.allowed(&self.source, src_needs).await, true));
        out.push(check("destination cutover owner", self.cutover_owner(m, snapshot), false));
        if let Some(v) = &m.velero {
            for (side, c) in [("source", &self.source), ("destination", &self.destination)] {
                let r = async {
                    velero::check_installed(c).await.map_err(|e| e.to_string())?;
                    velero::check_location(c, &v.namespace, &v.storage_location).await.map_err(|e| e.to_string())?;
                    Ok(format!("installed, backupstoragelocation {}/{} usable", v.namespace, v.storage_location))
                };
                out.push(check(&format!("velero on the {side}"), r.await, false));
            }
        }
        if !m.volumes.transfers.is_empty() {
            out.push(check("transfer endpoint", endpoint(m, &snapshot.destination_catalog), false));
            out.push(check("destination storage classes", self.storage_classes(m).await, false));
        }
        let broken: Vec<String> =
            m.images.iter().filter_map(|i| i.error.as_ref().map(|e| format!("{}: {e}", i.source))).collect();
        if !m.images.is_empty() {
            let r = if broken.is_empty() {
                Ok(format!("{} image(s) readable on the source", m.images.len()))
            } else {
                Err(broken.join("; "))
            };
            out.push(check("images", r, false));
        }
        out
    }

    /// Asks the API server, one SelfSubjectAccessReview each, whether every access is
    /// allowed for the context's user.
    async fn allowed(&self, c: &Cluster, needs: BTreeSet<Access>) -> Result<String, String> {
        if needs.is_empty() {
            return Ok("nothing to check".into());
        }
        let reviews: Api<SelfSubjectAccessReview> = Api::all(c.client.clone());
        let n = needs.len();
        let answers = futures::future::join_all(needs.into_iter().map(|a| {
            let reviews = reviews.clone();
            async move {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some(a.verb.into()),
                            group: Some(a.group.clone()),
                            resource: Some(a.resource.clone()),
                            namespace: a.namespace.clone(),
                            name: a.name.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let r = reviews.create(&PostParams::default(), &review).await;
                (a, r.map(|r| r.status.is_some_and(|s| s.allowed)))
            }
        }))
        .await;
        let mut denied = Vec::new();
        for (a, r) in answers {
            match r {
                Ok(true) => {}
                Ok(false) => denied.push(a.to_string()),
                Err(e) => {
                    return Err(format!("{}: cannot review access: {}", c.context, crate::cluster::short_error(&e)));
                }
            }
        }
        if denied.is_empty() {
            Ok(format!("{}: {n} permission(s) granted", c.context))
        } else {
            Err(format!("{}: the user may not {}", c.context, denied.join(", ")))
        }
    }

    /// A destination namespace already cut over by another migration is not this one's.
    fn cutover_owner(&self, m: &MigrationPlan, snapshot: &Snapshot) -> Result<String, String> {
        let seen = snapshot.migration(&m.name).map(|s| s.destination.as_slice()).unwrap_or_default();
        for ns in seen.iter().filter(|o| object::kind(o) == "Namespace") {
            let owner = object::label(ns, crate::labels::MIGRATION);
            if object::annotation(ns, crate::labels::CUTOVER).is_some() && owner.is_some_and(|o| o != m.name) {
                return Err(format!(
                    "namespace {} was cut over by migration {:?}; this migration would take it over",
                    object::name(ns),
                    owner.unwrap_or_default()
                ));
            }
        }
        Ok("no other migration cut over these namespaces".into())
    }

    /// Every storage class the destination PVCs ask for exists there.
    async fn storage_classes(&self, m: &MigrationPlan) -> Result<String, String> {
        let wanted: BTreeSet<String> = m
            .volumes
            .transfers
            .iter()
            .filter_map(|t| t.destination.pointer("/spec/storageClassName").and_then(Value::as_str).map(String::from))
            .collect();
        let ty = api_resource("storage.k8s.io", "v1", "StorageClass", "storageclasses");
        let mut missing = Vec::new();
        for class in &wanted {
            match observe::get(&self.destination.client, &ty, None, class).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push(class.clone()),
                Err(e) => {
                    return Err(format!("cannot read storage class {class}: {}", crate::cluster::short_error(&e)));
                }
            }
        }
        if missing.is_empty() {
            Ok(format!("{} class(es) present", wanted.len()))
        } else {
            Err(format!(
                "storage class(es) {} do not exist on {}; map them with storage_class_map",
                missing.join(", "),
                self.destination.context
            ))
        }
    }
}

/// The endpoint kind DVM exposes its server with is served by the destination.
fn endpoint(m: &MigrationPlan, catalog: &Catalog) -> Result<String, String> {
    match m.volumes.options.endpoint {
        EndpointKind::Route if catalog.find("route.openshift.io", "Route").is_none() => Err(
            "dvm.endpoint = \"route\" but the destination serves no route.openshift.io Routes; use \"ingress\" or \"load-balancer\"".into(),
        ),
        EndpointKind::Ingress if catalog.find("networking.k8s.io", "Ingress").is_none() => {
            Err("dvm.endpoint = \"ingress\" but the destination serves no Ingresses".into())
        }
        EndpointKind::Ingress if m.volumes.options.subdomain.is_none() => {
            Err("dvm.endpoint = \"ingress\" needs dvm.subdomain (the ingress controller's apps domain)".into())
        }
        kind => Ok(format!("{} served", crate::actions::dvm::objects::endpoint_kind_name(kind))),
    }
}
