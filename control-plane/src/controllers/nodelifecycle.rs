//! Node lifecycle: a node whose Lease is older than the grace period becomes `Ready=Unknown`
//! and gets the `node.kubernetes.io/unreachable` taints (`NoSchedule`, `NoExecute`), removed
//! again when the Lease is renewed; pods on a node with a `NoExecute` taint they do not
//! tolerate are evicted (deleted) at once, or when their `tolerationSeconds` run out, so their
//! controllers replace them elsewhere. When the node comes back, its agent sees them deleted and
//! stops them. [`eviction_at`] is pure and table-tested; toleration matching is
//! [`crate::placement`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use skiff_common::events::{pod_ref, EventType, Recorder};

use super::PodInformer;
use crate::placement;

/// The taint key of a node whose agent stopped renewing its Lease.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// When a pod on a node with these taints must be evicted: `None` never (no `NoExecute` taint
/// it does not tolerate forever), else the earliest time (now for an untolerated taint, the
/// taint's `timeAdded` + `tolerationSeconds` otherwise).
pub fn eviction_at(
    tolerations: &[Toleration],
    taints: &[Taint],
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let mut at: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| placement::toleration_matches(t, taint))
            .collect();
        let when = if matching.is_empty() {
            Some(now)
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            let secs = matching
                .iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .unwrap_or(0)
                .max(0);
            let added = taint.time_added.as_ref().map_or(now, |t| t.0);
            Some(added + jiff::SignedDuration::from_secs(secs))
        };
        if let Some(w) = when {
            at = Some(at.map_or(w, |a| a.min(w)));
        }
    }
    at
}

/// When each node's Lease renewal was first seen, by this controller's own clock (as
/// kube-controller-manager's probe timestamps): a node is silent when its Lease has not changed
/// for the grace period *as observed here*, so neither a clock difference nor a control plane
/// that was down (its nodes' Leases all old when it starts) makes live nodes look dead.
#[derive(Default)]
pub struct Observed(std::collections::HashMap<String, (Option<jiff::Timestamp>, Instant)>);

impl Observed {
    /// Note `node`'s renew time as seen at `now`; how long it has stayed the same.
    pub fn unchanged_for(
        &mut self,
        node: &str,
        renewed: Option<jiff::Timestamp>,
        now: Instant,
    ) -> Duration {
        let seen = self.0.entry(node.to_string()).or_insert((renewed, now));
        if seen.0 != renewed {
            *seen = (renewed, now);
        }
        now.saturating_duration_since(seen.1)
    }

    /// Forget nodes that are gone.
    fn retain(&mut self, nodes: &[Arc<Node>]) {
        if self.0.len() > nodes.len() {
            let live: std::collections::HashSet<&str> = nodes
                .iter()
                .filter_map(|n| n.metadata.name.as_deref())
                .collect();
            self.0.retain(|name, _| live.contains(name.as_str()));
        }
    }
}

/// Watch Nodes and Leases; every second, mark silent nodes, clear recovered ones and evict.
/// Nothing is evicted during the first grace period after start, so nodes that were tainted
/// while the control plane was down can renew (and lose the taint) first.
pub async fn run(client: kube::Client, pods: PodInformer, grace: Duration) {
    let nodes = reflect::<Node>(Api::all(client.clone()));
    let leases = reflect::<Lease>(Api::namespaced(
        client.clone(),
        skiff_common::NODE_LEASE_NAMESPACE,
    ));
    let recorder = Recorder::new(client.clone(), "node-controller", None);
    let mut observed = Observed::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = jiff::Timestamp::now();
        let all = nodes.state();
        observed.retain(&all);
        for node in all {
            let name = node.metadata.name.clone().unwrap_or_default();
            let renewed = leases
                .get(&ObjectRef::new(&name).within(skiff_common::NODE_LEASE_NAMESPACE))
                .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
            let silent = observed.unchanged_for(&name, renewed, Instant::now()) > grace;
            if let Err(e) = check(&client, &recorder, &node, silent).await {
                tracing::warn!(node = %name, error = %e, "node lifecycle check failed");
            }
        }
        if started.elapsed() > grace {
            evict(&client, &recorder, &nodes, &pods, now).await;
        }
    }
}

fn reflect<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    store
}

