//! The HorizontalPodAutoscaler controller (autoscaling/v2), as kube-controller-manager's: every
//! sync period (`--horizontal-pod-autoscaler-sync-period`, 15 s) each HPA's target is read
//! through its `scale` subresource, its metrics through the metrics APIs (`metrics`:
//! `metrics.k8s.io` for `Resource` metrics, `custom.metrics.k8s.io` for `Pods` and `Object`
//! metrics: `http_requests_per_second`),
//! the replicas each metric proposes are computed ([`replicas`]), the largest wins, the behavior
//! and bounds limit it ([`behavior`]), the scale is written when it changes, and the status
//! (current metrics, `AbleToScale`, `ScalingActive`, `ScalingLimited`) and events say why.
//!
//! Invariants: a metric that cannot be read never lets the others scale down; an HPA whose
//! target is at zero replicas with `minReplicas` above zero is left alone (scaling disabled);
//! `minReplicas: 0` is allowed (Kubernetes' `HPAScaleToZero`, always on here). The history of
//! recommendations and scale events lives in this process: a new leader starts it afresh (a
//! scale down then waits one stabilization window, as after a kube-controller-manager restart).

pub mod behavior;
mod metrics;
pub mod replicas;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{json, Value};
use skiff_common::events::{EventType, Recorder};
use skiff_common::labels::LabelSelector;

use super::PodInformer;
use behavior::{Behavior, Limit, Recommendation, ScaleEvent};
use metrics::{
    get_json, has_object_metric, object_metric, pods_metric, resource_metric, Failed, Measured,
    Scaled,
};

/// kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// The metric an HPA without metrics scales on: 80 % of the pods' CPU requests.
const DEFAULT_CPU_UTILIZATION: f64 = 80.0;

/// What the controller remembers of one HPA between syncs.
#[derive(Default)]
struct Memory {
    recommendations: Vec<Recommendation>,
    scale_events: Vec<ScaleEvent>,
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    recorder: Recorder,
    memory: HashMap<String, Memory>,
}

