//! `http-caller`: answers each request by calling another HTTP service over outbound HTTP
//! (`wasi:http/outgoing-handler`) and relaying what it said. The target is `TARGET` (default
//! `http://http-hello/`), or `?url=<url>` on the request. With `TOKEN_FILE` set, the call
//! carries `Authorization: Bearer <the file's content>` (a projected ServiceAccount token, to
//! call `http://kubernetes.default.svc/...`).

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Caller);

struct Caller;

fn call(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", r)) => (Scheme::Https, r),
        Some((_, r)) => (Scheme::Http, r),
        None => (Scheme::Http, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Ok(file) = std::env::var("TOKEN_FILE") {
        let token = std::fs::read_to_string(&file).map_err(|e| format!("reading {file}: {e}"))?;
        let value = format!("Bearer {}", token.trim());
        headers
            .set("authorization", &[value.into_bytes()])
            .map_err(|e| format!("header: {e:?}"))?;
    }
    let req = OutgoingRequest::new(headers);
    req.set_method(&Method::Get).map_err(|_| "method")?;
    req.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    req.set_authority(Some(authority)).map_err(|_| "authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.consume().map_err(|_| "body")?;
    let mut text = String::new();
    {
        let mut stream = body.stream().map_err(|_| "stream")?;
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        text.push_str(&String::from_utf8_lossy(&buf));
    }
    Ok((status, text))
}

impl wasip2::exports::http::incoming_handler::Guest for Caller {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let pq = request.path_with_query().unwrap_or_default();
        let url = pq
            .split_once("?url=")
            .map(|(_, u)| u.to_string())
            .or_else(|| std::env::var("TARGET").ok())
            .unwrap_or_else(|| "http://http-hello/".into());
        let (status, body) = match call(&url) {
            Ok((s, b)) => (200, format!("{url} answered {s}: {b}")),
            Err(e) => (502, format!("calling {url} failed: {e}\n")),
        };
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
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
