//! The agent endpoint's security, as the kubelet's: HTTPS with a serving certificate signed by
//! the cluster CA for the node's own address (`kubernetes.io/kubelet-serving`, requested once
//! the node is registered and renewed at 80 % of its life), callers authenticated by a client
//! certificate of the cluster CA or a bearer token (TokenReview), and every request authorized
//! by the API server (SubjectAccessReview for `nodes/<subresource>` of this node: `proxy` for
//! container logs, `metrics` for `/metrics`), answers remembered for 10 s. The API server calls
//! with its own client certificate (`kube-apiserver-kubelet-client`), so the node serves logs
//! to whom the cluster's RBAC allows, and to no holder of a shared secret.
//!
//! Invariants: no request is served before its caller is authenticated and authorized; a
//! token is remembered only by its SHA-256; the caches are bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::credential::Credential;
use crate::NodeError;

/// How long an authentication or authorization answer is remembered.
const REMEMBER: Duration = Duration::from_secs(10);
/// Answers remembered at most (then all are forgotten).
const CACHE_ENTRIES: usize = 4096;

/// The serving certificate, replaceable while the endpoint runs; none yet: handshakes fail.
#[derive(Debug, Default)]
pub struct ServingCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingCert {
    /// Serve with `cred` from now on.
    pub fn install(&self, cred: &Credential) -> Result<(), NodeError> {
        let bad = |e: &dyn std::fmt::Display| NodeError::Io(format!("serving certificate: {e}"));
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            skiff_common::client::pem_to_der(cred.cert_pem.as_bytes())
                .into_iter()
                .map(rustls::pki_types::CertificateDer::from)
                .collect();
        let key = rustls_pemfile::private_key(&mut cred.key_pem.as_bytes())
            .map_err(|e| bad(&e))?
            .ok_or_else(|| bad(&"no key"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&e))?;
        let ck = Arc::new(CertifiedKey::new(certs, signing));
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(ck);
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok()?.clone()
    }
}

