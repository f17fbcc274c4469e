//! The resource endpoints: path parsing, then get, list, create, update, patch, delete,
//! deletecollection and watch for every served resource, plus `pods/binding` and `pods/log`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::objects::{self, FieldValidation};
use super::patch::{self, PatchType};
use super::selectors::{FieldSelector, LabelSelector};
use super::{read_body, table, AppState, MAX_BODY};
use crate::resources::{self, ResourceType};
use crate::store::{ObjectKey, StoreError, StoredObject, Write};

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

pub(super) type Query = HashMap<String, String>;

fn parse_query(raw: Option<&str>) -> Query {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

pub(super) fn flag(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true") | Some("1"))
}

/// Does the client want a Table?
pub(super) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// The Table the client wants, if any: what its rows carry as `object` (`includeObject`).
pub(super) fn table_wanted(
    headers: &HeaderMap,
    q: &Query,
) -> ApiResult<Option<super::table::IncludeObject>> {
    if !wants_table(headers) {
        return Ok(None);
    }
    super::table::IncludeObject::parse(q.get("includeObject").map(String::as_str))
        .map(Some)
        .map_err(ApiError::BadRequest)
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
    let result = route(&state, &parts.method, &parts.headers, target, q, body).await;
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
    match (method.clone(), t.name.clone(), t.sub.as_deref()) {
        (Method::GET, None, None) if flag(&q, "watch") => {
            super::watch::serve(state.clone(), rt, t.namespace.clone(), &q, headers).await
        }
        (Method::GET, None, None) => list(state, rt, t.namespace.as_deref(), &q, headers).await,
        (Method::GET, Some(name), None | Some("status")) => {
            let obj = get_object(state, rt, &ns, &name).await?;
            Ok(respond_object(rt, &obj, table, StatusCode::OK))
        }
        (Method::GET, Some(name), Some("log")) => super::logs::serve(state, &ns, &name, &q).await,
        (_, Some(_), Some(sub @ ("exec" | "attach" | "portforward"))) => {
            Err(ApiError::BadRequest(format!(
                "{sub} is not supported for WebAssembly workloads: a pod runs as sandboxed wasm instances, with no shell, process or network namespace to enter; use `kubectl logs` and HTTP probes instead"
            )))
        }
        (Method::GET, Some(name), Some("scale")) => {
            let obj = get_object(state, rt, &ns, &name).await?;
            Ok(axum::Json(super::kinds::scale_of(&obj)).into_response())
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) => {
            let patch_kind = if method == Method::PATCH {
                Some(patch_type(headers)?)
            } else {
                None
            };
            let body = read_body(body, MAX_BODY).await?;
            let value = objects::decode_body(&body, false)?;
            let scale = update_scale(state, rt, &ns, &name, &value, patch_kind, &q).await?;
            Ok(axum::Json(scale).into_response())
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = decode_request(headers, &body)?;
            let opts = value.get("deleteOptions").cloned().unwrap_or(json!({}));
            delete(state, rt, &ns, &name, &opts, &q).await?;
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
            let (obj, mut warnings) = create(state, rt, &ns, value, &q, false).await?;
            warnings.extend(dups);
            Ok(with_warnings(
                respond_object(rt, &obj, table, StatusCode::CREATED),
                &warnings,
            ))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = objects::decode_body(&body, false)?;
            bind(state, &ns, &name, &value).await?;
            Ok((StatusCode::CREATED, axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))).into_response())
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let body = read_body(body, MAX_BODY).await?;
            let value = decode_request(headers, &body)?;
            let dups = duplicates(&body, &q)?;
            let (obj, mut warnings) =
                update(state, rt, &ns, &name, value, sub.is_some(), &q).await?;
            warnings.extend(dups);
            Ok(with_warnings(
                respond_object(rt, &obj, table, StatusCode::OK),
                &warnings,
            ))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let kind = patch_type(headers)?;
            let body = read_body(body, MAX_BODY).await?;
            let value = objects::decode_body(&body, kind == PatchType::Apply)?;
            let dups = duplicates(&body, &q)?;
            let (obj, mut warnings, created) = patch_object(
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
                respond_object(rt, &obj, table, code),
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
            let obj = delete(state, rt, &ns, &name, &opts, &q).await?;
            Ok(respond_object(rt, &obj, table, StatusCode::OK))
        }
        (Method::DELETE, None, None) => {
            let body = read_body(body, MAX_BODY).await?;
            let opts = if body.is_empty() {
                json!({})
            } else {
                decode_request(headers, &body)?
            };
            delete_collection(state, rt, t.namespace.as_deref(), &opts, &q).await
        }
        (m, _, sub) => Err(ApiError::MethodNotAllowed(format!(
            "{m} is not supported on {}{}",
            rt.qualified(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// A create or update body: JSON, or the protobuf typed clients send.
fn decode_request(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
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
    objects::decode_body(body, false)
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

/// PUT or PATCH of a workload's `scale`: only `spec.replicas` changes.
async fn update_scale(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &Value,
    patch_kind: Option<PatchType>,
    q: &Query,
) -> ApiResult<Value> {
    let mut attempt = 0;
    loop {
        let old = get_object(state, rt, ns, name).await?;
        let current = super::kinds::scale_of(&old);
        let wanted = match patch_kind {
            Some(kind) => {
                patch::apply_patch(&current, body, kind, MAX_BODY).map_err(|e| match e {
                    patch::PatchError::Failed(m) | patch::PatchError::Invalid(m) => {
                        ApiError::BadRequest(m)
                    }
                    patch::PatchError::TooLarge(m) => ApiError::EntityTooLarge(m),
                })?
            }
            None => body.clone(),
        };
        let pinned = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && patch_kind.is_none())
            .map(str::to_string);
        if let Some(rv) = &pinned {
            if Some(rv.as_str())
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
            {
                return Err(ApiError::from_store(
                    StoreError::Conflict { current: 0 },
                    &rt.qualified(),
                    name,
                ));
            }
        }
        let replicas = match wanted.pointer("/spec/replicas") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|r| r >= 0) => n.clone(),
            Some(Value::Null) | None => serde_json::Number::from(0),
            Some(other) => {
                return Err(ApiError::Invalid {
                    kind: "Scale".into(),
                    name: name.into(),
                    causes: vec![super::error::FieldCause::invalid(
                        "spec.replicas",
                        &other.to_string(),
                        "must be greater than or equal to 0",
                    )],
                })
            }
        };
        let mut new = old.clone();
        new["spec"]["replicas"] = Value::Number(replicas);
        let mode = WriteMode {
            status_only: false,
            query: q,
            applied: false,
        };
        match write_update(state, rt, ns, name, &old, new, mode).await {
            Err(ApiError::Conflict { .. }) if pinned.is_none() && attempt < RETRIES => attempt += 1,
            Ok((obj, _)) => return Ok(super::kinds::scale_of(&obj)),
            Err(e) => return Err(e),
        }
    }
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

/// Is `rt` served in another form than it is stored (events.k8s.io Events are stored as core
/// Events)?
pub(super) fn converted(rt: &ResourceType) -> bool {
    rt.storage.is_some() && rt.group == "events.k8s.io"
}

/// A stored object as served: JSON with `kind`, `apiVersion` and `metadata.resourceVersion`.
pub(super) fn materialize(rt: &ResourceType, stored: &StoredObject) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&stored.data).map_err(|e| {
        ApiError::Internal(format!("corrupt stored object {}: {e}", stored.key.name))
    })?;
    if !v.is_object() || !v.get("metadata").is_some_and(Value::is_object) {
        return Err(ApiError::Internal(format!(
            "corrupt stored object {}: not an object with metadata",
            stored.key.name
        )));
    }
    if converted(rt) {
        v = super::kinds::event_from_core(v);
    }
    v["kind"] = json!(rt.kind);
    v["apiVersion"] = json!(rt.api_version());
    v["metadata"]["resourceVersion"] = json!(stored.revision.to_string());
    Ok(v)
}

/// The bytes the store keeps: the object without its resourceVersion, in its storage form.
fn to_stored(rt: &ResourceType, obj: &mut Value) -> ApiResult<Bytes> {
    if converted(rt) {
        let mut o = super::kinds::event_to_core(obj.clone());
        o["kind"] = json!("Event");
        o["apiVersion"] = json!("v1");
        return encode_without_revision(&mut o);
    }
    encode_without_revision(obj)
}

/// `obj` encoded without `metadata.resourceVersion`, which is taken out for the encoding and
/// put back, so the object is not copied.
fn encode_without_revision(obj: &mut Value) -> ApiResult<Bytes> {
    fn meta(o: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
        o.get_mut("metadata").and_then(Value::as_object_mut)
    }
    let rv = meta(obj).and_then(|m| m.remove("resourceVersion"));
    let bytes = serde_json::to_vec(obj)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()));
    if let (Some(rv), Some(m)) = (rv, meta(obj)) {
        m.insert("resourceVersion".into(), rv);
    }
    bytes
}

/// The object as the client asked for it: a Table (rows' `object` as `table` says; for a 200)
/// or the object.
fn respond_object(
    rt: &ResourceType,
    obj: &Value,
    table: Option<table::IncludeObject>,
    code: StatusCode,
) -> Response {
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

fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(&rt.storage_key(), if rt.namespaced { ns } else { "" }, name)
}

pub(super) async fn get_object(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> ApiResult<Value> {
    let stored = state
        .store
        .get(&key(rt, ns, name))
        .await
        .map_err(|e| ApiError::from_store(e, &rt.qualified(), name))?;
    materialize(rt, &stored)
}

/// Selectors of a list or watch request.
pub(super) struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub(super) fn from_query(rt: &ResourceType, q: &Query) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::BadRequest)?;
        let fs = q.get("fieldSelector").map(String::as_str).unwrap_or("");
        let fields = FieldSelector::parse(fs, rt.field_labels).map_err(|e| {
            ApiError::BadRequest(format!(
                "Unable to find \"{}/{}, Resource={}\" that match label selector \"{}\", field selector \"{fs}\": {e}",
                rt.group,
                rt.version,
                rt.plural,
                q.get("labelSelector").map(String::as_str).unwrap_or("")
            ))
        })?;
        Ok(Filter { labels, fields })
    }

    /// No selector at all: every object matches.
    pub(super) fn is_everything(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").unwrap_or(&Value::Null))
            && self.fields.matches(obj)
    }
}

