//! CertificateSigningRequest signing, as kube-controller-manager's csrsigning controller does it
//! for the `kubernetes.io/kube-apiserver-client` and `kubernetes.io/kube-apiserver-client-kubelet`
//! signers: an approved, not denied or failed request for one of them gets a client certificate
//! signed by the cluster CA (the request's subject, so CN is the user and each O a group; a
//! kubelet request must be `system:node:NAME` in exactly `system:nodes`, without alternative
//! names; usages only `client auth`, `digital signature`,
//! `key encipherment`; valid for `spec.expirationSeconds`, at most a year, backdated five minutes
//! for clock skew). The `kubernetes.io/kubelet-serving` signer makes a node's serving
//! certificate (for the agent endpoint the API server calls): `system:node:NAME` in exactly
//! `system:nodes`, usages `server auth` (and `digital signature`, `key encipherment`), at least
//! one DNS or IP alternative name and no other kind, kept in the certificate.
//! A request that cannot be signed gets a `Failed` condition that says why.
//! [`decide`] is pure.

use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerError;

/// The signer of users' client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of nodes' client certificates.
pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The signer of nodes' serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Longest validity a request may ask for (kube-controller-manager's default
/// `--cluster-signing-duration`).
pub const MAX_DURATION_SECONDS: i64 = 365 * 24 * 3600;

const ALLOWED_USAGES: &[&str] = &["client auth", "digital signature", "key encipherment"];
const SERVING_USAGES: &[&str] = &["server auth", "digital signature", "key encipherment"];

struct Ctx {
    client: kube::Client,
    ca_pem: String,
    ca_key_pem: String,
    /// `--cluster-signing-duration`, seconds.
    max_seconds: i64,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours, not approved, or already decided.
    Skip,
    /// Sign it, valid for this many seconds.
    Sign(i64),
    /// Mark it failed with this message.
    Fail(String),
}

/// What a request needs, from its spec and status alone.
pub fn decide(csr: &CertificateSigningRequest) -> Decision {
    let (allowed, required, kind) = match csr.spec.signer_name.as_str() {
        CLIENT_SIGNER | KUBELET_SIGNER => (ALLOWED_USAGES, "client auth", "client"),
        SERVING_SIGNER => (SERVING_USAGES, "server auth", "serving"),
        _ => return Decision::Skip,
    };
    let status = csr.status.as_ref();
    if status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
    {
        return Decision::Skip;
    }
    let has = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == t && c.status != "False")
    };
    if !has("Approved") || has("Denied") || has("Failed") {
        return Decision::Skip;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Decision::Fail(format!("invalid usage for {kind} certificate: {bad}"));
    }
    if !usages.iter().any(|u| u == required) {
        return Decision::Fail(format!("missing required usages: {required}"));
    }
    let seconds = csr
        .spec
        .expiration_seconds
        .map_or(MAX_DURATION_SECONDS, i64::from)
        .clamp(600, MAX_DURATION_SECONDS);
    Decision::Sign(seconds)
}

/// The node a kubelet client request is for: CN `system:node:NAME`, O exactly `system:nodes`,
/// no alternative names (as Kubernetes' `ValidateKubeletClientCSR`).
pub fn kubelet_node(csr: &rcgen::CertificateSigningRequestParams) -> Result<String, String> {
    let node = node_subject(csr)?;
    if !csr.params.subject_alt_names.is_empty() {
        return Err("a node client certificate may not have alternative names".into());
    }
    Ok(node)
}

/// The node a serving request is for and the names it asks for: CN `system:node:NAME`, O
/// exactly `system:nodes`, DNS and IP alternative names only, at least one (as Kubernetes'
/// `ValidateKubeletServingCSR`).
pub fn serving_node(
    csr: &rcgen::CertificateSigningRequestParams,
) -> Result<(String, Vec<String>, Vec<std::net::IpAddr>), String> {
    let node = node_subject(csr)?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for san in &csr.params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(n) => dns.push(n.as_str().to_string()),
            rcgen::SanType::IpAddress(ip) => ips.push(*ip),
            other => {
                return Err(format!(
                    "a node serving certificate may have only DNS and IP names, not {other:?}"
                ))
            }
        }
    }
    if dns.is_empty() && ips.is_empty() {
        return Err("a node serving certificate needs at least one DNS or IP name".into());
    }
    Ok((node, dns, ips))
}

