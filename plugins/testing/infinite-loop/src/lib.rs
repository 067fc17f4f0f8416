//! Test-only: never returns. The host must stop it at its CPU limit.
use mtcd_plugin::{Context, Outcome, Transform, Value};

struct Spin;

impl Transform for Spin {
    fn transform(object: Value, _ctx: &Context) -> Result<Outcome, String> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
            if std::hint::black_box(n) == 0 {
                return Ok(Outcome::Replace(object));
            }
        }
    }
}

mtcd_plugin::export_transformer!(Spin);
