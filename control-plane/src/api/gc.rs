//! What follows a deletion: dependents of a deleted owner (by `ownerReferences`) are deleted
//! in the background, or first (`foregroundDeletion`), or released (`orphan`); a terminating
//! namespace is emptied and then removed. Work arrives on a queue from the delete paths and is
//! re-derived from the store at start-up, so a restart in the middle loses nothing.
//!
//! Invariants: an owner marked `foregroundDeletion` goes only once none of its dependents is
//! left; an `orphan` owner goes only after every dependent's reference to it is removed; a
//! namespace goes only once nothing is left in it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::handlers::{self, finalizers};
use super::AppState;
use crate::resources::{self, ResourceType};
use crate::store::{StoredObject, Write};

/// One unit of follow-up work.
#[derive(Debug, Clone)]
pub enum Work {
    /// An object is gone: collect what it owned.
    Deleted {
        /// Its uid.
        uid: String,
        /// Its namespace ("" when cluster-scoped).
        namespace: String,
    },
    /// Several objects of one namespace are gone (queued deletions, batched).
    DeletedMany {
        /// Their uids.
        uids: HashSet<String>,
        /// Their namespace.
        namespace: String,
    },
    /// An object was marked for deletion and holds finalizers this module handles.
    Marked {
        /// Resource type.
        rt: &'static ResourceType,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// The sending side, kept in [`AppState`].
pub type Queue = mpsc::UnboundedSender<Work>;

/// The receiving side, handed to [`run`].
pub type Receiver = mpsc::UnboundedReceiver<Work>;

/// A new queue.
pub fn queue() -> (Queue, Receiver) {
    mpsc::unbounded_channel()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Called after an object was removed from the store.
pub(super) fn deleted(state: &AppState, _rt: &ResourceType, obj: &Value) {
    let _ = state.gc.send(Work::Deleted {
        uid: meta_str(obj, "uid").to_string(),
        namespace: meta_str(obj, "namespace").to_string(),
    });
}

/// Called after an object was marked for deletion.
pub(super) fn marked(state: &AppState, rt: &ResourceType, obj: &Value) {
    let Some(rt) = resources::find(rt.group, rt.version, rt.plural) else {
        return;
    };
    let ours = rt.kind == "Namespace"
        || finalizers(obj)
            .iter()
            .any(|f| f == "foregroundDeletion" || f == "orphan");
    if ours {
        let _ = state.gc.send(Work::Marked {
            rt,
            namespace: meta_str(obj, "namespace").to_string(),
            name: meta_str(obj, "name").to_string(),
        });
    }
}

/// Process the queue until `stop`; first re-derive pending work from the store.
pub async fn run(state: Arc<AppState>, mut rx: Receiver, stop: CancellationToken) {
    if let Err(e) = resume(&state).await {
        tracing::warn!(error = %e, "garbage collector: could not resume pending work");
    }
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            w = rx.recv() => match w { Some(w) => w, None => return },
        };
        // Take everything queued: deletions in one namespace share one scan for dependents.
        let mut deleted: HashMap<String, HashSet<String>> = HashMap::new();
        let mut next = Some(first);
        while let Some(work) = next.take().or_else(|| rx.try_recv().ok()) {
            match work {
                Work::Deleted { uid, namespace } => {
                    deleted.entry(namespace).or_default().insert(uid);
                }
                other => spawn(&state, &stop, other),
            }
        }
        for (namespace, uids) in deleted {
            spawn(&state, &stop, Work::DeletedMany { uids, namespace });
        }
    }
}

fn spawn(state: &Arc<AppState>, stop: &CancellationToken, work: Work) {
    let state = state.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = process(&state, &work) => r,
        };
        if let Err(e) = result {
            tracing::warn!(?work, error = %e, "garbage collector: work failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            match work {
                Work::DeletedMany { uids, namespace } => {
                    for uid in uids {
                        let _ = state.gc.send(Work::Deleted {
                            uid,
                            namespace: namespace.clone(),
                        });
                    }
                }
                other => {
                    let _ = state.gc.send(other);
                }
            }
        }
    });
}

/// The stored objects of every (directly stored) resource type, in `namespace` when given
/// (cluster-scoped types are then skipped).
async fn stored_objects(
    state: &AppState,
    namespace: Option<&str>,
) -> Result<Vec<(&'static ResourceType, StoredObject)>, ApiError> {
    let mut out = Vec::new();
    for rt in resources::RESOURCES.iter().filter(|r| r.storage.is_none()) {
        if namespace.is_some() && !rt.namespaced {
            continue;
        }
        let listing = state
            .store
            .list(&rt.storage_key(), namespace)
            .await
            .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
        out.extend(listing.objects.into_iter().map(|o| (rt, o)));
    }
    Ok(out)
}

