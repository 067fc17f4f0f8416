//! Leaves out every object that carries a label (optionally with a given value).
//!
//! ```toml
//! [[migration.transform]]
//! plugin = "drop-by-label.wasm"
//! config = { label = "mtcd.io/skip", value = "true" }   # value is optional
//! ```

use mtcd_plugin::{Context, Outcome, Transform, Value};

struct DropByLabel;

impl Transform for DropByLabel {
    fn transform(object: Value, ctx: &Context) -> Result<Outcome, String> {
        let label = ctx.config_str("label").ok_or("config `label` is required")?;
        let value = match ctx.config.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.as_str()),
            Some(other) => return Err(format!("config `value` must be a string, got {other}")),
        };
        Ok(if matches(&object, label, value) { Outcome::Skip } else { Outcome::Unchanged })
    }
}

fn matches(object: &Value, label: &str, value: Option<&str>) -> bool {
    let actual =
        object.get("metadata").and_then(|m| m.get("labels")).and_then(|l| l.get(label)).and_then(Value::as_str);
    match (actual, value) {
        (Some(a), Some(v)) => a == v,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

mtcd_plugin::export_transformer!(DropByLabel);

#[cfg(test)]
mod tests {
    use super::*;
    use mtcd_plugin::json;

    #[test]
    fn value_must_match_when_given() {
        let obj = json!({"metadata": {"labels": {"skip": "yes"}}});
        assert!(matches(&obj, "skip", None));
        assert!(matches(&obj, "skip", Some("yes")));
        assert!(!matches(&obj, "skip", Some("no")));
        assert!(!matches(&obj, "other", None));
    }
}