/// The TLS set-up of the agent endpoint: the swappable serving certificate, and client
/// certificates of the cluster CA (optional: bearer tokens are accepted too).
pub fn acceptor(
    ca_pem: &[u8],
    cert: Arc<ServingCert>,
) -> Result<tokio_rustls::TlsAcceptor, NodeError> {
    let bad = |e: &dyn std::fmt::Display| NodeError::Ca(format!("agent endpoint TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in skiff_common::client::pem_to_der(ca_pem) {
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .map_err(|e| bad(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| bad(&e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Who called, as the API server would see them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// The user a verified client certificate names (CN, each O a group).
fn certificate_caller(der: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    let mut groups: Vec<String> = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    (!cn.is_empty()).then(|| Caller {
        name: cn.to_string(),
        groups,
        ..Default::default()
    })
}

/// Serve `router` over TLS on `listener` until `stop`; each request carries the caller its
/// client certificate names, if any.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "agent endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let tls = tls.clone();
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake is dropped.
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "agent endpoint handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let caller = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|der| certificate_caller(der.as_ref()));
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(c) = &caller {
                        req.extensions_mut().insert(c.clone());
                    }
                    let mut router = router.clone();
                    tower_service::Service::call(&mut router, req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

/// Answers remembered with when they were given.
type Remembered<K, V> = Mutex<HashMap<K, (Instant, V)>>;

/// Authenticates and authorizes the agent endpoint's callers through the API server.
pub struct Guard {
    client: kube::Client,
    node: String,
    /// Token SHA-256 → the user it is (None: not valid).
    tokens: Remembered<[u8; 32], Option<Caller>>,
    /// (user, uid, groups, verb, subresource) → allowed.
    decisions: Remembered<String, bool>,
}

fn refusal(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()})),
    )
        .into_response()
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Remembered<K, V>, k: K, v: V) {
    if let Ok(mut m) = map.lock() {
        if m.len() >= CACHE_ENTRIES {
            m.clear();
        }
        m.insert(k, (Instant::now(), v));
    }
}

fn recall<K: std::hash::Hash + Eq, V: Clone>(map: &Remembered<K, V>, k: &K) -> Option<V> {
    let m = map.lock().ok()?;
    m.get(k)
        .filter(|(at, _)| at.elapsed() < REMEMBER)
        .map(|(_, v)| v.clone())
}

impl Guard {
    /// A guard of node `node`'s endpoint, asking the API through `client`.
    pub fn new(client: kube::Client, node: &str) -> Guard {
        Guard {
            client,
            node: node.to_string(),
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// Let the request through (Ok) or answer 401/403 as the kubelet does.
    pub async fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        certificate: Option<&Caller>,
        subresource: &str,
    ) -> Result<(), Response> {
        let caller = match certificate {
            Some(c) => c.clone(),
            None => {
                let token = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                let unauthorized = || {
                    refusal(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "Unauthorized".into(),
                    )
                };
                match token {
                    Some(t) => self.review(t).await.ok_or_else(unauthorized)?,
                    None => return Err(unauthorized()),
                }
            }
        };
        let verb = match method.as_str() {
            "GET" | "HEAD" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "*",
        };
        if self.allowed(&caller, verb, subresource).await {
            Ok(())
        } else {
            Err(refusal(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                    caller.name
                ),
            ))
        }
    }

    /// The user a bearer token is, by TokenReview (remembered by its SHA-256).
    async fn review(&self, token: &str) -> Option<Caller> {
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(known) = recall(&self.tokens, &key) {
            return known;
        }
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let got = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview for the agent endpoint failed");
                return None;
            }
        };
        let caller = got
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .map(|u| Caller {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            })
            .filter(|c| !c.name.is_empty());
        remember(&self.tokens, key, caller.clone());
        caller
    }

    /// May `caller` `verb` `nodes/<subresource>` of this node? (SubjectAccessReview.)
    async fn allowed(&self, caller: &Caller, verb: &str, subresource: &str) -> bool {
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{verb}\u{0}{subresource}",
            caller.name,
            caller.uid,
            caller.groups.join("\u{1}")
        );
        if let Some(known) = recall(&self.decisions, &key) {
            return known;
        }
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.name.clone()),
                uid: (!caller.uid.is_empty()).then(|| caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let allowed = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview for the agent endpoint failed");
                return false;
            }
        };
        remember(&self.decisions, key, allowed);
        allowed
    }
}

/// Keep the endpoint's serving certificate: the stored one while fresh, else one requested
/// once the node is registered (its address must be on its Node object for the approval);
/// renewed at 80 % of its life. Failures are retried with a back-off.
pub async fn keep_cert(
    client: kube::Client,
    node: String,
    host_ip: IpAddr,
    dir: std::path::PathBuf,
    cert: Arc<ServingCert>,
    registered: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut waited_for_registration = false;
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match crate::credential::stored_serving(&dir, &node, host_ip) {
            Some((cred, left)) if left > 0.2 => {
                if let Err(e) = cert.install(&cred) {
                    tracing::warn!(error = %e, "installing the serving certificate");
                }
                crate::credential::renewal_wait(&cred.cert_pem)
            }
            _ => {
                if !waited_for_registration {
                    tokio::select! {
                        _ = registered.notified() => {}
                        _ = stop.cancelled() => return,
                    }
                    waited_for_registration = true;
                }
                match crate::credential::serving(client.clone(), &node, host_ip, &dir).await {
                    Ok(cred) => {
                        retry = Duration::from_secs(1);
                        if let Err(e) = cert.install(&cred) {
                            tracing::warn!(error = %e, "installing the serving certificate");
                        }
                        tracing::info!(node = %node, "node serving certificate issued");
                        crate::credential::renewal_wait(&cred.cert_pem)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "requesting the node's serving certificate");
                        retry = (retry * 2).min(Duration::from_secs(60));
                        retry
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}
