//! API errors rendered as real `meta/v1 Status` objects, because clients (kube-rs, kubectl,
//! mtcd) branch on `reason` and `code`, not on the message.

use serde_json::{Value, json};

/// One field-level cause of an Invalid error.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

/// What a request can fail with; each variant maps to one HTTP code and Status reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 BadRequest: malformed body, mismatched name or namespace, bad query.
    #[error("{0}")]
    BadRequest(String),
    /// 401 Unauthorized: missing or wrong bearer token.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403 Forbidden, e.g. creating content in a terminating namespace.
    #[error("{message}")]
    Forbidden { message: String, name: String, kind: String, group: String },
    /// 404 NotFound for an object (`<plural>.<group> "<name>" not found`).
    #[error("{} \"{name}\" not found", qualified(resource, group))]
    NotFound { resource: String, group: String, name: String },
    /// 404 for a path that names no resource at all.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 405 MethodNotAllowed: the verb is not supported on this resource.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 409 AlreadyExists on create.
    #[error("{} \"{name}\" already exists", qualified(resource, group))]
    AlreadyExists { resource: String, group: String, name: String },
    /// 409 Conflict: stale resourceVersion or server-side apply field conflicts.
    #[error("{message}")]
    Conflict { message: String, resource: String, group: String, name: String, causes: Vec<Cause> },
    /// 410 Gone: a watch or continue token older than the retained history.
    #[error("{0}")]
    Gone(String),
    /// 406 NotAcceptable: no media type of the client's Accept header can carry the response.
    #[error("{0}")]
    NotAcceptable(String),
    /// 415 UnsupportedMediaType for an unknown patch or body content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 Invalid with field causes.
    #[error("{kind} \"{name}\" is invalid")]
    Invalid { kind: String, group: String, name: String, causes: Vec<Cause> },
    /// 500 for bugs in the lab itself.
    #[error("{0}")]
    Internal(String),
}

/// `configmaps` or `deployments.apps`, as real messages name resources.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone(_) => 410,
            ApiError::NotAcceptable(_) => 406,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Invalid { .. } => 422,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone(_) => "Expired",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// A single-field 422, the common case.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, message: String) -> Self {
        ApiError::Invalid {
            kind: kind.into(),
            group: group.into(),
            name: name.into(),
            causes: vec![Cause { reason: "FieldValueInvalid", field: field.into(), message }],
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Invalid { kind, name, causes, .. } => {
                let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
                if parts.len() == 1 {
                    format!("{kind} \"{name}\" is invalid: {}", parts[0])
                } else {
                    format!("{kind} \"{name}\" is invalid: [{}]", parts.join(", "))
                }
            }
            other => other.to_string(),
        }
    }

    /// The `Status` object a real API server would send.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { resource, group, name } | ApiError::AlreadyExists { resource, group, name } => {
                Some(json!({"name": name, "group": group, "kind": resource}))
            }
            ApiError::Forbidden { name, kind, group, .. } => {
                // Empty fields are omitted, as Go's omitempty does (authorization denials of
                // lists and of non-resource paths have no name, or no kind either).
                let mut d = json!({});
                for (k, v) in [("name", name), ("group", group), ("kind", kind)] {
                    if !v.is_empty() {
                        d[k] = json!(v);
                    }
                }
                Some(d)
            }
            ApiError::Conflict { resource, group, name, causes, .. } => {
                let mut d = json!({"name": name, "group": group, "kind": resource});
                if !causes.is_empty() {
                    d["causes"] = causes_json(causes);
                }
                Some(d)
            }
            ApiError::Invalid { kind, group, name, causes } => {
                Some(json!({"name": name, "group": group, "kind": kind, "causes": causes_json(causes)}))
            }
            _ => None,
        };
        if let Some(mut d) = details {
            if d["group"] == "" {
                d.as_object_mut().map(|m| m.remove("group"));
            }
            status["details"] = d;
        }
        status
    }
}

fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect())
}
