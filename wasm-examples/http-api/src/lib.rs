//! `http-api`: a small JSON API with two routes, `GET /items` (the list) and `GET /items/<id>`
//! (one item, 404 when there is none), plus `GET /healthz`.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Api);

struct Api;

const ITEMS: &[(u32, &str)] = &[(1, "anchor"), (2, "oar"), (3, "sail")];

fn item_json(id: u32, name: &str) -> String {
    format!("{{\"id\":{id},\"name\":\"{name}\"}}")
}

fn route(method: &Method, path: &str) -> (u16, String) {
    if !matches!(method, Method::Get) {
        return (405, "{\"error\":\"method not allowed\"}".into());
    }
    let path = path.split('?').next().unwrap_or("");
    match path.trim_end_matches('/') {
        "/healthz" => (200, "{\"status\":\"ok\"}".into()),
        "/items" => {
            let all: Vec<String> = ITEMS.iter().map(|(i, n)| item_json(*i, n)).collect();
            (200, format!("{{\"items\":[{}]}}", all.join(",")))
        }
        p => match p.strip_prefix("/items/").map(str::parse::<u32>) {
            Some(Ok(id)) => match ITEMS.iter().find(|(i, _)| *i == id) {
                Some((i, n)) => (200, item_json(*i, n)),
                None => (404, format!("{{\"error\":\"no item {id}\"}}")),
            },
            _ => (404, "{\"error\":\"not found\"}".into()),
        },
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Api {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = route(&request.method(), &path);
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"application/json".to_vec()]);
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
