//! The resource metrics API (`metrics.k8s.io/v1beta1`: PodMetrics and NodeMetrics, what
//! `kubectl top` reads) and the one custom metric skiff has (`custom.metrics.k8s.io/v1beta2`:
//! `http_requests_per_second` of pods, what an HPA's `Pods` metric reads, and of Services, the
//! sum over the pods they select, what an `Object` metric reads), served from `crate::usage` as
//! metrics-server and a custom metrics adapter serve them. Authorization is the gate's, as for
//! any resource path (`metrics.k8s.io` `pods`/`nodes`, `custom.metrics.k8s.io`
//! `pods/<metric>`, `services/<metric>`). Objects are listed from the store and joined with their usage: a pod or
//! node without two scrapes yet is left out of lists and not found alone.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::usage::{NodeUsage, PodUsage};
use skiff_common::labels::LabelSelector;

/// The one custom metric.
pub const HTTP_REQUESTS_PER_SECOND: &str = "http_requests_per_second";

fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A CPU quantity in nanocores, as metrics-server writes it.
fn cpu(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// A memory quantity, in Ki when it divides.
fn memory(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A rate as a quantity in thousandths (`1500m`), as the custom metrics API writes them.
fn milli(v: f64) -> String {
    format!("{}m", (v * 1000.0).round().max(0.0) as u64)
}

fn selector(q: &HashMap<String, String>) -> ApiResult<LabelSelector> {
    LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))
}

fn labels(obj: &Value) -> Value {
    obj.pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn pod_metrics(pod: &Value, ns: &str, name: &str, u: &PodUsage) -> Value {
    let containers: Vec<Value> = u
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "usage": {"cpu": cpu(c.cpu_nanocores), "memory": memory(c.memory_bytes)}}))
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now(), "labels": labels(pod)},
        "timestamp": timestamp(u.at_ms),
        "window": format!("{}s", u.window.as_secs_f64().round() as u64),
        "containers": containers,
    })
}

fn node_metrics(node: &Value, name: &str, u: &NodeUsage) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "creationTimestamp": now(), "labels": labels(node)},
        "timestamp": timestamp(u.at_ms),
        "window": format!("{}s", u.window.as_secs_f64().round() as u64),
        "usage": {"cpu": cpu(u.cpu_nanocores), "memory": memory(u.memory_bytes)},
    })
}

/// The stored objects of `resource` (in `ns`) that `sel` selects: (namespace, name, object).
async fn objects(
    state: &AppState,
    resource: &str,
    ns: Option<&str>,
    sel: &LabelSelector,
) -> ApiResult<Vec<(String, String, Value)>> {
    let listing = state
        .store
        .list(resource, ns)
        .await
        .map_err(|e| ApiError::from_store(e, resource, ""))?;
    Ok(listing
        .objects
        .into_iter()
        .filter_map(|o| {
            let v: Value = serde_json::from_slice(&o.data).ok()?;
            sel.matches(&labels(&v))
                .then(|| (o.key.namespace.clone(), o.key.name.clone(), v))
        })
        .collect())
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    axum::Json(json!({
        "kind": kind,
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    }))
    .into_response()
}

async fn list_pods(
    state: &AppState,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let sel = selector(q)?;
    let items = objects(state, "pods", ns, &sel)
        .await?
        .into_iter()
        .filter_map(|(ns, name, pod)| {
            let u = state.usage.pod(&ns, &name)?;
            Some(pod_metrics(&pod, &ns, &name, &u))
        })
        .collect();
    Ok(list("PodMetricsList", items))
}

/// `GET /apis/metrics.k8s.io/v1beta1/pods`.
pub(super) async fn all_pods(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    list_pods(&state, None, &q).await
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods`.
pub(super) async fn pods(
    State(state): State<Arc<AppState>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    list_pods(&state, Some(&ns), &q).await
}

/// `GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}`.
pub(super) async fn pod(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound {
        resource: "podmetrics.metrics.k8s.io".into(),
        name: format!("{ns}/{name}"),
    };
    let stored = state
        .store
        .get(&crate::store::ObjectKey::new("pods", &ns, &name))
        .await
        .map_err(|_| not_found())?;
    let pod: Value = serde_json::from_slice(&stored.data).map_err(|_| not_found())?;
    let u = state.usage.pod(&ns, &name).ok_or_else(not_found)?;
    Ok(axum::Json(pod_metrics(&pod, &ns, &name, &u)).into_response())
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes`.
pub(super) async fn nodes(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let sel = selector(&q)?;
    let items = objects(&state, "nodes", None, &sel)
        .await?
        .into_iter()
        .filter_map(|(_, name, node)| {
            let u = state.usage.node(&name)?;
            Some(node_metrics(&node, &name, &u))
        })
        .collect();
    Ok(list("NodeMetricsList", items))
}

