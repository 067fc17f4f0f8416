//! Test-only: floods the host with output. `mode`:
//! - `error`: returns an error message of `bytes` bytes (default 8 MiB);
//! - `log`: calls `log` `lines` times (default 100 000) with 8 KiB messages;
//! - `stderr`: writes `bytes` bytes to stderr (default 30 MiB), then returns unchanged.
use std::io::Write;

use mtcd_plugin::{Context, Level, Outcome, Transform, Value};

struct Flood;

impl Transform for Flood {
    fn transform(_object: Value, ctx: &Context) -> Result<Outcome, String> {
        let n = |key: &str, default: u64| ctx.config.get(key).and_then(Value::as_u64).unwrap_or(default) as usize;
        match ctx.config_str("mode") {
            Some("error") => Err("E".repeat(n("bytes", 8 << 20))),
            Some("log") => {
                let line = "L".repeat(8192);
                for _ in 0..n("lines", 100_000) {
                    mtcd_plugin::log(Level::Info, &line);
                }
                Ok(Outcome::Unchanged)
            }
            Some("stderr") => {
                let chunk = vec![b'S'; 1 << 20];
                let mut stderr = std::io::stderr();
                let mut left = n("bytes", 30 << 20);
                while left > 0 {
                    let k = left.min(chunk.len());
                    stderr.write_all(&chunk[..k]).map_err(|e| e.to_string())?;
                    left -= k;
                }
                Ok(Outcome::Unchanged)
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

mtcd_plugin::export_transformer!(Flood);
