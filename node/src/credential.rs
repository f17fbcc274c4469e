//! The node's own credential: a client certificate for `system:node:NAME` in `system:nodes`,
//! obtained as kubeadm's TLS bootstrap does. The join token only lets a node ask for it: the node
//! makes a key, sends a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet`
//! with the join token, the control plane approves and signs it, and from then on the node acts
//! with the certificate (kept in `DATA/credentials/`, mode 0600) and nothing else. A certificate
//! past 80 % of its life is renewed at start with the certificate itself (`selfnodeclient`).
//!
//! The node's serving certificate (for the agent endpoint, `crate::serving`) comes the same way
//! from the `kubernetes.io/kubelet-serving` signer, asked with the node's own certificate, for
//! its address and name (`DATA/credentials/serving.crt|key`).
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
/// The node serving signer.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

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
    let fresh = request(
        client,
        name,
        KUBELET_SIGNER,
        &["digital signature", "client auth"],
        Vec::new(),
    )
    .await?;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
    write_secret(&key_path, &fresh.key_pem)?;
    write_secret(&cert_path, &fresh.cert_pem)?;
    tracing::info!(node = %name, "node client certificate issued");
    Ok(fresh)
}

/// Renew the node's client certificate at 80 % of its life while the agent runs, with the
/// certificate itself (`selfnodeclient`), and present the new one from then on; failures are
/// retried with a back-off (the old certificate stays valid for the rest of its life).
pub async fn keep_fresh(
    client: kube::Client,
    name: String,
    dir: std::path::PathBuf,
    mut current: Credential,
    identity: std::sync::Arc<skiff_common::client::RotatingIdentity>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(renewal_wait(&current.cert_pem)) => {}
            _ = stop.cancelled() => return,
        }
        let renewed = async {
            let fresh = request(
                client.clone(),
                &name,
                KUBELET_SIGNER,
                &["digital signature", "client auth"],
                Vec::new(),
            )
            .await?;
            identity
                .replace(&fresh.cert_pem, &fresh.key_pem)
                .map_err(|e| NodeError::Register(e.to_string()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
            write_secret(&dir.join("node.key"), &fresh.key_pem)?;
            write_secret(&dir.join("node.crt"), &fresh.cert_pem)?;
            Ok::<_, NodeError>(fresh)
        };
        match renewed.await {
            Ok(fresh) => {
                tracing::info!(node = %name, "node client certificate renewed");
                current = fresh;
                retry = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "renewing the node's client certificate");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.cancelled() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// The stored serving certificate of node `name`, if it names `ip`, with the fraction of its
/// life left.
pub fn stored_serving(dir: &Path, name: &str, ip: std::net::IpAddr) -> Option<(Credential, f64)> {
    let cert_pem = std::fs::read_to_string(dir.join("serving.crt")).ok()?;
    let key_pem = std::fs::read_to_string(dir.join("serving.key")).ok()?;
    let der = rustls_pemfile_cert(&cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let names_ip = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|g| match g {
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).is_ok_and(|a| std::net::IpAddr::from(a) == ip),
                    16 => <[u8; 16]>::try_from(*b).is_ok_and(|a| std::net::IpAddr::from(a) == ip),
                    _ => false,
                },
                _ => false,
            })
        });
    if !names_ip {
        return None;
    }
    let left = remaining_life(&cert_pem, name)?;
    Some((Credential { cert_pem, key_pem }, left))
}

/// Ask for the node's serving certificate (its address and name), with its own client.
pub async fn serving(
    client: kube::Client,
    name: &str,
    ip: std::net::IpAddr,
    dir: &Path,
) -> Result<Credential, NodeError> {
    let mut names = vec![ip.to_string()];
    if skiff_common::names::is_dns1123_subdomain(name) {
        names.push(name.to_string());
    }
    let fresh = request(
        client,
        name,
        SERVING_SIGNER,
        &["digital signature", "key encipherment", "server auth"],
        names,
    )
    .await?;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::Io(format!("{}: {e}", dir.display())))?;
    write_secret(&dir.join("serving.key"), &fresh.key_pem)?;
    write_secret(&dir.join("serving.crt"), &fresh.cert_pem)?;
    Ok(fresh)
}

