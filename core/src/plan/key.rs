//! How mtcd names an object everywhere: `Kind.group/namespace/name`.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::transform::object;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of(obj: &Value) -> ObjectKey {
        ObjectKey {
            group: object::group(obj).to_string(),
            kind: object::kind(obj).to_string(),
            namespace: object::namespace(obj).map(String::from),
            name: object::name(obj).to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{}", self.kind, self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}
