//! The node's own credential: a client certificate for `system:node:NAME` in `system:nodes`,
//! obtained as kubeadm's TLS bootstrap does. The join token only lets a node ask for it: the node
//! makes a key, sends a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet`
//! with the join token, the control plane approves and signs it, and from then on the node acts
//! with the certificate (kept in `DATA/credentials/`, mode 0600) and nothing else. A certificate
//! past 80 % of its life is renewed at start with the certificate itself (`selfnodeclient`).
//!
//! Invariants: the key never leaves the node; a credential for another node name, or an expired
//! one, is never used.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;
use skiff_common::client::ApiEndpoint;
use skiff_common::csr;

use crate::NodeError;

/// The node client signer.
pub const KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long a node certificate is asked to be valid.
const LIFETIME_SECONDS: i64 = 365 * 24 * 3600;

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct Credential {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// The node's credential: the stored one while it is fresh, else a new one.
pub async fn obtain(
    endpoint: &ApiEndpoint,
    name: &str,
    dir: &Path,
) -> Result<Credential, NodeError> {
    let (cert_path, key_path) = (dir.join("node.crt"), dir.join("node.key"));
    let stored = match (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        (Ok(cert_pem), Ok(key_pem)) => Some(Credential { cert_pem, key_pem }),
        _ => None,
    };
    let life = stored
        .as_ref()
        .and_then(|c| remaining_life(&c.cert_pem, name));
    let stored = match (stored, life) {
        (Some(c), Some(left)) if left > 0.2 => return Ok(c),
        (Some(c), Some(_)) => Some(c),
        _ => None,
    };
    // Renew with the certificate itself while it is valid; otherwise with the join token.
    let client = match &stored {
        Some(c) => endpoint.client_with_certificate(&c.cert_pem, &c.key_pem)?,
        None => endpoint.client()?,
    };
    let fresh = request(client, name).await?;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
    write_secret(&key_path, &fresh.key_pem)?;
    write_secret(&cert_path, &fresh.cert_pem)?;
    tracing::info!(node = %name, "node client certificate issued");
    Ok(fresh)
}

/// The fraction of its validity a certificate for this node has left (`None`: not this node's,
/// unreadable, or expired).
fn remaining_life(cert_pem: &str, name: &str) -> Option<f64> {
    let der = rustls_pemfile_cert(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    if cn != format!("system:node:{name}") {
        return None;
    }
    let (from, to) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let now = jiff::Timestamp::now().as_second();
    (now < to && to > from).then(|| (to - now) as f64 / (to - from) as f64)
}

fn rustls_pemfile_cert(pem: &str) -> Option<Vec<u8>> {
    skiff_common::client::pem_to_der(pem.as_bytes())
        .into_iter()
        .next()
}

/// Ask for a certificate and wait (bounded) for it to be issued.
async fn request(client: kube::Client, name: &str) -> Result<Credential, NodeError> {
    let bad = |e: &dyn std::fmt::Display| NodeError::Register(format!("node certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(|e| bad(&e))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| bad(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| bad(&e))?;
    let suffix: String = (0..6)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect();
    let csr_name = format!("node-csr-{}-{suffix}", name.to_ascii_lowercase());
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let usages = ["digital signature", "client auth"];
    csr::submit(
        &api,
        &csr_name,
        KUBELET_SIGNER,
        &pem,
        LIFETIME_SECONDS,
        &usages,
    )
    .await
    .map_err(|e| bad(&e))?;
    let cert_pem = csr::issued(&api, &csr_name, Duration::from_secs(60))
        .await
        .map_err(|e| bad(&e))?;
    Ok(Credential {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

fn write_secret(path: &Path, contents: &str) -> Result<(), NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| NodeError::Io(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
