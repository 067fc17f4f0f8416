//! The transform chain: every object through the listed plugins, in order.

use std::sync::Arc;

use serde_json::Value;

use super::bindings::transformer::Transformer;
use super::bindings::transformer::exports::mtcd::plugin::transform::Outcome;
use super::bindings::transformer::mtcd::plugin::types;
use super::engine::LoadReport;
use super::runtime::Runner;
use super::state::truncate_message;
use super::{MAX_ERROR_MESSAGE, PluginError, SourceLookup, TransformContext, TransformOutput};
use crate::spec::OnError;

/// Loaded transform plugins, run in the order desired.toml lists them. Each plugin's
/// instance serves the chain's objects while its calls succeed and is replaced after any
/// failure; it is never shared with another chain. `Send`, not `Sync`: give each worker
/// thread its own chain (loading again is a cache hit).
pub struct TransformChain {
    pub(crate) steps: Vec<Step>,
    pub(crate) reports: Vec<LoadReport>,
    warnings: Vec<PluginError>,
    /// The namespaces `lookup` may read, rebuilt only when the context's map changes.
    namespaces: Arc<[String]>,
}

pub(crate) struct Step {
    pub(crate) runner: Runner<Transformer>,
    /// The plugin's config as JSON text, serialized once.
    pub(crate) config: String,
}

/// What one plugin did to the object (changes are made in place).
enum StepResult {
    Keep,
    WithExtra(Vec<Value>),
    Skip,
}

impl TransformChain {
    pub(crate) fn new(steps: Vec<Step>, reports: Vec<LoadReport>) -> Self {
        TransformChain { steps, reports, warnings: Vec::new(), namespaces: Arc::from(Vec::new()) }
    }

    /// Runs `object` through every plugin. Each plugin sees the previous one's output;
    /// `skip` ends the chain. A failure is handled by that plugin's `on_error`: `Fail`
    /// returns it, `SkipObject` leaves the object out, `KeepOriginal` carries on with the
    /// object as it was before the failing plugin; the last two are kept as warnings
    /// (see [`TransformChain::take_warnings`]) and logged.
    ///
    /// Synchronous; every call is bounded by its plugin's time limit, including time spent
    /// in host calls. Inside a multi-threaded tokio runtime the worker is handed over with
    /// `block_in_place` while the plugin runs.
    pub fn run(
        &mut self,
        object: Value,
        ctx: &TransformContext,
        lookup: &dyn SourceLookup,
    ) -> Result<TransformOutput, PluginError> {
        if self.steps.is_empty() {
            return Ok(TransformOutput::Keep { object, extra: Vec::new() });
        }
        if !ctx.namespace_map.keys().eq(self.namespaces.iter()) {
            self.namespaces = ctx.namespace_map.keys().cloned().collect();
        }
        let subject = object_ref(&object);
        let wit_ctx = |config: &str| types::Context {
            source_cluster: ctx.source_cluster.clone(),
            destination_cluster: ctx.destination_cluster.clone(),
            namespace_map: ctx.namespace_map.iter().map(|(s, d)| (s.clone(), d.clone())).collect(),
            config: config.to_string(),
        };
        let mut current = object;
        let mut extra = Vec::new();
        for step in &mut self.steps {
            let result = step.call(&mut current, wit_ctx(&step.config), &subject, self.namespaces.clone(), lookup);
            match result {
                Ok(StepResult::Keep) => {}
                Ok(StepResult::WithExtra(more)) => extra.extend(more),
                Ok(StepResult::Skip) => return Ok(TransformOutput::Skip),
                Err(e) => match step.runner.plugin.on_error {
                    OnError::Fail => return Err(e),
                    OnError::SkipObject => {
                        // The plan lists it (`take_warnings`): logged at debug, not printed twice.
                        tracing::debug!(error = %e, "object left out (on-error = skip-object)");
                        self.warnings.push(e);
                        return Ok(TransformOutput::Skip);
                    }
                    OnError::KeepOriginal => {
                        tracing::debug!(error = %e, "object kept as before the plugin (on-error = keep-original)");
                        self.warnings.push(e);
                    }
                },
            }
        }
        Ok(TransformOutput::Keep { object: current, extra })
    }

    /// Failures that `on_error = skip-object | keep-original` turned into warnings since the
    /// last call, for the plan to show.
    pub fn take_warnings(&mut self) -> Vec<PluginError> {
        std::mem::take(&mut self.warnings)
    }

