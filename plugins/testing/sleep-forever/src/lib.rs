//! Test-only: blocks in a host call (a WASI sleep) and never returns. Epoch interruption
//! alone cannot stop it (no wasm runs while it sleeps); the host's call timeout must.
use mtcd_plugin::{Context, Outcome, Transform, Value};

struct Sleeper;

impl Transform for Sleeper {
    fn transform(_object: Value, ctx: &Context) -> Result<Outcome, String> {
        // `seconds` sleeps that long and returns; without it, sleeps for ever.
        if let Some(s) = ctx.config.get("seconds").and_then(Value::as_u64) {
            std::thread::sleep(std::time::Duration::from_secs(s));
            return Ok(Outcome::Unchanged);
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

mtcd_plugin::export_transformer!(Sleeper);
