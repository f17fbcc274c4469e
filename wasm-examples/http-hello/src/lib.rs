//! `http-hello`: a `wasi:http/incoming-handler` component that answers every request with its
//! pod's name and its version (`VERSION`, default v1), and serves `/healthz` for probes.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
        let version = std::env::var("VERSION").unwrap_or_else(|_| "v1".into());
        let (status, body) = match path.as_str() {
            "/healthz" => (200, "ok\n".to_string()),
            // A readiness gate tests can flip: /unhealthy answers 500.
            "/unhealthy" => (500, "unhealthy\n".to_string()),
            _ => (200, format!("hello from {pod} ({version})\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
        let _ = headers.set("x-pod", &[pod.into_bytes()]);
        let resp = OutgoingResponse::new(headers);
        let _ = resp.set_status_code(status);
        let Ok(outgoing) = resp.body() else { return };
        ResponseOutparam::set(out, Ok(resp));
        if let Ok(mut stream) = outgoing.write() {
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}
