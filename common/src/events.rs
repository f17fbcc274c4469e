//! A small event recorder: writes core/v1 `Event`s about an object through the API, as
//! kubelet and kube-scheduler do, so `kubectl describe` shows what happened and why.
//! Recording is best effort: a failure is logged and never fails the caller.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

/// `Normal` or `Warning`, as Kubernetes has them.
#[derive(Clone, Copy, Debug)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something the user should look at.
    Warning,
}

/// Records events on behalf of one component (`default-scheduler`, `kubelet`...).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
}

impl Recorder {
    /// A recorder for `component`, optionally naming the host it runs on.
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
        }
    }

    /// Record one event about `object`.
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
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%reason, object = %name, error = %e, "could not record event");
        }
    }
}

/// An `ObjectReference` to a pod.
pub fn pod_ref(pod: &k8s_openapi::api::core::v1::Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}
