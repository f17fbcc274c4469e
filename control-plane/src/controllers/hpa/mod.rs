//! The HorizontalPodAutoscaler controller (autoscaling/v2), as kube-controller-manager's: every
//! sync period (`--horizontal-pod-autoscaler-sync-period`, 15 s) each HPA's target is read
//! through its `scale` subresource, its metrics through the metrics APIs (`metrics.k8s.io` for
//! `Resource` metrics, `custom.metrics.k8s.io` for `Pods` metrics: `http_requests_per_second`),
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
use replicas::{NoProposal, PodSample, PodState, Target};

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

/// A name that may go into a path as it is.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..")
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
    if !plain(name) {
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

/// A quantity as a number (cores for CPU, bytes for memory).
fn quantity(s: &str) -> Option<f64> {
    let q = skiff_common::quantity::Quantity::parse(s).ok()?;
    match q.scaled(9) {
        Some(n) => Some(n as f64 / 1e9),
        None => q.scaled(0).map(|n| n as f64),
    }
}

/// A number as a quantity, in thousandths when not whole.
fn as_quantity(v: f64) -> String {
    let milli = (v * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, kube::Error> {
    let req = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(req).await
}

/// How a pod counts for a metric of `resource` ("" for a Pods metric).
fn pod_state(pod: &Pod, resource: &str) -> PodState {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, "Failed" | "Succeeded") {
        return PodState::Ignored;
    }
    if phase == "Pending" {
        return PodState::Unready;
    }
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if resource == "cpu" && !ready {
        return PodState::Unready;
    }
    PodState::Ready
}

/// The sum of a pod's containers' requests of `resource` (None: one has none).
fn pod_request(pod: &Pod, resource: &str) -> Option<f64> {
    let spec = pod.spec.as_ref()?;
    let mut sum = 0.0;
    for c in &spec.containers {
        let q = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))?;
        sum += quantity(&q.0)?;
    }
    Some(sum)
}

/// What one metric of the spec came to.
struct Measured {
    /// Replicas it proposes.
    replicas: i32,
    /// Its `status.currentMetrics` entry.
    status: Value,
    /// Its name in events (`cpu resource utilization (percentage of request)`).
    describe: String,
}

/// A metric that could not be used: (reason, message).
type Failed = (&'static str, String);

struct Scaled<'a> {
    ns: &'a str,
    selector: &'a str,
    pods: Vec<Arc<Pod>>,
    current: i32,
}

async fn resource_metric(ctx: &Ctx, t: &Scaled<'_>, m: &Value) -> Result<Measured, Failed> {
    let name = m
        .pointer("/resource/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let fail = |msg: String| ("FailedGetResourceMetric", msg);
    if !matches!(name, "cpu" | "memory") {
        return Err(fail(format!(
            "unable to get metrics for resource {name:?}: only cpu and memory are measured"
        )));
    }
    let target = m.pointer("/resource/target").cloned().unwrap_or_default();
    let goal = match (
        target.get("averageUtilization").and_then(Value::as_f64),
        target
            .get("averageValue")
            .and_then(Value::as_str)
            .and_then(quantity),
    ) {
        (Some(u), _) => Target::Utilization(u),
        (None, Some(v)) => Target::AverageValue(v),
        _ => {
            return Err(fail(format!(
                "invalid target for resource {name}: neither averageUtilization nor averageValue"
            )))
        }
    };
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods?labelSelector={}",
        t.ns,
        urlencode(t.selector)
    );
    let list = get_json(&ctx.client, &path).await.map_err(|e| {
        fail(format!(
            "unable to get metrics for resource {name}: unable to fetch metrics from resource metrics API: {e}"
        ))
    })?;
    let mut usage: HashMap<String, f64> = HashMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let pod = item["metadata"]["name"].as_str().unwrap_or("").to_string();
        let sum: f64 = item["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["usage"][name].as_str().and_then(quantity))
            .sum();
        usage.insert(pod, sum);
    }
    let samples: Vec<PodSample> = t
        .pods
        .iter()
        .map(|p| {
            let pod_name = p.metadata.name.clone().unwrap_or_default();
            PodSample {
                state: pod_state(p, name),
                value: usage.get(&pod_name).copied(),
                request: pod_request(p, name),
            }
        })
        .collect();
    let proposal = replicas::per_pod(t.current, &samples, goal, name).map_err(|e| {
        fail(match e {
            NoProposal::NoMetrics => format!(
                "unable to get metrics for resource {name}: no metrics returned from resource metrics API"
            ),
            other => format!("failed to get {name} utilization: {other}"),
        })
    })?;
    let mut current = json!({"averageValue": as_quantity(proposal.average)});
    if let Some(u) = proposal.utilization {
        current["averageUtilization"] = json!(u);
    }
    Ok(Measured {
        replicas: proposal.replicas,
        status: json!({"type": "Resource", "resource": {"name": name, "current": current}}),
        describe: match goal {
            Target::Utilization(_) => {
                format!("{name} resource utilization (percentage of request)")
            }
            Target::AverageValue(_) => format!("{name} resource"),
        },
    })
}

