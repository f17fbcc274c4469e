//! Who may decide a CertificateSigningRequest, as kube-apiserver checks it: adding an `Approved`
//! or `Denied` condition needs `approve`, and setting `status.certificate` needs `sign`, on the
//! `signers` resource (`certificates.k8s.io`) named by the request's signer, or its
//! `<domain>/*` wildcard. Members of `system:masters` and the server's own writes pass.

use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::{AppState, REQUEST_USER};
use crate::auth::rbac::{Attributes, UserInfo};
use crate::resources::ResourceType;

const GROUP: &str = "certificates.k8s.io";

/// Check a status or approval write of a request (`old` → `new`).
pub(super) async fn check(
    state: &AppState,
    rt: &ResourceType,
    old: &Value,
    new: &Value,
) -> ApiResult<()> {
    if (rt.group, rt.plural) != (GROUP, "certificatesigningrequests") {
        return Ok(());
    }
    let Ok(user) = REQUEST_USER.try_with(UserInfo::clone) else {
        return Ok(());
    };
    if user.is_master() {
        return Ok(());
    }
    let decided = |obj: &Value| {
        obj.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("Approved" | "Denied")
                )
            })
            .count()
    };
    let certificate = |obj: &Value| obj.pointer("/status/certificate").cloned();
    let signer = new
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut needs = Vec::new();
    if decided(new) > decided(old) {
        needs.push("approve");
    }
    if certificate(new) != certificate(old) && certificate(new).is_some_and(|c| c != "") {
        needs.push("sign");
    }
    let policy = state.authorizer.policy_at(state.store.revision()).await;
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"))
        .unwrap_or_default();
    for verb in needs {
        let allowed = [signer, wildcard.as_str()].iter().any(|name| {
            policy
                .allows(
                    &user,
                    &Attributes::Resource {
                        verb: verb.into(),
                        group: GROUP.into(),
                        resource: "signers".into(),
                        subresource: String::new(),
                        name: name.to_string(),
                        namespace: String::new(),
                    },
                )
                .is_some()
        });
        if !allowed {
            return Err(ApiError::Denied {
                group: GROUP.into(),
                resource: rt.plural.into(),
                name: new
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                message: format!(
                    "user not permitted to {verb} requests with signerName {signer:?}"
                ),
            });
        }
    }
    Ok(())
}