/// Mark one node: `silent` if its Lease has not been renewed within the grace period.
async fn check(
    client: &kube::Client,
    recorder: &Recorder,
    node: &Node,
    silent: bool,
) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tainted = taints.iter().any(|t| t.key == UNREACHABLE);
    let api: Api<Node> = Api::all(client.clone());
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    if silent && ready.as_deref() != Some("Unknown") {
        let conditions: Vec<serde_json::Value> = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| json!({"type": c.type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.", "lastTransitionTime": skiff_common::now()}))
            .collect();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": conditions}})),
        )
        .await?;
        let object = skiff_common::events::object_ref(&node.metadata, "Node", "v1");
        recorder
            .record(
                &object,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
    }
    if silent && !tainted {
        let mut new = taints.clone();
        for effect in ["NoSchedule", "NoExecute"] {
            new.push(Taint {
                key: UNREACHABLE.into(),
                effect: effect.into(),
                time_added: Some(skiff_common::now()),
                value: None,
            });
        }
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": new}})),
        )
        .await?;
        tracing::warn!(node = %name, "node stopped renewing its lease: tainted unreachable");
    } else if !silent && tainted {
        let kept: Vec<&Taint> = taints.iter().filter(|t| t.key != UNREACHABLE).collect();
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": kept}})),
        )
        .await?;
        tracing::info!(node = %name, "node renews its lease again: unreachable taint removed");
    }
    Ok(())
}

/// Delete the pods that may no longer stay on their tainted nodes.
async fn evict(
    client: &kube::Client,
    recorder: &Recorder,
    nodes: &Store<Node>,
    pods: &PodInformer,
    now: jiff::Timestamp,
) {
    let tainted: Vec<Arc<Node>> = nodes
        .state()
        .into_iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.effect == "NoExecute"))
        })
        .collect();
    if tainted.is_empty() {
        return;
    }
    for pod in pods.store.state() {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| {
                tainted
                    .iter()
                    .find(|t| t.metadata.name.as_deref() == Some(n))
            })
        else {
            continue;
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        if eviction_at(&tolerations, &taints, now).is_some_and(|at| at <= now) {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match super::ignore_missing(api.delete(&name, &DeleteParams::default()).await) {
                Ok(()) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), "evicted from a tainted node");
                    recorder
                        .record(
                            &pod_ref(&pod),
                            EventType::Normal,
                            "TaintManagerEviction",
                            &format!("Marking for deletion Pod {ns}/{name}"),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "eviction failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: secs,
        }
    }

    fn taint(key: &str, value: &str, effect: &str, added: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: (!added.is_empty()).then(|| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(added.parse().unwrap())
            }),
        }
    }

    #[test]
    fn silence_is_measured_by_this_controllers_clock() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let old: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().expect("a timestamp");
        let new: jiff::Timestamp = "2020-01-01T00:00:10Z".parse().expect("a timestamp");
        let mut o = Observed::default();
        // (node, renew time seen, when, how long unchanged)
        for (node, renewed, when, want) in [
            // A Lease hours old when first seen counts from now (a restarted control plane).
            ("a", Some(old), 0, 0),
            ("a", Some(old), 15, 15),
            ("a", Some(old), 25, 25),
            // Renewed: counts again from when the change is seen.
            ("a", Some(new), 26, 0),
            ("a", Some(new), 30, 4),
            // No Lease yet: from first sight too.
            ("b", None, 30, 0),
            ("b", None, 45, 15),
        ] {
            assert_eq!(
                o.unchanged_for(node, renewed, at(when)),
                Duration::from_secs(want),
                "{node} at {when}"
            );
        }
    }

    #[test]
    fn eviction_at_table() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<jiff::Timestamp>().unwrap());
        let unreachable = taint(UNREACHABLE, "", "NoExecute", "2026-01-01T00:00:00Z");
        let cases = vec![
            (
                "no toleration: now",
                vec![],
                vec![unreachable.clone()],
                Some(now),
            ),
            (
                "30 s from the taint",
                vec![tol(UNREACHABLE, "Exists", "", "NoExecute", Some(30))],
                vec![unreachable.clone()],
                at("2026-01-01T00:00:30Z"),
            ),
            (
                "tolerated forever",
                vec![tol(UNREACHABLE, "Exists", "", "NoExecute", None)],
                vec![unreachable.clone()],
                None,
            ),
            (
                "NoSchedule taints never evict",
                vec![],
                vec![taint("gpu", "", "NoSchedule", "")],
                None,
            ),
            (
                "the earliest of two taints",
                vec![tol("", "Exists", "", "", Some(600))],
                vec![
                    unreachable.clone(),
                    taint("x", "", "NoExecute", "2026-01-01T00:00:50Z"),
                ],
                at("2026-01-01T00:10:00Z"),
            ),
        ];
        for (what, tolerations, taints, want) in cases {
            assert_eq!(eviction_at(&tolerations, &taints, now), want, "{what}");
        }
    }
}
