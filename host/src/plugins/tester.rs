//! `mtcd plugin test`: run one transform plugin over objects from a YAML file, offline, and
//! show what it does to each.

use std::fmt::Write as _;
use std::path::Path;

use indexmap::IndexMap;
use owo_colors::OwoColorize;
use serde::Deserialize;
use serde_json::Value;

use super::{
    HookContext, PluginError, PluginHost, TransformContext, TransformOutput, default_hook_limits,
    default_transform_limits, object_ref, phase_name,
};
use crate::spec::{HookPhase, OnError, PluginGrants, PluginLimits, PluginRef};

/// How `mtcd plugin test` runs the plugin: the settings desired.toml would give it.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// The plugin's `config` (see [`config_from_pairs`]).
    pub config: Value,
    /// `None`: the defaults of a transform (1 s, 64 MiB) or a hook (5 min, 64 MiB).
    pub limits: Option<PluginLimits>,
    pub grants: PluginGrants,
    /// Run the plugin as a hook at this phase instead of as a transform.
    pub phase: Option<HookPhase>,
    /// Color the diff (a terminal).
    pub color: bool,
}

/// Runs `plugin` over every object in `objects_yaml` (YAML documents separated by `---`;
/// `kind: List` documents are expanded) and renders a unified diff per object (colored
/// when `options.color`). With `options.phase`, runs it once as a hook instead. The objects
/// themselves answer the plugin's lookups; every namespace that appears in them counts as
/// migrated (identity mapping). Compiled components go to the default cache.
///
/// Returns the report, or `PluginError::TestFailed` carrying the same report when any
/// object (or the hook) failed, so the command exits non-zero.
pub fn test_plugin(plugin: &Path, objects_yaml: &Path, options: &TestOptions) -> Result<String, PluginError> {
    test_plugin_with(&PluginHost::new(None)?, plugin, objects_yaml, options)
}

