//! A small event recorder: writes core/v1 `Event`s about an object through the API, as
//! kubelet and kube-scheduler do, so `kubectl describe` shows what happened and why.
//! Recording is best effort and never delays the caller: events are queued (at most
//! `QUEUE` waiting; beyond that they are dropped with a warning) and a background task sends
//! them, a few at a time. A failure is logged and never fails the caller.
//! As Kubernetes' recorder does, an event that repeats (same object, type, reason and message
//! within `DEDUP_WINDOW`) updates the first one's `count` and `lastTimestamp` instead of
//! adding another, so `kubectl describe` shows `(x12 over 3m)`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `Normal` or `Warning`, as Kubernetes has them.
#[derive(Clone, Copy, Debug)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something the user should look at.
    Warning,
}

/// Events waiting to be sent before new ones are dropped.
pub const QUEUE: usize = 10_000;
/// Events sent at the same time. Each waits for a group commit of the store, so this bounds the
/// events written per commit: at 8, a backlog of 10,000 pods bound at ~2,400/s overflowed the
/// queue and dropped about 4,000 `Scheduled` events.
pub const IN_FLIGHT: usize = 64;

/// How long a repeated event adds to the first one's count.
pub const DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// Repeated events remembered (the oldest are forgotten beyond this).
const DEDUP_ENTRIES: usize = 4096;

/// An event already sent: its name, count, and first time.
struct Seen {
    name: String,
    count: i32,
    first: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    at: std::time::Instant,
}

/// Records events on behalf of one component (`default-scheduler`, `kubelet`...).
#[derive(Clone)]
pub struct Recorder {
    queue: tokio::sync::mpsc::Sender<Event>,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Recorder {
    /// A recorder for `component`, optionally naming the host it runs on. Starts the task that
    /// sends the events (it ends when the last clone of the recorder is dropped).
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Self {
        use futures::StreamExt;
        let (queue, mut rx) = tokio::sync::mpsc::channel::<Event>(QUEUE);
        let queued = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        tokio::spawn(queued.for_each_concurrent(IN_FLIGHT, move |event| {
            let client = client.clone();
            async move {
                let ns = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                // A repeat updates the event it repeats (created anew if that one is gone).
                if event.count.unwrap_or(1) > 1 {
                    let name = event.metadata.name.clone().unwrap_or_default();
                    let patch = serde_json::json!({"count": event.count, "lastTimestamp": event.last_timestamp});
                    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        Ok(_) => return,
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "could not update a repeated event");
                            return;
                        }
                    }
                }
                // The created event comes back in the answer; nothing reads it, so it is not
                // decoded (a `Scheduled` event per pod adds up while a backlog is bound).
                let created = async {
                    let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
                    let request = kube::core::Request::new(api.resource_url())
                        .create(&PostParams::default(), body)
                        .map_err(kube::Error::BuildRequest)?;
                    client.request_text(request).await.map(drop)
                };
                if let Err(e) = created.await {
                    tracing::warn!(
                        reason = event.reason.as_deref().unwrap_or_default(),
                        object = event.involved_object.name.as_deref().unwrap_or_default(),
                        error = %e,
                        "could not record event"
                    );
                }
            }
        }));
        Recorder {
            queue,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: Arc::default(),
        }
    }

    /// Record one event about `object` (queued; returns at once).
    pub async fn record(
        &self,
        object: &ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let ns = object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = object.name.clone().unwrap_or_default();
        let now = crate::now();
        let event = Event {
            metadata: ObjectMeta {
                // As Kubernetes does: the name sorts by time, so equal timestamps keep their order.
                name: Some(format!(
                    "{name}.{:x}",
                    jiff::Timestamp::now().as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(
                match kind {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: self.host.clone(),
            ..Default::default()
        };
        let mut event = event;
        let key = format!(
            "{}/{}/{}/{:?}/{reason}/{message}",
            ns,
            object.uid.as_deref().unwrap_or(&name),
            object.field_path.as_deref().unwrap_or(""),
            event.type_
        );
        if let Ok(mut seen) = self.seen.lock() {
            match seen.get_mut(&key) {
                Some(s) if s.at.elapsed() < DEDUP_WINDOW => {
                    s.count += 1;
                    event.metadata.name = Some(s.name.clone());
                    event.count = Some(s.count);
                    event.first_timestamp = Some(s.first.clone());
                }
                _ => {
                    if seen.len() >= DEDUP_ENTRIES {
                        seen.retain(|_, s| s.at.elapsed() < DEDUP_WINDOW);
                        if seen.len() >= DEDUP_ENTRIES {
                            seen.clear();
                        }
                    }
                    seen.insert(
                        key,
                        Seen {
                            name: event.metadata.name.clone().unwrap_or_default(),
                            count: 1,
                            first: event.first_timestamp.clone().unwrap_or_else(crate::now),
                            at: std::time::Instant::now(),
                        },
                    );
                }
            }
        }
        if self.queue.try_send(event).is_err() {
            tracing::warn!(%reason, object = %name, "event queue full or closed; event dropped");
        }
    }
}

/// An `ObjectReference` to a pod.
pub fn pod_ref(pod: &k8s_openapi::api::core::v1::Pod) -> ObjectReference {
    object_ref(&pod.metadata, "Pod", "v1")
}

/// An `ObjectReference` to any object.
pub fn object_ref(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
    api_version: &str,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}
