//! `pods/binding` (what the scheduler posts): a pod is assigned to a node once, and gets its
//! `PodScheduled` condition in the same write.
//!
//! Invariants: a pod already assigned or being deleted is refused with 409; the write has the
//! read's resourceVersion as precondition, so two binders cannot both win.

use serde_json::{json, Value};

use super::{get_object, key, rules, to_stored, RETRIES};
use crate::api::error::{ApiError, ApiResult, FieldCause};
use crate::api::AppState;
use crate::resources;
use crate::store::{StoreError, Write};

/// `pods/binding`: assign a pod to a node, once.
pub(crate) async fn bind(state: &AppState, ns: &str, name: &str, binding: &Value) -> ApiResult<()> {
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
            causes: vec![FieldCause::required("target.name")],
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
fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = rules::now_rfc3339();
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
