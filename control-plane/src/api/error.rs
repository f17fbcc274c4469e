//! The API's one error type, answered as a Kubernetes `metav1.Status`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::store::StoreError;

/// One field error of an `Invalid` answer.
#[derive(Clone, Debug)]
pub struct FieldCause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueForbidden`...
    pub reason: &'static str,
    /// Path such as `spec.containers[0].image`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldCause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        FieldCause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }
    /// A required field is missing, with why it is needed.
    pub fn required_because(field: impl Into<String>, why: &str) -> Self {
        FieldCause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {why}"),
        }
    }
    /// A field has an invalid value.
    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Self {
        FieldCause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {why}"),
        }
    }
    /// A field is not allowed.
    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        FieldCause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }
    /// A duplicate value.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldCause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value:?}"),
        }
    }
}

/// Everything a request can fail with. Each maps to one HTTP code and `Status.reason`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 for a named object.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// 404 for a path that serves nothing.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// 409 on create.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// 409 on a stale resourceVersion or failed precondition.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },
    /// 409 from server-side apply: fields owned by other managers, each a cause (message,
    /// field path).
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<(String, String)>,
    },
    /// 422 with field causes.
    #[error("{kind} \"{name}\" is invalid: {}", .causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>().join(", "))]
    Invalid {
        kind: String,
        name: String,
        causes: Vec<FieldCause>,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 403 from authorization, in kube-apiserver's words:
    /// `<resource>[.<group>] ["<name>"] is forbidden: <message>`.
    #[error("{}", denied_text(group, resource, name, message))]
    Denied {
        /// API group of the resource (empty for core and for non-resource requests).
        group: String,
        /// Resource (empty for a non-resource request).
        resource: String,
        /// Object name, if the request names one.
        name: String,
        /// Why: who cannot do what (`rbac::forbidden_message`).
        message: String,
    },
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 429: an eviction a disruption budget does not allow now (with the budget's reason).
    #[error("Cannot evict pod as it would violate the pod's disruption budget.")]
    DisruptionBudget(String),
    /// 410.
    #[error("{0}")]
    Gone(String),
    /// 413.
    #[error("the request body is too large (limit {0} bytes)")]
    TooLarge(usize),
    /// 413 for work a request would cause beyond a limit (a patch that grows its object).
    #[error("Request entity too large: {0}")]
    EntityTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 406: no form of the answer the client accepts (its Accept header).
    #[error("only the following media types are accepted: application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf (not {0:?})")]
    NotAcceptable(String),
    /// 500.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 504: a resourceVersion the store has not reached (kube-apiserver's watch cache answers
    /// this after waiting 3 s; clients retry).
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
}

impl ApiError {
    /// Map a store error for the object `resource`/`name`.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound { resource: resource.into(), name: name.into() },
            StoreError::AlreadyExists => ApiError::AlreadyExists { resource: resource.into(), name: name.into() },
            StoreError::Conflict { .. } => ApiError::Conflict {
                resource: resource.into(),
                name: name.into(),
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            StoreError::Gone { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::Closed => ApiError::Unavailable("the store is shutting down".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }

    fn code_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => {
                (StatusCode::CONFLICT, "Conflict")
            }
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) | ApiError::Denied { .. } => {
                (StatusCode::FORBIDDEN, "Forbidden")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::Gone(_) => (StatusCode::GONE, "Expired"),
            ApiError::DisruptionBudget(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::TooLarge(_) | ApiError::EntityTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge")
            }
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            ApiError::TooLargeResourceVersion { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name, .. } => {
                // Kubernetes leaves an empty group out.
                let (kind, group) = split_qualified(resource);
                let mut d = json!({"name": name, "kind": kind});
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::Invalid { kind, name, causes } => Some(json!({
                "name": name,
                "kind": kind,
                "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
            })),
            ApiError::ApplyConflict { causes, .. } => Some(json!({
                "causes": causes.iter().map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": m, "field": f})).collect::<Vec<_>>(),
            })),
            ApiError::Denied {
                group,
                resource,
                name,
                ..
            } if !resource.is_empty() => {
                let mut d = json!({"kind": resource});
                if !name.is_empty() {
                    d["name"] = json!(name);
                }
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::Denied { .. } => Some(json!({})),
            ApiError::DisruptionBudget(why) => Some(json!({
                "causes": [{"reason": "DisruptionBudget", "message": why}],
            })),
            ApiError::TooLargeResourceVersion { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

fn denied_text(group: &str, resource: &str, name: &str, message: &str) -> String {
    let what = match (resource, group) {
        ("", _) => String::new(),
        (r, "") => r.to_string(),
        (r, g) => format!("{r}.{g}"),
    };
    match (what.as_str(), name) {
        ("", _) => format!("forbidden: {message}"),
        (w, "") => format!("{w} is forbidden: {message}"),
        (w, n) => format!("{w} {n:?} is forbidden: {message}"),
    }
}

fn split_qualified(resource: &str) -> (&str, &str) {
    resource.split_once('.').unwrap_or((resource, ""))
}

impl From<super::ssa::Conflicts> for ApiError {
    fn from(c: super::ssa::Conflicts) -> Self {
        ApiError::ApplyConflict {
            message: c.0,
            causes: c.1,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_reason();
        if let ApiError::Internal(m) = &self {
            tracing::error!(message = %m, "internal error");
        }
        let mut resp = (code, axum::Json(self.status())).into_response();
        if matches!(self, ApiError::TooLargeResourceVersion { .. }) {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Bearer realm=\"skiff\""),
            );
        }
        resp
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
