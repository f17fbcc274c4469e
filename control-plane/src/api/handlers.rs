//! The HTTP side of the resource endpoints: path parsing, content negotiation (JSON, protobuf
//! bodies, Tables), warnings, paged lists with signed `continue` tokens, and the routing of
//! each verb and subresource to the generic registry, the watch stream or the log proxy.
//!
//! Invariants: nothing here decides what a write does to an object (that is the registry's and
//! the strategies'); every answer is JSON or a `Status`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::patch::PatchType;
use super::registry::rules::{self, FieldValidation};
use super::registry::{self, flag, materialize, Filter, Query, WriteMode};
use super::table::{self, table_wanted};
use super::{read_body, AppState, MAX_BODY};
use crate::resources::{self, ResourceType};
use crate::store::StoredObject;

/// What a resource path names.
#[derive(Debug)]
pub struct Target {
    /// The resource type.
    pub rt: &'static ResourceType,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
}

/// Parse `/api/v1/...` or `/apis/{g}/{v}/...` into a target.
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..] if *r != "status" && *r != "finalize" => {
            (Some(ns.to_string()), {
                let mut v = vec![*r];
                v.extend_from_slice(more);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let rt = resources::find(group, version, plural)?;
    if namespace.is_some() && !rt.namespaced {
        return None;
    }
    if let Some(s) = &sub {
        if !rt.subresources.contains(&s.as_str()) {
            return None;
        }
    }
    if name.as_deref() == Some("") {
        return None;
    }
    Some(Target {
        rt,
        namespace,
        name,
        sub,
    })
}

fn parse_query(raw: Option<&str>) -> Query {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The single entry point for `/api/...` and `/apis/...`.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Legacy discovery of one group/version (`kubectl drain` asks /api/v1 whether evictions
    // are served).
    if parts.method == Method::GET {
        let segs: Vec<&str> = parts.uri.path().trim_matches('/').split('/').collect();
        let gv = match segs.as_slice() {
            ["api", v] => Some(("", *v)),
            ["apis", g, v] => Some((*g, *v)),
            _ => None,
        };
        if let Some((g, v)) = gv {
            return match super::discovery::resource_list(g, v) {
                Some(list) => axum::Json(list).into_response(),
                None => ApiError::NoRoute.into_response(),
            };
        }
    }
    let Some(target) = parse_path(parts.uri.path()) else {
        return ApiError::NoRoute.into_response();
    };
    let mut q = parse_query(parts.uri.query());
    if !q.contains_key("fieldManager") {
        // As Kubernetes does: the client's User-Agent up to its first '/'.
        let agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split('/').next())
            .filter(|a| !a.is_empty())
            .unwrap_or("unknown");
        q.insert("fieldManager".into(), agent.to_string());
    }
    let started = std::time::Instant::now();
    let verb = match (&parts.method, target.name.is_some()) {
        (&Method::GET, false) if flag(&q, "watch") => "WATCH",
        (&Method::GET, false) => "LIST",
        (&Method::GET, true) => "GET",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, false) => "DELETECOLLECTION",
        (&Method::DELETE, true) => "DELETE",
        _ => "OTHER",
    };
    // parse_path only accepts subresources the type lists, so the static name is found.
    let sub = target
        .sub
        .as_deref()
        .and_then(|s| target.rt.subresources.iter().find(|x| **x == s))
        .copied()
        .unwrap_or("");
    let resource = (target.rt.plural, sub);
    let defines_types = target.rt.strategy.defines_types() && parts.method != Method::GET;
    let result = route(&state, &parts.method, &parts.headers, target, q, body).await;
    if defines_types {
        // A CRD changed: its kinds are served (or no longer) once the write is answered.
        if let Err(e) = super::crd::sync(&state).await {
            tracing::warn!(error = %e, "could not update the custom resource types");
        }
    }
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    crate::metrics::request(verb, resource, resp.status().as_u16(), started.elapsed());
    resp
}

async fn route(
    state: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    t: Target,
    q: Query,
    body: Body,
) -> ApiResult<Response> {
    let rt = t.rt;
    if rt.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(ApiError::NoRoute);
    }
    let ns = t.namespace.clone().unwrap_or_default();
    // Checked before anything is written: a bad `includeObject` is refused, not answered
    // after the write.
    let table = table_wanted(headers, &q)?;
    let metadata_only = table::wants_metadata(headers);
    match (method.clone(), t.name.clone(), t.sub.as_deref()) {
        (Method::GET, None, None) if flag(&q, "watch") => {
            super::watch::serve(state.clone(), rt, t.namespace.clone(), &q, headers).await
        }
        (Method::GET, None, None) => list(state, rt, t.namespace.as_deref(), &q, headers).await,
        (Method::GET, Some(name), None | Some("status" | "approval")) => {
            let obj = registry::get_object(state, rt, &ns, &name).await?;
            Ok(respond_object(rt, &obj, table, StatusCode::OK, metadata_only))
        }
        (Method::GET, Some(name), Some("log")) => super::logs::serve(state, &ns, &name, &q).await,
        (_, Some(_), Some(sub @ ("exec" | "attach" | "portforward"))) => {
            Err(ApiError::BadRequest(format!(
                "{sub} is not supported for WebAssembly workloads: a pod runs as sandboxed wasm instances, with no shell, process or network namespace to enter; use `kubectl logs` and HTTP probes instead"
            )))
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = registry::get_object(state, rt, &ns, &name).await?;
            Ok(axum::Json(super::strategy::workloads::scale_of(&obj)).into_response())
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) => {
            let patch_kind = if method == Method::PATCH {
                Some(patch_type(headers)?)
            } else {
                None
            };
            let body = read_body(body, MAX_BODY).await?;
            let value = rules::decode_body(&body, false)?;
            let scale = registry::update_scale(state, rt, &ns, &name, &value, patch_kind, &q).await?;
            Ok(axum::Json(scale).into_response())
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = decode_request(headers, &body)?;
            let opts = value.get("deleteOptions").cloned().unwrap_or(json!({}));
            registry::eviction::evict(state, &ns, &name, &opts, &q).await?;
            Ok((StatusCode::CREATED, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))).into_response())
        }
        (Method::POST, None, None) => {
            if rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::MethodNotAllowed(format!(
                    "create is not supported on {} across all namespaces",
                    rt.qualified()
                )));
            }
            let body = read_body(body, MAX_BODY).await?;
            let value = decode_request(headers, &body)?;
            let dups = duplicates(&body, &q)?;
            let (obj, mut warnings) = registry::create(state, rt, &ns, value, &q, false).await?;
            warnings.extend(dups);
            Ok(with_warnings(
                respond_object(rt, &obj, table, StatusCode::CREATED, metadata_only),
                &warnings,
            ))
        }
        (Method::POST, Some(name), Some("token")) => {
            let body = read_body(body, super::reviews::MAX_REVIEW).await?;
            let value = decode_request(headers, &body)?;
            let answer = super::tokens::request(state, &ns, &name, value).await?;
            Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
        }
        (Method::POST, Some(name), Some("binding")) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = rules::decode_body(&body, false)?;
            registry::bind(state, &ns, &name, &value).await?;
            Ok((StatusCode::CREATED, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))).into_response())
        }
        (Method::PUT, Some(name), sub @ (None | Some("status" | "approval"))) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = decode_request(headers, &body)?;
            let dups = duplicates(&body, &q)?;
            let (obj, mut warnings) =
                registry::update(state, rt, &ns, &name, value, sub.is_some(), &q).await?;
            warnings.extend(dups);
            Ok(with_warnings(
                respond_object(rt, &obj, table, StatusCode::OK, metadata_only),
                &warnings,
            ))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status" | "approval"))) => {
            let kind = patch_type(headers)?;
            if kind == PatchType::Strategic && rt.schema.raw().is_some() {
                // As kube-apiserver: custom resources have no patch strategies.
                return Err(ApiError::UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into()));
            }
            let body = read_body(body, MAX_BODY).await?;
            let value = rules::decode_body(&body, kind == PatchType::Apply)?;
            let dups = duplicates(&body, &q)?;
            let (obj, mut warnings, created) = registry::patch_object(
                state,
                rt,
                &ns,
                &name,
                &value,
                kind,
                WriteMode {
                    status_only: sub.is_some(),
                    query: &q,
                    applied: false,
                },
            )
            .await?;
            warnings.extend(dups);
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(
                respond_object(rt, &obj, table, code, metadata_only),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name), None) => {
            let body = read_body(body, MAX_BODY).await?;
            let opts = if body.is_empty() {
                json!({})
            } else {
                decode_request(headers, &body)?
            };
            let obj = registry::delete(state, rt, &ns, &name, &opts, &q).await?;
            let gone = obj
                .pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null);
            if gone && table.is_none() && !rt.strategy.returns_deleted_object() {
                // Deleted at once: a `Status`, as kube-apiserver answers for most kinds.
                let mut details = json!({"name": name, "kind": rt.plural,
                    "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)});
                if !rt.group.is_empty() {
                    details["group"] = json!(rt.group);
                }
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": details});
                return Ok((StatusCode::OK, axum::Json(status)).into_response());
            }
            Ok(respond_object(rt, &obj, table, StatusCode::OK, metadata_only))
        }
        (Method::DELETE, None, None) => {
            let body = read_body(body, MAX_BODY).await?;
            let opts = if body.is_empty() {
                json!({})
            } else {
                decode_request(headers, &body)?
            };
            let list =
                registry::delete_collection(state, rt, t.namespace.as_deref(), &opts, &q).await?;
            Ok(axum::Json(list).into_response())
        }
        (m, _, sub) => Err(ApiError::MethodNotAllowed(format!(
            "{m} is not supported on {}{}",
            rt.qualified(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// A create or update body: JSON, or the protobuf typed clients send.
pub(super) fn decode_request(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if super::protobuf::is_protobuf(ct) {
        return super::protobuf::decode(body).map_err(|e| {
            ApiError::UnsupportedMediaType(format!(
                "the protobuf body of the request could not be decoded: {e}"
            ))
        });
    }
    rules::decode_body(body, false)
}

fn patch_type(headers: &HeaderMap) -> ApiResult<PatchType> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"))
    })
}

/// Duplicate fields in a JSON body, under `fieldValidation`: an error (Strict), warnings (Warn)
/// or nothing (Ignore).
fn duplicates(body: &[u8], q: &Query) -> ApiResult<Vec<String>> {
    let mode = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let found: Vec<String> = super::typed::duplicate_fields(body)
        .into_iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect();
    if found.is_empty() || mode == FieldValidation::Warn {
        return Ok(found);
    }
    Err(ApiError::BadRequest(format!(
        "strict decoding error: {}",
        found.join(", ")
    )))
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// The object as the client asked for it: a Table (rows' `object` as `table` says; for a 200)
/// or the object.
fn respond_object(
    rt: &ResourceType,
    obj: &Value,
    table: Option<table::IncludeObject>,
    code: StatusCode,
    metadata_only: bool,
) -> Response {
    if metadata_only && table.is_none() {
        return (code, axum::Json(table::partial_metadata(obj))).into_response();
    }
    if let Some(include) = table.filter(|_| code == StatusCode::OK) {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let t = table::table(rt, std::slice::from_ref(obj), rv, true, include);
        return axum::Json(t).into_response();
    }
    (code, axum::Json(obj)).into_response()
}

async fn list(
    state: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let filter = Filter::from_query(rt, q)?;
    let scope = format!("{}/{}", rt.storage_key(), ns.unwrap_or(""));
    let page = Page::from_query(q, &state.continue_key, &scope)?;
    if let Some(c) = &page.continued {
        if c.rv < state.store.compacted() {
            return Err(ApiError::Gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into()));
        }
    }
    if let Some(rv) = page.resource_version {
        super::wait_for_revision(state, rv).await?;
    }
    let table = table_wanted(headers, q)?;
    // Plain JSON lists whose selectors the key answers are copied from the stored bytes;
    // everything else is parsed.
    let metadata_only = table.is_none() && table::wants_metadata(headers);
    let raw = table.is_none()
        && !metadata_only
        && rt.storage.is_none()
        && filter.labels.0.is_empty()
        && filter.fields.key_only();
    // A continuation reads the snapshot its first page cut; a first page reads the store.
    let (objects, listed_at) = match &page.continued {
        Some(c) => match state.snapshots.get(&scope, c.rv) {
            Some(objects) => (objects, c.rv),
            None => return Err(ApiError::Gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into())),
        },
        None => {
            let listing = state
                .store
                .list(&rt.storage_key(), ns)
                .await
                .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
            (std::sync::Arc::new(listing.objects), listing.revision)
        }
    };
    let after = page
        .continued
        .as_ref()
        .map(|c| c.start.split_once('/').unwrap_or(("", c.start.as_str())));
    let mut matching: Vec<(&StoredObject, Option<Value>)> = Vec::new();
    for stored in objects.iter() {
        let key = (stored.key.namespace.as_str(), stored.key.name.as_str());
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        if raw {
            if filter.fields.matches_key(key.0, key.1) {
                matching.push((stored, None));
            }
        } else {
            let obj = materialize(rt, stored)?;
            if filter.matches(&obj) {
                matching.push((stored, Some(obj)));
            }
        }
    }
    let revision = listed_at;
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(limit) = page.limit.filter(|l| *l < matching.len()) {
        state.snapshots.keep(&scope, revision, objects.clone());
        let rest = matching.len() - limit;
        matching.truncate(limit);
        let last = matching
            .last()
            .map(|(s, _)| format!("{}/{}", s.key.namespace, s.key.name))
            .unwrap_or_default();
        meta["continue"] = json!(Continue {
            rv: revision,
            start: last
        }
        .encode(&state.continue_key, &scope));
        meta["remainingItemCount"] = json!(rest);
    }
    if metadata_only {
        let items: Vec<Value> = matching.into_iter().filter_map(|(_, o)| o).collect();
        return Ok(axum::Json(table::partial_metadata_list(&items, meta)).into_response());
    }
    if let Some(include) = table {
        let items: Vec<Value> = matching.into_iter().filter_map(|(_, o)| o).collect();
        let mut t = table::table(rt, &items, &revision.to_string(), true, include);
        t["metadata"] = meta;
        return Ok(axum::Json(t).into_response());
    }
    let head = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta});
    let mut body = serde_json::to_vec(&head).map_err(|e| ApiError::Internal(e.to_string()))?;
    body.pop(); // the closing brace: items follow
    body.extend_from_slice(b",\"items\":[");
    for (i, (stored, parsed)) in matching.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let copied =
            parsed.is_none() && super::rawjson::list_item(&stored.data, stored.revision, &mut body);
        if !copied {
            let mut obj = match parsed {
                Some(o) => o,
                None => materialize(rt, stored)?,
            };
            if let Some(m) = obj.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            serde_json::to_writer(&mut body, &obj)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
    }
    body.extend_from_slice(b"]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A `continue` token: the list revision and the last key served (opaque to clients), signed
/// with the server's key over the list it continues (resource type and namespace), so a
/// hand-made or altered token, or one from another list, is refused.
#[derive(Debug, PartialEq, Eq)]
struct Continue {
    rv: u64,
    start: String,
}

impl Continue {
    fn signed(rv: u64, start: &str, scope: &str) -> String {
        format!("{rv}\n{scope}\n{start}")
    }

    fn encode(&self, key: &ring::hmac::Key, scope: &str) -> String {
        use base64::Engine as _;
        let tag = ring::hmac::sign(key, Self::signed(self.rv, &self.start, scope).as_bytes());
        let raw = json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": self.start,
            "sig": hex::encode(tag.as_ref())});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
    }

    fn decode(token: &str, key: &ring::hmac::Key, scope: &str) -> Option<Continue> {
        use base64::Engine as _;
        if token.len() > 4096 {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .ok()?;
        let v: Value = serde_json::from_slice(&raw).ok()?;
        if v.get("v")? != "meta.k8s.io/v1" {
            return None;
        }
        let c = Continue {
            rv: v.get("rv")?.as_u64()?,
            start: v.get("start")?.as_str()?.to_string(),
        };
        let sig = hex::decode(v.get("sig")?.as_str()?).ok()?;
        ring::hmac::verify(key, Self::signed(c.rv, &c.start, scope).as_bytes(), &sig).ok()?;
        Some(c)
    }
}

