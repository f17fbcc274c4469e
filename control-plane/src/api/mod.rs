//! The API server: a Kubernetes-compatible HTTP API over the store. It authenticates, decodes,
//! defaults and validates requests, hands writes to the store and streams watches.
//!
//! Invariants: every request but `/cacerts` and the health checks passes `gate` (authenticated,
//! authorized) before its handler;
//! every error is a `metav1.Status`; single objects always carry `kind` and `apiVersion`; the
//! API layer never touches SQLite (it goes through the [`crate::store::Storage`] trait).

pub mod audit;
mod bootstrap;
pub(crate) mod crd;
pub mod discovery;
pub mod error;
mod gate;
pub mod gc;
mod handlers;
#[cfg(test)]
mod hostile_bodies;
mod logs;
mod metricsapi;
mod modules;
pub mod patch;
pub mod protobuf;
mod rawjson;
pub(crate) mod registry;
mod reviews;
pub mod schema;
pub mod selectors;
pub mod snapshots;
mod ssa;
pub(crate) mod strategy;
pub mod table;
mod tokens;
pub mod typed;
mod validation;
mod wake;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;

use crate::auth::authn::Authenticator;
use crate::auth::authorizer::Authorizer;
use crate::modules::ModuleStore;
use crate::store::Storage;
pub use bootstrap::bootstrap;
pub use error::{ApiError, ApiResult};
pub(crate) use gate::REQUEST_USER;
pub use gate::{ClientCertUser, PeerAddr};

/// Largest accepted API request body (Kubernetes uses 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared state of all handlers.
pub struct AppState {
    /// The cluster store.
    pub store: Arc<dyn Storage>,
    /// Maps credentials to users.
    pub authn: Authenticator,
    /// Decides every request.
    pub authorizer: Arc<Authorizer>,
    /// The node join token, with which the server calls node agents (logs).
    pub node_token: String,
    /// The built-in module store.
    pub modules: ModuleStore,
    /// The cluster CA, PEM (served at `/cacerts`).
    pub ca_pem: String,
    /// `host:port` clients reach the server at.
    pub advertise: String,
    /// What pods and nodes use (`metrics.k8s.io`), from the nodes' resource metrics.
    pub usage: Arc<crate::usage::Usage>,
    /// Client for proxying to node agents (logs).
    pub http: reqwest::Client,
    /// Signs `continue` tokens, so a forged one is refused (derived from a server secret,
    /// so tokens survive a restart).
    pub continue_key: ring::hmac::Key,
    /// The listings paged lists continue from.
    pub snapshots: snapshots::Snapshots,
    /// The audit log, when `--audit-log` is given.
    pub audit: Option<audit::AuditLog>,
}

/// The key that signs `continue` tokens, derived from a secret of the server's (its serving
/// key), so every server with the same data dir accepts the same tokens.
pub fn continue_key(secret: &str) -> ring::hmac::Key {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"skiff continue tokens v1\0");
    h.update(secret.as_bytes());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize())
}

/// Wait (at most 3 s, as kube-apiserver's watch cache does) until the store has reached
/// `revision`; a revision it does not reach is answered 504 `Too large resource version`.
pub(crate) async fn wait_for_revision(state: &AppState, revision: u64) -> Result<(), ApiError> {
    let reached = || revision <= state.store.revision();
    if reached() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    // Woken by each commit (a store-wide watch from now), not by polling.
    if let Ok(mut commits) = state.store.watch(None, state.store.revision()).await {
        while !reached() {
            match tokio::time::timeout_at(deadline, commits.next()).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
    }
    if reached() {
        return Ok(());
    }
    Err(ApiError::TooLargeResourceVersion {
        requested: revision,
        current: state.store.revision(),
    })
}

/// Build the router (apart from `main` so it can be tested with `oneshot`).
pub fn router(state: Arc<AppState>) -> Router {
    let authed = Router::new()
        .route(
            "/version",
            get(|| async { axum::Json(discovery::version()) }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::metrics::render(),
                )
            }),
        )
        .route("/api", get(api_root))
        .route("/apis", get(apis_root))
        // With a trailing slash too, as kube-apiserver (the Python client asks `/version/`).
        .route(
            "/version/",
            get(|| async { axum::Json(discovery::version()) }),
        )
        .route("/api/", get(api_root))
        .route("/apis/", get(apis_root))
        .route(
            "/openapi/v3",
            get(|| async { axum::Json(typed::openapi_v3_root()) }),
        )
        .route("/openapi/v3/{*gv}", get(openapi_gv))
        .route("/openapi/v2", get(openapi_v2))
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(reviews::self_subject_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            post(reviews::self_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            post(reviews::self_subject_rules_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(reviews::subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews",
            post(reviews::local_subject_access_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(tokens::review),
        )
        .route(
            "/.well-known/openid-configuration",
            get(tokens::openid_configuration),
        )
        .route("/openid/v1/jwks", get(tokens::jwks))
        .route(
            "/apis/metrics.k8s.io/v1beta1/pods",
            get(metricsapi::all_pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
            get(metricsapi::pods),
        )
        .route(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}",
            get(metricsapi::pod),
        )
        .route("/apis/metrics.k8s.io/v1beta1/nodes", get(metricsapi::nodes))
        .route(
            "/apis/metrics.k8s.io/v1beta1/nodes/{name}",
            get(metricsapi::node),
        )
        .route(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/{metric}",
            get(metricsapi::custom),
        )
        .route(
            "/api/v1/namespaces/{ns}/services/{name}/wake",
            post(wake::wake),
        )
        .route("/api/{*rest}", any(handlers::dispatch))
        .route("/apis/{*rest}", any(handlers::dispatch))
        .route(
            &format!("{}/{{*reference}}", skiff_common::MODULES_PATH),
            put(modules::push).get(modules::resolve),
        )
        .route(
            &format!("{}/{{digest}}", skiff_common::BLOBS_PATH),
            get(modules::blob),
        )
        .fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::authenticate,
        ));
    Router::new()
        .route(skiff_common::CACERTS_PATH, get(cacerts))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .merge(authed)
        .with_state(state)
}

async fn cacerts(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_pem.clone(),
    )
        .into_response()
}

