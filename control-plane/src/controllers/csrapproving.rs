//! Automatic approval of node client certificates, as kube-controller-manager's csrapproving
//! controller: a pending request for `kubernetes.io/kube-apiserver-client-kubelet` that asks for
//! `system:node:NAME` in `system:nodes` (client usages only) is approved when its requestor may
//! create `certificatesigningrequests/nodeclient` (a node joining with the join token) or is that
//! very node and may create `certificatesigningrequests/selfnodeclient` (a renewal), asked with a
//! SubjectAccessReview. A join-token request for a node that already exists is not approved
//! (as k3s refuses a second node with a name in use): the join token cannot be used to take
//! over a running node's identity. Anything else is left for a human (`kubectl certificate
//! approve`).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::csrsigning::{kubelet_node, KUBELET_SIGNER};
use super::ControllerError;

struct Ctx {
    client: kube::Client,
}

/// Which permission a pending node request's requestor needs for it to be approved, and the
/// node it is for, or `None` when it is not one this controller approves.
pub fn needed(csr: &CertificateSigningRequest) -> Option<(&'static str, String)> {
    if csr.spec.signer_name != KUBELET_SIGNER {
        return None;
    }
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| !c.is_empty());
    if decided {
        return None;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let client_only = usages.iter().any(|u| u == "client auth")
        && usages.iter().all(|u| {
            matches!(
                u.as_str(),
                "client auth" | "digital signature" | "key encipherment"
            )
        });
    if !client_only {
        return None;
    }
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let request = rcgen::CertificateSigningRequestParams::from_pem(&pem).ok()?;
    let node = kubelet_node(&request).ok()?;
    let requestor = csr.spec.username.as_deref().unwrap_or("");
    let sub = if requestor == format!("system:node:{node}") {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    Some((sub, node))
}

/// Run the controller until its stream ends.
pub async fn run(client: kube::Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    Controller::new(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, super::retry, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    let (Some(name), Some((sub, node))) = (csr.metadata.name.clone(), needed(&csr)) else {
        return Ok(Action::await_change());
    };
    if sub == "nodeclient" {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
        if nodes.get_opt(&node).await?.is_some() {
            tracing::warn!(csr = %name, node = %node, "a join-token request for an existing node's certificate is left for an administrator");
            return Ok(Action::await_change());
        }
    }
    let spec = &csr.spec;
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": spec.username, "uid": spec.uid, "groups": spec.groups, "extra": spec.extra,
            "resourceAttributes": {"group": "certificates.k8s.io",
                "resource": "certificatesigningrequests", "subresource": sub, "verb": "create"},
        },
    });
    let reviews: Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
        Api::all(ctx.client.clone());
    let answer = reviews
        .create(&PostParams::default(), &serde_json::from_value(review)?)
        .await?;
    if !answer.status.is_some_and(|s| s.allowed) {
        return Ok(Action::await_change());
    }
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let approval = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
        "lastUpdateTime": now, "lastTransitionTime": now,
    }]}});
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval))
        .await?;
    Ok(Action::await_change())
}
