//! What follows a deletion: dependents of a deleted owner (by `ownerReferences`) are deleted
//! in the background, or first (`foregroundDeletion`), or released (`orphan`); a terminating
//! namespace is emptied and then removed.
//!
//! An owner index (uid → dependents, and the uids that exist) is built from the store at
//! start-up and kept current by one store-wide watch, in revision order: an owner's deletion
//! event queues the collection of its dependents, and an object whose owners do not exist
//! (deleted while the server was down, or never there) is collected too. Marked objects
//! (`foregroundDeletion`, `orphan`, terminating namespaces) are seen on the same watch (and in
//! the listing at start-up), so a restart in the middle loses nothing; like a controller, the
//! collector is fed by the store, and the registry never calls it.
//!
//! Invariants: an owner marked `foregroundDeletion` goes only once none of its dependents is
//! left; an `orphan` owner goes only after every dependent's reference to it is removed; a
//! namespace goes only once nothing is left in it; looking dependents up never scans the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::registry::{self, finalizers};
use super::strategy::crd::CLEANUP_FINALIZER;
use super::AppState;
use crate::resources::{self, ResourceType};
use crate::store::{EventKind, ObjectKey, StoreError, StoredObject, Write};

/// One unit of follow-up work.
#[derive(Debug, Clone)]
pub enum Work {
    /// These owners are gone: collect what they owned.
    Collect {
        /// Their uids.
        owners: HashSet<String>,
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

/// The sending side of the collector's own queue.
type Queue = mpsc::UnboundedSender<Work>;

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The deletion state of an object, read only from objects whose bytes mention it.
#[derive(Deserialize, Default)]
struct Marks {
    #[serde(default)]
    metadata: MarksMeta,
}

#[derive(Deserialize, Default)]
struct MarksMeta {
    #[serde(default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<String>,
    #[serde(default)]
    finalizers: Vec<String>,
}

/// The work an object's stored state asks of this module: `Marked` when it is marked for
/// deletion and the server finishes it (a namespace) or it holds `foregroundDeletion` or
/// `orphan`.
fn marked(stored: &StoredObject) -> Option<Work> {
    // Most objects are not being deleted: look for the field before parsing anything.
    memchr::memmem::find(&stored.data, b"\"deletionTimestamp\"")?;
    let marks: Marks = serde_json::from_slice(&stored.data).ok()?;
    marks.metadata.deletion_timestamp.as_ref()?;
    let rt = resources::all()
        .into_iter()
        .find(|r| r.storage.is_none() && r.storage_key() == stored.key.resource)?;
    let ours = rt.strategy.finalized_by_server()
        || marks
            .metadata
            .finalizers
            .iter()
            .any(|f| f == "foregroundDeletion" || f == "orphan" || f == CLEANUP_FINALIZER);
    ours.then(|| Work::Marked {
        rt,
        namespace: stored.key.namespace.clone(),
        name: stored.key.name.clone(),
    })
}

/// The part of an object the index reads (serde skips the rest without building it).
#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    metadata: HeadMeta,
}

#[derive(Deserialize, Default)]
struct HeadMeta {
    #[serde(default)]
    uid: String,
    #[serde(default, rename = "ownerReferences")]
    owner_references: Vec<OwnerRef>,
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
struct OwnerRef {
    #[serde(default)]
    uid: String,
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

impl OwnerRef {
    /// Only owners of kinds this server stores can be known to be missing.
    fn served(&self) -> bool {
        resources::all()
            .into_iter()
            .any(|r| r.kind == self.kind && r.api_version() == self.api_version)
    }
}

/// uid → dependents, and which uids exist. Pure data structure, fed in revision order.
#[derive(Default)]
pub struct OwnerIndex {
    /// Live objects: uid → key.
    live: HashMap<String, ObjectKey>,
    /// key → (its uid, its owners).
    objects: HashMap<ObjectKey, (String, Vec<OwnerRef>)>,
    /// owner uid → keys of its dependents.
    dependents: HashMap<String, HashSet<ObjectKey>>,
}

impl OwnerIndex {
    /// An object was created or changed; returns the uids of its owners that do not exist.
    fn upsert(&mut self, key: &ObjectKey, data: &[u8]) -> Vec<String> {
        let head: Head = serde_json::from_slice(data).unwrap_or_default();
        self.remove(key);
        let HeadMeta {
            uid,
            owner_references: owners,
        } = head.metadata;
        for o in &owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        let dangling = self.dangling(&owners);
        self.live.insert(uid.clone(), key.clone());
        self.objects.insert(key.clone(), (uid, owners));
        dangling
    }

