//! The Ingress status controller: every node's gateway serves every Ingress of class `skiff`
//! (or of no class), so an Ingress's `status.loadBalancer.ingress` lists the gateway address
//! of each Ready node (its InternalIP and the port of its `skiff.dev/gateway-port`
//! annotation), as an ingress controller publishes its load balancer. [`addresses`] is pure and
//! table-tested; the status is written only when it differs.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};

use super::ControllerError;

/// The class skiff's gateways serve (besides Ingresses with no class).
pub const CLASS: &str = "skiff";

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
}

/// `status.loadBalancer.ingress` for these nodes: one entry per Ready node that publishes a
/// gateway, sorted by address and port.
pub fn addresses(nodes: &[Arc<Node>]) -> Value {
    let mut out: Vec<(String, u16)> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            let port = n
                .metadata
                .annotations
                .as_ref()?
                .get(skiff_common::GATEWAY_PORT_ANNOTATION)?
                .parse::<u16>()
                .ok()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .clone();
            Some((ip, port))
        })
        .collect();
    out.sort();
    out.dedup();
    Value::Array(
        out.into_iter()
            .map(|(ip, port)| json!({"ip": ip, "ports": [{"port": port, "protocol": "TCP"}]}))
            .collect(),
    )
}

/// Run the controller until its streams end.
pub async fn run(client: kube::Client) {
    let (reader, writer) = kube::runtime::reflector::store();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes: reader,
    });
    let controller = Controller::new(Api::<Ingress>::all(client), watcher::Config::default());
    let ingresses = controller.store();
    controller
        .watches_stream(node_events, move |_node: Node| {
            ingresses
                .state()
                .iter()
                .map(|i| ObjectRef::from_obj(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(ing: Arc<Ingress>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if ing.metadata.deletion_timestamp.is_some() || class.is_some_and(|c| c != CLASS) {
        return Ok(Action::await_change());
    }
    let want = addresses(&ctx.nodes.state());
    let have = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(serde_json::to_value)
        .transpose()?
        .unwrap_or(Value::Array(vec![]));
    if have != want {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let name = ing.metadata.name.clone().unwrap_or_default();
        Api::<Ingress>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": want}}})),
            )
            .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, ip: &str, port: Option<&str>) -> Arc<Node> {
        let mut n = json!({"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}});
        if let Some(p) = port {
            n["metadata"]["annotations"] = json!({skiff_common::GATEWAY_PORT_ANNOTATION: p});
        }
        Arc::new(serde_json::from_value(n).unwrap())
    }

    #[test]
    fn ready_nodes_with_a_gateway_are_the_addresses() {
        let cases: Vec<(Vec<Arc<Node>>, Value)> = vec![
            (vec![], json!([])),
            (
                vec![
                    node("b", "True", "10.0.0.2", Some("8080")),
                    node("a", "True", "10.0.0.1", Some("8080")),
                    // Not Ready, no gateway, or a bad port: left out.
                    node("c", "Unknown", "10.0.0.3", Some("8080")),
                    node("hollow", "True", "10.0.0.4", None),
                    node("d", "True", "10.0.0.5", Some("x")),
                ],
                json!([
                    {"ip": "10.0.0.1", "ports": [{"port": 8080, "protocol": "TCP"}]},
                    {"ip": "10.0.0.2", "ports": [{"port": 8080, "protocol": "TCP"}]},
                ]),
            ),
            // Two nodes on one address (loopback) are told apart by port.
            (
                vec![
                    node("a", "True", "127.0.0.1", Some("9000")),
                    node("b", "True", "127.0.0.1", Some("8080")),
                ],
                json!([
                    {"ip": "127.0.0.1", "ports": [{"port": 8080, "protocol": "TCP"}]},
                    {"ip": "127.0.0.1", "ports": [{"port": 9000, "protocol": "TCP"}]},
                ]),
            ),
        ];
        for (nodes, want) in cases {
            assert_eq!(addresses(&nodes), want);
        }
    }
}
