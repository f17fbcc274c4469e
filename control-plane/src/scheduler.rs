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
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PreferredSchedulingTerm,
    Taint, Toleration,
};
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
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Option<NodeSelector>,
    /// `affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    /// `topologySpreadConstraints`, with the matching pods counted per node.
    pub spread: Vec<Spread>,
    /// Pods of the same owner per node (spread by the default SelectorSpread score).
    pub siblings: HashMap<String, i64>,
}

/// One topology spread constraint with what it counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spread {
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// The most the domains may differ by.
    pub max_skew: i64,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    /// Pods matching the constraint's selector, per node name.
    pub per_node: HashMap<String, i64>,
}

/// Does `node` (its name and labels) satisfy a node selector (terms ORed, requirements ANDed)?
pub fn node_matches(
    selector: &NodeSelector,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, name, labels))
}

fn term_matches(term: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let req = |r: &NodeSelectorRequirement, value: Option<&str>| {
        let values = r.values.as_deref().unwrap_or(&[]);
        let num = |v: &str| v.parse::<i64>().ok();
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => {
                matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
            }
            "Lt" => {
                matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        }
    };
    exprs
        .iter()
        .all(|r| req(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && req(r, Some(name)))
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

/// The skew a constraint would have with the pod on `n`: its domain's count plus one, minus the
/// smallest count of any domain (None when `n` has no value for the key).
fn skew_after(c: &Spread, n: &NodeSnapshot, nodes: &[NodeSnapshot]) -> Option<i64> {
    let domain = n.labels.get(&c.topology_key)?;
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for m in nodes {
        if let Some(d) = m.labels.get(&c.topology_key) {
            *counts.entry(d.as_str()).or_default() += c.per_node.get(&m.name).copied().unwrap_or(0);
        }
    }
    let min = counts.values().copied().min().unwrap_or(0);
    Some(counts.get(domain.as_str()).copied().unwrap_or(0) + 1 - min)
}

/// Kubernetes' default scores, weighted as kube-scheduler weighs them: least allocated (1),
/// balanced allocation (1), preferred node affinity (2), topology spread and spreading an
/// owner's pods (2). Each part is in 0..=1.
fn score(
    pod: &PodRequest,
    n: &NodeSnapshot,
    nodes: &[NodeSnapshot],
    free: &dyn Fn(i64, i64, i64) -> f64,
) -> f64 {
    let cpu = free(n.requested.0, pod.cpu_millis, n.allocatable.0);
    let mem = free(n.requested.1, pod.memory, n.allocatable.1);
    let least = (cpu + mem) / 2.0;
    let balanced = 1.0 - (cpu - mem).abs();
    let total_weight: i64 = pod
        .preferred_affinity
        .iter()
        .map(|p| i64::from(p.weight))
        .sum();
    let affinity = if total_weight > 0 {
        pod.preferred_affinity
            .iter()
            .filter(|p| term_matches(&p.preference, &n.name, &n.labels))
            .map(|p| i64::from(p.weight))
            .sum::<i64>() as f64
            / total_weight as f64
    } else {
        0.0
    };
    // Fewer matching pods in the node's domain (soft constraints) and fewer siblings on the node
    // score higher.
    let fewer = |mine: i64, most: i64| {
        if most <= 0 {
            1.0
        } else {
            1.0 - mine as f64 / (most + 1) as f64
        }
    };
    let soft: Vec<f64> = pod
        .spread
        .iter()
        .filter(|c| !c.hard)
        .filter_map(|c| {
            let skew = skew_after(c, n, nodes)?;
            let most = nodes.iter().filter_map(|m| skew_after(c, m, nodes)).max()?;
            Some(fewer(skew, most))
        })
        .collect();
    let siblings_most = pod.siblings.values().copied().max().unwrap_or(0);
    let spread = if soft.is_empty() {
        fewer(
            pod.siblings.get(&n.name).copied().unwrap_or(0),
            siblings_most,
        )
    } else {
        soft.iter().sum::<f64>() / soft.len() as f64
    };
    least + balanced + 2.0 * affinity + 2.0 * spread
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
            || pod
                .required_affinity
                .as_ref()
                .is_some_and(|a| !node_matches(a, &n.name, &n.labels))
        {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else if pod
            .spread
            .iter()
            .any(|c| c.hard && skew_after(c, n, nodes).is_none_or(|skew| skew > c.max_skew))
        {
            Some("node(s) didn't match pod topology spread constraints")
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
                let score = score(pod, n, nodes, &free);
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
        let node_affinity = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        r.required_affinity = node_affinity.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .clone()
        });
        r.preferred_affinity = node_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
    }
    r
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pod's topology spread constraints with the matching pods (same namespace, selected by
/// the constraint's `labelSelector`) counted per node.
fn spread_counts(pod: &Pod, placed: &[(Arc<Pod>, String)]) -> Vec<Spread> {
    let ns = pod.metadata.namespace.as_deref();
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            let selector = c
                .label_selector
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| crate::api::selectors::LabelSelector::from_object(&v).ok());
            let mut per_node: HashMap<String, i64> = HashMap::new();
            if let Some(sel) = selector {
                for (p, node) in placed {
                    if p.metadata.namespace.as_deref() == ns
                        && sel.matches_map(p.metadata.labels.as_ref())
                    {
                        *per_node.entry(node.clone()).or_default() += 1;
                    }
                }
            }
            Spread {
                topology_key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                per_node,
            }
        })
        .collect()
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
pub async fn run(client: kube::Client, informer: crate::controllers::PodInformer) {
    use crate::controllers::PodChange;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods = informer.store.clone();
    let (nodes, node_writer) = reflector::store();
    // Each change says whether it can alter a decision: a pod that wants scheduling, a bound
    // pod that goes or finishes (its resources free up), any node change or relist. Status
    // updates of running pods, which are most writes, cost the scheduler nothing.
    // A first pass at start, then one per relevant change.
    let pod_events = futures::stream::once(futures::future::ready(PodChange::Resynced))
        .chain(informer.changes())
        .map(|c| match c {
            PodChange::Applied(p) => wants_us(&p) || frees_resources(&p),
            PodChange::Deleted(p) => !p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("")
                .is_empty(),
            PodChange::Resynced => true,
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
        // Where every placed pod is (bound, or assumed in flight), for spreading (only worked out
        // when a pending pod has an owner or spread constraints).
        let spreads = pending.iter().any(|p| {
            crate::controllers::controller_uid(&p.metadata).is_some()
                || p.spec
                    .as_ref()
                    .and_then(|s| s.topology_spread_constraints.as_ref())
                    .is_some_and(|c| !c.is_empty())
        });
        let mut placed: Vec<(Arc<Pod>, String)> = all_pods
            .iter()
            .filter(|_| spreads)
            .filter(|p| !is_finished(p) && p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .filter(|n| !n.is_empty())
                    .or_else(|| {
                        assumed
                            .get(p.metadata.uid.as_deref().unwrap_or_default())
                            .map(|a| a.0.clone())
                    })?;
                Some((p.clone(), node))
            })
            .collect();
        let mut by_owner: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for (p, node) in &placed {
            if let Some(owner) = crate::controllers::controller_uid(&p.metadata) {
                *by_owner
                    .entry(owner.to_string())
                    .or_default()
                    .entry(node.clone())
                    .or_default() += 1;
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
            let mut req = pod_request(pod);
            let owner = crate::controllers::controller_uid(&pod.metadata).map(str::to_string);
            if let Some(o) = &owner {
                req.siblings = by_owner.get(o).cloned().unwrap_or_default();
            }
            req.spread = spread_counts(pod, &placed);
            match decide(&req, &snap) {
                Decision::Bind(node) => {
                    placed.push((Arc::clone(pod), node.clone()));
                    if let Some(o) = owner {
                        *by_owner
                            .entry(o)
                            .or_default()
                            .entry(node.clone())
                            .or_default() += 1;
                    }
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
        let zone_b = NodeSnapshot {
            labels: [("zone".to_string(), "b".to_string())].into(),
            ..node("zb", true, (2000, 4 * gi, 10), (0, 0, 0))
        };
        let zone_term = |values: &[&str]| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_fields: None,
        };
        let affine = PodRequest {
            required_affinity: Some(NodeSelector {
                node_selector_terms: vec![zone_term(&["b", "c"])],
            }),
            ..Default::default()
        };
        let prefers_b = PodRequest {
            preferred_affinity: vec![PreferredSchedulingTerm {
                weight: 50,
                preference: zone_term(&["b"]),
            }],
            ..Default::default()
        };
        let host = |name: &str| NodeSnapshot {
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
            ..node(name, true, (2000, 4 * gi, 10), (0, 0, 0))
        };
        let hostname_spread = |hard: bool, counts: &[(&str, i64)]| Spread {
            topology_key: "kubernetes.io/hostname".into(),
            max_skew: 1,
            hard,
            per_node: counts.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
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
            (
                "required node affinity",
                affine.clone(),
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0)), zone_b.clone()],
                Decision::Bind("zb".into()),
            ),
            (
                "required node affinity that nothing matches",
                affine,
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0))],
                Decision::Unschedulable("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.".into()),
            ),
            (
                "preferred node affinity outweighs a little free capacity",
                prefers_b,
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 0)), NodeSnapshot { requested: (200, gi / 4, 1), ..zone_b.clone() }],
                Decision::Bind("zb".into()),
            ),
            (
                "an owner's pods spread over nodes",
                PodRequest { siblings: [("a".to_string(), 2)].into(), ..Default::default() },
                vec![node("a", true, (2000, 4 * gi, 10), (0, 0, 2)), node("b", true, (2000, 4 * gi, 10), (100, gi / 8, 3))],
                Decision::Bind("b".into()),
            ),
            (
                "hard topology spread: skew 1 on hostname",
                PodRequest { spread: vec![hostname_spread(true, &[("a", 2), ("b", 1)])], ..Default::default() },
                vec![host("a"), host("b")],
                Decision::Bind("b".into()),
            ),
            (
                "hard topology spread that no node satisfies",
                PodRequest { spread: vec![hostname_spread(true, &[("a", 2), ("b", 0)])], ..Default::default() },
                vec![host("a"), NodeSnapshot { ready: false, ..host("b") }],
                Decision::Unschedulable("0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) were not ready.".into()),
            ),
        ];
        for (what, pod, nodes, want) in cases {
            assert_eq!(decide(&pod, &nodes), want, "{what}");
        }
    }
}
