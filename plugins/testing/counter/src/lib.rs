//! Test-only: carries state from one object to the next. It annotates each object with how
//! many objects this instance has seen, and panics on an object named `boom`, so tests can
//! tell when the host reuses an instance and when it starts a fresh one.
use std::sync::atomic::{AtomicU64, Ordering};

use mtcd_plugin::{Context, Outcome, Transform, Value};

static SEEN: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Transform for Counter {
    fn transform(mut object: Value, _ctx: &Context) -> Result<Outcome, String> {
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        if object.pointer("/metadata/name").and_then(Value::as_str) == Some("boom") {
            panic!("boom after {seen} objects");
        }
        object["metadata"]["annotations"]["seen"] = seen.to_string().into();
        Ok(Outcome::Replace(object))
    }
}

mtcd_plugin::export_transformer!(Counter);