/// Every object: marked ones get their finalizers handled; dependents whose owners are all
/// gone are collected.
async fn resume(state: &AppState) -> Result<(), ApiError> {
    let mut uids = HashSet::new();
    let mut all = Vec::new();
    for (rt, stored) in stored_objects(state, None).await? {
        let obj = handlers::materialize(rt, &stored)?;
        uids.insert(meta_str(&obj, "uid").to_string());
        if obj
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            marked(state, rt, &obj);
        }
        all.push(obj);
    }
    let mut gone = HashSet::new();
    for obj in &all {
        for r in owner_refs(obj) {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            if !uid.is_empty() && !uids.contains(uid) && gone.insert(uid.to_string()) {
                let _ = state.gc.send(Work::Deleted {
                    uid: uid.to_string(),
                    namespace: meta_str(obj, "namespace").to_string(),
                });
            }
        }
    }
    Ok(())
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The objects (type, served JSON) whose ownerReferences name one of `uids`, in `namespace`
/// (or everywhere when the owners are cluster-scoped). Objects without ownerReferences are
/// skipped before they are parsed.
async fn dependents(
    state: &AppState,
    uids: &HashSet<String>,
    namespace: &str,
) -> Result<Vec<(&'static ResourceType, Value)>, ApiError> {
    const MARK: &[u8] = b"\"ownerReferences\"";
    let ns = (!namespace.is_empty()).then_some(namespace);
    let mut out = Vec::new();
    for (rt, stored) in stored_objects(state, ns).await? {
        if !stored.data.windows(MARK.len()).any(|w| w == MARK) {
            continue;
        }
        let obj = handlers::materialize(rt, &stored)?;
        if owner_refs(&obj).iter().any(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| uids.contains(u))
        }) {
            out.push((rt, obj));
        }
    }
    Ok(out)
}

/// Remove the references to `gone` owners from a dependent (or delete it when
/// `delete_if_last` and it has no other owner).
async fn release(
    state: &AppState,
    rt: &ResourceType,
    obj: &Value,
    gone: &HashSet<String>,
    delete_if_last: Option<&str>,
) -> Result<(), ApiError> {
    let rest: Vec<Value> = owner_refs(obj)
        .into_iter()
        .filter(|r| {
            !r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| gone.contains(u))
        })
        .collect();
    let ns = meta_str(obj, "namespace");
    let name = meta_str(obj, "name");
    let q = Default::default();
    if rest.is_empty() {
        if let Some(policy) = delete_if_last {
            let opts = json!({"propagationPolicy": policy, "preconditions": {"uid": meta_str(obj, "uid")}});
            return match handlers::delete(state, rt, ns, name, &opts, &q).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
                Err(ApiError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
    }
    let refs = if rest.is_empty() {
        Value::Null
    } else {
        json!(rest)
    };
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta_str(obj, "resourceVersion")}});
    match handlers::merge_patch(state, rt, ns, name, &patch).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn process(state: &AppState, work: &Work) -> Result<(), ApiError> {
    match work {
        Work::Deleted { uid, namespace } => {
            let uids = HashSet::from([uid.clone()]);
            collect(state, &uids, namespace).await
        }
        Work::DeletedMany { uids, namespace } => collect(state, uids, namespace).await,
        Work::Marked {
            rt,
            namespace,
            name,
        } => {
            let obj = match handlers::get_object(state, rt, namespace, name).await {
                Ok(o) => o,
                Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if rt.kind == "Namespace" {
                return terminate_namespace(state, rt, &obj).await;
            }
            let uid = HashSet::from([meta_str(&obj, "uid").to_string()]);
            let fins = finalizers(&obj);
            if fins.iter().any(|f| f == "orphan") {
                for (drt, d) in dependents(state, &uid, namespace).await? {
                    release(state, drt, &d, &uid, None).await?;
                }
                remove_finalizer(state, rt, namespace, name, "orphan").await?;
            }
            if fins.iter().any(|f| f == "foregroundDeletion") {
                loop {
                    let left = dependents(state, &uid, namespace).await?;
                    if left.is_empty() {
                        break;
                    }
                    for (drt, d) in &left {
                        if d.pointer("/metadata/deletionTimestamp")
                            .is_none_or(Value::is_null)
                        {
                            release(state, drt, d, &uid, Some("Foreground")).await?;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                remove_finalizer(state, rt, namespace, name, "foregroundDeletion").await?;
            }
            Ok(())
        }
    }
}

async fn remove_finalizer(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    finalizer: &str,
) -> Result<(), ApiError> {
    loop {
        let obj = match handlers::get_object(state, rt, ns, name).await {
            Ok(o) => o,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rest: Vec<String> = finalizers(&obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let fins = if rest.is_empty() {
            Value::Null
        } else {
            json!(rest)
        };
        let patch = json!({"metadata": {"finalizers": fins, "resourceVersion": meta_str(&obj, "resourceVersion")}});
        match handlers::merge_patch(state, rt, ns, name, &patch).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Dependents of deleted owners go (or lose the reference when another owner remains).
async fn collect(
    state: &AppState,
    uids: &HashSet<String>,
    namespace: &str,
) -> Result<(), ApiError> {
    for (rt, obj) in dependents(state, uids, namespace).await? {
        release(state, rt, &obj, uids, Some("Background")).await?;
    }
    Ok(())
}

/// Delete everything in a terminating namespace, wait until it is empty, then remove it.
async fn terminate_namespace(
    state: &AppState,
    ns_rt: &ResourceType,
    namespace: &Value,
) -> Result<(), ApiError> {
    let ns = meta_str(namespace, "name").to_string();
    let q = Default::default();
    loop {
        let objects = stored_objects(state, Some(&ns)).await?;
        let left = objects.len();
        for (rt, stored) in objects {
            let obj = handlers::materialize(rt, &stored)?;
            if obj
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null())
            {
                continue;
            }
            match handlers::delete(state, rt, &ns, &stored.key.name, &json!({}), &q).await {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match state
        .store
        .write(Write::Delete {
            key: crate::store::ObjectKey::new(&ns_rt.storage_key(), "", &ns),
            precondition: None,
        })
        .await
    {
        Ok(_) | Err(crate::store::StoreError::NotFound) => Ok(()),
        Err(e) => Err(ApiError::from_store(e, "namespaces", &ns)),
    }
}
