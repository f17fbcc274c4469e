//! The `scale` subresource of workloads (Deployments, ReplicaSets, StatefulSets,
//! ReplicationControllers): `kubectl scale` reads and writes an autoscaling/v1 Scale, and only
//! the workload's `spec.replicas` changes.
//!
//! Invariants: the write goes through the registry's ordinary update (admission, validation,
//! managedFields); a Scale that names a resourceVersion is a precondition, else a conflict is
//! retried on the fresh object.

use serde_json::Value;

use super::{get_object, write_update, Query, WriteMode, RETRIES};
use crate::api::error::{ApiError, ApiResult, FieldCause};
use crate::api::patch::{self, PatchType};
use crate::api::strategy::workloads::scale_of;
use crate::api::AppState;
use crate::api::MAX_BODY;
use crate::resources::ResourceType;
use crate::store::StoreError;

/// PUT or PATCH of a workload's `scale`: only `spec.replicas` changes.
pub(crate) async fn update_scale(
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
        let current = scale_of(&old);
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
                    causes: vec![FieldCause::invalid(
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
            Ok((obj, _)) => return Ok(scale_of(&obj)),
            Err(e) => return Err(e),
        }
    }
}