    fn dangling(&self, owners: &[OwnerRef]) -> Vec<String> {
        owners
            .iter()
            .filter(|o| o.served() && !self.live.contains_key(&o.uid))
            .map(|o| o.uid.clone())
            .collect()
    }

    /// An object is gone; returns its uid when something depends on it.
    fn remove(&mut self, key: &ObjectKey) -> Option<String> {
        let (uid, owners) = self.objects.remove(key)?;
        if self.live.get(&uid) == Some(key) {
            self.live.remove(&uid);
        }
        for o in owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        self.dependents.contains_key(&uid).then_some(uid)
    }

    /// Keys of the objects that name one of `owners`.
    fn dependents_of(&self, owners: &HashSet<String>) -> Vec<ObjectKey> {
        let mut out: Vec<ObjectKey> = owners
            .iter()
            .filter_map(|u| self.dependents.get(u))
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every owner uid some object names but that does not exist.
    fn all_dangling(&self) -> HashSet<String> {
        self.objects
            .values()
            .flat_map(|(_, owners)| self.dangling(owners))
            .collect()
    }
}

/// The garbage collector's shared state.
struct Gc {
    state: Arc<AppState>,
    queue: Queue,
    index: Mutex<OwnerIndex>,
    /// Marked objects whose work is running.
    in_flight: Mutex<HashSet<ObjectKey>>,
    /// The last revision the index has applied.
    applied: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Gc {
    fn collect(&self, owners: HashSet<String>) {
        if !owners.is_empty() {
            let _ = self.queue.send(Work::Collect { owners });
        }
    }

    /// Wait until the index has seen every write up to the store's current revision.
    async fn caught_up(&self) {
        let target = self.state.store.revision();
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= target).await;
    }

    /// Rebuild the index from a full listing; returns the revision it reflects.
    async fn rebuild(&self) -> Result<u64, ApiError> {
        let revision = self.state.store.revision();
        let mut index = OwnerIndex::default();
        let mut marked_objects = Vec::new();
        for (_, stored) in stored_objects(&self.state, None).await? {
            index.upsert(&stored.key, &stored.data);
            marked_objects.extend(marked(&stored));
        }
        let dangling = index.all_dangling();
        if let Ok(mut i) = self.index.lock() {
            *i = index;
        }
        self.applied.send_replace(revision);
        for work in marked_objects {
            let _ = self.queue.send(work);
        }
        self.collect(dangling);
        Ok(revision)
    }

    /// Keep the index current from one store-wide watch; rebuild when it falls behind.
    async fn follow(self: Arc<Self>) {
        loop {
            let from = match self.rebuild().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector: could not build the owner index");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut w = match self.state.store.watch(None, from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector: could not watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let ev = tokio::select! {
                    _ = self.stop.cancelled() => return,
                    ev = w.next() => ev,
                };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(StoreError::Closed) => return,
                    Err(_) => break,
                };
                let gone = {
                    let Ok(mut index) = self.index.lock() else {
                        return;
                    };
                    match ev.kind {
                        EventKind::Deleted => index.remove(&ev.object.key).into_iter().collect(),
                        _ => index
                            .upsert(&ev.object.key, &ev.object.data)
                            .into_iter()
                            .collect(),
                    }
                };
                self.applied.send_replace(ev.object.revision);
                self.collect(gone);
                if ev.kind != EventKind::Deleted {
                    if let Some(work) = marked(&ev.object) {
                        let _ = self.queue.send(work);
                    }
                }
            }
        }
    }
}

/// Build the index, then process the queue until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let (queue, mut rx) = mpsc::unbounded_channel();
    let gc = Arc::new(Gc {
        state,
        queue,
        index: Mutex::new(OwnerIndex::default()),
        in_flight: Mutex::new(HashSet::new()),
        applied: watch::channel(0).0,
        stop: stop.clone(),
    });
    tokio::spawn(gc.clone().follow());
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            w = rx.recv() => match w { Some(w) => w, None => return },
        };
        // Take everything queued: collections share one pass.
        let mut owners = HashSet::new();
        let mut next = Some(first);
        while let Some(work) = next.take().or_else(|| rx.try_recv().ok()) {
            match work {
                Work::Collect { owners: o } => owners.extend(o),
                other => spawn(&gc, other),
            }
        }
        if !owners.is_empty() {
            spawn(&gc, Work::Collect { owners });
        }
    }
}

