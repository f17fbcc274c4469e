//! `POST /api/v1/namespaces/{ns}/services/{name}/wake`: skiff's scale from zero (beyond
//! Kubernetes). A node's gateway holding requests for a Service without endpoints asks for it
//! (`create` on `services/wake`, which the `system:node` role grants). Every workload that an
//! HPA with `minReplicas: 0` scales and whose pods the Service selects, and that is at zero
//! replicas, is set to one replica, as the server itself (the HPA takes over from there). The
//! answer says whether anything will start: 200 (woken, or starting already), or 404 when
//! nothing scaled to zero stands behind the Service, so the gateway answers 503 at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::registry::{get_object, update_scale, Query};
use super::AppState;
use crate::resources;

/// The resource of a `scaleTargetRef`.
fn target_resource(api_version: &str, kind: &str) -> Option<&'static resources::ResourceType> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "ReplicationController" => "replicationcontrollers",
        _ => return None,
    };
    resources::find(group, version, plural)
}

/// Does `selector` (a Service's `spec.selector`) select pods labelled `labels`? An empty
/// selector selects nothing (a Service without a selector has no pods of its own). Pure.
pub(crate) fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object().filter(|s| !s.is_empty()) else {
        return false;
    };
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(super) async fn wake(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let services = resources::find("", "v1", "services")
        .ok_or_else(|| ApiError::Internal("services not registered".into()))?;
    let service = get_object(&state, services, &ns, &name).await?;
    let selector = service
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or_default();
    let hpas = state
        .store
        .list("autoscaling/horizontalpodautoscalers", Some(&ns))
        .await
        .map_err(|e| ApiError::from_store(e, "horizontalpodautoscalers", ""))?;
    let mut woken = Vec::new();
    let mut starting = Vec::new();
    for o in hpas.objects {
        let Ok(hpa) = serde_json::from_slice::<Value>(&o.data) else {
            continue;
        };
        if hpa.pointer("/spec/minReplicas").and_then(Value::as_i64) != Some(0) {
            continue;
        }
        let target = &hpa["spec"]["scaleTargetRef"];
        let (Some(rt), Some(target_name)) = (
            target_resource(
                target["apiVersion"].as_str().unwrap_or(""),
                target["kind"].as_str().unwrap_or(""),
            ),
            target["name"].as_str(),
        ) else {
            continue;
        };
        let Ok(workload) = get_object(&state, rt, &ns, target_name).await else {
            continue;
        };
        let labels = workload
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or_default();
        if !selects(&selector, &labels) {
            continue;
        }
        let what = format!("{}/{target_name}", rt.plural);
        if workload.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
            starting.push(what);
            continue;
        }
        // As the server: the node asked, the server decides what starts.
        let server = crate::auth::authn::user("system:apiserver", &[crate::auth::rbac::MASTERS]);
        let body = json!({"spec": {"replicas": 1}});
        super::REQUEST_USER
            .scope(
                server,
                update_scale(
                    &state,
                    rt,
                    &ns,
                    target_name,
                    &body,
                    Some(super::patch::PatchType::Merge),
                    &Query::new(),
                ),
            )
            .await?;
        tracing::info!(service = %format!("{ns}/{name}"), target = %what, "scaled up from zero on demand");
        woken.push(what);
    }
    if woken.is_empty() && starting.is_empty() {
        return Err(ApiError::NotFound {
            resource: "services/wake".into(),
            name: format!("{name}: no workload scaled to zero by an HPA with minReplicas 0 stands behind this service"),
        });
    }
    Ok(axum::Json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success",
        "details": {"name": name, "kind": "services", "causes":
            woken.iter().map(|w| json!({"reason": "Woken", "field": w}))
                .chain(starting.iter().map(|w| json!({"reason": "Starting", "field": w})))
                .collect::<Vec<_>>()},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_selects_a_workloads_pods_by_its_template_labels() {
        let cases = [
            (
                json!({"app": "web"}),
                json!({"app": "web", "tier": "x"}),
                true,
            ),
            (
                json!({"app": "web", "tier": "y"}),
                json!({"app": "web", "tier": "x"}),
                false,
            ),
            (json!({}), json!({"app": "web"}), false),
            (Value::Null, json!({"app": "web"}), false),
            (json!({"app": "web"}), Value::Null, false),
        ];
        for (sel, labels, want) in cases {
            assert_eq!(selects(&sel, &labels), want, "{sel} {labels}");
        }
        assert!(target_resource("apps/v1", "Deployment").is_some());
        assert!(target_resource("apps/v1", "DaemonSet").is_none());
    }
}