/// The node named by a request's subject: CN `system:node:NAME`, O exactly `system:nodes`.
fn node_subject(csr: &rcgen::CertificateSigningRequestParams) -> Result<String, String> {
    let dn = &csr.params.distinguished_name;
    let text = |t: &rcgen::DnType| dn.get(t).and_then(dn_text);
    let cn = text(&rcgen::DnType::CommonName).unwrap_or_default();
    let node = cn
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            format!("subject common name {cn:?} does not begin with \"system:node:\"")
        })?;
    let orgs: Vec<String> = dn
        .iter()
        .filter(|(t, _)| **t == rcgen::DnType::OrganizationName)
        .filter_map(|(_, v)| dn_text(v))
        .collect();
    if orgs != ["system:nodes"] {
        return Err(format!(
            "subject organization {orgs:?} is not [\"system:nodes\"]"
        ));
    }
    Ok(node.to_string())
}

fn dn_text(v: &rcgen::DnValue) -> Option<String> {
    match v {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_string()),
        rcgen::DnValue::TeletexString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// A certificate (PEM) for the PEM certificate request `request`, signed by the CA: a client
/// certificate, or for the serving signer a node's serving certificate with its names; a
/// request of a kubelet signer must name a node.
pub fn sign(
    request_pem: &str,
    signer: &str,
    seconds: i64,
    ca_pem: &str,
    ca_key_pem: &str,
) -> Result<String, String> {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(request_pem)
        .map_err(|e| format!("the request could not be parsed or verified: {e}"))?;
    let serving = signer == SERVING_SIGNER;
    if signer == KUBELET_SIGNER {
        kubelet_node(&csr)?;
    }
    if serving {
        serving_node(&csr)?;
    }
    let cn = csr
        .params
        .distinguished_name
        .get(&rcgen::DnType::CommonName)
        .is_some();
    if !cn {
        return Err("the request's subject has no common name (the user name)".into());
    }
    let p = &mut csr.params;
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    if serving {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        p.subject_alt_names.clear();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    }
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(seconds);
    let mut serial = [0u8; 16];
    serial.iter_mut().for_each(|b| *b = rand::random());
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| e.to_string())?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(|e| e.to_string())?;
    let cert = csr.signed_by(&issuer).map_err(|e| e.to_string())?;
    Ok(cert.pem())
}

