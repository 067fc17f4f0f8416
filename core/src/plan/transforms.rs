//! The user's transforms, as the plan sees them: a function from a source object to what
//! should exist instead. The plugin runtime (in the host) implements [`Transforms`]; the core
//! only calls it, so plans are tested without wasmtime.

use serde_json::Value;

use crate::spec::Migration;

/// What a user transform made of one object.
pub enum Transformed {
    /// The object (possibly changed) and any extra objects to create.
    Keep(Value, Vec<Value>),
    Skip,
}

/// A transform that failed; the plan stops.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {message}")]
pub struct TransformFailure {
    pub object: String,
    pub message: String,
}

/// Runs a migration's transform chain on one object. `lookup` is the migration's source
/// snapshot, read-only, for plugins that look at other objects.
pub trait Transforms {
    fn transform(
        &mut self,
        migration: &Migration,
        object: Value,
        lookup: &[Value],
    ) -> Result<Transformed, TransformFailure>;
}

/// No plugins: every object is kept as it is.
pub struct NoTransforms;

impl Transforms for NoTransforms {
    fn transform(&mut self, _: &Migration, object: Value, _: &[Value]) -> Result<Transformed, TransformFailure> {
        Ok(Transformed::Keep(object, Vec::new()))
    }
}
