//! Building a kube-rs client for the skiff API server from a URL, a CA and a bearer token, or a
//! client certificate; with [`RotatingIdentity`], a certificate that can be replaced while the
//! client runs (new connections use the new one), as the kubelet rotates its own.

use std::sync::{Arc, RwLock};

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
    /// A certificate or key could not be used.
    #[error("client certificate: {0}")]
    Identity(String),
}

/// A client certificate and key that clients present, replaceable while they run.
#[derive(Debug)]
pub struct RotatingIdentity(RwLock<Arc<rustls::sign::CertifiedKey>>);

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, ClientError> {
    let bad = |e: &dyn std::fmt::Display| ClientError::Identity(e.to_string());
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = pem_to_der(cert_pem.as_bytes())
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    if certs.is_empty() {
        return Err(ClientError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| bad(&e))?
        .ok_or_else(|| bad(&"no private key in PEM"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&e))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(certs, signing)))
}

impl RotatingIdentity {
    /// Start with this certificate (PEM) and key (PEM).
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<RotatingIdentity>, ClientError> {
        Ok(Arc::new(RotatingIdentity(RwLock::new(certified_key(
            cert_pem, key_pem,
        )?))))
    }

    /// Present this certificate from now on (connections already open keep the old one).
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), ClientError> {
        let ck = certified_key(cert_pem, key_pem)?;
        if let Ok(mut cur) = self.0.write() {
            *cur = ck;
        }
        Ok(())
    }
}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
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
    /// Other API servers of the same cluster (`https://host:port`), tried in turn when the
    /// current one cannot be reached (clients with a rotating identity only).
    pub fallbacks: Vec<String>,
}

/// Sends each request to the current API server of a list, moving to the next one when a
/// request fails without an answer (the server is down or unreachable); the failed request's
/// error goes to its caller, whose retry reaches the next server. The agent's analogue of
/// k3s' agent load balancer.
#[derive(Clone)]
struct Failover<S> {
    servers: Arc<Vec<(http::uri::Scheme, http::uri::Authority)>>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Failover<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        use std::sync::atomic::Ordering;
        let n = self.servers.len().max(1);
        let i = self.current.load(Ordering::Acquire);
        if let Some((scheme, authority)) = self.servers.get(i % n) {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            parts.path_and_query = req
                .uri()
                .path_and_query()
                .cloned()
                .or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
        let fut = self.inner.call(req);
        let current = self.current.clone();
        Box::pin(async move {
            let answer = fut.await;
            if answer.is_err() && n > 1 {
                // Only the first of many failing requests moves on.
                let _ = current.compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire);
            }
            answer
        })
    }
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

    /// A rustls client configuration that trusts only the cluster CA and presents `identity`.
    pub fn tls_with_identity(
        &self,
        identity: Arc<RotatingIdentity>,
    ) -> Result<rustls::ClientConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for der in pem_to_der(&self.ca_pem) {
            roots
                .add(rustls::pki_types::CertificateDer::from(der))
                .map_err(|e| ClientError::Identity(format!("cluster CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::NoCertificate);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Identity(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(identity))
    }

    /// A kube-rs client that presents `identity`, whose certificate may be replaced while the
    /// client is in use (kube-rs' own stack fixes the certificate when it is built), and that
    /// moves to the next of `url` and `fallbacks` when its server cannot be reached.
    pub fn client_with_identity(
        &self,
        identity: Arc<RotatingIdentity>,
    ) -> Result<kube::Client, ClientError> {
        use kube::client::ConfigExt as _;
        use tower::ServiceExt as _;
        let mut config = self.kube_config()?;
        config.auth_info.token = None;
        let tls = self.tls_with_identity(identity)?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        let mut servers = Vec::new();
        for url in std::iter::once(&self.url).chain(&self.fallbacks) {
            let uri: http::Uri = url
                .parse()
                .map_err(|e: http::uri::InvalidUri| ClientError::Url(url.clone(), e.to_string()))?;
            let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
            else {
                return Err(ClientError::Url(url.clone(), "no scheme or host".into()));
            };
            servers.push((scheme, authority));
        }
        let failover = Failover {
            servers: Arc::new(servers),
            current: Arc::default(),
            inner: hyper,
        };
        let service = tower::ServiceBuilder::new()
            .layer(config.extra_headers_layer()?)
            .service(failover)
            .map_err(tower::BoxError::from);
        Ok(kube::Client::new(service, config.default_namespace))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "ca");
        let pem = p.self_signed(&key).unwrap().pem();
        (rcgen::Issuer::new(p, key), pem)
    }

    fn leaf(
        ca: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        sans: Vec<String>,
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        (p.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
    }

    /// A replaced identity is what the next connection presents.
    #[tokio::test]
    async fn a_rotating_identity_is_presented_by_new_connections() {
        let (ca, ca_pem) = ca();
        let (server_cert, server_key) = leaf(
            &ca,
            "server",
            vec!["127.0.0.1".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = |cn| leaf(&ca, cn, vec![], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let (a_cert, a_key) = client("first");
        let (b_cert, b_key) = client("second");

        let certs = pem_to_der(server_cert.as_bytes())
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect();
        let key = rustls_pemfile::private_key(&mut server_key.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                pem_to_der(ca_pem.as_bytes()).remove(0),
            ))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
                let cn = cert.subject().iter_common_name().next().unwrap();
                let _ = seen_tx.send(cn.as_str().unwrap().to_string());
            }
        });

        let endpoint = ApiEndpoint {
            fallbacks: Vec::new(),
            url: format!("https://{addr}"),
            ca_pem: ca_pem.into_bytes(),
            token: String::new(),
        };
        let identity = RotatingIdentity::new(&a_cert, &a_key).unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            endpoint.tls_with_identity(identity.clone()).unwrap(),
        ));
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector.connect(name.clone(), tcp).await.unwrap()
        };
        let _first = connect().await;
        assert_eq!(seen.recv().await.unwrap(), "first");
        identity.replace(&b_cert, &b_key).unwrap();
        let _second = connect().await;
        assert_eq!(seen.recv().await.unwrap(), "second");
        assert!(identity.replace("not a certificate", &b_key).is_err());
    }
}