/// Run the controller until its stream ends; no certificate is valid longer than `longest`.
pub async fn run(
    client: kube::Client,
    ca_pem: String,
    ca_key_pem: String,
    longest: std::time::Duration,
) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        ca_pem,
        ca_key_pem,
        max_seconds: i64::try_from(longest.as_secs())
            .unwrap_or(MAX_DURATION_SECONDS)
            .max(1),
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
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let failed = |reason: &str, message: &str| {
        let mut conditions = csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.push(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_update_time: None,
                last_transition_time: None,
            },
        );
        let mut conditions = serde_json::to_value(conditions).unwrap_or(json!([]));
        if let Some(last) = conditions.as_array_mut().and_then(|c| c.last_mut()) {
            last["lastUpdateTime"] = json!(now);
            last["lastTransitionTime"] = json!(now);
        }
        json!({"status": {"conditions": conditions}})
    };
    let patch = match decide(&csr) {
        Decision::Skip => return Ok(Action::await_change()),
        Decision::Fail(message) => failed("SignerValidationFailure", &message),
        Decision::Sign(seconds) => {
            let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
            match sign(
                &pem,
                &csr.spec.signer_name,
                seconds.min(ctx.max_seconds),
                &ctx.ca_pem,
                &ctx.ca_key_pem,
            ) {
                Ok(cert) => json!({"status": {"certificate":
                    base64::engine::general_purpose::STANDARD.encode(cert)}}),
                Err(message) => failed("SignerValidationFailure", &message),
            }
        }
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use k8s_openapi::ByteString;

    fn csr(
        signer: &str,
        usages: &[&str],
        conditions: &[&str],
        issued: bool,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                certificate: issued.then(|| ByteString(b"x".to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|t| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn signing_decisions() {
        let client = &["client auth", "digital signature"][..];
        let cases = [
            (
                csr(CLIENT_SIGNER, client, &["Approved"], false),
                Decision::Sign(3600),
            ),
            (
                csr(
                    SERVING_SIGNER,
                    &["server auth", "digital signature"],
                    &["Approved"],
                    false,
                ),
                Decision::Sign(3600),
            ),
            (
                csr(SERVING_SIGNER, client, &["Approved"], false),
                Decision::Fail("invalid usage for serving certificate: client auth".into()),
            ),
            (
                csr(SERVING_SIGNER, &["digital signature"], &["Approved"], false),
                Decision::Fail("missing required usages: server auth".into()),
            ),
            (csr(CLIENT_SIGNER, client, &[], false), Decision::Skip),
            (
                csr(CLIENT_SIGNER, client, &["Approved", "Denied"], false),
                Decision::Skip,
            ),
            (
                csr(CLIENT_SIGNER, client, &["Approved", "Failed"], false),
                Decision::Skip,
            ),
            (
                csr(CLIENT_SIGNER, client, &["Approved"], true),
                Decision::Skip,
            ),
            (
                csr("example.com/other", client, &["Approved"], false),
                Decision::Skip,
            ),
            (
                csr(
                    CLIENT_SIGNER,
                    &["client auth", "server auth"],
                    &["Approved"],
                    false,
                ),
                Decision::Fail("invalid usage for client certificate: server auth".into()),
            ),
            (
                csr(CLIENT_SIGNER, &["digital signature"], &["Approved"], false),
                Decision::Fail("missing required usages: client auth".into()),
            ),
        ];
        for (c, want) in cases {
            assert_eq!(decide(&c), want, "{:?}", c.spec.usages);
        }
    }

    #[test]
    fn a_signed_request_is_a_client_certificate_of_its_subject() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut req = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        req.distinguished_name
            .push(rcgen::DnType::OrganizationName, "devs");
        req.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let request = req.serialize_request(&key).unwrap().pem().unwrap();
        let cert = sign(
            &request,
            CLIENT_SIGNER,
            3600,
            &ca_pem,
            &ca_key.serialize_pem(),
        )
        .unwrap();
        // Not a node: the kubelet signer refuses it.
        let err = sign(
            &request,
            KUBELET_SIGNER,
            3600,
            &ca_pem,
            &ca_key.serialize_pem(),
        );
        assert!(err.unwrap_err().contains("system:node:"));
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "alice");
        assert!(!parsed.is_ca(), "a request cannot make itself a CA");
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(parsed.subject_alternative_name().unwrap().is_none());
        let life =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        // A request whose signature does not verify is refused.
        let tampered = request.replace('A', "B");
        assert!(sign(
            &tampered,
            CLIENT_SIGNER,
            3600,
            &ca_pem,
            &ca_key.serialize_pem()
        )
        .is_err());
        // A node's request (for a signer), and one that claims more groups.
        let node_request = |signer: &str, orgs: &[&str], sans: Vec<String>| {
            let mut p = rcgen::CertificateParams::new(sans).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "system:node:n1");
            for o in orgs {
                p.distinguished_name
                    .push(rcgen::DnType::OrganizationName, *o);
            }
            let pem = p.serialize_request(&key).unwrap().pem().unwrap();
            sign(&pem, signer, 3600, &ca_pem, &ca_key.serialize_pem())
        };
        let node = |orgs: &[&str], sans| node_request(KUBELET_SIGNER, orgs, sans);
        assert!(node(&["system:nodes"], vec![]).is_ok());
        assert!(node(&["system:nodes", "system:masters"], vec![]).is_err());
        assert!(node(&["system:nodes"], vec!["n1.example".into()]).is_err());
        // A node's serving request keeps its names and is for servers only.
        let serving = |orgs: &[&str], sans| node_request(SERVING_SIGNER, orgs, sans);
        let cert = serving(&["system:nodes"], vec!["127.0.0.1".into(), "n1".into()]).unwrap();
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let names = parsed.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(names.general_names.len(), 2);
        assert!(serving(&["system:nodes"], vec![]).is_err());
        assert!(serving(&["devs"], vec!["n1".into()]).is_err());
    }
}
