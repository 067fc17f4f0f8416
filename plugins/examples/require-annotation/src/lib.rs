//! A hook that stops the cutover until an operator marks the application ready.
//!
//! ```toml
//! [[migration.hook]]
//! phase = "pre-cutover"
//! plugin = "require-annotation.wasm"
//! config = { annotation = "mtcd.io/cutover-approved", value = "true" }
//! ```
//!
//! By default every migrated source Namespace must carry the annotation (and the value,
//! when `value` is set). With `object = { kind = "ConfigMap", namespace = "shop", name =
//! "release" }` that one object is checked instead. The object is read through the host's
//! read-only `lookup`, which only sees the migrated namespaces.

use mtcd_plugin::{Context, Hook, Phase, Value, lookup};

struct RequireAnnotation;

impl Hook for RequireAnnotation {
    fn run(phase: Phase, ctx: &Context) -> Result<(), String> {
        let annotation = ctx.config_str("annotation").ok_or("config `annotation` is required")?;
        let value = ctx.config_str("value");
        let targets: Vec<(String, String, String)> = match ctx.config.get("object") {
            Some(o) => {
                let field = |k: &str| {
                    o.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| format!("config `object.{k}` is required"))
                };
                vec![(field("kind")?, field("namespace")?, field("name")?)]
            }
            None => ctx.namespace_map.iter().map(|(ns, _)| ("Namespace".to_string(), ns.clone(), ns.clone())).collect(),
        };
        for (kind, namespace, name) in targets {
            let what =
                if kind == "Namespace" { format!("Namespace {name}") } else { format!("{kind} {namespace}/{name}") };
            let Some(object) = lookup(&kind, &namespace, &name) else {
                return Err(format!("{}: {what} not found on the source cluster", phase.as_str()));
            };
            check(&object, annotation, value).map_err(|e| format!("{}: {what} {e}", phase.as_str()))?;
        }
        Ok(())
    }
}

fn check(object: &Value, annotation: &str, value: Option<&str>) -> Result<(), String> {
    let actual = object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(annotation))
        .and_then(Value::as_str);
    match (actual, value) {
        (None, _) => Err(format!("lacks the annotation `{annotation}`")),
        (Some(a), Some(v)) if a != v => Err(format!("has `{annotation}: {a}`, expected `{v}`")),
        _ => Ok(()),
    }
}

mtcd_plugin::export_hook!(RequireAnnotation);
