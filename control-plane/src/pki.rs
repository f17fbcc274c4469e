//! Cluster identity kept in the data dir: the CA, the API server's serving certificate, the admin
//! token, the node join token, the ServiceAccount token signing key and the admin kubeconfig.
//! Generated on first start, reused after.
//!
//! Invariants: secrets are written with mode 0600 and never logged; the serving certificate is
//! re-issued (by the same CA) when it does not cover the names the server is reached at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Errors of loading or creating the cluster identity.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// File IO failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// A stored token file is malformed.
    #[error("{0}: {1}")]
    Token(PathBuf, skiff_common::token::TokenError),
}

/// The loaded identity.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// CA key, PEM (signs client certificates of approved CertificateSigningRequests).
    pub ca_key_pem: String,
    /// Serving certificate chain, PEM.
    pub server_cert_pem: String,
    /// Serving key, PEM.
    pub server_key_pem: String,
    /// Admin bearer token.
    pub admin_token: String,
    /// Node join token.
    pub node_token: skiff_common::token::JoinToken,
    /// The key that signs ServiceAccount tokens (P-256), PKCS#8 DER.
    pub sa_key_der: Vec<u8>,
    /// Its public point, uncompressed.
    pub sa_public: Vec<u8>,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io(path.into(), e)),
    }
}

/// Write a file atomically with mode 0600 (`skiff_common::files::write_secret`).
pub fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    skiff_common::files::write_secret(path, contents).map_err(|e| PkiError::Io(path.into(), e))
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "skiff-ca");
    p.distinguished_name.push(DnType::OrganizationName, "skiff");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

/// The names the serving certificate must cover.
pub fn server_names(extra: &[IpAddr]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    for ip in extra {
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
    }
    names.dedup();
    names
}

/// A client certificate for `cn` in the groups `orgs`, valid `days` (backdated 5 minutes), and
/// its new key (PEM), signed by the CA.
pub fn issue_client(
    ca_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    orgs: &[&str],
    days: i64,
) -> Result<(String, String), PkiError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, KeyPair::from_pem(ca_key_pem)?)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// Load the identity from `dir`, creating what is missing.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Pki, PkiError> {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| PkiError::Io(tls.clone(), e))?;
        let (ca_pem, ca_key_pem) = match (read(&tls.join("ca.crt"))?, read(&tls.join("ca.key"))?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_secret(&tls.join("ca.key"), &key.serialize_pem())?;
                write_secret(&tls.join("ca.crt"), &cert.pem())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let names_file = tls.join("server.names");
        let want = names.join(",");
        let (server_cert_pem, server_key_pem) = match (
            read(&tls.join("server.crt"))?,
            read(&tls.join("server.key"))?,
            read(&names_file)?,
        ) {
            (Some(c), Some(k), Some(n)) if names.iter().all(|x| n.split(',').any(|y| y == x)) => {
                (c, k)
            }
            _ => {
                let ca_key = KeyPair::from_pem(&ca_key_pem)?;
                let issuer = Issuer::new(ca_params()?, ca_key);
                let key = KeyPair::generate()?;
                let mut p = CertificateParams::new(names.to_vec())?;
                p.distinguished_name
                    .push(DnType::CommonName, "skiff-apiserver");
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                p.not_before = rcgen::date_time_ymd(2025, 1, 1);
                p.not_after = rcgen::date_time_ymd(2035, 1, 1);
                let cert = p.signed_by(&key, &issuer)?;
                write_secret(&tls.join("server.key"), &key.serialize_pem())?;
                write_secret(&tls.join("server.crt"), &cert.pem())?;
                write_secret(&names_file, &want)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let admin_path = dir.join("admin-token");
        let admin_token = match read(&admin_path)? {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = random_hex(32);
                write_secret(&admin_path, &t)?;
                t
            }
        };
        let node_path = dir.join("node-token");
        let node_token = match read(&node_path)? {
            Some(t) if !t.trim().is_empty() => skiff_common::token::JoinToken::parse(&t)
                .map_err(|e| PkiError::Token(node_path.clone(), e))?,
            _ => {
                let t = skiff_common::token::JoinToken::new(ca_pem.as_bytes(), &random_hex(32));
                write_secret(&node_path, &format!("{t}\n"))?;
                t
            }
        };
        // The ServiceAccount signing key, kept so tokens survive restarts.
        let sa_path = tls.join("service-account.key");
        let sa_key = match read(&sa_path)? {
            Some(pem) => KeyPair::from_pem(&pem)?,
            None => {
                let key = KeyPair::generate()?;
                write_secret(&sa_path, &key.serialize_pem())?;
                key
            }
        };
        Ok(Pki {
            ca_key_pem,
            sa_key_der: sa_key.serialize_der(),
            sa_public: sa_key.public_key_raw().to_vec(),
            ca_pem,
            server_cert_pem,
            server_key_pem,
            admin_token,
            node_token,
        })
    }

    /// The admin kubeconfig for a server reached at `url`.
    pub fn kubeconfig(&self, url: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: skiff-admin\n  user:\n    token: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff-admin\n    namespace: default\ncurrent-context: skiff\n",
            self.admin_token
        )
    }
}
