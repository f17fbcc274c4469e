//! ServiceAccount tokens over the API, as kube-apiserver serves them: the TokenRequest
//! subresource (`POST .../serviceaccounts/NAME/token`, `kubectl create token`), TokenReview
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`), and the OpenID discovery documents
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`) that let anyone verify a token
//! offline. Tokens are signed by [`crate::auth::satoken`]; none is stored.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, FieldCause};
use super::registry;
use super::reviews::{answer, body_of, expect_kind, invalid, user_info};
use super::AppState;
use crate::auth::satoken::{self, Claims, KubernetesClaim, Ref};
use crate::resources;

const KIND: &str = "TokenRequest";

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.
pub(super) async fn request(
    state: &Arc<AppState>,
    ns: &str,
    name: &str,
    body: Value,
) -> ApiResult<Value> {
    expect_kind(&body, "authentication.k8s.io/v1", KIND)?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                KIND,
                FieldCause::invalid(
                    "spec.expirationSeconds",
                    &v.to_string(),
                    "must be an integer",
                ),
            )
        })?,
    };
    if seconds < satoken::MIN_EXPIRATION {
        return Err(invalid(
            KIND,
            FieldCause::invalid(
                "spec.expirationSeconds",
                &seconds.to_string(),
                "may not specify a duration less than 10 minutes",
            ),
        ));
    }
    if seconds > satoken::MAX_EXPIRATION {
        return Err(invalid(
            KIND,
            FieldCause::invalid(
                "spec.expirationSeconds",
                &seconds.to_string(),
                "may not specify a duration larger than 2^32 seconds",
            ),
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                invalid(
                    KIND,
                    FieldCause::invalid("spec.audiences", "", "must be strings"),
                )
            })?,
        _ => vec![satoken::ISSUER.to_string()],
    };
    let sa_rt = core("serviceaccounts")?;
    let sa = registry::get_object(state, sa_rt, ns, name).await?;
    let uid = |v: &Value| {
        v.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (pod, pod_node) = match spec.get("boundObjectRef").filter(|v| !v.is_null()) {
        None => (None, None),
        Some(r) => {
            let (pod, node) = bound_pod(state, ns, name, r).await?;
            (Some(pod), node)
        }
    };
    // NodeRestriction: a node gets tokens only for pods bound to it, named by uid.
    if let Some(node) = registry::noderestriction::requesting_node() {
        let given_uid = spec
            .pointer("/boundObjectRef/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let bound = pod.as_ref().map(|_| (given_uid, pod_node.as_deref()));
        registry::noderestriction::token_binding(&node, bound).map_err(|message| {
            ApiError::Denied {
                group: String::new(),
                resource: "serviceaccounts".into(),
                name: name.into(),
                message,
            }
        })?;
    }
    let now = jiff::Timestamp::now();
    let exp = now.as_second() + seconds;
    let claims = Claims {
        iss: satoken::ISSUER.into(),
        sub: satoken::user_name(ns, name),
        aud: audiences.clone(),
        exp,
        iat: now.as_second(),
        nbf: now.as_second(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: KubernetesClaim {
            namespace: ns.into(),
            serviceaccount: Ref {
                name: name.into(),
                uid: uid(&sa),
            },
            pod,
        },
    };
    let token = state
        .authn
        .signer
        .sign(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(seconds);
    if spec.get("boundObjectRef").is_none() {
        spec["boundObjectRef"] = Value::Null;
    }
    let expires = jiff::Timestamp::from_second(exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "kind": KIND,
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns,
            "creationTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// The pod a token is bound to, and its node: it must exist (with the uid given, if one is)
/// and run as the ServiceAccount, as kube-apiserver checks.
async fn bound_pod(
    state: &Arc<AppState>,
    ns: &str,
    sa: &str,
    r: &Value,
) -> ApiResult<(Ref, Option<String>)> {
    let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("");
    if s("kind") != "Pod" {
        return Err(invalid(
            KIND,
            FieldCause::invalid(
                "spec.boundObjectRef.kind",
                s("kind"),
                "supported values: \"Pod\"",
            ),
        ));
    }
    if !matches!(s("apiVersion"), "" | "v1") {
        return Err(invalid(
            KIND,
            FieldCause::invalid(
                "spec.boundObjectRef.apiVersion",
                s("apiVersion"),
                "must be v1",
            ),
        ));
    }
    let pod = registry::get_object(state, core("pods")?, ns, s("name")).await?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !s("uid").is_empty() && s("uid") != uid {
        return Err(ApiError::Conflict {
            resource: "pods".into(),
            name: s("name").into(),
            message: format!(
                "the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated",
                s("uid")
            ),
        });
    }
    let runs_as = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    if runs_as != sa {
        return Err(ApiError::BadRequest(format!(
            "cannot bind token for serviceaccount {sa:?} to pod running with different serviceaccount name."
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    Ok((
        Ref {
            name: s("name").into(),
            uid: uid.into(),
        },
        node,
    ))
}

fn core(plural: &str) -> ApiResult<&'static resources::ResourceType> {
    resources::find("", "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("{plural} are not registered")))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: is `spec.token` valid (for one of
/// `spec.audiences`, by default the API's own), and whose is it?
pub(super) async fn review(State(state): State<Arc<AppState>>, req: Request) -> Response {
    answer(async move {
        let body = body_of(req).await?;
        expect_kind(&body, "authentication.k8s.io/v1", "TokenReview")?;
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
        let asked: Vec<&str> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let audiences = if asked.is_empty() {
            vec![satoken::ISSUER]
        } else {
            asked
        };
        // A ServiceAccount token for one of the audiences; other credentials (static tokens)
        // only for the API's own audience.
        let user = if audiences == [satoken::ISSUER] {
            state.authn.bearer(token, state.store.as_ref()).await
        } else {
            // Tokens for other audiences can only be ServiceAccount tokens.
            state
                .authn
                .service_account(token, &audiences, state.store.as_ref())
                .await
        };
        let status = match user {
            Some(u) => {
                json!({"authenticated": true, "user": user_info(&u), "audiences": audiences})
            }
            None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
        };
        Ok(json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }))
    })
    .await
}

/// `GET /.well-known/openid-configuration`.
pub(super) async fn openid_configuration(State(state): State<Arc<AppState>>) -> Response {
    let jwks = format!("https://{}/openid/v1/jwks", state.advertise);
    axum::Json(satoken::openid_configuration(&jwks)).into_response()
}

/// `GET /openid/v1/jwks`.
pub(super) async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/jwk-set+json")],
        axum::Json(state.authn.signer.jwks()),
    )
        .into_response()
}
