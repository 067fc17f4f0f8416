//! Test-only: exercises the outcomes no example uses. Config `mode`:
//! - `with-extra`: returns the object plus a ConfigMap named `<name>-extra`;
//! - `error`: returns an error message;
//! - `lookup`: copies the object named by config `lookup = [kind, namespace, name]` into
//!   the annotation `looked-up` (`none` when the host returned nothing);
//! - `log`: logs a message at info level and returns unchanged;
//! - `context`: writes the context into annotations (clusters, namespace map, config);
//! - `sandbox`: probes what WASI grants allow and writes the results into annotations:
//!   `env` (the variable named by config `env`), `clock` (seconds since the epoch),
//!   `read` (the file at config `read`), `write` (writing config `write`).
use mtcd_plugin::{Context, Level, Outcome, Transform, Value, json, log, lookup, serde_json};

struct Echo;

impl Transform for Echo {
    fn transform(mut object: Value, ctx: &Context) -> Result<Outcome, String> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        match ctx.config_str("mode").unwrap_or_default() {
            "with-extra" => {
                let ns = object.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null);
                let extra = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("{name}-extra"), "namespace": ns}, "data": {"from": name}});
                Ok(Outcome::WithExtra { object, extra: vec![extra] })
            }
            "error" => Err(format!("refusing {name}")),
            "lookup" => {
                let args: Vec<String> = ctx
                    .config
                    .get("lookup")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let [kind, ns, n] = args.as_slice() else {
                    return Err("config `lookup` must be [kind, namespace, name]".into());
                };
                let found = lookup(kind, ns, n).map(|v| v.to_string()).unwrap_or_else(|| "none".into());
                object["metadata"]["annotations"] = json!({"looked-up": found});
                Ok(Outcome::Replace(object))
            }
            "log" => {
                log(Level::Info, &format!("saw {name}"));
                Ok(Outcome::Unchanged)
            }
            "context" => {
                object["metadata"]["annotations"] = json!({
                    "source": ctx.source_cluster, "destination": ctx.destination_cluster,
                    "namespaces": json!(ctx.namespace_map).to_string(), "config": ctx.config.to_string()});
                Ok(Outcome::Replace(object))
            }
            "sandbox" => {
                let mut probes = serde_json::Map::new();
                if let Some(name) = ctx.config_str("env") {
                    probes.insert("env".into(), std::env::var(name).unwrap_or_else(|_| "unset".into()).into());
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                probes.insert("clock".into(), now.to_string().into());
                if let Some(path) = ctx.config_str("read") {
                    let read = std::fs::read_to_string(path).unwrap_or_else(|e| format!("error: {e}"));
                    probes.insert("read".into(), read.into());
                }
                if let Some(path) = ctx.config_str("write") {
                    let wrote = match std::fs::write(path, name.as_bytes()) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                    probes.insert("write".into(), wrote.into());
                }
                object["metadata"]["annotations"] = Value::Object(probes);
                Ok(Outcome::Replace(object))
            }
            other => Err(format!("unknown mode `{other}`")),
        }
    }
}

mtcd_plugin::export_transformer!(Echo);
