//! `skiff kubeconfig --user NAME [--group G]... [--namespace NS]`: a ready kubeconfig for a new
//! user, made the Kubernetes way: a key generated here (it never leaves this process but in the
//! kubeconfig printed), a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client`
//! with CN = the user and O = each group, approved, and the certificate the cluster's signer
//! issues. Run as someone allowed to create and approve such requests (the admin).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// What to make.
pub struct Request {
    /// The admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// User name (the certificate's CN).
    pub user: String,
    /// Groups (each an O).
    pub groups: Vec<String>,
    /// Default namespace of the context.
    pub namespace: Option<String>,
    /// Validity of the certificate, seconds.
    pub seconds: i64,
}

/// Make the user's kubeconfig and return its text.
pub async fn make(req: Request) -> Result<String> {
    if req.user.is_empty() || req.user.contains(['\n', '\r']) {
        bail!("--user must be a non-empty single line");
    }
    let text = std::fs::read_to_string(&req.kubeconfig)
        .with_context(|| format!("reading {}", req.kubeconfig.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text).context("parsing the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kc.clone(), &Default::default())
        .await
        .context("using the kubeconfig")?;
    let server = config.cluster_url.to_string();
    let ca_pem: String = match config.root_cert.as_ref().and_then(|c| c.first()) {
        Some(der) => pem_of("CERTIFICATE", der),
        None => bail!("the kubeconfig has no cluster CA"),
    };
    let client = kube::Client::try_from(config).context("building the API client")?;

    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, req.user.as_str());
    for g in &req.groups {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, g.as_str());
    }
    let request = params.serialize_request(&key)?.pem()?;

    let api: Api<CertificateSigningRequest> = Api::all(client);
    let name = format!("skiff-user-{}-{}", dns_label(&req.user), suffix());
    skiff_common::csr::submit(
        &api,
        &name,
        "kubernetes.io/kube-apiserver-client",
        &request,
        req.seconds,
        &["client auth", "digital signature"],
    )
    .await
    .context("creating the certificate signing request")?;
    let approval = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "SkiffKubeconfig",
        "message": format!("approved by skiff kubeconfig for user {}", req.user),
    }]}});
    api.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&approval))
        .await
        .context("approving the certificate signing request")?;
    let cert = skiff_common::csr::issued(&api, &name, Duration::from_secs(30)).await?;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let context = format!("{}@skiff", req.user);
    let namespace = req
        .namespace
        .as_deref()
        .map(|ns| format!("    namespace: {ns:?}\n"))
        .unwrap_or_default();
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server:?}\n    certificate-authority-data: {}\nusers:\n- name: {user:?}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {context:?}\n  context:\n    cluster: skiff\n    user: {user:?}\n{namespace}current-context: {context:?}\n",
        b64(&ca_pem),
        b64(&cert),
        b64(&key.serialize_pem()),
        user = req.user,
    ))
}

fn pem_of(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A DNS label made of the user name (lower-case letters, digits, dashes; at most 40).
fn dns_label(user: &str) -> String {
    let s: String = user
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "user".into()
    } else {
        s
    }
}

fn suffix() -> String {
    (0..5)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect()
}
