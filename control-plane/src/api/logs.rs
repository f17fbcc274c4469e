//! `pods/{name}/log`: the API server proxies to the node agent that runs the pod, as Kubernetes
//! proxies to the kubelet, and streams its answer back (`follow=true` included).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::registry::{get_object, Query};
use super::AppState;
use crate::resources;

/// Pick the container a log request is about.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut names: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = c.get("name").and_then(Value::as_str) {
                names.push(n.to_string());
            }
        }
    }
    if let Some(r) = requested.filter(|r| !r.is_empty()) {
        return if names.iter().any(|n| n == r) {
            Ok(r.to_string())
        } else {
            Err(ApiError::BadRequest(format!(
                "container {r} is not valid for pod {name}"
            )))
        };
    }
    if let Some(d) = pod
        .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
        .and_then(Value::as_str)
    {
        return Ok(d.to_string());
    }
    let main: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    match main.as_slice() {
        [one] => Ok(one.to_string()),
        _ => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

pub(super) async fn serve(
    state: &AppState,
    ns: &str,
    name: &str,
    q: &Query,
) -> ApiResult<Response> {
    let pods = resources::find("", "v1", "pods")
        .ok_or_else(|| ApiError::Internal("pods not registered".into()))?;
    let nodes = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes not registered".into()))?;
    let pod = get_object(state, pods, ns, name).await?;
    let container = pick_container(&pod, q.get("container").map(String::as_str))?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled yet")));
    }
    let node = get_object(state, nodes, "", node_name).await?;
    let base = crate::usage::agent_url(&node).map_err(ApiError::BadRequest)?;
    let mut url = url::Url::parse(&format!(
        "{base}{}/{ns}/{name}/{container}",
        skiff_common::NODE_LOGS_PATH
    ))
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    {
        let mut pairs = url.query_pairs_mut();
        for k in [
            "follow",
            "previous",
            "timestamps",
            "tailLines",
            "sinceSeconds",
            "sinceTime",
            "limitBytes",
        ] {
            if let Some(v) = q.get(k) {
                pairs.append_pair(k, v);
            }
        }
        if let Some(uid) = pod.pointer("/metadata/uid").and_then(Value::as_str) {
            pairs.append_pair("uid", uid);
        }
    }
    let resp = state.http.get(url).send().await.map_err(|e| {
        ApiError::Unavailable(format!("the node agent on {node_name} did not answer: {e}"))
    })?;
    let code = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
    Ok((code, [(header::CONTENT_TYPE, ct)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pick_container_table() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let annotated = json!({"metadata": {"name": "p", "annotations": {"kubectl.kubernetes.io/default-container": "b"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(pick_container(&one, None).unwrap(), "a");
        assert_eq!(pick_container(&two, Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&annotated, None).unwrap(), "b");
        assert_eq!(
            pick_container(&two, None).unwrap_err().to_string(),
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert!(pick_container(&one, Some("zz")).is_err());
    }
}
