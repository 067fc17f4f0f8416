//! `plan`: load the plugins, observe both clusters once, compute the plan. Nothing is
//! written; a plugin that cannot load or a transform that fails stops here.

use std::collections::HashMap;

use serde_json::Value;

use super::{Engine, EngineError};
use crate::plan::{self, Plan, TransformFailure, Transformed, Transforms};
use crate::plugins::{SourceLookup, TransformChain, TransformContext, TransformOutput};
use crate::snapshot::Snapshot;
use crate::spec::Migration;
use crate::transform::object;

/// A plan with the snapshot it was computed from (hooks read the source through it).
pub struct Planned {
    pub plan: Plan,
    pub snapshot: Snapshot,
}

impl Engine {
    /// Observes both clusters and computes the whole plan. `cutover` plans the workloads in
    /// their released form (original replicas).
    pub async fn plan(&self, cutover: bool) -> Result<Planned, EngineError> {
        // Plugins load (and compile, once) before anything is observed: a broken component
        // fails the plan at once.
        self.check_distinct().await?;
        let mut chains = self.load_plugins()?;
        let snapshot = crate::observe::observe(&self.spec, &self.source, &self.destination, self.registries()).await?;
        let mut plan = plan::build(&self.spec, &snapshot, cutover, &mut chains)?;
        self.gate(&mut plan, &snapshot.destination_catalog).await;
        self.preflight(&mut plan, &snapshot).await;
        Ok(Planned { plan, snapshot })
    }

    /// Every migration's transform chain, and every hook loaded once to prove it loads.
    fn load_plugins(&self) -> Result<PluginChains, EngineError> {
        let mut chains = PluginChains {
            source: self.source.context.clone(),
            destination: self.destination.context.clone(),
            chains: HashMap::new(),
        };
        let needs_host = self.spec.migrations.iter().any(|m| !m.transforms.is_empty() || !m.hooks.is_empty());
        if !needs_host {
            return Ok(chains);
        }
        let host = super::plugin_host().map_err(|e| EngineError::Plugin(Box::new(e)))?;
        for m in &self.spec.migrations {
            if !m.transforms.is_empty() {
                chains.chains.insert(
                    m.name.clone(),
                    host.load_transforms(&m.transforms).map_err(|e| EngineError::Plugin(Box::new(e)))?,
                );
            }
            for p in m.hooks.iter().filter_map(|h| h.plugin()) {
                host.load_hook(p).map_err(|e| EngineError::Plugin(Box::new(e)))?;
            }
        }
        Ok(chains)
    }
}

/// The plugin chains of the file's migrations, as the pure plan calls them.
struct PluginChains {
    source: String,
    destination: String,
    chains: HashMap<String, TransformChain>,
}

/// Source objects as the plugins' read-only `lookup`.
pub struct SliceLookup<'a>(pub &'a [Value]);

impl SourceLookup for SliceLookup<'_> {
    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.0
            .iter()
            .find(|o| {
                let ns = if kind == "Namespace" { object::name(o) } else { object::namespace(o).unwrap_or_default() };
                object::kind(o) == kind && object::name(o) == name && ns == namespace
            })
            .cloned()
    }
}

impl Transforms for PluginChains {
    fn transform(&mut self, m: &Migration, obj: Value, lookup: &[Value]) -> Result<Transformed, TransformFailure> {
        let Some(chain) = self.chains.get_mut(&m.name) else {
            return Ok(Transformed::Keep(obj, Vec::new()));
        };
        let ctx = TransformContext {
            source_cluster: self.source.clone(),
            destination_cluster: self.destination.clone(),
            namespace_map: m.namespace_map.clone(),
        };
        let name = object::display(&obj);
        match chain.run(obj, &ctx, &SliceLookup(lookup)) {
            Ok(TransformOutput::Keep { object, extra }) => Ok(Transformed::Keep(object, extra)),
            Ok(TransformOutput::Skip) => Ok(Transformed::Skip),
            Err(e) => Err(TransformFailure { object: name, message: e.to_string() }),
        }
    }
}
