//! The DaemonSet controller: one pod per eligible node (the node matches `nodeSelector` and the
//! pod tolerates its `NoSchedule`/`NoExecute` taints), bound directly to that node; extra and
//! misplaced pods are deleted; `RollingUpdate` replaces out-of-date pods (by their
//! `controller-revision-hash` label) at most `maxUnavailable` at a time, `OnDelete` waits for the
//! user. [`plan`] is pure and table-tested.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use skiff_common::events::{EventType, Recorder};

use super::{is_active, ready_since, ControllerError, Expectations, PodInformer};
use crate::placement;

/// The label that names the template revision a DaemonSet pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// What the DaemonSet must do.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create_on: Vec<String>,
    /// Pods to delete (extra, misplaced, or out of date within the budget).
    pub delete: Vec<String>,
    /// Nodes that should run a pod.
    pub desired: i32,
    /// Of those, how many run one.
    pub scheduled: i32,
    /// Pods on nodes that should not run one.
    pub misscheduled: i32,
    /// Ready pods.
    pub ready: i32,
    /// Pods of the current template.
    pub updated: i32,
}

/// The tolerations every DaemonSet pod gets, as Kubernetes adds them.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// Should this DaemonSet (its pod template's spec) run on `node`? Its node selector and
/// required node affinity select the node, and it tolerates the node's scheduling taints (with
/// the tolerations every daemon pod gets), by the scheduler's own rules.
pub fn eligible(template: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    let required = template
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let selector = template.node_selector.clone().unwrap_or_default();
    let mut tolerations = template.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    placement::selects(&selector, required, name, &labels)
        && placement::untolerated(&tolerations, &taints).is_none()
}

