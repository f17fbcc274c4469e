//! The scheduler: a pure decision function from (pod, snapshot of nodes) to a node or a reason,
//! and a loop that feeds it from watch caches (kube-rs reflectors) and writes `pods/binding`.
//!
//! Invariants: [`decide`] does no IO; the loop talks only to the API server; a pod that fits
//! nowhere gets `PodScheduled=False`, reason `Unschedulable`, a kube-scheduler-style message and a
//! `FailedScheduling` event, and is retried whenever pods or nodes change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;
use skiff_common::events::{pod_ref, EventType, Recorder};
use skiff_common::quantity;

/// What a pod asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodRequest {
    /// Sum of container cpu requests, millicores.
    pub cpu_millis: i64,
    /// Sum of container memory requests, bytes.
    pub memory: i64,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSnapshot {
    /// Name.
    pub name: String,
    /// Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Allocatable cpu (millicores), memory (bytes), pods.
    pub allocatable: (i64, i64, i64),
    /// What bound, unfinished pods request: cpu, memory, pod count.
    pub requested: (i64, i64, i64),
    /// `spec.taints`.
    pub taints: Vec<Taint>,
}

/// The scheduler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// Nothing fits; the message says why, as kube-scheduler does.
    Unschedulable(String),
}

/// Choose a node for `pod`: filter, then score by least allocated (ties by name).
pub fn decide(pod: &PodRequest, nodes: &[NodeSnapshot]) -> Decision {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, &str)> = None;
    for n in nodes {
        // A taint with a scheduling effect the pod does not tolerate.
        let untolerated = n.taints.iter().find(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !crate::controllers::nodelifecycle::tolerates(&pod.tolerations, t)
        });
        let taint_reason;
        let why = if n.unschedulable {
            Some("node(s) were unschedulable")
        } else if let Some(t) = untolerated {
            taint_reason = format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            );
            Some(taint_reason.as_str())
        } else if !n.ready {
            Some("node(s) were not ready")
        } else if !pod
            .node_selector
            .iter()
            .all(|(k, v)| n.labels.get(k) == Some(v))
        {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else if n.requested.2 + 1 > n.allocatable.2 {
            Some("Too many pods")
        } else if n.requested.0 + pod.cpu_millis > n.allocatable.0 {
            Some("Insufficient cpu")
        } else if n.requested.1 + pod.memory > n.allocatable.1 {
            Some("Insufficient memory")
        } else {
            None
        };
        match why {
            Some(r) => *reasons.entry(r.to_string()).or_default() += 1,
            None => {
                let free = |used: i64, want: i64, cap: i64| {
                    if cap <= 0 {
                        0.0
                    } else {
                        (cap - used - want) as f64 / cap as f64
                    }
                };
                let score = (free(n.requested.0, pod.cpu_millis, n.allocatable.0)
                    + free(n.requested.1, pod.memory, n.allocatable.1))
                    / 2.0;
                if best.is_none_or(|(s, name)| score > s || (score == s && n.name.as_str() < name))
                {
                    best = Some((score, &n.name));
                }
            }
        }
    }
    match best {
        Some((_, name)) => Decision::Bind(name.to_string()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            let mut msg = format!("0/{} nodes are available", nodes.len());
            if !detail.is_empty() {
                msg.push_str(": ");
                msg.push_str(&detail.join(", "));
            }
            msg.push('.');
            Decision::Unschedulable(msg)
        }
    }
}

