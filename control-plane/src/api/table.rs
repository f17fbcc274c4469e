//! Server-side printing: `meta.k8s.io/v1` `Table`s (asked for with `Accept: ...;as=Table`),
//! each row's cells from the kind's strategy, its `object` as `includeObject` says. Pure code.

use serde_json::{json, Value};

use super::strategy::print::age_of;
use super::strategy::{str_at, Row};
use crate::resources::ResourceType;

/// The column definitions for a resource type.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    rt.strategy.columns()
}

/// One row's cells for an object at time `now`.
pub fn cells(rt: &ResourceType, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let row = Row {
        name: str_at(obj, "/metadata/name").to_string(),
        age: age_of(obj.pointer("/metadata/creationTimestamp"), now),
        now,
    };
    rt.strategy.cells(obj, &row)
}

/// PartialObjectMetadata for a row's `object`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// What each Table row carries as its `object`: the `includeObject` query parameter, as
/// Kubernetes' TableOptions define it (kubectl asks for `Object` to `--sort-by` a field
/// outside the metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// PartialObjectMetadata (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the parameter (unset is `Metadata`); anything else is the message of a 400.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            )),
        }
    }

    fn row(self, cells: Vec<Value>, obj: &Value) -> Value {
        match self {
            IncludeObject::None => json!({"cells": cells}),
            IncludeObject::Metadata => json!({"cells": cells, "object": partial_metadata(obj)}),
            IncludeObject::Object => json!({"cells": cells, "object": obj}),
        }
    }
}

/// A Table of `objects` at list revision `rv`, each row's `object` as `include` says.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    rv: &str,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| include.row(cells(rt, o, now), o))
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = Value::Array(columns(rt));
    }
    t
}

