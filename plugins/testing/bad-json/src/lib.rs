//! Test-only: returns malformed output through the raw bindings (the SDK would never
//! produce it). Config `mode`: `json` (default) → a `replace` that is not JSON; `not-object`
//! → a `replace` that is a JSON string; `patch` → a `patch` that is not a patch;
//! `bad-path` → a valid patch that cannot apply.
use mtcd_plugin::bindings::exports::mtcd::plugin::hooks::{Guest as HooksGuest, Phase};
use mtcd_plugin::bindings::exports::mtcd::plugin::transform::{Guest, Outcome};
use mtcd_plugin::bindings::mtcd::plugin::types::{Context, HookContext};

struct BadJson;

impl Guest for BadJson {
    fn transform(_object: String, ctx: Context) -> Outcome {
        let mode = mtcd_plugin::serde_json::from_str::<mtcd_plugin::Value>(&ctx.config)
            .ok()
            .and_then(|c| c.get("mode").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| "json".into());
        match mode.as_str() {
            "not-object" => Outcome::Replace("\"just a string\"".into()),
            "patch" => Outcome::Patch("{\"op\": \"add\"}".into()),
            "bad-path" => Outcome::Patch(r#"[{"op": "remove", "path": "/spec/does/not/exist"}]"#.into()),
            _ => Outcome::Replace("{\"kind\": \"ConfigMap\", ".into()),
        }
    }
}

impl HooksGuest for BadJson {
    fn run(_phase: Phase, _ctx: HookContext) -> Result<(), String> {
        Err("not a hook".into())
    }
}

mtcd_plugin::bindings::__export_rust_sdk!(BadJson with_types_in mtcd_plugin::bindings);
