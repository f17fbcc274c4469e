//! The HPA's metric readers: what each metric of a spec measures now, through the metrics APIs
//! (`metrics.k8s.io` for `Resource`, `custom.metrics.k8s.io` for `Pods` and `Object`), and the
//! pods' states and requests the replica calculator needs.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::replicas::{self, NoProposal, PodSample, PodState, Target};
use super::Ctx;

/// A quantity as a number (cores for CPU, bytes for memory).
pub(super) fn quantity(s: &str) -> Option<f64> {
    let q = skiff_common::quantity::Quantity::parse(s).ok()?;
    match q.scaled(9) {
        Some(n) => Some(n as f64 / 1e9),
        None => q.scaled(0).map(|n| n as f64),
    }
}

/// A number as a quantity, in thousandths when not whole.
pub(super) fn as_quantity(v: f64) -> String {
    let milli = (v * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

pub(super) async fn get_json(client: &kube::Client, path: &str) -> Result<Value, kube::Error> {
    let req = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(req).await
}

/// How a pod counts for a metric of `resource` ("" for a Pods metric).
pub(super) fn pod_state(pod: &Pod, resource: &str) -> PodState {
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
pub(super) fn pod_request(pod: &Pod, resource: &str) -> Option<f64> {
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
pub(super) struct Measured {
    /// Replicas it proposes.
    pub(super) replicas: i32,
    /// Its `status.currentMetrics` entry.
    pub(super) status: Value,
    /// Its name in events (`cpu resource utilization (percentage of request)`).
    pub(super) describe: String,
}

/// A metric that could not be used: (reason, message).
pub(super) type Failed = (&'static str, String);

pub(super) struct Scaled<'a> {
    pub(super) ns: &'a str,
    pub(super) selector: &'a str,
    pub(super) pods: Vec<Arc<Pod>>,
    pub(super) current: i32,
}

pub(super) async fn resource_metric(
    ctx: &Ctx,
    t: &Scaled<'_>,
    m: &Value,
) -> Result<Measured, Failed> {
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

pub(super) async fn pods_metric(ctx: &Ctx, t: &Scaled<'_>, m: &Value) -> Result<Measured, Failed> {
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

pub(super) async fn object_metric(
    ctx: &Ctx,
    t: &Scaled<'_>,
    m: &Value,
) -> Result<Measured, Failed> {
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

pub(super) fn has_object_metric(spec: &Value) -> bool {
    spec["metrics"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["type"] == "Object"))
}

pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