/// The served objects of `rt` (in `ns` when given) that match `filter`, and the list revision.
pub(super) async fn list_matching(
    state: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    filter: &Filter,
) -> ApiResult<(Vec<Value>, u64)> {
    let listing = state
        .store
        .list(&rt.storage_key(), ns)
        .await
        .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
    let mut items = Vec::with_capacity(listing.objects.len());
    for stored in &listing.objects {
        let obj = materialize(rt, stored)?;
        if filter.matches(&obj) {
            items.push(obj);
        }
    }
    Ok((items, listing.revision))
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
    let raw = table.is_none()
        && rt.storage.is_none()
        && filter.labels.0.is_empty()
        && filter.fields.key_only();
    let listing = state
        .store
        .list(&rt.storage_key(), ns)
        .await
        .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
    let after = page
        .continued
        .as_ref()
        .map(|c| c.start.split_once('/').unwrap_or(("", c.start.as_str())));
    let mut matching: Vec<(&StoredObject, Option<Value>)> = Vec::new();
    for stored in &listing.objects {
        let key = (stored.key.namespace.as_str(), stored.key.name.as_str());
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        if raw {
            let by_key = json!({"metadata": {"namespace": key.0, "name": key.1}});
            if filter.fields.matches(&by_key) {
                matching.push((stored, None));
            }
        } else {
            let obj = materialize(rt, stored)?;
            if filter.matches(&obj) {
                matching.push((stored, Some(obj)));
            }
        }
    }
    let revision = page.continued.as_ref().map_or(listing.revision, |c| c.rv);
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(limit) = page.limit.filter(|l| *l < matching.len()) {
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

/// Check apiVersion/kind of a body against the target, and fill them in when absent.
fn check_type(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != rt.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the body ({k}) does not match the kind of the resource ({})",
                rt.kind
            )));
        }
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != rt.api_version() {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
    }
    obj["kind"] = json!(rt.kind);
    obj["apiVersion"] = json!(rt.api_version());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    Ok(())
}