/// `limit`, `continue` and `resourceVersion` of a list request.
struct Page {
    limit: Option<usize>,
    continued: Option<Continue>,
    /// A list "not older than" this revision (`resourceVersion` other than "" or "0").
    resource_version: Option<u64>,
}

impl Page {
    fn from_query(q: &Query, key: &ring::hmac::Key, scope: &str) -> ApiResult<Page> {
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
            ),
        };
        let continued = match q.get("continue").map(String::as_str) {
            None | Some("") => None,
            Some(t) => Some(Continue::decode(t, key, scope).ok_or_else(|| {
                ApiError::BadRequest(format!("continue key is not valid: {t:?}"))
            })?),
        };
        let rv = q.get("resourceVersion").filter(|rv| !rv.is_empty());
        match q.get("resourceVersionMatch").map(String::as_str) {
            None | Some("") => {}
            Some("NotOlderThan" | "Exact") if rv.is_none() => {
                return Err(ApiError::BadRequest(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                ))
            }
            Some("NotOlderThan" | "Exact") if continued.is_some() => {
                return Err(ApiError::BadRequest(
                    "resourceVersionMatch is forbidden for continue".into(),
                ))
            }
            Some("NotOlderThan" | "Exact") => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        }
        let resource_version = match rv {
            Some(rv) => Some(
                rv.parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?,
            )
            .filter(|v| *v > 0),
            None => None,
        };
        if continued.is_some() && rv.is_some() {
            return Err(ApiError::BadRequest(
                "specifying resource version is not allowed when using continue".into(),
            ));
        }
        Ok(Page {
            limit,
            continued,
            resource_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let c = Continue {
            rv: 42,
            start: "default/web-1".into(),
        };
        use base64::Engine as _;
        let key = super::super::continue_key("secret");
        let token = c.encode(&key, "/pods/default");
        assert_eq!(Continue::decode(&token, &key, "/pods/default"), Some(c));
        // Another list, another server key, garbage, a hand-made token: all refused.
        assert_eq!(Continue::decode(&token, &key, "/secrets/default"), None);
        let other = super::super::continue_key("other");
        assert_eq!(Continue::decode(&token, &other, "/pods/default"), None);
        assert_eq!(Continue::decode("garbage", &key, "/pods/default"), None);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"v":"meta.k8s.io/v1","rv":999999,"start":"default/web-1"}"#);
        assert_eq!(Continue::decode(&forged, &key, "/pods/default"), None);
    }

    #[test]
    fn parse_path_table() {
        type Parsed<'a> = Option<(&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>)>;
        let cases: &[(&str, Parsed)] = &[
            ("/api/v1/pods", Some(("pods", None, None, None))),
            (
                "/api/v1/namespaces/default/pods",
                Some(("pods", Some("default"), None, None)),
            ),
            (
                "/api/v1/namespaces/default/pods/hello",
                Some(("pods", Some("default"), Some("hello"), None)),
            ),
            (
                "/api/v1/namespaces/default/pods/hello/log",
                Some(("pods", Some("default"), Some("hello"), Some("log"))),
            ),
            (
                "/api/v1/namespaces/default/pods/hello/exec",
                Some(("pods", Some("default"), Some("hello"), Some("exec"))),
            ),
            ("/api/v1/namespaces/default/pods/hello/shell", None),
            ("/api/v1/namespaces", Some(("namespaces", None, None, None))),
            (
                "/api/v1/namespaces/default",
                Some(("namespaces", None, Some("default"), None)),
            ),
            (
                "/api/v1/namespaces/default/status",
                Some(("namespaces", None, Some("default"), Some("status"))),
            ),
            (
                "/api/v1/nodes/n1/status",
                Some(("nodes", None, Some("n1"), Some("status"))),
            ),
            ("/api/v1/namespaces/default/nodes", None),
            (
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
                Some(("leases", Some("kube-node-lease"), Some("n1"), None)),
            ),
            (
                "/apis/apps/v1/deployments",
                Some(("deployments", None, None, None)),
            ),
            ("/apis/apps/v1/widgets", None),
            ("/api/v2/pods", None),
        ];
        for (path, want) in cases {
            let got = parse_path(path).map(|t| {
                (
                    t.rt.plural,
                    t.namespace.clone(),
                    t.name.clone(),
                    t.sub.clone(),
                )
            });
            let want = want.map(|(p, ns, n, s)| {
                (
                    p,
                    ns.map(String::from),
                    n.map(String::from),
                    s.map(String::from),
                )
            });
            assert_eq!(got, want, "{path}");
        }
    }
}
