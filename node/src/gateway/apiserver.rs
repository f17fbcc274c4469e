//! `kubernetes.default.svc` for guests: a guest of this node that calls the `default/kubernetes`
//! Service (plain HTTP, as guests call every Service) is forwarded to the API server over TLS
//! verified against the cluster CA, as a pod's call to that Service reaches kube-apiserver in
//! Kubernetes. The request goes with the guest's own credentials only (its `Authorization`
//! header, e.g. its projected ServiceAccount token), never the node's: the API server
//! authenticates and authorizes it as whoever the guest proves to be.
//!
//! Invariants: the forwarded request carries no credential of the node; its body is bounded by
//! the API server's own limit; the answer streams back (watches work).

use std::net::SocketAddr;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};

use super::{text, Body};

/// The largest request body forwarded (the API server refuses more anyway).
const MAX_BODY: usize = 3 << 20;

/// Headers that belong to one hop, or to the gateway, and are not forwarded.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "skiff-hops",
];

/// The API server as guests reach it.
#[derive(Debug)]
pub struct ApiServer {
    url: String,
    /// Where it listens (for egress NetworkPolicy).
    pub addr: Option<SocketAddr>,
    client: reqwest::Client,
}

/// Errors of setting up the forwarding client.
#[derive(Debug, thiserror::Error)]
#[error("the API server forwarding client: {0}")]
pub struct ApiServerError(String);

impl ApiServer {
    /// Forward to `url` (`https://host:port`), trusting only `ca_pem`.
    pub async fn new(url: &str, ca_pem: &[u8]) -> Result<ApiServer, ApiServerError> {
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none());
        for der in skiff_common::client::pem_to_der(ca_pem) {
            let cert =
                reqwest::Certificate::from_der(&der).map_err(|e| ApiServerError(e.to_string()))?;
            b = b.add_root_certificate(cert);
        }
        let client = b.build().map_err(|e| ApiServerError(e.to_string()))?;
        let addr = match url.parse::<http::Uri>() {
            Ok(u) => match u.host() {
                Some(h) => {
                    let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
                    let port = u.port_u16().unwrap_or(443);
                    tokio::net::lookup_host((h.as_str(), port))
                        .await
                        .ok()
                        .and_then(|mut a| a.next())
                }
                None => None,
            },
            Err(_) => None,
        };
        Ok(ApiServer {
            url: url.trim_end_matches('/').to_string(),
            addr,
            client,
        })
    }

    /// Forward a guest's request and stream the answer back.
    pub async fn forward(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request to the API server not forwarded: {e}"),
                )
            }
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut out = self
            .client
            .request(parts.method, format!("{}{path}", self.url))
            .body(body);
        for (name, value) in &parts.headers {
            let n = name.as_str();
            if DROPPED.contains(&n) || n == skiff_common::token::GATEWAY_PEER_HEADER {
                continue;
            }
            out = out.header(name, value);
        }
        match out.send().await {
            Ok(resp) => {
                let mut b = Response::builder().status(resp.status());
                for (name, value) in resp.headers() {
                    if !DROPPED.contains(&name.as_str()) {
                        b = b.header(name, value);
                    }
                }
                let stream = resp
                    .bytes_stream()
                    .map_ok(|chunk: Bytes| http_body::Frame::data(chunk))
                    .map_err(|_| wasmtime_wasi_http::Error::ConnectionTerminated);
                b.body(StreamBody::new(stream).boxed_unsync())
                    .unwrap_or_else(|e| text(StatusCode::BAD_GATEWAY, e.to_string()))
            }
            Err(e) => text(
                StatusCode::BAD_GATEWAY,
                format!("forwarding to the API server: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A guest's call carries its own headers to the API server and nothing of the gateway's
    /// (the peer proof, the hop count); an oversized body is refused before anything is sent.
    #[tokio::test]
    async fn guests_reach_the_api_server_with_their_own_headers_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        let api = ApiServer::new(&format!("http://{addr}"), b"")
            .await
            .unwrap();
        let req = Request::builder()
            .uri("/api/v1/namespaces/a/pods")
            .header("authorization", "Bearer guest-token")
            .header(skiff_common::token::GATEWAY_PEER_HEADER, "node-secret")
            .header("skiff-hops", "1")
            .header("host", "kubernetes.default.svc")
            .body(super::super::empty_body())
            .unwrap();
        let resp = api.forward(req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let head = seen.await.unwrap();
        assert!(head.starts_with("get /api/v1/namespaces/a/pods "), "{head}");
        assert!(head.contains("authorization: bearer guest-token"), "{head}");
        assert!(!head.contains("node-secret"), "{head}");
        assert!(!head.contains("skiff-hops"), "{head}");
        assert!(!head.contains("kubernetes.default.svc"), "{head}");

        let big = http_body_util::Full::new(Bytes::from(vec![0u8; MAX_BODY + 1]))
            .map_err(|e: std::convert::Infallible| match e {})
            .boxed_unsync();
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/namespaces/a/configmaps")
            .body(big)
            .unwrap();
        assert_eq!(
            api.forward(req).await.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