/// Apply `fieldValidation`: returns the warnings to send.
fn field_validation(rt: &ResourceType, obj: &mut Value, q: &Query) -> ApiResult<Vec<String>> {
    let mode = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
    let unknown = super::typed::unknown_fields(rt, obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match mode {
        FieldValidation::Strict => Err(ApiError::BadRequest(format!(
            "strict decoding error: {}",
            unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        FieldValidation::Warn => {
            unknown.iter().for_each(|f| f.remove_from(obj));
            Ok(unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect())
        }
        FieldValidation::Ignore => {
            unknown.iter().for_each(|f| f.remove_from(obj));
            Ok(Vec::new())
        }
    }
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

fn invalid(rt: &ResourceType, obj: &Value, causes: Vec<super::error::FieldCause>) -> ApiError {
    ApiError::Invalid {
        kind: rt.kind.into(),
        name: obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        causes,
    }
}

pub(super) async fn create(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    mut obj: Value,
    q: &Query,
    applied: bool,
) -> ApiResult<(Value, Vec<String>)> {
    check_type(rt, &mut obj)?;
    if rt.namespaced {
        if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into()));
            }
        }
    }
    objects::generate_name(&mut obj);
    let warnings = field_validation(rt, &mut obj, q)?;
    objects::prepare_create(rt, &mut obj, ns);
    if !applied {
        let now = objects::now_rfc3339();
        super::ssa::record_update(None, &mut obj, &field_writer(rt, q, "", &now));
    }
    let causes = objects::validate(rt, &obj);
    if !causes.is_empty() {
        return Err(invalid(rt, &obj, causes));
    }
    if rt.namespaced {
        let ns_rt = resources::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("namespaces not registered".into()))?;
        let namespace = get_object(state, ns_rt, "", ns).await?;
        if namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(ApiError::Forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.plural,
                obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
            )));
        }
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if rt.kind == "Service" {
        allocate_service_addresses(state, ns, &name, &mut obj).await?;
    }
    if dry_run(q) {
        return Ok((obj, warnings));
    }
    let stored = state
        .store
        .write(Write::Create {
            key: key(rt, ns, &name),
            data: to_stored(rt, &mut obj)?,
        })
        .await
        .map_err(|e| ApiError::from_store(e, &rt.qualified(), &name))?;
    tracing::debug!(resource = rt.plural, %ns, %name, revision = stored.revision, "created");
    Ok((with_revision(obj, stored.revision), warnings))
}

