//! The review APIs, as kube-apiserver serves them: who am I (`SelfSubjectReview`, `kubectl auth
//! whoami`), may I (`SelfSubjectAccessReview`, `kubectl auth can-i`), may they
//! (`SubjectAccessReview`, `LocalSubjectAccessReview`), what may I (`SelfSubjectRulesReview`,
//! `kubectl auth can-i --list`). Nothing is stored: each POST is answered
//! 201 with the object and its status. Decisions come from [`crate::auth::rbac`] over the Roles
//! and bindings in the store. Bodies are JSON or Kubernetes protobuf (kubectl 1.32 sends
//! `can-i` as protobuf).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, FieldCause};
use super::{read_body, AppState};
use crate::auth::rbac::{Allowed, Attributes, Policy, UserInfo};

/// Review bodies are small; a larger one is refused before it is read whole.
pub(super) const MAX_REVIEW: usize = 64 * 1024;

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`.
pub(super) async fn self_subject_review(req: Request) -> Response {
    let user = requester(&req);
    answer(async move {
        let body = body_of(req).await?;
        expect_kind(&body, "authentication.k8s.io/v1", "SelfSubjectReview")?;
        Ok(json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": user_info(&user)},
        }))
    })
    .await
}

/// A user as `authentication.k8s.io/v1` UserInfo (empty uid and extra left out).
pub(super) fn user_info(user: &UserInfo) -> Value {
    let mut v = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub(super) async fn self_subject_access_review(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Response {
    let user = requester(&req);
    answer(async move {
        let body = body_of(req).await?;
        review(&state, body, "SelfSubjectAccessReview", |_| Ok(user)).await
    })
    .await
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i --list`):
/// the rules that apply to the caller in `spec.namespace`. As kube-apiserver, the answer carries
/// only the status.
pub(super) async fn self_subject_rules_review(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Response {
    let user = requester(&req);
    answer(async move {
        let body = body_of(req).await?;
        expect_kind(&body, "authorization.k8s.io/v1", "SelfSubjectRulesReview")?;
        let namespace = body
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        if namespace.is_empty() {
            return Err(ApiError::BadRequest("no namespace on request".into()));
        }
        let rules = load_policy(&state).await?.rules_for(&user, namespace);
        let list = |v: &Option<Vec<String>>| json!(v.clone().unwrap_or_default());
        let resource_rules: Vec<Value> = rules
            .iter()
            .filter(|r| r.resources.as_ref().is_some_and(|v| !v.is_empty()))
            .map(|r| {
                json!({"verbs": r.verbs, "apiGroups": list(&r.api_groups),
                    "resources": list(&r.resources), "resourceNames": list(&r.resource_names)})
            })
            .collect();
        let non_resource_rules: Vec<Value> = rules
            .iter()
            .filter(|r| r.non_resource_urls.as_ref().is_some_and(|v| !v.is_empty()))
            .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": list(&r.non_resource_urls)}))
            .collect();
        Ok(json!({
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {},
            "status": {
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": false,
            },
        }))
    })
    .await
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`.
pub(super) async fn subject_access_review(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Response {
    answer(async move {
        let body = body_of(req).await?;
        review(&state, body, "SubjectAccessReview", subject_of_spec).await
    })
    .await
}

/// `POST /apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews`.
pub(super) async fn local_subject_access_review(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    req: Request,
) -> Response {
    answer(async move {
        let body = body_of(req).await?;
        let spec = body.get("spec").cloned().unwrap_or(Value::Null);
        if spec
            .get("nonResourceAttributes")
            .is_some_and(|v| !v.is_null())
        {
            return Err(invalid(
                "LocalSubjectAccessReview",
                FieldCause::invalid(
                    "spec.nonResourceAttributes",
                    "",
                    "disallowed on this kind of request",
                ),
            ));
        }
        let asked = spec
            .pointer("/resourceAttributes/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        if asked != ns {
            return Err(invalid(
                "LocalSubjectAccessReview",
                FieldCause::invalid(
                    "spec.resourceAttributes.namespace",
                    asked,
                    "must match metadata.namespace",
                ),
            ));
        }
        let mut out = review(&state, body, "LocalSubjectAccessReview", subject_of_spec).await?;
        out["metadata"]["namespace"] = json!(ns);
        Ok(out)
    })
    .await
}

/// The user a request authenticated as.
fn requester(req: &Request) -> UserInfo {
    req.extensions()
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_default()
}

pub(super) async fn answer(work: impl std::future::Future<Output = ApiResult<Value>>) -> Response {
    match work.await {
        Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn body_of(req: Request) -> ApiResult<Value> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, MAX_REVIEW).await?;
    super::handlers::decode_request(&parts.headers, &bytes)
}

pub(super) fn expect_kind(body: &Value, api_version: &str, kind: &str) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let got = |f: &str| body.get(f).and_then(Value::as_str).unwrap_or("");
    if !got("kind").is_empty() && got("kind") != kind {
        return Err(ApiError::BadRequest(format!(
            "the kind in the body ({}) does not match the kind of the resource ({kind})",
            got("kind")
        )));
    }
    if !got("apiVersion").is_empty() && got("apiVersion") != api_version {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({}) does not match the expected API version ({api_version})",
            got("apiVersion")
        )));
    }
    Ok(())
}

pub(super) fn invalid(kind: &str, cause: FieldCause) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        name: String::new(),
        causes: vec![cause],
    }
}

/// The subject a (Local)SubjectAccessReview asks about: `spec.user` and `spec.groups`.
fn subject_of_spec(spec: &Value) -> ApiResult<UserInfo> {
    let user = UserInfo {
        name: spec
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        ..Default::default()
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(invalid(
            "SubjectAccessReview",
            FieldCause::invalid(
                "spec.user",
                "",
                "at least one of user or group must be specified",
            ),
        ));
    }
    Ok(user)
}

/// Decide an access review of `kind` for the user `who` picks from its spec.
async fn review(
    state: &AppState,
    body: Value,
    kind: &str,
    who: impl FnOnce(&Value) -> ApiResult<UserInfo>,
) -> ApiResult<Value> {
    expect_kind(&body, "authorization.k8s.io/v1", kind)?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let attrs = attributes(&spec, kind)?;
    let user = who(&spec)?;
    // Masters are allowed everything: no need to read the policy.
    let decision = if user.is_master() {
        Some(Allowed::Masters)
    } else {
        load_policy(state).await?.allows(&user, &attrs)
    };
    let status = match decision {
        Some(Allowed::By(reason)) => json!({"allowed": true, "reason": reason}),
        Some(Allowed::Masters) => json!({"allowed": true}),
        None => json!({"allowed": false}),
    };
    Ok(json!({
        "kind": kind,
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    }))
}

/// The request a review asks about: exactly one of `resourceAttributes` and
/// `nonResourceAttributes`, as Kubernetes validates it.
fn attributes(spec: &Value, kind: &str) -> ApiResult<Attributes> {
    let present = |f: &str| spec.get(f).filter(|v| !v.is_null());
    let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    match (
        present("resourceAttributes"),
        present("nonResourceAttributes"),
    ) {
        (Some(_), Some(_)) => Err(invalid(
            kind,
            FieldCause::invalid(
                "spec.nonResourceAttributes",
                "",
                "cannot be specified in combination with resourceAttributes",
            ),
        )),
        (None, None) => Err(invalid(
            kind,
            FieldCause::invalid(
                "spec.resourceAttributes",
                "",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ),
        )),
        (Some(r), None) => Ok(Attributes::Resource {
            verb: s(r, "verb"),
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            namespace: s(r, "namespace"),
        }),
        (None, Some(n)) => Ok(Attributes::NonResource {
            verb: s(n, "verb"),
            path: s(n, "path"),
        }),
    }
}

/// The policy as of now (it has seen every write answered before this request).
async fn load_policy(state: &AppState) -> ApiResult<std::sync::Arc<Policy>> {
    Ok(state.authorizer.policy_at(state.store.revision()).await)
}