/// `GET /apis/metrics.k8s.io/v1beta1/nodes/{name}`.
pub(super) async fn node(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound {
        resource: "nodemetrics.metrics.k8s.io".into(),
        name: name.clone(),
    };
    let stored = state
        .store
        .get(&crate::store::ObjectKey::new("nodes", "", &name))
        .await
        .map_err(|_| not_found())?;
    let node: Value = serde_json::from_slice(&stored.data).map_err(|_| not_found())?;
    let u = state.usage.node(&name).ok_or_else(not_found)?;
    Ok(axum::Json(node_metrics(&node, &name, &u)).into_response())
}

/// `GET /apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{resource}/{name}/{metric}`: for
/// `pods` (`name` `*` for every pod the `labelSelector` selects) each pod's rate; for
/// `services` the sum over the pods the Service selects (an HPA's `Object` metric).
pub(super) async fn custom(
    State(state): State<Arc<AppState>>,
    Path((ns, resource, name, metric)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    if metric != HTTP_REQUESTS_PER_SECOND {
        return Err(ApiError::NotFound {
            resource: "metrics".into(),
            name: metric,
        });
    }
    match resource.as_str() {
        "pods" => custom_pods(&state, ns, name, &q).await,
        "services" => custom_service(&state, ns, name).await,
        _ => Err(ApiError::NotFound {
            resource: format!("{resource}/{metric}"),
            name,
        }),
    }
}

/// The summed rate of the pods Service `ns/name` selects.
async fn custom_service(state: &AppState, ns: String, name: String) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound {
        resource: format!("services/{HTTP_REQUESTS_PER_SECOND}"),
        name: name.clone(),
    };
    let stored = state
        .store
        .get(&crate::store::ObjectKey::new("services", &ns, &name))
        .await
        .map_err(|_| not_found())?;
    let service: Value = serde_json::from_slice(&stored.data).map_err(|_| not_found())?;
    let selector = service
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_default();
    let pods = objects(state, "pods", Some(&ns), &LabelSelector::default()).await?;
    let mut rate = 0.0;
    let mut at_ms = jiff::Timestamp::now().as_millisecond();
    let mut window = 0;
    for (pns, pname, pod) in pods {
        if !super::wake::selects(&selector, &labels(&pod)) {
            continue;
        }
        if let Some(u) = state.usage.pod(&pns, &pname) {
            rate += u.http_per_second;
            at_ms = u.at_ms;
            window = u.window.as_secs_f64().round() as u64;
        }
    }
    Ok(axum::Json(json!({
        "kind": "MetricValueList",
        "apiVersion": "custom.metrics.k8s.io/v1beta2",
        "metadata": {},
        "items": [{
            "describedObject": {"kind": "Service", "namespace": ns, "name": name, "apiVersion": "/v1"},
            "metric": {"name": HTTP_REQUESTS_PER_SECOND, "selector": null},
            "timestamp": timestamp(at_ms),
            "windowSeconds": window,
            "value": milli(rate),
        }],
    }))
    .into_response())
}

async fn custom_pods(
    state: &AppState,
    ns: String,
    name: String,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let sel = selector(q)?;
    let pods: Vec<(String, String, Value)> = if name == "*" {
        objects(state, "pods", Some(&ns), &sel).await?
    } else {
        objects(state, "pods", Some(&ns), &LabelSelector::default())
            .await?
            .into_iter()
            .filter(|(_, n, _)| *n == name)
            .collect()
    };
    let items: Vec<Value> = pods
        .into_iter()
        .filter_map(|(ns, name, _)| {
            let u = state.usage.pod(&ns, &name)?;
            Some(json!({
                "describedObject": {"kind": "Pod", "namespace": ns, "name": name, "apiVersion": "/v1"},
                "metric": {"name": HTTP_REQUESTS_PER_SECOND, "selector": null},
                "timestamp": timestamp(u.at_ms),
                "windowSeconds": u.window.as_secs_f64().round() as u64,
                "value": milli(u.http_per_second),
            }))
        })
        .collect();
    if name != "*" && items.is_empty() {
        return Err(ApiError::NotFound {
            resource: format!("pods/{HTTP_REQUESTS_PER_SECOND}"),
            name,
        });
    }
    Ok(axum::Json(json!({
        "kind": "MetricValueList",
        "apiVersion": "custom.metrics.k8s.io/v1beta2",
        "metadata": {},
        "items": items,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        assert_eq!(cpu(1_500_000), "1500000n");
        assert_eq!(memory(65536), "64Ki");
        assert_eq!(memory(1000), "1000");
        assert_eq!(milli(1.5), "1500m");
        assert_eq!(milli(-1.0), "0m");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