/// The object just written, as served: what was stored plus its new resourceVersion (no
/// second parse of the stored bytes).
fn with_revision(mut obj: Value, revision: u64) -> Value {
    obj["metadata"]["resourceVersion"] = json!(revision.to_string());
    obj
}

/// Write `new` over `old` (both served JSON) with the update rules; `precondition` is the
/// revision the write must replace.
/// How a write treats its body: the main resource or `/status`, and the request's query.
#[derive(Clone, Copy)]
struct WriteMode<'a> {
    status_only: bool,
    query: &'a Query,
    /// The body was computed by server-side apply, managedFields included.
    applied: bool,
}

/// The field manager of a request (`fieldManager`, defaulted in `dispatch`).
fn field_writer<'a>(
    rt: &ResourceType,
    q: &'a Query,
    subresource: &'a str,
    now: &'a str,
) -> super::ssa::Writer<'a> {
    super::ssa::Writer {
        manager: q.get("fieldManager").map_or("unknown", String::as_str),
        api_version: rt.api_version(),
        subresource,
        now,
    }
}

async fn write_update(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: &Value,
    mut new: Value,
    mode: WriteMode<'_>,
) -> ApiResult<(Value, Vec<String>)> {
    let (status_only, q) = (mode.status_only, mode.query);
    check_type(rt, &mut new)?;
    if let Some(n) = new.pointer("/metadata/name").and_then(Value::as_str) {
        if n != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let warnings = field_validation(rt, &mut new, q)?;
    let old_rv: u64 = old
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let precondition = match new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {s:?}")))?,
        ),
        None => None,
    };
    if precondition.is_some_and(|p| p != old_rv) {
        return Err(ApiError::from_store(
            StoreError::Conflict { current: old_rv },
            &rt.qualified(),
            name,
        ));
    }
    if !status_only {
        objects::default_spec(rt, &mut new);
        if rt.kind == "Service" {
            carry_service_addresses(old, &mut new);
        }
    }
    objects::prepare_update(&mut new, old, status_only);
    if !status_only && !mode.applied {
        let now = objects::now_rfc3339();
        super::ssa::record_update(Some(old), &mut new, &field_writer(rt, q, "", &now));
    }
    let mut causes = objects::validate(rt, &new);
    if rt.kind == "Pod" && !status_only {
        if let Err(c) = objects::pod_spec_change_allowed(
            old.get("spec").unwrap_or(&Value::Null),
            new.get("spec").unwrap_or(&Value::Null),
        ) {
            causes.push(c);
        }
    }
    if !status_only {
        super::kinds::validate_update(rt, old, &new, &mut causes);
    }
    let deleting = old
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting {
        let before = finalizers(old);
        if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
            causes.push(super::error::FieldCause::forbidden(
                "metadata.finalizers",
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}"),
            ));
        }
    }
    if !causes.is_empty() {
        return Err(invalid(rt, &new, causes));
    }
    if rt.kind == "Service" && !status_only {
        allocate_service_addresses(state, ns, name, &mut new).await?;
    }
    if dry_run(q) {
        return Ok((new, warnings));
    }
    // The last finalizer of an object being deleted is gone (and a pod, if bound, has been
    // stopped by its node): the object goes.
    let finished = deleting
        && finalizers(&new).is_empty()
        && new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0;
    let write = if finished {
        Write::Delete {
            key: key(rt, ns, name),
            precondition: Some(old_rv),
        }
    } else {
        Write::Update {
            key: key(rt, ns, name),
            data: to_stored(rt, &mut new)?,
            precondition: Some(old_rv),
        }
    };
    let stored = state
        .store
        .write(write)
        .await
        .map_err(|e| ApiError::from_store(e, &rt.qualified(), name))?;
    if finished {
        return Ok((materialize(rt, &stored)?, warnings));
    }
    Ok((with_revision(new, stored.revision), warnings))
}

