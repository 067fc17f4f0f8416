//! `status`: where each migration stands, from what the clusters hold now — destination
//! stamps, cutover markers, the source's quiesce annotations. It loads no plugin and calls no
//! registry, so it works when a plugin file is gone or a registry is down.

use serde_json::Value;

use super::{Engine, EngineError, MigrationStatus, StatusReport};
use crate::observe::{self, api_resource};
use crate::plan::hash;
use crate::transform::hold::{ORIGINAL_REPLICAS, ORIGINAL_SUSPEND};
use crate::transform::object;

impl Engine {
    pub async fn status(&self) -> Result<StatusReport, EngineError> {
        let catalog = observe::discover(&self.destination.client, &self.destination.context).await?;
        let mut report = StatusReport::default();
        for m in &self.spec.migrations {
            let mut st = MigrationStatus {
                migration: m.name.clone(),
                source: self.source.context.clone(),
                destination: self.destination.context.clone(),
                ..Default::default()
            };
            let namespaces: Vec<String> = m.namespace_map.values().cloned().collect();
            let selector = format!("{}={}", hash::MIGRATION, m.name);
            let (stamped, _) =
                observe::list_many(&self.destination, &catalog.copyable(), &namespaces, Some(&selector)).await?;
            let managed: Vec<&Value> =
                stamped.iter().filter(|o| object::annotation(o, hash::SOURCE_HASH).is_some()).collect();
            st.managed_objects = managed.len();
            st.volumes = managed.iter().filter(|o| object::kind(o) == "PersistentVolumeClaim").count();
            let ns_type = api_resource("", "v1", "Namespace", "namespaces");
            let mut marks = Vec::new();
            for ns in &namespaces {
                let o = observe::get(&self.destination.client, &ns_type, None, ns).await.map_err(|source| {
                    observe::ObserveError::List {
                        context: self.destination.context.clone(),
                        what: format!("namespace {ns}"),
                        source: Box::new(source),
                    }
                })?;
                marks.push(o.as_ref().and_then(|o| object::annotation(o, observe::CUTOVER)).map(String::from));
            }
            st.cutover = !marks.is_empty() && marks.iter().all(Option::is_some);
            st.cutover_at = if st.cutover { marks.into_iter().flatten().min() } else { None };
            let (quiesced, running) = self.source_workloads(&m.namespaces).await?;
            st.source_state = match (quiesced.is_empty(), running.is_empty()) {
                (true, _) => "running",
                (false, true) => "quiesced",
                (false, false) => "partially quiesced",
            }
            .into();
            st.source_quiesced = quiesced;
            st.source_running = running;
            st.destination_state = if st.managed_objects == 0 {
                "not migrated".into()
            } else if !st.cutover {
                "held".into()
            } else {
                let (_, unavailable) = crate::actions::quiesce::availability(&self.destination, &namespaces).await?;
                st.destination_unavailable = unavailable;
                if st.destination_unavailable.is_empty() { "verified".into() } else { "started".into() }
            };
            report.migrations.push(st);
        }
        Ok(report)
    }

    /// The source's top-level workloads: those mtcd quiesced, and those running.
    async fn source_workloads(&self, namespaces: &[String]) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let types = [
            api_resource("apps", "v1", "Deployment", "deployments"),
            api_resource("apps", "v1", "StatefulSet", "statefulsets"),
            api_resource("apps.openshift.io", "v1", "DeploymentConfig", "deploymentconfigs"),
            api_resource("batch", "v1", "CronJob", "cronjobs"),
        ];
        let (mut quiesced, mut running) = (Vec::new(), Vec::new());
        for ty in &types {
            for ns in namespaces {
                let items = match observe::list(&self.source.client, ty, Some(ns), None).await {
                    Ok(items) => items,
                    Err(kube::Error::Api(e)) if e.code == 404 => continue, // not served here
                    Err(source) => {
                        return Err(observe::ObserveError::List {
                            context: self.source.context.clone(),
                            what: format!("{} in {ns}", ty.plural),
                            source: Box::new(source),
                        }
                        .into());
                    }
                };
                for o in items {
                    if object::annotation(&o, ORIGINAL_REPLICAS).is_some()
                        || object::annotation(&o, ORIGINAL_SUSPEND).is_some()
                    {
                        quiesced.push(object::display(&o));
                    } else if ty.kind == "CronJob" {
                        if o.pointer("/spec/suspend").and_then(Value::as_bool) != Some(true) {
                            running.push(object::display(&o));
                        }
                    } else if o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) > 0 {
                        running.push(object::display(&o));
                    }
                }
            }
        }
        Ok((quiesced, running))
    }
}
