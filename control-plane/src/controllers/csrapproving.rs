//! Automatic approval of node client certificates, as kube-controller-manager's csrapproving
//! controller: a pending request for `kubernetes.io/kube-apiserver-client-kubelet` that asks for
//! `system:node:NAME` in `system:nodes` (client usages only) is approved when its requestor may
//! create `certificatesigningrequests/nodeclient` (a node joining with the join token) or is that
//! very node and may create `certificatesigningrequests/selfnodeclient` (a renewal), asked with a
//! SubjectAccessReview. A join-token request for a node that already exists is not approved
//! (as k3s refuses a second node with a name in use): the join token cannot be used to take
//! over a running node's identity. A node's own request for `kubernetes.io/kubelet-serving` is
//! approved when every name it asks for is the node's: its IP names among the Node's
//! addresses, its DNS names the node's name or its Hostname/DNS addresses (a node cannot get a
//! certificate for another machine's address). Anything else is left for a human (`kubectl
//! certificate approve`).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::csrsigning::{kubelet_node, serving_node, KUBELET_SIGNER, SERVING_SIGNER};
use super::ControllerError;

struct Ctx {
    client: kube::Client,
}

/// May a node's serving request be approved, given the Node's `status.addresses` (type,
/// address)? Its requestor must be that node, and every name it asks for one of the node's.
/// Pure.
pub fn serving_approvable(
    csr: &CertificateSigningRequest,
    addresses: &[(String, String)],
) -> Result<String, String> {
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let request = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("the request does not parse: {e}"))?;
    let (node, dns, ips) = serving_node(&request)?;
    if csr.spec.username.as_deref() != Some(&format!("system:node:{node}")) {
        return Err(format!(
            "only node {node:?} may ask for its serving certificate"
        ));
    }
    for ip in ips {
        let ip = ip.to_string();
        if !addresses
            .iter()
            .any(|(t, a)| matches!(t.as_str(), "InternalIP" | "ExternalIP") && *a == ip)
        {
            return Err(format!("{ip} is not an address of node {node:?}"));
        }
    }
    for name in dns {
        let own = name == node
            || addresses.iter().any(|(t, a)| {
                matches!(t.as_str(), "Hostname" | "InternalDNS" | "ExternalDNS") && *a == name
            });
        if !own {
            return Err(format!("{name} is not a name of node {node:?}"));
        }
    }
    Ok(node)
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
    let Some(name) = csr.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    let undecided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_none_or(|c| c.is_empty());
    if csr.spec.signer_name == SERVING_SIGNER && undecided {
        return approve_serving(&csr, &name, &ctx).await;
    }
    let Some((sub, node)) = needed(&csr) else {
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
    approve(
        &ctx,
        &name,
        "Auto approving kubelet client certificate after SubjectAccessReview.",
    )
    .await
}

/// Approve a node's serving request whose names are all the node's own.
async fn approve_serving(
    csr: &CertificateSigningRequest,
    name: &str,
    ctx: &Ctx,
) -> Result<Action, ControllerError> {
    let node = csr
        .spec
        .username
        .as_deref()
        .and_then(|u| u.strip_prefix("system:node:"))
        .unwrap_or("");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
    let Some(n) = nodes.get_opt(node).await? else {
        return Ok(Action::await_change());
    };
    let addresses: Vec<(String, String)> = n
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    match serving_approvable(csr, &addresses) {
        Ok(_) => {
            approve(
                ctx,
                name,
                "Auto approving kubelet serving certificate: its names are the node's own.",
            )
            .await
        }
        Err(why) => {
            tracing::warn!(csr = %name, %why, "a serving certificate request is left for an administrator");
            Ok(Action::await_change())
        }
    }
}

async fn approve(ctx: &Ctx, name: &str, message: &str) -> Result<Action, ControllerError> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let approval = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "AutoApproved",
        "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    }]}});
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    api.patch_approval(name, &PatchParams::default(), &Patch::Merge(&approval))
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn request(cn: &str, sans: &[&str], requestor: &str) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: SERVING_SIGNER.into(),
                request: k8s_openapi::ByteString(pem.into_bytes()),
                username: Some(requestor.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn serving_requests_name_only_the_nodes_own_addresses() {
        let addresses = vec![
            ("InternalIP".to_string(), "10.0.0.5".to_string()),
            ("Hostname".to_string(), "box5".to_string()),
        ];
        let n1 = "system:node:n1";
        type Case<'a> = (&'a str, &'a [&'a str], &'a str, Result<(), &'a str>);
        let cases: &[Case] = &[
            (n1, &["10.0.0.5"], n1, Ok(())),
            (n1, &["10.0.0.5", "n1", "box5"], n1, Ok(())),
            (
                n1,
                &["10.0.0.6"],
                n1,
                Err("10.0.0.6 is not an address of node \"n1\""),
            ),
            (
                n1,
                &["api.example.com"],
                n1,
                Err("api.example.com is not a name of node \"n1\""),
            ),
            (
                n1,
                &["10.0.0.5"],
                "system:node:n2",
                Err("only node \"n1\" may ask"),
            ),
            (n1, &["10.0.0.5"], "alice", Err("only node \"n1\" may ask")),
            (n1, &[], n1, Err("at least one DNS or IP name")),
            (
                "alice",
                &["10.0.0.5"],
                n1,
                Err("does not begin with \"system:node:\""),
            ),
        ];
        for (cn, sans, requestor, want) in cases {
            let got = serving_approvable(&request(cn, sans, requestor), &addresses);
            match want {
                Ok(()) => assert_eq!(got, Ok("n1".to_string()), "{cn} {sans:?} {requestor}"),
                Err(w) => {
                    let e = got.expect_err("refused");
                    assert!(e.contains(w), "{cn} {sans:?} {requestor}: {e}");
                }
            }
        }
    }
}
