//! Nodes: registered by node agents; nothing to default or validate beyond metadata; the
//! `kubectl get nodes` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{Row, Strategy};

/// The Node strategy.
pub(crate) struct Node;

impl Strategy for Node {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    /// A node agent registers its Node with its status.
    fn initial_status(&self) -> Option<Value> {
        None
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            age_col(),
            col(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "string",
                1,
                "List of internal IPs in the node.",
            ),
            col(
                "External-IP",
                "string",
                1,
                "List of external IPs in the node.",
            ),
            col("OS-Image", "string", 1, "OS Image reported by the node."),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "Container Runtime Version reported by the node.",
            ),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        node_cells(obj, row.name.clone(), row.age.clone())
    }
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