/// How long to keep a certificate before renewing it: until 80 % of its life has passed, but at
/// least half of what is left (a short certificate, whose validity starts five minutes back for
/// clock skew, is not renewed in a tight loop).
pub fn renewal_wait(cert_pem: &str) -> Duration {
    let left = rustls_pemfile_cert(cert_pem)
        .and_then(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            Some(cert.validity().not_after.timestamp() - jiff::Timestamp::now().as_second())
        })
        .unwrap_or(0)
        .max(0) as u64;
    renew_in(cert_pem, 0.8).max(Duration::from_secs(left / 2))
}

/// How long until `fraction` of the certificate's life has passed (zero if it has).
pub fn renew_in(cert_pem: &str, fraction: f64) -> Duration {
    let validity = rustls_pemfile_cert(cert_pem).and_then(|der| {
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        Some((
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        ))
    });
    let Some((from, to)) = validity else {
        return Duration::ZERO;
    };
    let at = from + ((to - from) as f64 * fraction) as i64;
    let now = jiff::Timestamp::now().as_second();
    Duration::from_secs((at - now).max(0) as u64)
}

/// The fraction of its validity a certificate for this node has left (`None`: not this node's,
/// unreadable, or expired).
pub fn remaining_life(cert_pem: &str, name: &str) -> Option<f64> {
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

/// Ask `signer` for a certificate of node `name` (with alternative `names`) and wait
/// (bounded) for it to be issued.
async fn request(
    client: kube::Client,
    name: &str,
    signer: &str,
    usages: &[&str],
    names: Vec<String>,
) -> Result<Credential, NodeError> {
    let bad = |e: &dyn std::fmt::Display| NodeError::Register(format!("node certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(|e| bad(&e))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| bad(&e))?;
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
    csr::submit(&api, &csr_name, signer, &pem, LIFETIME_SECONDS, usages)
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
    skiff_common::files::write_secret(path, contents)
        .map_err(|e| NodeError::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<String>, from_ago: i64, to_ahead: i64) -> Credential {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(from_ago);
        p.not_after = now + time::Duration::seconds(to_ahead);
        Credential {
            cert_pem: p.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
        }
    }

    #[test]
    fn renewal_times_and_stored_serving_certificates() {
        // Valid 1,000 s, 100 s gone: 80 % is reached in 700 s.
        let c = cert("system:node:n1", vec![], 100, 900);
        let left = renew_in(&c.cert_pem, 0.8).as_secs();
        assert!((698..=700).contains(&left), "{left}");
        assert_eq!(renew_in("garbage", 0.8), Duration::ZERO);
        assert_eq!(renewal_wait(&c.cert_pem), renew_in(&c.cert_pem, 0.8));
        // Backdated and short: half of what is left, not at once.
        let short = cert("system:node:n1", vec![], 300, 20);
        let wait = renewal_wait(&short.cert_pem).as_secs();
        assert!((9..=10).contains(&wait), "{wait}");
        let life = remaining_life(&c.cert_pem, "n1").unwrap();
        assert!((0.89..=0.91).contains(&life), "{life}");
        assert!(
            remaining_life(&c.cert_pem, "n2").is_none(),
            "another node's"
        );
        assert!(remaining_life(&cert("system:node:n1", vec![], 100, -1).cert_pem, "n1").is_none());

        let dir = std::env::temp_dir().join(format!("skiff-cred-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ip: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let store = |c: &Credential| {
            write_secret(&dir.join("serving.crt"), &c.cert_pem).unwrap();
            write_secret(&dir.join("serving.key"), &c.key_pem).unwrap();
        };
        assert!(stored_serving(&dir, "n1", ip).is_none(), "none stored");
        store(&cert(
            "system:node:n1",
            vec!["10.0.0.5".into(), "n1".into()],
            10,
            990,
        ));
        assert!(stored_serving(&dir, "n1", ip).is_some_and(|(_, l)| l > 0.9));
        // A certificate for another address (the node moved) is not used.
        assert!(stored_serving(&dir, "n1", "10.0.0.6".parse().unwrap()).is_none());
        store(&cert("system:node:n2", vec!["10.0.0.5".into()], 10, 990));
        assert!(stored_serving(&dir, "n1", ip).is_none(), "another node's");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