/// [`test_plugin`] on a given host (and its cache directory).
pub fn test_plugin_with(
    host: &PluginHost,
    plugin: &Path,
    objects_yaml: &Path,
    options: &TestOptions,
) -> Result<String, PluginError> {
    let objects = read_objects(objects_yaml)?;
    let mut plugin_ref = PluginRef::file(plugin);
    plugin_ref.config = options.config.clone();
    plugin_ref.grants = options.grants.clone();
    plugin_ref.on_error = OnError::Fail;
    let mut namespace_map = IndexMap::new();
    for o in &objects {
        let ns = if o.get("kind").and_then(Value::as_str) == Some("Namespace") {
            o.pointer("/metadata/name")
        } else {
            o.pointer("/metadata/namespace")
        };
        if let Some(ns) = ns.and_then(Value::as_str) {
            namespace_map.insert(ns.to_string(), ns.to_string());
        }
    }
    let paint = Paint(options.color);
    if let Some(phase) = options.phase {
        plugin_ref.limits = options.limits.clone().unwrap_or_else(default_hook_limits);
        let mut hook = host.load_hook(&plugin_ref)?;
        let ctx = HookContext {
            migration: "test".into(),
            source_cluster: "source".into(),
            destination_cluster: "destination".into(),
            namespace_map,
            lookup: &objects,
        };
        let header = paint.header(&format!("hook {}", phase_name(phase)));
        return match hook.run(phase, &ctx) {
            Ok(()) => Ok(format!("{header} ok\n")),
            Err(e) => {
                let report = format!("{header} {}\n", paint.red(&format!("error: {e}")));
                Err(PluginError::TestFailed { report, failed: 1, total: 1 })
            }
        };
    }
    plugin_ref.limits = options.limits.clone().unwrap_or_else(default_transform_limits);
    let mut chain = host.load_transforms(std::slice::from_ref(&plugin_ref))?;
    let ctx =
        TransformContext { source_cluster: "source".into(), destination_cluster: "destination".into(), namespace_map };
    let mut out = String::new();
    let mut failed = 0;
    for object in &objects {
        let name = object_ref(object);
        match chain.run(object.clone(), &ctx, &objects) {
            Ok(TransformOutput::Skip) => {
                let _ = writeln!(out, "{} {}", paint.header(&name), paint.yellow("skipped (not migrated)"));
            }
            Ok(TransformOutput::Keep { object: after, extra }) => {
                let before_text = to_yaml(object);
                let after_text = to_yaml(&after);
                if before_text == after_text && extra.is_empty() {
                    let _ = writeln!(out, "{} unchanged", paint.header(&name));
                } else {
                    let _ = writeln!(out, "{} changed", paint.header(&name));
                    if before_text != after_text {
                        out.push_str(&diff(&before_text, &after_text, paint));
                    }
                    for e in &extra {
                        let _ = writeln!(out, "{}", paint.green(&format!("+ extra object {}", object_ref(e))));
                        for line in to_yaml(e).lines() {
                            let _ = writeln!(out, "{}", paint.green(&format!("+{line}")));
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(out, "{} {}", paint.header(&name), paint.red(&format!("error: {e}")));
            }
        }
    }
    if failed > 0 {
        return Err(PluginError::TestFailed { report: out, failed, total: objects.len() });
    }
    Ok(out)
}

/// Turns `mtcd plugin test --config k=v` pairs into the plugin's config object. A value
/// that parses as JSON (`3`, `true`, `["a"]`, `{"x": 1}`) is used as such, anything else is
/// a string; dots in the key nest (`labels.team=payments` → `{"labels": {"team": "payments"}}`).
pub fn config_from_pairs<S: AsRef<str>>(pairs: &[S]) -> Result<Value, PluginError> {
    let mut config = Value::Object(Default::default());
    for pair in pairs {
        let pair = pair.as_ref();
        let bad = |why: &str| PluginError::Config { pair: pair.to_string(), reason: why.to_string() };
        let (key, raw) = pair.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(bad("empty key"));
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let mut at = &mut config;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let map = at.as_object_mut().ok_or_else(|| bad("a key is both a value and a table"))?;
            if parts.peek().is_none() {
                map.insert(part.to_string(), value);
                break;
            }
            at = map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(config)
}

fn read_objects(path: &Path) -> Result<Vec<Value>, PluginError> {
    let err = |reason: String| PluginError::Objects { path: path.to_path_buf(), reason };
    // Within bounds, as every file mtcd reads: a FIFO or /dev/zero is refused, not waited on.
    let text = crate::spec::read_bounded_string(path, crate::spec::files::MAX_SEED_YAML, "objects file")
        .map_err(PluginError::ObjectsFile)?;
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        match value {
            Value::Null => {}
            Value::Object(ref map) => {
                let is_list = map.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
                match map.get("items").and_then(Value::as_array) {
                    Some(items) if is_list => objects.extend(items.iter().cloned()),
                    _ => objects.push(value),
                }
            }
            other => {
                return Err(err(format!("document {} is not an object but {other}", i + 1)));
            }
        }
    }
    if objects.is_empty() {
        return Err(err("no objects in the file".into()));
    }
    Ok(objects)
}

fn to_yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_else(|e| format!("<cannot render: {e}>\n"))
}

fn diff(before: &str, after: &str, paint: Paint) -> String {
    let text = similar::TextDiff::from_lines(before, after);
    let mut out = String::new();
    for hunk in text.unified_diff().context_radius(3).header("before", "after").to_string().lines() {
        let line = if hunk.starts_with("+++") || hunk.starts_with("---") {
            paint.bold(hunk)
        } else if hunk.starts_with('+') {
            paint.green(hunk)
        } else if hunk.starts_with('-') {
            paint.red(hunk)
        } else if hunk.starts_with("@@") {
            paint.cyan(hunk)
        } else {
            hunk.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Colors only when asked (a terminal), so piped output and tests see plain text.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn header(self, name: &str) -> String {
        let s = format!("── {name}:");
        if self.0 { s.bold().to_string() } else { s }
    }
    fn bold(self, s: &str) -> String {
        if self.0 { s.bold().to_string() } else { s.to_string() }
    }
    fn green(self, s: &str) -> String {
        if self.0 { s.green().to_string() } else { s.to_string() }
    }
    fn red(self, s: &str) -> String {
        if self.0 { s.red().to_string() } else { s.to_string() }
    }
    fn yellow(self, s: &str) -> String {
        if self.0 { s.yellow().to_string() } else { s.to_string() }
    }
    fn cyan(self, s: &str) -> String {
        if self.0 { s.cyan().to_string() } else { s.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_pairs_nest_and_parse_json_values() {
        let c = config_from_pairs(&["team=payments", "labels.a=x", "labels.b=2", "on=true", "list=[\"a\"]"]).unwrap();
        assert_eq!(c, json!({"team": "payments", "labels": {"a": "x", "b": 2}, "on": true, "list": ["a"]}));
        assert!(config_from_pairs(&["novalue"]).is_err());
        assert!(config_from_pairs(&["a=1", "a.b=2"]).is_err());
        assert!(config_from_pairs(&[".x=1"]).is_err());
    }
}