async fn health() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

async fn api_root(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(&headers) {
        discovery::json_with_type(&discovery::aggregated(true), discovery::AGGREGATED_V2)
    } else {
        axum::Json(discovery::legacy_api(&state.advertise)).into_response()
    }
}

async fn apis_root(headers: HeaderMap) -> Response {
    if discovery::wants_aggregated(&headers) {
        discovery::json_with_type(&discovery::aggregated(false), discovery::AGGREGATED_V2)
    } else {
        axum::Json(discovery::legacy_apis()).into_response()
    }
}

/// Generated documents, by path and generation of the resource table (they change with the binary
/// and with CRDs).
static OPENAPI: std::sync::OnceLock<std::sync::Mutex<HashMap<String, bytes::Bytes>>> =
    std::sync::OnceLock::new();

/// The cached JSON document at `key`, generated by `make` on first use (off the async threads).
async fn openapi_doc(
    key: String,
    make: fn(&str) -> Option<serde_json::Value>,
) -> Option<bytes::Bytes> {
    let cache = OPENAPI.get_or_init(Default::default);
    if let Ok(mut c) = cache.lock() {
        // Documents of older generations are not asked for again.
        if c.len() > 256 {
            c.clear();
        }
    }
    if let Some(b) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Some(b);
    }
    let k = key.clone();
    let doc = tokio::task::spawn_blocking(move || make(&k).map(|d| serde_json::to_vec(&d)))
        .await
        .ok()??
        .ok()?;
    let bytes = bytes::Bytes::from(doc);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, bytes.clone());
    }
    Some(bytes)
}

fn json_bytes(b: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], b).into_response()
}

async fn openapi_gv(axum::extract::Path(gv): axum::extract::Path<String>) -> Response {
    // Keyed by the table's generation too: a CRD change makes new documents.
    let generation = crate::resources::generation();
    match openapi_doc(format!("v3/{generation}/{gv}"), |k| {
        typed::openapi_v3_gv(k.splitn(3, '/').nth(2).unwrap_or(""))
    })
    .await
    {
        Some(doc) => json_bytes(doc),
        None => ApiError::NoRoute.into_response(),
    }
}

/// Swagger 2.0: JSON with every kind's schema, or the protobuf document kubectl asks for
/// (see [`typed::openapi_v2_protobuf`]).
async fn openapi_v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    if accept.contains("proto-openapi.spec.v2") && accept.contains("protobuf") {
        return (
            [(header::CONTENT_TYPE, typed::OPENAPI_V2_PROTOBUF)],
            typed::openapi_v2_protobuf(),
        )
            .into_response();
    }
    if !(accept.contains("json") || accept.contains("*/*")) {
        return ApiError::NotAcceptable(accept.to_string()).into_response();
    }
    let generation = crate::resources::generation();
    match openapi_doc(format!("v2/{generation}"), |_| Some(typed::openapi_v2())).await {
        Some(doc) => json_bytes(doc),
        None => ApiError::NoRoute.into_response(),
    }
}

/// Read a request body up to `limit` bytes, answering 413 beyond it.
pub(crate) async fn read_body(body: Body, limit: usize) -> ApiResult<bytes::Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest(format!("reading the request body: {e}"))
        }
    })
}
