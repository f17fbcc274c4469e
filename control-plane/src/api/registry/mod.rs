//! The generic registry: one implementation of get, list, create, update, patch (JSON, merge,
//! strategic, apply), delete and deletecollection for every resource type, with
//! preconditions, finalizers, graceful deletion, dry-run, managedFields and the `status`
//! subresource, as kube-apiserver's `generic/registry/store.go` (the `scale`, `binding` and
//! `eviction` subresources have their own files). What differs per kind comes from the kind's
//! strategy (`rt.strategy`).
//!
//! Invariants: no HTTP here (bodies arrive decoded, answers leave as values); every write goes
//! through the [`crate::store::Storage`] trait; the registry never calls the garbage collector
//! (it follows the store's watch).

mod admission;
mod allocation;
mod binding;
mod escalation;
pub(crate) mod eviction;
pub(crate) mod limits;
pub(crate) mod noderestriction;
pub(crate) mod quota;
pub(crate) mod rules;
mod scale;
pub(crate) mod serviceaccount;
mod signers;

pub(crate) use allocation::repair as repair_claims;
pub(crate) use binding::bind;
pub(crate) use scale::update_scale;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, FieldCause};
use super::patch::{self, PatchType};
use super::selectors::{FieldSelector, LabelSelector};
use super::{AppState, MAX_BODY};
use crate::resources::{self, ResourceType};
use crate::store::{ObjectKey, StoreError, StoredObject, Write};
use rules::FieldValidation;

/// The query parameters of a request.
pub(crate) type Query = HashMap<String, String>;

/// Is the boolean query parameter `k` set?
pub(crate) fn flag(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true") | Some("1"))
}

/// A stored object as served: JSON with `kind`, `apiVersion` and `metadata.resourceVersion`.
pub(crate) fn materialize(rt: &ResourceType, stored: &StoredObject) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&stored.data).map_err(|e| {
        ApiError::Internal(format!("corrupt stored object {}: {e}", stored.key.name))
    })?;
    if !v.is_object() || !v.get("metadata").is_some_and(Value::is_object) {
        return Err(ApiError::Internal(format!(
            "corrupt stored object {}: not an object with metadata",
            stored.key.name
        )));
    }
    if rt.storage.is_some() {
        v = rt.strategy.served_form(v);
    }
    v["kind"] = json!(rt.kind);
    v["apiVersion"] = json!(rt.api_version());
    v["metadata"]["resourceVersion"] = json!(stored.revision.to_string());
    Ok(v)
}

