//! Adds labels to every object it sees.
//!
//! ```toml
//! [[migration.transform]]
//! plugin = "add-label.wasm"
//! config = { labels = { "migrated-by" = "mtcd" } }
//! ```
//!
//! It returns an RFC 6902 patch rather than the whole object, so only the labels cross back.

use mtcd_plugin::{Context, Outcome, Transform, Value, json, serde_json};

struct AddLabel;

impl Transform for AddLabel {
    fn transform(object: Value, ctx: &Context) -> Result<Outcome, String> {
        let labels = ctx
            .config
            .get("labels")
            .and_then(Value::as_object)
            .ok_or("config `labels` (a table of label = value) is required")?;
        patch(&object, labels).map(
            |ops| {
                if ops.is_empty() { Outcome::Unchanged } else { Outcome::Patch(Value::Array(ops)) }
            },
        )
    }
}

/// The patch operations that set `labels` on `object`; none for labels already set.
fn patch(object: &Value, labels: &serde_json::Map<String, Value>) -> Result<Vec<Value>, String> {
    let existing = object.pointer("/metadata/labels").and_then(Value::as_object);
    let mut ops = Vec::new();
    if object.pointer("/metadata").is_none() {
        return Err("object has no metadata".into());
    }
    if existing.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    for (key, value) in labels {
        let value = value.as_str().ok_or_else(|| format!("label `{key}`: value must be a string"))?;
        if existing.and_then(|l| l.get(key)).and_then(Value::as_str) == Some(value) {
            continue;
        }
        // RFC 6901: `~` and `/` in a key are escaped (label keys often contain `/`).
        let escaped = key.replace('~', "~0").replace('/', "~1");
        ops.push(json!({"op": "add", "path": format!("/metadata/labels/{escaped}"), "value": value}));
    }
    Ok(ops)
}

mtcd_plugin::export_transformer!(AddLabel);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_slashes_and_skips_present_labels() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let labels = json!({"x": "1", "mtcd.io/by": "me"});
        let ops = patch(&obj, labels.as_object().unwrap()).unwrap();
        assert_eq!(ops, vec![json!({"op": "add", "path": "/metadata/labels/mtcd.io~1by", "value": "me"})]);
    }
}