fn pod_request(pod: &Pod) -> PodRequest {
    let mut r = PodRequest::default();
    if let Some(spec) = &pod.spec {
        for c in &spec.containers {
            let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            // As in Kubernetes, a limit without a request is the request.
            let get = |k: &str| {
                req.and_then(|m| m.get(k))
                    .or_else(|| lim.and_then(|m| m.get(k)))
            };
            r.cpu_millis += get("cpu")
                .and_then(|q| quantity::cpu_millis(&q.0).ok())
                .unwrap_or(0);
            r.memory += get("memory")
                .and_then(|q| quantity::bytes(&q.0).ok())
                .unwrap_or(0);
        }
        r.node_selector = spec.node_selector.clone().unwrap_or_default();
        r.tolerations = spec.tolerations.clone().unwrap_or_default();
    }
    r
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// What each pod requests, by uid: computed once per pod (a pod's requests do not change).
#[derive(Default)]
struct Requests(HashMap<String, (i64, i64)>);

impl Requests {
    fn of(&mut self, pod: &Pod) -> (i64, i64) {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if let Some(r) = self.0.get(uid) {
            return *r;
        }
        let r = pod_request(pod);
        self.0.insert(uid.to_string(), (r.cpu_millis, r.memory));
        (r.cpu_millis, r.memory)
    }
    /// Forget pods that are gone.
    fn retain(&mut self, pods: &[Arc<Pod>]) {
        if self.0.len() > pods.len() {
            let live: std::collections::HashSet<&str> = pods
                .iter()
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            self.0.retain(|uid, _| live.contains(uid.as_str()));
        }
    }
}

fn snapshot(nodes: &[Arc<Node>], pods: &[Arc<Pod>], requests: &mut Requests) -> Vec<NodeSnapshot> {
    let mut used: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    requests.retain(pods);
    for p in pods {
        let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if is_finished(p) {
            continue;
        }
        let (cpu_millis, memory) = requests.of(p);
        let e = used.entry(n).or_default();
        e.0 += cpu_millis;
        e.1 += memory;
        e.2 += 1;
    }
    nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let status = n.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let alloc = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
            let q = |k: &str, f: fn(&str) -> Result<i64, quantity::QuantityError>| {
                alloc
                    .and_then(|m| m.get(k))
                    .and_then(|v| f(&v.0).ok())
                    .unwrap_or(0)
            };
            NodeSnapshot {
                requested: used.get(name.as_str()).copied().unwrap_or_default(),
                name,
                ready,
                unschedulable: n
                    .spec
                    .as_ref()
                    .and_then(|s| s.unschedulable)
                    .unwrap_or(false),
                labels: n.metadata.labels.clone().unwrap_or_default(),
                taints: n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default(),
                allocatable: (
                    q("cpu", quantity::cpu_millis),
                    q("memory", quantity::bytes),
                    q("pods", |s| quantity::parse(s).map(|v| v as i64)),
                ),
            }
        })
        .collect()
}

fn wants_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == "default-scheduler"
        && pod.metadata.deletion_timestamp.is_none()
        && !is_finished(pod)
}

/// A bound pod that has finished or is being deleted no longer counts against its node.
fn frees_resources(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    bound && (is_finished(pod) || pod.metadata.deletion_timestamp.is_some())
}

