//! Asking the cluster's signer for a client certificate: submit a CertificateSigningRequest and
//! wait (a watch, bounded) until it is issued, denied or failed. Used by the node's TLS
//! bootstrap and by `skiff kubeconfig`; approval is the caller's business (a controller, or the
//! admin).

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};

/// Why no certificate came.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The API refused or failed a request.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Nothing was decided in time.
    #[error("{0} was not approved and signed within {1:?}")]
    Timeout(String, Duration),
    /// Denied or failed, with the conditions' reasons.
    #[error("{0} was not issued ({1})")]
    NotIssued(String, String),
}

/// Create the request `name` for `signer` with the PEM certificate request `request_pem`.
pub async fn submit(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    signer: &str,
    request_pem: &str,
    seconds: i64,
    usages: &[&str],
) -> Result<(), CsrError> {
    let mut csr = CertificateSigningRequest::default();
    csr.metadata.name = Some(name.to_string());
    csr.spec.request = k8s_openapi::ByteString(request_pem.as_bytes().to_vec());
    csr.spec.signer_name = signer.to_string();
    csr.spec.expiration_seconds = i32::try_from(seconds).ok();
    csr.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
    api.create(&PostParams::default(), &csr).await?;
    Ok(())
}

/// The certificate (PEM) of request `name` once issued, waiting at most `timeout`.
pub async fn issued(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    timeout: Duration,
) -> Result<String, CsrError> {
    let decided = |c: Option<&CertificateSigningRequest>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|c| !c.0.is_empty())
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        })
    };
    let done = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api.clone(), name, decided),
    )
    .await
    .map_err(|_| CsrError::Timeout(name.to_string(), timeout))?
    .map_err(|e| CsrError::NotIssued(name.to_string(), e.to_string()))?;
    let status = done.and_then(|c| c.status).unwrap_or_default();
    match status.certificate {
        Some(c) if !c.0.is_empty() => Ok(String::from_utf8_lossy(&c.0).into_owned()),
        _ => {
            let why: Vec<String> = status
                .conditions
                .iter()
                .flatten()
                .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default()))
                .collect();
            Err(CsrError::NotIssued(name.to_string(), why.join("; ")))
        }
    }
}