/// Does the client want a Table?
pub(crate) fn wants_table(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// The Table the client wants, if any: what its rows carry as `object` (`includeObject`).
pub(crate) fn table_wanted(
    headers: &axum::http::HeaderMap,
    q: &crate::api::registry::Query,
) -> crate::api::error::ApiResult<Option<IncludeObject>> {
    if !wants_table(headers) {
        return Ok(None);
    }
    IncludeObject::parse(q.get("includeObject").map(String::as_str))
        .map(Some)
        .map_err(crate::api::error::ApiError::BadRequest)
}

/// Does the client want objects as `PartialObjectMetadata` (`Accept: application/json;
/// as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` for lists, `as=PartialObjectMetadata` for
/// single objects and watches)?
pub(crate) fn wants_metadata(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata") && !a.contains("as=Table"))
}

/// A list of `PartialObjectMetadata` items.
pub(crate) fn partial_metadata_list(items: &[Value], meta: Value) -> Value {
    let items: Vec<Value> = items.iter().map(partial_metadata).collect();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::strategy::print::human_duration;
    use crate::resources;

    #[test]
    fn include_object_table() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}});
        let cases = [
            (None, Ok(Some("PartialObjectMetadata"))),
            (Some("Metadata"), Ok(Some("PartialObjectMetadata"))),
            (Some("Object"), Ok(Some("Pod"))),
            (Some("None"), Ok(None)),
            (Some("object"), Err(())),
        ];
        for (param, want) in cases {
            let got = IncludeObject::parse(param).map_err(|_| ()).map(|include| {
                let t = table(pods, std::slice::from_ref(&pod), "1", true, include);
                t["rows"][0]
                    .get("object")
                    .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
            });
            assert_eq!(got, want.map(|k| k.map(str::to_string)), "{param:?}");
        }
        let t = table(
            pods,
            std::slice::from_ref(&pod),
            "1",
            true,
            IncludeObject::Object,
        );
        assert_eq!(t["rows"][0]["object"]["status"]["phase"], "Running");
    }

    #[test]
    fn human_duration_table() {
        for (secs, want) in [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (24 * 3600 * 30, "30d"),
            (24 * 3600 * 800, "2y70d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let now = "2026-01-01T00:01:00Z".parse().unwrap();
        for rt in resources::RESOURCES {
            let obj =
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
            assert_eq!(cells(rt, &obj, now).len(), columns(rt).len(), "{}", rt.kind);
        }
    }

    #[test]
    fn workload_and_service_cells_table() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let find = |g: &str, p: &str| {
            resources::RESOURCES
                .iter()
                .find(|r| r.group == g && r.plural == p)
                .unwrap()
        };
        let cases = vec![
            (
                find("apps", "deployments"),
                json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                vec![json!("web"), json!("2/3"), json!(3), json!(2)],
            ),
            (
                find("", "services"),
                json!({"metadata": {"name": "svc"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
                vec![
                    json!("svc"),
                    json!("NodePort"),
                    json!("10.43.0.9"),
                    json!("<none>"),
                    json!("80:30080/TCP"),
                ],
            ),
            (
                find("batch", "jobs"),
                json!({"metadata": {"name": "j"}, "spec": {"completions": 2}, "status": {"succeeded": 2, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:30Z", "conditions": [{"type": "Complete", "status": "True"}]}}),
                vec![json!("j"), json!("Complete"), json!("2/2"), json!("30s")],
            ),
            (
                find("", "endpoints"),
                json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "a"}, {"ip": "b"}], "ports": [{"port": 80}, {"port": 81}]}]}),
                vec![json!("e"), json!("a:80,a:81,b:80 + 1 more...")],
            ),
        ];
        for (rt, obj, want) in cases {
            let got = cells(rt, &obj, now);
            assert_eq!(&got[..want.len()], &want[..], "{}", rt.kind);
        }
    }

    #[test]
    fn pod_status_column_table() {
        let rt = resources::find("", "v1", "pods").unwrap();
        let base = |status: Value| json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "c"}]}, "status": status});
        let cases = vec![
            (json!({"phase": "Pending"}), "0/1", "Pending"),
            (
                json!({"phase": "Pending", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}]}),
                "0/1",
                "ErrImagePull",
            ),
            (
                json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                "1/1",
                "Running",
            ),
            (
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                "0/1",
                "Completed",
            ),
            (
                json!({"phase": "Failed", "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
                "0/1",
                "ExitCode:3",
            ),
        ];
        let now = "2026-01-01T00:01:00Z".parse().unwrap();
        // An init container, then a sidecar (restartable init container), then the app.
        let with_inits = |status: Value| json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"initContainers": [{"name": "i"}, {"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "c"}]}, "status": status});
        let waiting = |name: &str, reason: &str| json!({"name": name, "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}});
        let init_cases = vec![
            (
                json!({"phase": "Pending", "initContainerStatuses": [waiting("i", "PodInitializing"), waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:0/2",
            ),
            (
                json!({"phase": "Pending", "initContainerStatuses": [waiting("i", "ErrImagePull"), waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:ErrImagePull",
            ),
            (
                json!({"phase": "Failed", "initContainerStatuses": [{"name": "i", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}, waiting("s", "PodInitializing")], "containerStatuses": [waiting("c", "PodInitializing")]}),
                "0/2",
                "Init:Error",
            ),
            (
                json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}], "initContainerStatuses": [{"name": "i", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, {"name": "s", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}}], "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
                "2/2",
                "Running",
            ),
        ];
        for (status, ready, want) in init_cases {
            let c = cells(rt, &with_inits(status.clone()), now);
            assert_eq!(
                (
                    c[1].as_str().unwrap(),
                    c[2].as_str().unwrap(),
                    c[3].as_str().unwrap()
                ),
                (ready, want, if want == "Running" { "1" } else { "0" }),
                "{status}"
            );
        }
        for (status, ready, want) in cases {
            let c = cells(rt, &base(status.clone()), now);
            assert_eq!(
                (
                    c[1].as_str().unwrap(),
                    c[2].as_str().unwrap(),
                    c[4].as_str().unwrap()
                ),
                (ready, want, "60s"),
                "{status}"
            );
        }
    }
}
