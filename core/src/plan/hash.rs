//! The stamp mtcd puts on what it manages: labels that say who owns the object and a hash of
//! the desired object, so the next plan tells unchanged from changed without a field-by-field
//! comparison against a live object the API server has defaulted and annotated.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::transform::object;

pub use crate::labels::{MANAGED_BY, MANAGED_BY_VALUE, MIGRATION, SOURCE_HASH};

/// sha256 of the canonical JSON (keys sorted at every level), first 16 hex digits.
pub fn hash(obj: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(obj, &mut hasher);
    hex::encode(&hasher.finalize()[..8])
}

fn write_canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                h.update(b":");
                write_canonical(&o[k], h);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for x in a {
                write_canonical(x, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

/// Labels and annotates `obj` as managed by `migration`; returns the hash it carries.
pub fn stamp(obj: &mut Value, migration: &str) -> String {
    let h = hash(obj);
    object::set_label(obj, MANAGED_BY, MANAGED_BY_VALUE);
    object::set_label(obj, MIGRATION, migration);
    object::set_annotation(obj, SOURCE_HASH, h.clone());
    h
}

pub fn is_managed_by(obj: &Value, migration: &str) -> bool {
    object::label(obj, MANAGED_BY) == Some(MANAGED_BY_VALUE) && object::label(obj, MIGRATION) == Some(migration)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_hash_ignores_key_order_but_not_values() {
        let a = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        let b = json!({"b": {"d": "x", "c": [1, 2]}, "a": 1});
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&json!({"a": 1, "b": {"c": [2, 1], "d": "x"}})));
        assert_eq!(hash(&a).len(), 16);
    }

    #[test]
    fn stamping_labels_and_annotates() {
        let mut o = json!({"kind": "ConfigMap", "metadata": {"name": "c"}});
        let h = stamp(&mut o, "shop");
        assert!(is_managed_by(&o, "shop"));
        assert!(!is_managed_by(&o, "other"));
        assert_eq!(o["metadata"]["annotations"][SOURCE_HASH], h);
    }
}