/// The bytes the store keeps: the object without its resourceVersion, in its storage form.
fn to_stored(rt: &ResourceType, obj: &mut Value) -> ApiResult<Bytes> {
    if rt.storage.is_some() {
        let mut o = rt.strategy.storage_form(obj.clone());
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
fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(&rt.storage_key(), if rt.namespaced { ns } else { "" }, name)
}

pub(crate) async fn get_object(
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
pub(crate) struct Filter {
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

    /// Do the selectors name only what an object's key holds (name, namespace)? Then
    /// [`FieldSelector::matches_key`] decides without reading the object.
    pub(crate) fn by_key(&self) -> bool {
        self.labels.0.is_empty() && self.fields.key_only()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        self.labels
            .matches(obj.pointer("/metadata/labels").unwrap_or(&Value::Null))
            && self.fields.matches(obj)
    }
}
/// The served objects of `rt` (in `ns` when given) that match `filter`, and the list revision.
pub(crate) async fn list_matching(
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
    let unknown = crate::api::typed::unknown_fields(rt, obj).map_err(|e| {
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

fn invalid(rt: &ResourceType, obj: &Value, causes: Vec<FieldCause>) -> ApiError {
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

/// Create `obj` in `ns`. A name made from `generateName` that is taken is made again (up to
/// [`RETRIES`] times, as Kubernetes 1.32 does) rather than answered 409.
pub(crate) async fn create(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    obj: Value,
    q: &Query,
    applied: bool,
) -> ApiResult<(Value, Vec<String>)> {
    let generated = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .is_some_and(|g| !g.is_empty());
    if !generated {
        return create_named(state, rt, ns, obj, q, applied).await;
    }
    let mut attempt = 0;
    loop {
        match create_named(state, rt, ns, obj.clone(), q, applied).await {
            Err(ApiError::AlreadyExists { .. }) if attempt < RETRIES => attempt += 1,
            other => return other,
        }
    }
}

async fn create_named(
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
    rules::generate_name(&mut obj);
    let warnings = field_validation(rt, &mut obj, q)?;
    rules::prepare_create(rt, &mut obj, ns);
    if !applied {
        let now = rules::now_rfc3339();
        crate::api::ssa::record_update(None, &mut obj, &field_writer(rt, q, "", &now));
    }
    admission::admit(state, rt, &mut obj).await?;
    let causes = rules::validate(rt, &obj);
    if !causes.is_empty() {
        return Err(invalid(rt, &obj, causes));
    }
    escalation::check(state, rt, ns, None, &obj).await?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    noderestriction::check(rt, ns, name, None, noderestriction::Op::Create)?;
    noderestriction::check_own_node(rt, name, None, &obj)?;
    if rt.namespaced {
        let ns_rt = resources::find("", "v1", "namespaces")
            .ok_or_else(|| ApiError::Internal("namespaces not registered".into()))?;
        let namespace = state
            .store
            .get(&key(ns_rt, "", ns))
            .await
            .map_err(|e| ApiError::from_store(e, &ns_rt.qualified(), ns))?;
        // Read only when it can be terminating (most creates land in an active namespace).
        let terminating = memchr::memmem::find(&namespace.data, b"\"Terminating\"").is_some()
            && materialize(ns_rt, &namespace)?
                .pointer("/status/phase")
                .and_then(Value::as_str)
                == Some("Terminating");
        if terminating {
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
    // What the client asked for, to allocate again from when a concurrent create took a value.
    let requested = (!rt.strategy.claim_resources().is_empty()).then(|| obj.clone());
    if requested.is_some() && state.store.get(&key(rt, ns, &name)).await.is_ok() {
        // Exists: 409, not the 422 of the values it holds looking taken.
        return Err(ApiError::from_store(
            StoreError::AlreadyExists,
            &rt.qualified(),
            &name,
        ));
    }
    let mut attempt = 0;
    loop {
        allocation::allocate(state, rt, &name, &mut obj, &[]).await?;
        if dry_run(q) {
            return Ok((obj, warnings));
        }
        let mut claims = allocation::writes(rt, (ns, &name), &[], &rt.strategy.claims(&obj))?;
        claims.extend(quota::charge(state, rt, ns, &name, &obj).await?);
        let write = allocation::with_claims(
            Write::Create {
                key: key(rt, ns, &name),
                data: to_stored(rt, &mut obj)?,
            },
            claims,
        );
        match state.store.write(write).await {
            Ok(stored) => {
                tracing::debug!(resource = rt.plural, %ns, %name, revision = stored.revision, "created");
                return Ok((with_revision(obj, stored.revision), warnings));
            }
            Err(e) if (allocation::lost_race(&e) || quota::lost_race(&e)) && attempt < RETRIES => {
                attempt += 1;
                if let Some(r) = &requested {
                    obj = r.clone();
                }
            }
            Err(e) => {
                return Err(ApiError::from_store(
                    allocation::own_error(e),
                    &rt.qualified(),
                    &name,
                ))
            }
        }
    }
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
pub(crate) struct WriteMode<'a> {
    pub(crate) status_only: bool,
    pub(crate) query: &'a Query,
    /// The body was computed by server-side apply, managedFields included.
    pub(crate) applied: bool,
}

/// The field manager of a request (`fieldManager`, defaulted in `dispatch`).
fn field_writer<'a>(
    rt: &ResourceType,
    q: &'a Query,
    subresource: &'a str,
    now: &'a str,
) -> crate::api::ssa::Writer<'a> {
    crate::api::ssa::Writer {
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
        rt.strategy.default(&mut new);
        rt.strategy.carry_over(old, &mut new);
    }
    rules::prepare_update(&mut new, old, status_only);
    if !mode.applied {
        // Status writes own their fields too, under the `status` subresource.
        let now = rules::now_rfc3339();
        let sub = if status_only { "status" } else { "" };
        crate::api::ssa::record_update(Some(old), &mut new, &field_writer(rt, q, sub, &now));
    }
    let mut causes = rules::validate(rt, &new);
    if !status_only {
        rt.strategy.validate_update(old, &new, &mut causes);
    }
    let deleting = old
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting {
        let before = finalizers(old);
        if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
            causes.push(FieldCause::forbidden(
                "metadata.finalizers",
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}"),
            ));
        }
    }
    if !causes.is_empty() {
        return Err(invalid(rt, &new, causes));
    }
    if status_only {
        signers::check(state, rt, old, &new).await?;
        noderestriction::check(rt, ns, name, Some(old), noderestriction::Op::Status)?;
    } else {
        escalation::check(state, rt, ns, Some(old), &new).await?;
        noderestriction::check(rt, ns, name, Some(old), noderestriction::Op::Update)?;
        noderestriction::check_own_node(rt, name, Some(old), &new)?;
    }
    let old_claims = rt.strategy.claims(old);
    if !status_only {
        allocation::allocate(state, rt, name, &mut new, &old_claims).await?;
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
    let (write, new_claims) = if finished {
        let write = Write::Delete {
            key: key(rt, ns, name),
            precondition: Some(old_rv),
        };
        (write, Vec::new())
    } else {
        let write = Write::Update {
            key: key(rt, ns, name),
            data: to_stored(rt, &mut new)?,
            precondition: Some(old_rv),
        };
        (write, rt.strategy.claims(&new))
    };
    let mut claims = allocation::writes(rt, (ns, name), &old_claims, &new_claims)?;
    if !status_only && !finished {
        claims.extend(quota::charge_update(state, rt, ns, name, old, &new).await?);
    }
    let stored = match state
        .store
        .write(allocation::with_claims(write, claims))
        .await
    {
        Ok(stored) => stored,
        // A concurrent write took a value this one chose, or charged a quota this one charges:
        // the caller's retry allocates and charges again.
        Err(e) if allocation::lost_race(&e) || quota::lost_race(&e) => {
            return Err(ApiError::from_store(
                StoreError::Conflict { current: old_rv },
                &rt.qualified(),
                name,
            ))
        }
        Err(e) => {
            return Err(ApiError::from_store(
                allocation::own_error(e),
                &rt.qualified(),
                name,
            ))
        }
    };
    if finished {
        return Ok((materialize(rt, &stored)?, warnings));
    }
    Ok((with_revision(new, stored.revision), warnings))
}

/// `metadata.finalizers` of a served object.
pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// Unconditional writes retry this often on a concurrent change before giving up with 409.
const RETRIES: usize = 8;

pub(crate) async fn update(
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

pub(crate) async fn patch_object(
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
                let now = rules::now_rfc3339();
                let obj = crate::api::ssa::apply(None, &obj, &field_writer(rt, q, "", &now), false)
                    .map_err(ApiError::from)?;
                let (created, warnings) = create(state, rt, ns, obj, q, true).await?;
                return Ok((created, warnings, true));
            }
            Err(e) => return Err(e),
        };
        if kind == PatchType::Apply && !status_only {
            let mut applied = p.clone();
            check_type(rt, &mut applied)?;
            let now = rules::now_rfc3339();
            let force = flag(q, "force");
            let new =
                crate::api::ssa::apply(Some(&old), &applied, &field_writer(rt, q, "", &now), force)
                    .map_err(ApiError::from)?;
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
                causes: vec![FieldCause::invalid("", "", &m)],
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
pub(crate) async fn merge_patch(
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
            causes: vec![FieldCause::invalid(
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
            causes: vec![FieldCause {
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
pub(crate) async fn delete(
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
        noderestriction::check(rt, ns, name, Some(&obj), noderestriction::Op::Delete)?;
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
        let grace = rt.strategy.grace_period(&obj, opts);
        let hold = !fins.is_empty() || grace.is_some() || rt.strategy.finalized_by_server();
        if dry_run(q) {
            return Ok(obj);
        }
        let write = if !hold {
            let released = allocation::writes(rt, (ns, name), &rt.strategy.claims(&obj), &[])?;
            allocation::with_claims(
                Write::Delete {
                    key: key(rt, ns, name),
                    precondition: Some(rv),
                },
                released,
            )
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
            rt.strategy.mark_deleted(&mut marked);
            Write::Update {
                key: key(rt, ns, name),
                data: to_stored(rt, &mut marked)?,
                precondition: Some(rv),
            }
        };
        match state
            .store
            .write(write)
            .await
            .map_err(allocation::own_error)
        {
            Ok(stored) => return materialize(rt, &stored),
            Err(StoreError::Conflict { .. }) if attempt < RETRIES => attempt += 1,
            Err(e) => return Err(ApiError::from_store(e, &rt.qualified(), name)),
        }
    }
}

pub(crate) async fn delete_collection(
    state: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: &Value,
    q: &Query,
) -> ApiResult<Value> {
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
    Ok(
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": items}),
    )
}
