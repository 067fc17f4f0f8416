//! Test-only: tries to carry state from one object to the next. It annotates each object
//! with how many objects this instance has seen; with a fresh instance per object the
//! answer is always 1.
use std::sync::atomic::{AtomicU64, Ordering};

use mtcd_plugin::{Context, Outcome, Transform, Value};

static SEEN: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Transform for Counter {
    fn transform(mut object: Value, _ctx: &Context) -> Result<Outcome, String> {
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        object["metadata"]["annotations"]["seen"] = seen.to_string().into();
        Ok(Outcome::Replace(object))
    }
}

mtcd_plugin::export_transformer!(Counter);