/// Decide from the nodes, the DaemonSet's pods, the current template hash and the update budget
/// (`None` for `OnDelete`).
pub fn plan(
    template: &k8s_openapi::api::core::v1::PodSpec,
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    hash: &str,
    max_unavailable: Option<i32>,
) -> Plan {
    let mut p = Plan::default();
    let node_of = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let current = |pod: &Pod| {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH))
            .map(String::as_str)
            == Some(hash)
    };
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_active(p)).collect();
    let mut outdated: Vec<&Arc<Pod>> = Vec::new();
    let mut unavailable = 0;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut here: Vec<&&Arc<Pod>> = active.iter().filter(|pod| node_of(pod) == name).collect();
        if !eligible(template, node) {
            p.misscheduled += here.len() as i32;
            p.delete
                .extend(here.iter().filter_map(|pod| pod.metadata.name.clone()));
            continue;
        }
        p.desired += 1;
        if here.is_empty() {
            // A pod of this set that is still going away does not count as running here.
            p.create_on.push(name);
            unavailable += 1;
            continue;
        }
        p.scheduled += 1;
        // Keep the newest current pod (or any), delete the rest.
        here.sort_by_key(|pod| {
            (
                !current(pod),
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| std::cmp::Reverse(t.0)),
            )
        });
        let keep = here[0];
        p.delete
            .extend(here[1..].iter().filter_map(|pod| pod.metadata.name.clone()));
        let ready = ready_since(keep).is_some();
        if ready {
            p.ready += 1;
        } else {
            unavailable += 1;
        }
        if current(keep) {
            p.updated += 1;
        } else {
            outdated.push(keep);
        }
    }
    // Rolling update: unavailable out-of-date pods first, then more while within the budget.
    if let Some(budget) = max_unavailable {
        outdated.sort_by_key(|pod| ready_since(pod).is_some());
        let mut room = (budget - unavailable).max(0);
        for pod in outdated {
            let ready = ready_since(pod).is_some();
            if !ready {
                p.delete.extend(pod.metadata.name.clone());
            } else if room > 0 {
                room -= 1;
                p.delete.extend(pod.metadata.name.clone());
            }
        }
    }
    p
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    nodes: kube::runtime::reflector::Store<Node>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Run the DaemonSet controller.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let (nodes, writer) = kube::runtime::reflector::store();
    // Any node change can change where every DaemonSet runs.
    let node_changes = kube::runtime::reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
        nodes,
        expectations: Expectations::default(),
        recorder: Recorder::new(client.clone(), "daemonset-controller", None),
    });
    let controller = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default());
    let sets = controller.store();
    controller
        .owns_shared_stream(pods.subscribe())
        .watches_stream(node_changes, move |_: Node| {
            sets.state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds
        .spec
        .clone()
        .ok_or_else(|| ControllerError::Invalid(format!("daemonset {key} has no spec")))?;
    let template = spec.template.clone();
    let pod_spec = template.spec.clone().unwrap_or_default();
    let hash = super::deployment::template_hash(&serde_json::to_value(&template)?, None);
    super::history::record(
        &ctx.client,
        &super::history::Owner {
            kind: "DaemonSet",
            namespace: &ns,
            name: &name,
            uid: &uid,
            template: serde_json::to_value(&template)?,
            history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        },
        &hash,
    )
    .await?;
    let all = ctx.pods.in_namespace(&ns);
    let mine = super::owned_by(&all, &uid);
    let nodes = ctx.nodes.state();
    let strategy = spec.update_strategy.as_ref();
    let max_unavailable = if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        None
    } else {
        let v = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(IntOrString::Int(1));
        let desired = nodes.iter().filter(|n| eligible(&pod_spec, n)).count() as i32;
        Some(match v {
            IntOrString::Int(i) => i,
            IntOrString::String(s) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                (pct * desired / 100).max(1)
            }
        })
    };
    let p = plan(&pod_spec, &nodes, &mine, &hash, max_unavailable);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let object = skiff_common::events::object_ref(&ds.metadata, "DaemonSet", "apps/v1");
    if ctx.expectations.satisfied(&key, &all) {
        let uids = mine
            .iter()
            .filter(|pod| {
                pod.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| p.delete.contains(n))
            })
            .filter_map(|pod| pod.metadata.uid.clone())
            .collect();
        ctx.expectations.expect(&key, vec![], uids);
        for pod in &p.delete {
            super::ignore_missing(pods.delete(pod, &DeleteParams::default()).await)?;
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                )
                .await;
        }
        let mut created = Vec::new();
        for node in &p.create_on {
            let mut spec = serde_json::to_value(&pod_spec)?;
            spec["nodeName"] = json!(node);
            let mut tolerations = pod_spec.tolerations.clone().unwrap_or_default();
            tolerations.extend(daemon_tolerations());
            spec["tolerations"] = serde_json::to_value(tolerations)?;
            let meta = template.metadata.clone().unwrap_or_default();
            let mut labels = serde_json::to_value(meta.labels.unwrap_or_default())?;
            labels[REVISION_HASH] = json!(hash);
            let body = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": format!("{name}-"), "labels": labels, "annotations": meta.annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": spec});
            let pod: Pod = serde_json::from_value(body)?;
            let made = pods.create(&PostParams::default(), &pod).await?;
            let made_name = made.metadata.name.unwrap_or_default();
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {made_name}"),
                )
                .await;
            created.push(made_name);
        }
        ctx.expectations.expect(&key, created, vec![]);
    }
    let available = mine
        .iter()
        .filter(|pod| is_active(pod) && ready_since(pod).is_some())
        .count() as i32;
    let status = json!({
        "currentNumberScheduled": p.scheduled, "desiredNumberScheduled": p.desired,
        "numberMisscheduled": p.misscheduled, "numberReady": p.ready,
        "updatedNumberScheduled": p.updated, "numberAvailable": available,
        "numberUnavailable": (p.desired - available).max(0),
        "observedGeneration": ds.metadata.generation,
    });
    let current = serde_json::to_value(ds.status.clone().unwrap_or_default())?;
    let differs = status.as_object().is_some_and(|o| {
        o.iter()
            .any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v)
    });
    if differs {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        super::ignore_missing(
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await,
        )?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
            )
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "labels": {REVISION_HASH: hash}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running"}});
        if ready {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn plan_table() {
        let plain = k8s_openapi::api::core::v1::PodSpec::default();
        let ssd: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}))
                .unwrap();
        // Required node affinity excludes nodes as a node selector does (it used to be ignored).
        let not_ssd: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}]}}}
        }))
        .unwrap();
        let a = node("a", json!({}), json!([]));
        let b = node("b", json!({"disk": "ssd"}), json!([]));
        let tainted = node(
            "c",
            json!({}),
            json!([{"key": "gpu", "effect": "NoSchedule"}]),
        );
        let unreachable = node(
            "d",
            json!({}),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Case<'a> = (
            &'static str,
            &'a k8s_openapi::api::core::v1::PodSpec,
            Vec<Arc<Node>>,
            Vec<Arc<Pod>>,
            Option<i32>,
            (Vec<String>, Vec<String>),
        );
        let cases: Vec<Case> = vec![
            (
                "one per node",
                &plain,
                vec![a.clone(), b.clone()],
                vec![],
                Some(1),
                (names(&["a", "b"]), vec![]),
            ),
            (
                "only selected nodes; misplaced pods go",
                &ssd,
                vec![a.clone(), b.clone()],
                vec![pod("pa", "a", "h", true)],
                Some(1),
                (names(&["b"]), names(&["pa"])),
            ),
            (
                "required node affinity excludes nodes; misplaced pods go",
                &not_ssd,
                vec![a.clone(), b.clone()],
                vec![pod("pb", "b", "h", true)],
                Some(1),
                (names(&["a"]), names(&["pb"])),
            ),
            (
                "untolerated taints are skipped, unreachable is tolerated",
                &plain,
                vec![tainted, unreachable],
                vec![],
                Some(1),
                (names(&["d"]), vec![]),
            ),
            (
                "a second pod on a node goes",
                &plain,
                vec![a.clone()],
                vec![pod("p1", "a", "h", true), pod("p2", "a", "h", true)],
                Some(1),
                (vec![], names(&["p2"])),
            ),
            (
                "rolling update: one at a time",
                &plain,
                vec![a.clone(), b.clone()],
                vec![pod("pa", "a", "old", true), pod("pb", "b", "old", true)],
                Some(1),
                (vec![], names(&["pa"])),
            ),
            (
                "OnDelete: nothing replaced",
                &plain,
                vec![a.clone()],
                vec![pod("pa", "a", "old", true)],
                None,
                (vec![], vec![]),
            ),
        ];
        for (what, spec, nodes, pods, budget, (create, delete)) in cases {
            let p = plan(spec, &nodes, &pods, "h", budget);
            assert_eq!((p.create_on, p.delete), (create, delete), "{what}");
        }
    }
}