/// Run until dropped: sync every HPA every `every`.
pub fn run(
    client: kube::Client,
    pods: PodInformer,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ctx = Ctx {
            recorder: Recorder::new(client.clone(), "horizontal-pod-autoscaler", None),
            client,
            pods,
            memory: HashMap::new(),
        };
        let gvk = GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler");
        let api: Api<DynamicObject> =
            Api::all_with(ctx.client.clone(), &ApiResource::from_gvk(&gvk));
        loop {
            match api.list(&Default::default()).await {
                Ok(list) => {
                    let mut live = std::collections::HashSet::new();
                    for hpa in list.items {
                        let key = format!(
                            "{}/{}",
                            hpa.metadata.namespace.as_deref().unwrap_or_default(),
                            hpa.metadata.name.as_deref().unwrap_or_default()
                        );
                        live.insert(key.clone());
                        if let Err(e) = sync(&mut ctx, &key, &hpa).await {
                            tracing::debug!(hpa = %key, error = %e, "HPA sync");
                        }
                    }
                    ctx.memory.retain(|k, _| live.contains(k));
                }
                Err(e) => tracing::debug!(error = %e, "listing HPAs"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Where a `scaleTargetRef` kind's scale subresource is.
fn target_path(api_version: &str, kind: &str, ns: &str, name: &str) -> Option<String> {
    let plural = match (api_version, kind) {
        ("apps/v1", "Deployment") => "deployments",
        ("apps/v1", "ReplicaSet") => "replicasets",
        ("apps/v1", "StatefulSet") => "statefulsets",
        ("v1", "ReplicationController") => "replicationcontrollers",
        _ => return None,
    };
    let prefix = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    Some(format!("{prefix}/namespaces/{ns}/{plural}/{name}/scale"))
}

/// Where the target's scale subresource is: the built-in kinds by name, any other kind (a
/// custom resource's) through discovery, when it has a scale subresource.
async fn scale_path(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    ns: &str,
    name: &str,
) -> Option<String> {
    if !skiff_common::names::is_dns1123_subdomain(name) {
        return None;
    }
    if let Some(p) = target_path(api_version, kind, ns, name) {
        return Some(p);
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.ok()?;
    if !caps.subresources.iter().any(|(s, _)| s.plural == "scale") {
        return None;
    }
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    Some(match caps.scope {
        kube::discovery::Scope::Namespaced => {
            format!("{base}/namespaces/{ns}/{}/{name}/scale", resource.plural)
        }
        kube::discovery::Scope::Cluster => format!("{base}/{}/{name}/scale", resource.plural),
    })
}

/// A condition, keeping its transition time when its status did not change.
fn condition(
    old: &Value,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let since = old["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_string();
    json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
}

async fn sync(ctx: &mut Ctx, key: &str, hpa: &DynamicObject) -> Result<(), kube::Error> {
    let obj = serde_json::to_value(hpa).unwrap_or_default();
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let spec = &obj["spec"];
    let now_ts = jiff::Timestamp::now();
    let now = now_ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let now_s = now_ts.as_second();
    let min = spec["minReplicas"]
        .as_i64()
        .unwrap_or(1)
        .clamp(0, i32::MAX as i64) as i32;
    let max = spec["maxReplicas"]
        .as_i64()
        .unwrap_or(1)
        .clamp(0, i32::MAX as i64) as i32;
    let reference = ObjectReference {
        api_version: Some("autoscaling/v2".into()),
        kind: Some("HorizontalPodAutoscaler".into()),
        namespace: Some(ns.clone()),
        name: Some(name.clone()),
        uid: hpa.metadata.uid.clone(),
        ..Default::default()
    };
    let status_api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
        )),
    );
    let write_status = |status: Value| {
        let api = status_api.clone();
        let name = name.clone();
        async move {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .map(drop)
        }
    };
    let target_ref = &spec["scaleTargetRef"];
    let Some(scale_path) = scale_path(
        &ctx.client,
        target_ref["apiVersion"].as_str().unwrap_or(""),
        target_ref["kind"].as_str().unwrap_or(""),
        &ns,
        target_ref["name"].as_str().unwrap_or(""),
    )
    .await
    else {
        let msg = format!(
            "the HPA controller was unable to get the target's current scale: no scale subresource for {}/{}",
            target_ref["apiVersion"].as_str().unwrap_or(""),
            target_ref["kind"].as_str().unwrap_or("")
        );
        ctx.recorder
            .record(&reference, EventType::Warning, "FailedGetScale", &msg)
            .await;
        return write_status(json!({"conditions": [condition(&obj, "AbleToScale", false, "FailedGetScale", &msg, &now)]})).await;
    };
    let scale = match get_json(&ctx.client, &scale_path).await {
        Ok(s) => s,
        Err(e) => {
            let msg =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.recorder
                .record(&reference, EventType::Warning, "FailedGetScale", &msg)
                .await;
            return write_status(json!({"conditions": [condition(&obj, "AbleToScale", false, "FailedGetScale", &msg, &now)]})).await;
        }
    };
    let current = scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
    let status_replicas = scale["status"]["replicas"].as_i64().unwrap_or(0);
    let selector = scale["status"]["selector"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let memory = ctx.memory.entry(key.to_string()).or_default();
    memory.scale_events.retain(|(at, _)| *at > now_s - 1800);
    let mut conditions = Vec::new();
    let mut current_metrics = Vec::new();
    let (desired, rescale_reason, limit) = if current == 0 && min != 0 {
        conditions.push(condition(
            &obj,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            &now,
        ));
        (0, None, None)
    } else if current == 0 && !has_object_metric(spec) {
        // Scaled to zero: no pod, no per-pod metric; a request for its Service through a
        // gateway starts it again (`api::wake`). (An `Object` metric is measured at zero too.)
        conditions.push(condition(
            &obj,
            "ScalingActive",
            false,
            "ScaledToZero",
            "the target is scaled to zero; a request for its Service through a gateway scales it up",
            &now,
        ));
        (0, None, None)
    } else if current > max {
        (
            max,
            Some("Current number of replicas above Spec.MaxReplicas".to_string()),
            Some(Limit::TooManyReplicas),
        )
    } else if current < min {
        (
            min,
            Some("Current number of replicas below Spec.MinReplicas".to_string()),
            Some(Limit::TooFewReplicas),
        )
    } else {
        let sel = LabelSelector::parse(&selector).unwrap_or_default();
        let pods: Vec<Arc<Pod>> = ctx
            .pods
            .in_namespace(&ns)
            .into_iter()
            .filter(|p| !selector.is_empty() && sel.matches_map(p.metadata.labels.as_ref()))
            .collect();
        let target = Scaled {
            ns: &ns,
            selector: &selector,
            pods,
            current,
        };
        let default_metric = [json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}})];
        let metrics: Vec<Value> = match spec["metrics"].as_array() {
            Some(ms) if !ms.is_empty() => ms.clone(),
            _ => default_metric.to_vec(),
        };
        let mut best: Option<Measured> = None;
        let mut failures: Vec<Failed> = Vec::new();
        for m in &metrics {
            let measured = match m["type"].as_str() {
                Some("Resource") => resource_metric(ctx, &target, m).await,
                Some("Pods") => pods_metric(ctx, &target, m).await,
                Some("Object") => object_metric(ctx, &target, m).await,
                Some(other) => Err((
                    "FailedGetExternalMetric",
                    format!(
                        "{other} metrics are not served by skiff (Resource, Pods and Object are)"
                    ),
                )),
                None => Err(("InvalidMetricSourceType", "a metric without a type".into())),
            };
            match measured {
                Ok(mm) => {
                    current_metrics.push(mm.status.clone());
                    if best.as_ref().is_none_or(|b| mm.replicas > b.replicas) {
                        best = Some(mm);
                    }
                }
                Err(f) => failures.push(f),
            }
        }
        let memory = ctx.memory.entry(key.to_string()).or_default();
        match best {
            None => {
                let (reason, msg) = failures
                    .first()
                    .cloned()
                    .unwrap_or(("FailedGetResourceMetric", "no metrics".into()));
                ctx.recorder
                    .record(&reference, EventType::Warning, reason, &msg)
                    .await;
                conditions.push(condition(
                    &obj,
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale",
                    &now,
                ));
                conditions.push(condition(&obj, "ScalingActive", false, reason, &msg, &now));
                let status = json!({
                    "observedGeneration": hpa.metadata.generation,
                    "currentReplicas": status_replicas,
                    "desiredReplicas": current,
                    "currentMetrics": current_metrics,
                    "conditions": conditions,
                });
                return write_status(status).await;
            }
            Some(b) => {
                let mut wanted = b.replicas;
                // A metric that could not be read never lets the others scale down.
                if !failures.is_empty() && wanted < current {
                    wanted = current;
                }
                conditions.push(condition(
                    &obj,
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    &format!(
                        "the HPA was able to successfully calculate a replica count from {}",
                        b.describe
                    ),
                    &now,
                ));
                let behavior = Behavior::from_spec(spec.get("behavior"));
                let (desired, limit) = behavior::normalize(
                    current,
                    wanted,
                    (min, max),
                    &behavior,
                    &mut memory.recommendations,
                    &memory.scale_events,
                    now_s,
                );
                let reason = if desired > current {
                    format!("{} above target", b.describe)
                } else {
                    "All metrics below target".to_string()
                };
                (desired, Some(reason), limit)
            }
        }
    };
    conditions.push(match limit {
        Some(l) => {
            let (reason, msg) = l.reason();
            condition(&obj, "ScalingLimited", true, reason, msg, &now)
        }
        None => condition(
            &obj,
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
            &now,
        ),
    });
    let mut last_scale = obj["status"]["lastScaleTime"].clone();
    let rescale = desired != current && !(current == 0 && min != 0);
    if rescale {
        let body = serde_json::to_vec(&json!({"spec": {"replicas": desired}}))
            .map_err(kube::Error::SerdeError)?;
        let req = axum::http::Request::patch(&scale_path)
            .header(
                axum::http::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(body)
            .map_err(kube::Error::HttpError)?;
        match ctx.client.request::<Value>(req).await {
            Ok(_) => {
                let msg = format!(
                    "New size: {desired}; reason: {}",
                    rescale_reason.unwrap_or_default()
                );
                ctx.recorder
                    .record(&reference, EventType::Normal, "SuccessfulRescale", &msg)
                    .await;
                if let Some(m) = ctx.memory.get_mut(key) {
                    m.scale_events.push((now_s, desired - current));
                }
                last_scale = json!(now);
                conditions.insert(
                    0,
                    condition(
                        &obj,
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        &format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                        &now,
                    ),
                );
            }
            Err(e) => {
                let msg = format!("the HPA controller was unable to update the target scale: {e}");
                ctx.recorder
                    .record(&reference, EventType::Warning, "FailedRescale", &msg)
                    .await;
                conditions.insert(
                    0,
                    condition(&obj, "AbleToScale", false, "FailedUpdateScale", &msg, &now),
                );
            }
        }
    } else {
        conditions.insert(
            0,
            condition(
                &obj,
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size",
                &now,
            ),
        );
    }
    let mut status: BTreeMap<&str, Value> = BTreeMap::new();
    status.insert("observedGeneration", json!(hpa.metadata.generation));
    status.insert("currentReplicas", json!(status_replicas));
    status.insert("desiredReplicas", json!(desired));
    status.insert("currentMetrics", json!(current_metrics));
    status.insert("conditions", json!(conditions));
    if !last_scale.is_null() {
        status.insert("lastScaleTime", last_scale);
    }
    write_status(json!(status)).await
}

#[cfg(test)]
mod tests {
    use super::metrics::{as_quantity, quantity};
    use super::*;

    #[test]
    fn scale_targets_and_quantities() {
        assert_eq!(
            target_path("apps/v1", "Deployment", "a", "web").as_deref(),
            Some("/apis/apps/v1/namespaces/a/deployments/web/scale")
        );
        assert_eq!(
            target_path("v1", "ReplicationController", "a", "rc").as_deref(),
            Some("/api/v1/namespaces/a/replicationcontrollers/rc/scale")
        );
        assert_eq!(target_path("apps/v1", "DaemonSet", "a", "d"), None);
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("1500000n"), Some(0.0015));
        assert_eq!(quantity("64Ki"), Some(65536.0));
        assert_eq!(quantity("lots"), None);
        assert_eq!(as_quantity(1.5), "1500m");
        assert_eq!(as_quantity(2.0), "2");
    }
}
