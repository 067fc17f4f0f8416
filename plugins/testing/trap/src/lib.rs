//! Test-only: panics (a wasm trap) on objects named `boom`, passes others through. Shows
//! that a trap does not poison the objects after it.
use mtcd_plugin::{Context, Outcome, Transform, Value};

struct Trap;

impl Transform for Trap {
    fn transform(object: Value, _ctx: &Context) -> Result<Outcome, String> {
        if object.pointer("/metadata/name").and_then(Value::as_str) == Some("boom") {
            panic!("deliberate trap for object boom");
        }
        Ok(Outcome::Unchanged)
    }
}

mtcd_plugin::export_transformer!(Trap);
