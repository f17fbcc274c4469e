//! Server-side printing: `meta.k8s.io/v1` `Table`s with the columns kubectl users know, for
//! pods, nodes, namespaces, events and leases, and `Name, Age` for anything else. Pure code.

use serde_json::{json, Value};

use crate::resources::ResourceType;

fn col(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" }, "description": description, "priority": priority})
}

/// The column definitions for a resource type.
pub fn columns(rt: &ResourceType) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.");
    match rt.kind {
        "Pod" => vec![
            name,
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age,
            col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        "Node" => vec![
            name,
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            age,
            col("Version", "string", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", 1, "List of internal IPs in the node."),
            col("External-IP", "string", 1, "List of external IPs in the node."),
            col("OS-Image", "string", 1, "OS Image reported by the node."),
            col("Kernel-Version", "string", 1, "Kernel Version reported by the node."),
            col("Container-Runtime", "string", 1, "Container Runtime Version reported by the node."),
        ],
        "Namespace" => vec![name, col("Status", "string", 0, "The status of the namespace"), age],
        "Event" => vec![
            col("Last Seen", "string", 0, "The time of the last occurrence."),
            col("Type", "string", 0, "Type of this event (Normal, Warning)."),
            col("Reason", "string", 0, "The reason for the transition into the object's current status."),
            col("Object", "string", 0, "The object this Event is about."),
            col("Message", "string", 0, "A human-readable description of the status of this operation."),
        ],
        "Lease" => vec![name, col("Holder", "string", 0, "The holder of the lease."), age],
        _ => vec![name, age],
    }
}

/// One row's cells for an object at time `now`.
pub fn cells(rt: &ResourceType, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = s("/metadata/name");
    let age = age_of(obj.pointer("/metadata/creationTimestamp"), now);
    match rt.kind {
        "Pod" => pod_cells(obj, name, age, now),
        "Node" => node_cells(obj, name, age),
        "Namespace" => vec![json!(name), json!(s("/status/phase")), json!(age)],
        "Event" => {
            let last = obj
                .pointer("/lastTimestamp")
                .filter(|v| !v.is_null())
                .or_else(|| obj.pointer("/eventTime").filter(|v| !v.is_null()))
                .or_else(|| obj.pointer("/firstTimestamp"));
            let object = format!(
                "{}/{}",
                s("/involvedObject/kind").to_lowercase(),
                s("/involvedObject/name")
            );
            vec![
                json!(age_of(last, now)),
                json!(s("/type")),
                json!(s("/reason")),
                json!(object),
                json!(s("/message")),
            ]
        }
        "Lease" => vec![json!(name), json!(s("/spec/holderIdentity")), json!(age)],
        _ => vec![json!(name), json!(age)],
    }
}

fn pod_cells(pod: &Value, name: String, age: String, now: jiff::Timestamp) -> Vec<Value> {
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let mut has_running = false;
    for c in statuses.iter().rev() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
        {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
        if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            reason = match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => r.to_string(),
                None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!(
                        "ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            };
        } else if c.pointer("/state/running").is_some()
            && c.get("ready").and_then(Value::as_bool) == Some(true)
        {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = "Terminating".into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let or_none = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age),
        json!(or_none(
            pod.pointer("/status/podIP").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/spec/nodeName").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/status/nominatedNodeName")
                .and_then(Value::as_str)
        )),
        json!("<none>"),
    ]
}

fn node_cells(node: &Value, name: String, age: String) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let addr = |t: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .find(|x| x.get("type").and_then(Value::as_str) == Some(t))
            })
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |k: &str| {
        node.pointer(&format!("/status/nodeInfo/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    vec![
        json!(name),
        json!(status),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age),
        json!(info("kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn age_of(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    match ts
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => {
            let secs = now.duration_since(t).as_secs();
            if secs < -1 {
                "<invalid>".into()
            } else {
                human_duration(secs.max(0))
            }
        }
        None => "<unknown>".into(),
    }
}

/// Kubernetes' `HumanDuration`: `10s`, `3m2s`, `5h`, `2d`, `3y20d`...
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let m = s / 60;
    let h = s / 3600;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let d = (h % (24 * 365)) / 24;
        if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        }
    } else {
        format!("{}y", h / (24 * 365))
    }
}

/// PartialObjectMetadata for a row's `object`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table of `objects` at list revision `rv`.
pub fn table(rt: &ResourceType, objects: &[Value], rv: &str, with_columns: bool) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(rt, o, now), "object": partial_metadata(o)}))
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = Value::Array(columns(rt));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

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