/// Run the scheduler until the client's server goes away for good.
pub async fn run(client: kube::Client) {
    let pods_api: Api<Pod> = Api::all(client.clone());
    let nodes_api: Api<Node> = Api::all(client.clone());
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    // Each change says whether it can alter a decision: a pod that wants scheduling, a bound
    // pod that goes or finishes (its resources free up), any node change or relist. Status
    // updates of running pods, which are most writes, cost the scheduler nothing.
    let pod_events = reflector(pod_writer, watcher(pods_api, watcher::Config::default()))
        .default_backoff()
        .map(|ev| match ev {
            Ok(watcher::Event::Apply(p)) => wants_us(&p) || frees_resources(&p),
            Ok(watcher::Event::Delete(p)) => !p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("")
                .is_empty(),
            Ok(watcher::Event::InitApply(_)) => false,
            _ => true,
        });
    let node_events = reflector(node_writer, watcher(nodes_api, watcher::Config::default()))
        .default_backoff()
        .map(|_| true);
    let mut changes = std::pin::pin!(futures::stream::select(pod_events, node_events));
    let recorder = Recorder::new(client.clone(), "default-scheduler", None);
    let mut reported: HashMap<String, String> = HashMap::new();
    // Pods bound (or being bound) whose binding the reflector has not shown yet: their node and
    // what they request, counted against that node as kube-scheduler's "assume" does.
    let mut assumed: HashMap<String, (String, i64, i64)> = HashMap::new();
    let mut requests = Requests::default();
    // Bindings run in the background, so a slow one never holds up the next pass.
    let mut binding: tokio::task::JoinSet<(String, bool)> = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(BIND_CONCURRENCY));
    loop {
        // Wait for a change, a finished binding (or retry periodically), then take whatever else
        // is ready.
        let mut relevant = tokio::select! {
            change = changes.next() => match change {
                None => return,
                Some(r) => r,
            },
            Some(done) = binding.join_next(), if !binding.is_empty() => {
                bound(done, &mut assumed, &mut reported);
                false
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => true, // quiet: retry what is pending
        };
        while let Some(Some(r)) = futures::FutureExt::now_or_never(changes.next()) {
            relevant |= r;
        }
        while let Some(done) = binding.try_join_next() {
            bound(done, &mut assumed, &mut reported);
        }
        if !relevant {
            continue;
        }
        let pass_began = std::time::Instant::now();
        let all_pods = pods.state();
        let mut snap = snapshot(&nodes.state(), &all_pods, &mut requests);
        let mut pending: Vec<&Arc<Pod>> = all_pods.iter().filter(|p| wants_us(p)).collect();
        pending.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        // Forget what we reported about pods that are no longer pending.
        let pending_uids: std::collections::HashSet<&str> = pending
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        reported.retain(|uid, _| pending_uids.contains(uid.as_str()));
        // Assumed pods the reflector now shows bound (or gone) count through the snapshot.
        assumed.retain(|uid, _| pending_uids.contains(uid.as_str()));
        for (node, cpu, memory) in assumed.values() {
            if let Some(n) = snap.iter_mut().find(|n| &n.name == node) {
                n.requested.0 += cpu;
                n.requested.1 += memory;
                n.requested.2 += 1;
            }
        }
        let mut binds = 0;
        for pod in pending {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if assumed.contains_key(&uid) {
                continue;
            }
            let req = pod_request(pod);
            match decide(&req, &snap) {
                Decision::Bind(node) => {
                    if let Some(n) = snap.iter_mut().find(|n| n.name == node) {
                        n.requested.0 += req.cpu_millis;
                        n.requested.1 += req.memory;
                        n.requested.2 += 1;
                    }
                    assumed.insert(uid.clone(), (node.clone(), req.cpu_millis, req.memory));
                    let (client, recorder, permits) =
                        (client.clone(), recorder.clone(), permits.clone());
                    let pod = Arc::clone(pod);
                    binding.spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        (uid, self::bind(&client, &recorder, &pod, &node).await)
                    });
                    binds += 1;
                }
                Decision::Unschedulable(msg) => {
                    if reported.get(&uid) == Some(&msg) {
                        continue;
                    }
                    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                    let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": skiff_common::now()}]}});
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await
                    {
                        Ok(_) => {
                            recorder
                                .record(&pod_ref(pod), EventType::Warning, "FailedScheduling", &msg)
                                .await;
                            reported.insert(uid, msg);
                        }
                        Err(e) => {
                            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "could not report unschedulable pod")
                        }
                    }
                }
            }
        }
        tracing::debug!(
            binds,
            pending = pending_uids.len(),
            pass_us = pass_began.elapsed().as_micros() as u64,
            "scheduling pass"
        );
    }
}

/// A binding finished: a failed one is no longer assumed (the pod is decided again at the next
/// change or retry); a successful one stays assumed until the reflector shows it bound.
fn bound(
    done: Result<(String, bool), tokio::task::JoinError>,
    assumed: &mut HashMap<String, (String, i64, i64)>,
    reported: &mut HashMap<String, String>,
) {
    match done {
        Ok((uid, true)) => {
            reported.remove(&uid);
        }
        Ok((uid, false)) => {
            assumed.remove(&uid);
        }
        Err(e) => tracing::warn!(error = %e, "a binding task failed"),
    }
}

/// Bindings in flight at once.
const BIND_CONCURRENCY: usize = 32;