/// `metadata.finalizers` of a served object.
pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// An update that leaves out a Service's allocated addresses keeps them (as Kubernetes does).
fn carry_service_addresses(old: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        let missing = spec.get(k).is_none_or(|v| v.is_null() || v == "");
        if missing {
            if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                spec.insert(k.into(), v.clone());
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut() {
            if p.get("nodePort")
                .is_some_and(|n| n.as_i64().unwrap_or(0) != 0)
            {
                continue;
            }
            if let Some(np) = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"))
                .and_then(|o| o.get("nodePort"))
            {
                p["nodePort"] = np.clone();
            }
        }
    }
}

/// Give a Service its cluster IP (from 10.43.0.0/16, as k3s does) and node ports
/// (30000-32767) when it needs them and has none; explicit ones must be free.
async fn allocate_service_addresses(
    state: &AppState,
    ns: &str,
    name: &str,
    svc: &mut Value,
) -> ApiResult<()> {
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let rt = resources::find("", "v1", "services")
        .ok_or_else(|| ApiError::Internal("services not registered".into()))?;
    let listing = state
        .store
        .list(&rt.storage_key(), None)
        .await
        .map_err(|e| ApiError::from_store(e, "services", ""))?;
    let mut ips = std::collections::HashSet::new();
    let mut node_ports = std::collections::HashSet::new();
    for o in &listing.objects {
        if o.key.namespace == ns && o.key.name == name {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&o.data) else {
            continue;
        };
        if let Some(ip) = v.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.insert(ip.to_string());
        }
        for p in v
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                node_ports.insert(n);
            }
        }
    }
    let spec = objects::ensure_object(svc, "spec");
    let ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    if ip.is_empty() {
        let ip = (0..4096)
            .map(|_| {
                let n = 2 + rand::random::<u16>() % 65000;
                format!("10.43.{}.{}", n >> 8, n & 0xff)
            })
            .find(|ip| !ips.contains(ip))
            .ok_or_else(|| ApiError::Internal("no free cluster IP in 10.43.0.0/16".into()))?;
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if ip != "None" && ips.contains(ip) {
        return Err(ApiError::Invalid {
            kind: "Service".into(),
            name: name.into(),
            causes: vec![super::error::FieldCause::invalid(
                "spec.clusterIPs",
                ip,
                "failed to allocate IP: provided IP is already allocated",
            )],
        });
    } else if !spec.contains_key("clusterIPs") {
        spec.insert("clusterIPs".into(), json!([ip]));
    }
    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    if kind == "NodePort" || kind == "LoadBalancer" {
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for (i, p) in ports.iter_mut().enumerate() {
                match p
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .filter(|n| *n != 0)
                {
                    Some(n) if node_ports.contains(&n) => {
                        return Err(ApiError::Invalid {
                            kind: "Service".into(),
                            name: name.into(),
                            causes: vec![super::error::FieldCause::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                &n.to_string(),
                                "provided port is already allocated",
                            )],
                        })
                    }
                    Some(n) => {
                        node_ports.insert(n);
                    }
                    None => {
                        let n = (0..10000)
                            .map(|_| 30000 + i64::from(rand::random::<u16>() % 2768))
                            .find(|n| !node_ports.contains(n))
                            .ok_or_else(|| ApiError::Internal("no free node port".into()))?;
                        node_ports.insert(n);
                        p["nodePort"] = json!(n);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Unconditional writes retry this often on a concurrent change before giving up with 409.
const RETRIES: usize = 8;

async fn update(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    new: Value,
    status_only: bool,
    q: &Query,
) -> ApiResult<(Value, Vec<String>)> {
    let pinned = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let mut attempt = 0;
    loop {
        let old = get_object(state, rt, ns, name).await?;
        match write_update(
            state,
            rt,
            ns,
            name,
            &old,
            new.clone(),
            WriteMode {
                status_only,
                query: q,
                applied: false,
            },
        )
        .await
        {
            Err(ApiError::Conflict { .. }) if !pinned && attempt < RETRIES => attempt += 1,
            other => return other,
        }
    }
}

async fn patch_object(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    p: &Value,
    kind: PatchType,
    mode: WriteMode<'_>,
) -> ApiResult<(Value, Vec<String>, bool)> {
    let (status_only, q) = (mode.status_only, mode.query);
    let mut attempt = 0;
    loop {
        let old = match get_object(state, rt, ns, name).await {
            Ok(o) => o,
            Err(ApiError::NotFound { .. }) if kind == PatchType::Apply && !status_only => {
                if !q.contains_key("fieldManager") {
                    return Err(ApiError::BadRequest(
                        "PATCH requests with apply content type must specify a fieldManager".into(),
                    ));
                }
                let mut obj = p.clone();
                check_type(rt, &mut obj)?;
                if obj.get("metadata").and_then(|m| m.get("name")).is_none() {
                    obj["metadata"]["name"] = json!(name);
                }
                let now = objects::now_rfc3339();
                let obj = super::ssa::apply(None, &obj, &field_writer(rt, q, "", &now), false)
                    .map_err(|c| ApiError::ApplyConflict(c.0))?;
                let (created, warnings) = create(state, rt, ns, obj, q, true).await?;
                return Ok((created, warnings, true));
            }
            Err(e) => return Err(e),
        };
        if kind == PatchType::Apply && !status_only {
            let mut applied = p.clone();
            check_type(rt, &mut applied)?;
            let now = objects::now_rfc3339();
            let force = flag(q, "force");
            let new =
                super::ssa::apply(Some(&old), &applied, &field_writer(rt, q, "", &now), force)
                    .map_err(|c| ApiError::ApplyConflict(c.0))?;
            // An apply merges two bodies of at most 3 MiB each; what it makes is held to the
            // same limit as any patch's result.
            if patch::json_size_within(&new, MAX_BODY).is_none() {
                return Err(ApiError::EntityTooLarge(format!(
                    "the apply would make the object larger than {MAX_BODY} bytes"
                )));
            }
            let applied_mode = WriteMode {
                applied: true,
                ..mode
            };
            match write_update(state, rt, ns, name, &old, new, applied_mode).await {
                Err(ApiError::Conflict { .. }) if attempt < RETRIES => {
                    attempt += 1;
                    continue;
                }
                Ok((obj, w)) => return Ok((obj, w, false)),
                Err(e) => return Err(e),
            }
        }
        let mut new = patch::apply_patch(&old, p, kind, MAX_BODY).map_err(|e| match e {
            patch::PatchError::TooLarge(m) => ApiError::EntityTooLarge(m),
            patch::PatchError::Failed(m) => ApiError::Invalid {
                kind: rt.kind.into(),
                name: name.into(),
                causes: vec![super::error::FieldCause::invalid("", "", &m)],
            },
            patch::PatchError::Invalid(m) => ApiError::BadRequest(m),
        })?;
        // A patch that names a resourceVersion is a precondition; otherwise we patch the latest.
        let pinned =
            new.pointer("/metadata/resourceVersion") != old.pointer("/metadata/resourceVersion");
        if !pinned {
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
        }
        match write_update(state, rt, ns, name, &old, new, mode).await {
            Err(ApiError::Conflict { .. }) if !pinned && attempt < RETRIES => attempt += 1,
            Ok((obj, w)) => return Ok((obj, w, false)),
            Err(e) => return Err(e),
        }
    }
}

/// A JSON merge patch of the main resource from inside the server (the garbage collector).
pub(super) async fn merge_patch(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    p: &Value,
) -> ApiResult<Value> {
    let q = Query::new();
    let mode = WriteMode {
        status_only: false,
        query: &q,
        applied: false,
    };
    patch_object(state, rt, ns, name, p, PatchType::Merge, mode)
        .await
        .map(|(o, _, _)| o)
}

/// Pods on a node are deleted gracefully: the node stops them and then removes the object.
fn graceful_period(rt: &ResourceType, obj: &Value, opts: &Value) -> Option<i64> {
    if rt.kind != "Pod" {
        return None;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let grace = opts
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            obj.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

fn check_preconditions(rt: &ResourceType, obj: &Value, opts: &Value, name: &str) -> ApiResult<()> {
    let conflict = |what: &str, want: &str, have: &str| ApiError::Conflict {
        resource: rt.qualified(),
        name: name.into(),
        message: format!(
            "Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"
        ),
    };
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let have = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != have {
            return Err(conflict("UID", uid, have));
        }
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let have = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if rv != have {
            return Err(conflict("ResourceVersion", rv, have));
        }
    }
    Ok(())
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Propagation {
    Background,
    Foreground,
    Orphan,
}

fn propagation(opts: &Value, q: &Query) -> ApiResult<Propagation> {
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| q.get("propagationPolicy").map(String::as_str));
    let orphan = opts
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    match (policy, orphan) {
        (Some(_), Some(_)) => Err(ApiError::Invalid {
            kind: "DeleteOptions".into(),
            name: String::new(),
            causes: vec![super::error::FieldCause::invalid(
                "propagationPolicy",
                policy.unwrap_or(""),
                "orphanDependents and deletionPropagation cannot be both set",
            )],
        }),
        (Some("Background") | None, None) | (None, Some(false)) => Ok(Propagation::Background),
        (Some("Foreground"), _) => Ok(Propagation::Foreground),
        (Some("Orphan"), _) | (None, Some(true)) => Ok(Propagation::Orphan),
        (Some(other), _) => Err(ApiError::Invalid {
            kind: "DeleteOptions".into(),
            name: String::new(),
            causes: vec![super::error::FieldCause {
                reason: "FieldValueNotSupported",
                field: "propagationPolicy".into(),
                message: format!("Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""),
            }],
        }),
    }
}

/// Delete an object as Kubernetes does: at once when nothing holds it; otherwise mark it with
/// `deletionTimestamp` and let its finalizers (the node for a running pod, the garbage
/// collector for `foregroundDeletion`/`orphan`, the namespace lifecycle) finish the job.
pub(super) async fn delete(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &Value,
    q: &Query,
) -> ApiResult<Value> {
    let policy = propagation(opts, q)?;
    let mut attempt = 0;
    loop {
        let obj = get_object(state, rt, ns, name).await?;
        check_preconditions(rt, &obj, opts, name)?;
        let rv: u64 = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let already = obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        let mut fins = finalizers(&obj);
        if !already {
            let own = match policy {
                Propagation::Foreground => Some("foregroundDeletion"),
                Propagation::Orphan => Some("orphan"),
                Propagation::Background => None,
            };
            if let Some(f) = own.filter(|f| !fins.iter().any(|x| x == f)) {
                fins.push(f.to_string());
            }
        }
        let grace = graceful_period(rt, &obj, opts);
        let hold = !fins.is_empty() || grace.is_some() || rt.kind == "Namespace";
        if dry_run(q) {
            return Ok(obj);
        }
        let write = if !hold {
            Write::Delete {
                key: key(rt, ns, name),
                precondition: Some(rv),
            }
        } else {
            let current_grace = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let new_grace = grace.unwrap_or(0);
            if already && current_grace.is_some_and(|g| g <= new_grace) {
                return Ok(obj);
            }
            let mut marked = obj.clone();
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(new_grace);
            marked["metadata"]["deletionTimestamp"] =
                json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(new_grace);
            if !fins.is_empty() {
                marked["metadata"]["finalizers"] = json!(fins);
            }
            if rt.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            Write::Update {
                key: key(rt, ns, name),
                data: to_stored(rt, &mut marked)?,
                precondition: Some(rv),
            }
        };
        let deleted_now = matches!(write, Write::Delete { .. });
        match state.store.write(write).await {
            Ok(stored) => {
                let out = materialize(rt, &stored)?;
                if !deleted_now {
                    super::gc::marked(state, rt, &out);
                }
                return Ok(out);
            }
            Err(StoreError::Conflict { .. }) if attempt < RETRIES => attempt += 1,
            Err(e) => return Err(ApiError::from_store(e, &rt.qualified(), name)),
        }
    }
}

async fn delete_collection(
    state: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: &Value,
    q: &Query,
) -> ApiResult<Response> {
    let filter = Filter::from_query(rt, q)?;
    let (matching, _) = list_matching(state, rt, ns, &filter).await?;
    let mut items = Vec::new();
    for obj in &matching {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        match delete(state, rt, ns, name, opts, q).await {
            Ok(o) => items.push(o),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(axum::Json(json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": items})).into_response())
}

/// `pods/binding`: assign a pod to a node, once.
async fn bind(state: &AppState, ns: &str, name: &str, binding: &Value) -> ApiResult<()> {
    let rt = resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::Internal("pods not registered".into()))?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let Some(node) = node else {
        return Err(ApiError::Invalid {
            kind: "Binding".into(),
            name: name.into(),
            causes: vec![super::error::FieldCause::required("target.name")],
        });
    };
    let mut attempt = 0;
    loop {
        let pod = get_object(state, rt, ns, name).await?;
        if let Some(current) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(ApiError::Conflict {
                resource: "pods/binding".into(),
                name: name.into(),
                message: format!("pod {name} is already assigned to node {current:?}"),
            });
        }
        if pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::Conflict {
                resource: "pods/binding".into(),
                name: name.into(),
                message: format!("pod {name} is being deleted, cannot be assigned to a host"),
            });
        }
        let rv: u64 = pod
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut bound = pod;
        bound["spec"]["nodeName"] = json!(node);
        set_condition(&mut bound, "PodScheduled", "True", None, None);
        match state
            .store
            .write(Write::Update {
                key: key(rt, ns, name),
                data: to_stored(rt, &mut bound)?,
                precondition: Some(rv),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) if attempt < RETRIES => attempt += 1,
            Err(e) => return Err(ApiError::from_store(e, &rt.qualified(), name)),
        }
    }
}

/// Set (or replace) a status condition on a served object.
pub(super) fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = objects::now_rfc3339();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if !obj["status"].get("conditions").is_some_and(Value::is_array) {
        obj["status"]["conditions"] = json!([]);
    }
    let mut cond =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    if let Some(list) = obj["status"]["conditions"].as_array_mut() {
        match list
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        {
            Some(existing) => {
                if existing.get("status").and_then(Value::as_str) == Some(status) {
                    cond["lastTransitionTime"] = existing
                        .get("lastTransitionTime")
                        .cloned()
                        .unwrap_or(cond["lastTransitionTime"].clone());
                }
                *existing = cond;
            }
            None => list.push(cond),
        }
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