    /// How each plugin was loaded (compiled, or from which cache) and what it cost.
    pub fn load_reports(&self) -> &[LoadReport] {
        &self.reports
    }

    /// Number of plugins in the chain.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Step {
    /// Calls the plugin and applies its outcome to `object`; on error `object` is as it
    /// was (so `keep-original` needs no copy).
    fn call(
        &mut self,
        object: &mut Value,
        ctx: types::Context,
        subject: &str,
        namespaces: Arc<[String]>,
        lookup: &dyn SourceLookup,
    ) -> Result<StepResult, PluginError> {
        let input = serde_json::to_string(&*object).expect("a Value always serializes");
        let span = tracing::debug_span!("plugin", plugin = %self.runner.name, object = %subject);
        let _enter = span.enter();
        let outcome = self.runner.call(subject, namespaces, lookup, move |store, bindings| {
            Box::pin(async move { bindings.mtcd_plugin_transform().call_transform(store, &input, &ctx).await })
        })?;
        let plugin = || self.runner.name.clone();
        let parse_object = |text: &str, what: &str| -> Result<Value, PluginError> {
            match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(other) => Err(PluginError::InvalidJson {
                    plugin: plugin(),
                    subject: subject.to_string(),
                    reason: format!("{what} must be a JSON object, got {}", json_type(&other)),
                }),
                Err(e) => Err(PluginError::InvalidJson {
                    plugin: plugin(),
                    subject: subject.to_string(),
                    reason: format!("{what}: {e}"),
                }),
            }
        };
        match outcome {
            Outcome::Unchanged => Ok(StepResult::Keep),
            Outcome::Skip => Ok(StepResult::Skip),
            Outcome::Replace(text) => {
                *object = parse_object(&text, "replacement")?;
                Ok(StepResult::Keep)
            }
            Outcome::Patch(text) => {
                let invalid = |reason: String| PluginError::InvalidPatch {
                    plugin: plugin(),
                    subject: subject.to_string(),
                    reason: truncate_message(reason, MAX_ERROR_MESSAGE),
                };
                let patch: json_patch::Patch =
                    serde_json::from_str(&text).map_err(|e| invalid(format!("not an RFC 6902 patch: {e}")))?;
                if patch.0.iter().any(|op| op.path().is_root()) {
                    return Err(invalid(
                        "operations on the whole document (path \"\") are not allowed; return `replace` instead".into(),
                    ));
                }
                // json_patch::patch is atomic: on error it undoes what it applied.
                json_patch::patch(object, &patch).map_err(|e| invalid(e.to_string()))?;
                Ok(StepResult::Keep)
            }
            Outcome::WithExtra(w) => {
                let replacement = parse_object(&w.object, "object")?;
                let extra = w
                    .extra
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let v = parse_object(text, &format!("extra object #{i}"))?;
                        for field in ["/apiVersion", "/kind", "/metadata/name"] {
                            if v.pointer(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                                return Err(PluginError::InvalidJson {
                                    plugin: plugin(),
                                    subject: subject.to_string(),
                                    reason: format!("extra object #{i} has no {}", &field[1..]),
                                });
                            }
                        }
                        Ok(v)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                *object = replacement;
                Ok(StepResult::WithExtra(extra))
            }
            Outcome::Error(message) => Err(PluginError::Reported {
                plugin: plugin(),
                subject: subject.to_string(),
                message: truncate_message(message, MAX_ERROR_MESSAGE),
            }),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `Kind/namespace/name` (or `Kind/name` for cluster-scoped objects), as errors print it.
pub fn object_ref(object: &Value) -> String {
    let field = |p: &str| object.pointer(p).and_then(Value::as_str).filter(|s| !s.is_empty());
    let kind = field("/kind").unwrap_or("<no kind>");
    let name = field("/metadata/name").unwrap_or("<no name>");
    match field("/metadata/namespace") {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_ref_names_namespaced_and_cluster_scoped_objects() {
        assert_eq!(
            object_ref(&json!({"kind": "Secret", "metadata": {"name": "a", "namespace": "shop"}})),
            "Secret/shop/a"
        );
        assert_eq!(object_ref(&json!({"kind": "Namespace", "metadata": {"name": "shop"}})), "Namespace/shop");
        assert_eq!(object_ref(&json!({"metadata": {}})), "<no kind>/<no name>");
    }
}