/// Bind `pod` to `node` through `pods/binding` and record `Scheduled`; false if it failed (the
/// pod stays pending and is retried).
async fn bind(client: &kube::Client, recorder: &Recorder, pod: &Pod, node: &str) -> bool {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    match api
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), %node, "scheduled");
            recorder
                .record(
                    &pod_ref(pod),
                    EventType::Normal,
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
                .await;
            true
        }
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding failed; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        name: &str,
        ready: bool,
        alloc: (i64, i64, i64),
        used: (i64, i64, i64),
    ) -> NodeSnapshot {
        NodeSnapshot {
            name: name.into(),
            ready,
            allocatable: alloc,
            requested: used,
            ..Default::default()
        }
    }

    #[test]
    fn decide_table() {
        let gi = 1 << 30;
        let small = PodRequest {
            cpu_millis: 100,
            memory: gi / 4,
            ..Default::default()
        };
        let huge = PodRequest {
            cpu_millis: 100,
            memory: 64 * gi,
            ..Default::default()
        };
        let selected = PodRequest {
            node_selector: [("disk".to_string(), "ssd".to_string())].into(),
            ..Default::default()
        };
        let mut labelled = node("c", true, (2000, 4 * gi, 10), (0, 0, 0));
        labelled.labels.insert("disk".into(), "ssd".into());
        let mut cordoned = node("d", true, (2000, 4 * gi, 10), (0, 0, 0));
        cordoned.unschedulable = true;
        let unreachable = NodeSnapshot {
            taints: vec![Taint {
                key: "node.kubernetes.io/unreachable".into(),
                effect: "NoExecute".into(),
                ..Default::default()
            }],
            ..node("u", true, (2000, 4 * gi, 10), (0, 0, 0))
        };
        let unreachable_too = NodeSnapshot {
            name: "v".into(),
            ..unreachable.clone()
        };
        let huge_on_one = PodRequest {
            memory: 8 * gi,
            ..Default::default()
        };
        let tolerant = PodRequest {
            tolerations: vec![Toleration {
                key: Some("node.kubernetes.io/unreachable".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let cases: Vec<(&str, PodRequest, Vec<NodeSnapshot>, Decision)> = vec![
            ("no nodes", small.clone(), vec![], Decision::Unschedulable("0/0 nodes are available.".into())),
            ("one ready node", small.clone(), vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0))], Decision::Bind("a".into())),
            (
                "least allocated wins",
                small.clone(),
                vec![node("a", true, (2000, 4 * gi, 10), (1500, 3 * gi, 3)), node("b", true, (2000, 4 * gi, 10), (0, 0, 0))],
                Decision::Bind("b".into()),
            ),
            ("tie goes to the first name", small.clone(), vec![node("b", true, (1000, gi, 5), (0, 0, 0)), node("a", true, (1000, gi, 5), (0, 0, 0))], Decision::Bind("a".into())),
            (
                "nothing fits",
                huge,
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0)), node("b", false, (2000, 4 * gi, 10), (0, 0, 0)), cordoned.clone()],
                Decision::Unschedulable("0/3 nodes are available: 1 Insufficient memory, 1 node(s) were not ready, 1 node(s) were unschedulable.".into()),
            ),
            ("full node", small.clone(), vec![node("a", true, (2000, 4 * gi, 2), (0, 0, 2))], Decision::Unschedulable("0/1 nodes are available: 1 Too many pods.".into())),
            (
                "node selector",
                selected,
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0)), labelled],
                Decision::Bind("c".into()),
            ),
            (
                "cpu",
                PodRequest { cpu_millis: 3000, ..Default::default() },
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0))],
                Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into()),
            ),
            (
                "untolerated taints, as kube-scheduler words them",
                huge_on_one.clone(),
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0)), unreachable.clone(), unreachable_too.clone()],
                Decision::Unschedulable("0/3 nodes are available: 1 Insufficient memory, 2 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.".into()),
            ),
            ("a tolerated taint", tolerant, vec![unreachable], Decision::Bind("u".into())),
        ];
        for (what, pod, nodes, want) in cases {
            assert_eq!(decide(&pod, &nodes), want, "{what}");
        }
    }
}