fn spawn(gc: &Arc<Gc>, work: Work) {
    // One piece of work per marked object at a time: each change of an object being deleted
    // asks for it again.
    let marked_key = match &work {
        Work::Marked {
            rt,
            namespace,
            name,
        } => Some(ObjectKey::new(&rt.storage_key(), namespace, name)),
        Work::Collect { .. } => None,
    };
    if let Some(key) = &marked_key {
        let first = gc
            .in_flight
            .lock()
            .is_ok_and(|mut set| set.insert(key.clone()));
        if !first {
            return;
        }
    }
    let gc = gc.clone();
    tokio::spawn(async move {
        let result = tokio::select! {
            _ = gc.stop.cancelled() => return,
            r = process(&gc, &work) => r,
        };
        if let (Some(key), Ok(mut set)) = (&marked_key, gc.in_flight.lock()) {
            set.remove(key);
        }
        if let Err(e) = result {
            tracing::warn!(?work, error = %e, "garbage collector: work failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = gc.queue.send(work);
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
    for rt in resources::all().into_iter().filter(|r| r.storage.is_none()) {
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

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The objects (type, served JSON) that name one of `owners`, from the index.
async fn dependents(
    gc: &Gc,
    owners: &HashSet<String>,
) -> Result<Vec<(&'static ResourceType, Value)>, ApiError> {
    gc.caught_up().await;
    let keys = match gc.index.lock() {
        Ok(index) => index.dependents_of(owners),
        Err(_) => return Err(ApiError::Internal("owner index poisoned".into())),
    };
    let mut out = Vec::new();
    for key in keys {
        let Some(rt) = resources::all()
            .into_iter()
            .find(|r| r.storage.is_none() && r.storage_key() == key.resource)
        else {
            continue;
        };
        match gc.state.store.get(&key).await {
            Ok(stored) => out.push((rt, registry::materialize(rt, &stored)?)),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(ApiError::from_store(e, &rt.qualified(), &key.name)),
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
            return match registry::delete(state, rt, ns, name, &opts, &q).await {
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
    match registry::merge_patch(state, rt, ns, name, &patch).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes one piece of work keeps in flight (kube-controller-manager runs 20 garbage collector
/// workers). Each write waits for a group commit of the store, so writing one at a time would
/// cost a commit per object: a namespace of 10,000 pods took 26 s to empty.
const CONCURRENCY: usize = 64;

/// Run `f` on each item, [`CONCURRENCY`] at once; the first error ends it.
async fn each<T, F, Fut>(items: Vec<T>, f: F) -> Result<(), ApiError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    use futures::TryStreamExt;
    futures::stream::iter(items.into_iter().map(Ok))
        .try_for_each_concurrent(CONCURRENCY, f)
        .await
}

async fn process(gc: &Gc, work: &Work) -> Result<(), ApiError> {
    let state = gc.state.as_ref();
    match work {
        Work::Collect { owners } => {
            // Dependents of gone owners go (or lose the reference when another owner remains).
            each(dependents(gc, owners).await?, |(rt, obj)| async move {
                release(state, rt, &obj, owners, Some("Background")).await
            })
            .await
        }
        Work::Marked {
            rt,
            namespace,
            name,
        } => {
            let obj = match registry::get_object(state, rt, namespace, name).await {
                Ok(o) => o,
                Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if rt.kind == "Namespace" {
                return terminate_namespace(state, rt, &obj).await;
            }
            if finalizers(&obj).iter().any(|f| f == CLEANUP_FINALIZER) {
                remove_custom_resources(state, &obj).await?;
                remove_finalizer(state, rt, namespace, name, CLEANUP_FINALIZER).await?;
                return super::crd::sync(state).await;
            }
            let uid = HashSet::from([meta_str(&obj, "uid").to_string()]);
            let fins = finalizers(&obj);
            if fins.iter().any(|f| f == "orphan") {
                let uid = &uid;
                each(dependents(gc, uid).await?, |(drt, d)| async move {
                    release(state, drt, &d, uid, None).await
                })
                .await?;
                remove_finalizer(state, rt, namespace, name, "orphan").await?;
            }
            if fins.iter().any(|f| f == "foregroundDeletion") {
                loop {
                    let left = dependents(gc, &uid).await?;
                    if left.is_empty() {
                        break;
                    }
                    let live: Vec<_> = left
                        .into_iter()
                        .filter(|(_, d)| {
                            d.pointer("/metadata/deletionTimestamp")
                                .is_none_or(Value::is_null)
                        })
                        .collect();
                    let uid = &uid;
                    each(live, |(drt, d)| async move {
                        release(state, drt, &d, uid, Some("Foreground")).await
                    })
                    .await?;
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
        let obj = match registry::get_object(state, rt, ns, name).await {
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
        match registry::merge_patch(state, rt, ns, name, &patch).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Delete every object of a CRD being deleted and wait until none is left.
async fn remove_custom_resources(state: &AppState, crd: &Value) -> Result<(), ApiError> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(rt) = resources::all()
        .into_iter()
        .find(|r| r.group == group && r.plural == plural && r.storage.is_none())
    else {
        return Ok(());
    };
    let q = Default::default();
    loop {
        let listing = state
            .store
            .list(&rt.storage_key(), None)
            .await
            .map_err(|e| ApiError::from_store(e, &rt.qualified(), ""))?;
        if listing.objects.is_empty() {
            return Ok(());
        }
        let q = &q;
        each(listing.objects, |o| async move {
            match registry::delete(state, rt, &o.key.namespace, &o.key.name, &json!({}), q).await {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
        let mut live = Vec::new();
        for (rt, stored) in objects {
            let obj = registry::materialize(rt, &stored)?;
            if obj
                .pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
            {
                live.push((rt, stored.key.name));
            }
        }
        let (ns, q) = (&ns, &q);
        each(live, |(rt, name)| async move {
            match registry::delete(state, rt, ns, &name, &json!({}), q).await {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("configmaps", "default", name)
    }

    fn obj(uid: &str, owners: &[&str]) -> Vec<u8> {
        let refs: Vec<Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": o}))
            .collect();
        serde_json::to_vec(&json!({"metadata": {"uid": uid, "ownerReferences": refs}})).unwrap()
    }

    #[test]
    fn owner_index_table() {
        let mut ix = OwnerIndex::default();
        let d = ObjectKey::new("apps/deployments", "default", "web");
        // (step, expected result)
        assert_eq!(ix.upsert(&d, &obj("D", &[])), Vec::<String>::new());
        assert_eq!(
            ix.upsert(&key("a"), &obj("A", &["D"])),
            Vec::<String>::new()
        );
        assert_eq!(
            ix.upsert(&key("b"), &obj("B", &["D", "X"])),
            vec!["X".to_string()]
        );
        assert_eq!(
            ix.dependents_of(&HashSet::from(["D".to_string()])),
            vec![key("a"), key("b")]
        );
        assert_eq!(ix.all_dangling(), HashSet::from(["X".to_string()]));
        // An update that drops the reference removes the dependency.
        ix.upsert(&key("a"), &obj("A", &[]));
        assert_eq!(
            ix.dependents_of(&HashSet::from(["D".to_string()])),
            vec![key("b")]
        );
        // Deleting the owner reports its uid (something depends on it); deleting a leaf does not.
        assert_eq!(ix.remove(&d), Some("D".to_string()));
        assert_eq!(ix.remove(&key("a")), None);
        assert_eq!(ix.remove(&key("nothing")), None);
        assert_eq!(
            ix.all_dangling(),
            HashSet::from(["D".to_string(), "X".to_string()])
        );
        // Owners of kinds this server does not store are never called missing.
        let foreign = serde_json::to_vec(&json!({"metadata": {"uid": "F", "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "W"}]}})).unwrap();
        assert_eq!(ix.upsert(&key("f"), &foreign), Vec::<String>::new());
    }
}