async fn pods_metric(ctx: &Ctx, t: &Scaled<'_>, m: &Value) -> Result<Measured, Failed> {
    let name = m
        .pointer("/pods/metric/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let fail = |msg: String| ("FailedGetPodsMetric", msg);
    let target = m
        .pointer("/pods/target/averageValue")
        .and_then(Value::as_str)
        .and_then(quantity)
        .ok_or_else(|| {
            fail(format!(
                "invalid target for pods metric {name}: no averageValue"
            ))
        })?;
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/{name}?labelSelector={}",
        t.ns,
        urlencode(t.selector)
    );
    let list = get_json(&ctx.client, &path).await.map_err(|e| {
        fail(format!(
            "unable to get metric {name}: unable to fetch metrics from custom metrics API: {e}"
        ))
    })?;
    let values: HashMap<String, f64> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i["describedObject"]["name"].as_str()?.to_string(),
                i["value"].as_str().and_then(quantity)?,
            ))
        })
        .collect();
    let samples: Vec<PodSample> = t
        .pods
        .iter()
        .map(|p| PodSample {
            state: pod_state(p, ""),
            value: values
                .get(p.metadata.name.as_deref().unwrap_or(""))
                .copied(),
            request: None,
        })
        .collect();
    let proposal = replicas::per_pod(t.current, &samples, Target::AverageValue(target), name)
        .map_err(|e| fail(format!("unable to get metric {name}: {e}")))?;
    Ok(Measured {
        replicas: proposal.replicas,
        status: json!({"type": "Pods", "pods": {"metric": {"name": name},
            "current": {"averageValue": as_quantity(proposal.average)}}}),
        describe: format!("pods metric {name}"),
    })
}

async fn object_metric(ctx: &Ctx, t: &Scaled<'_>, m: &Value) -> Result<Measured, Failed> {
    let object = &m["object"];
    let name = object["metric"]["name"].as_str().unwrap_or("");
    let described = &object["describedObject"];
    let fail = |msg: String| ("FailedGetObjectMetric", msg);
    let resource = match (
        described["apiVersion"].as_str().unwrap_or("v1"),
        described["kind"].as_str().unwrap_or(""),
    ) {
        ("v1", "Service") => "services",
        (v, k) => {
            return Err(fail(format!(
                "unable to get metric {name}: {v} {k} has no metrics in skiff (Services do)"
            )))
        }
    };
    let object_name = described["name"].as_str().unwrap_or("");
    if !object_name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || object_name.is_empty()
    {
        return Err(fail(format!("unable to get metric {name}: no such object")));
    }
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/{resource}/{object_name}/{name}",
        t.ns
    );
    let list = get_json(&ctx.client, &path).await.map_err(|e| {
        fail(format!(
            "unable to get metric {name}: {resource}/{object_name}: {e}"
        ))
    })?;
    let value = list["items"][0]["value"]
        .as_str()
        .and_then(quantity)
        .ok_or_else(|| fail(format!("unable to get metric {name}: no value")))?;
    let target = &object["target"];
    let ready = t
        .pods
        .iter()
        .filter(|p| pod_state(p, "") == PodState::Ready)
        .count() as i32;
    let (replicas, current) = match (
        target["type"].as_str(),
        target["value"].as_str().and_then(quantity),
        target["averageValue"].as_str().and_then(quantity),
    ) {
        (Some("Value"), Some(goal), _) => (
            replicas::object_value(t.current, ready, value, goal),
            json!({"value": as_quantity(value)}),
        ),
        (Some("AverageValue"), _, Some(goal)) => (
            replicas::object_average(t.current, value, goal),
            json!({"averageValue": as_quantity(value / f64::from(t.current.max(1)))}),
        ),
        _ => {
            return Err(fail(format!(
                "invalid target for object metric {name}: Value or AverageValue with its quantity"
            )))
        }
    };
    Ok(Measured {
        replicas,
        status: json!({"type": "Object", "object": {"describedObject": described,
            "metric": {"name": name}, "current": current}}),
        describe: format!("{name} on {}/{object_name} (target value)", resource),
    })
}

fn has_object_metric(spec: &Value) -> bool {
    spec["metrics"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["type"] == "Object"))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
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
