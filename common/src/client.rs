//! Building a kube-rs client for the skiff API server from a URL, a CA and a bearer token.

use secrecy::SecretString;

/// Errors of building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL does not parse.
    #[error("invalid server URL {0:?}: {1}")]
    Url(String, String),
    /// The CA PEM holds no certificate.
    #[error("the CA file holds no PEM certificate")]
    NoCertificate,
    /// kube-rs refused the configuration.
    #[error("building the API client: {0}")]
    Kube(#[from] kube::Error),
}

/// Where and how to reach the API server.
#[derive(Clone)]
pub struct ApiEndpoint {
    /// `https://host:port`.
    pub url: String,
    /// The cluster CA, PEM.
    pub ca_pem: Vec<u8>,
    /// Bearer token.
    pub token: String,
}

impl ApiEndpoint {
    /// A kube-rs `Config` for this endpoint.
    pub fn kube_config(&self) -> Result<kube::Config, ClientError> {
        let uri: http::Uri = self.url.parse().map_err(|e: http::uri::InvalidUri| {
            ClientError::Url(self.url.clone(), e.to_string())
        })?;
        let mut config = kube::Config::new(uri);
        let ders = pem_to_der(&self.ca_pem);
        if ders.is_empty() {
            return Err(ClientError::NoCertificate);
        }
        config.root_cert = Some(ders);
        config.auth_info.token = Some(SecretString::from(self.token.clone()));
        config.read_timeout = None;
        Ok(config)
    }

    /// A kube-rs client for this endpoint.
    pub fn client(&self) -> Result<kube::Client, ClientError> {
        Ok(kube::Client::try_from(self.kube_config()?)?)
    }

    /// A kube-rs client that authenticates with a client certificate (PEM) instead of the token.
    pub fn client_with_certificate(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<kube::Client, ClientError> {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut config = self.kube_config()?;
        config.auth_info.token = None;
        config.auth_info.client_certificate_data = Some(b64(cert_pem));
        config.auth_info.client_key_data = Some(SecretString::from(b64(key_pem)));
        Ok(kube::Client::try_from(config)?)
    }
}

/// Decode every `CERTIFICATE` block of a PEM text into DER.
pub fn pem_to_der(pem: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = pem;
    rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}
