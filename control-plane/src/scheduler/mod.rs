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
    Node, NodeSelector, Pod, PreferredSchedulingTerm, Taint, Toleration,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;
use skiff_common::events::{pod_ref, EventType, Recorder};
use skiff_common::quantity;

use crate::placement;

mod volumes;

use volumes::{and_selectors, volume_check};

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

/// One topology spread constraint's pods counted per domain (value of its key), worked out once
/// per decision.
struct Domains<'a> {
    constraint: &'a Spread,
    counts: HashMap<&'a str, i64>,
    min: i64,
    max: i64,
}

impl<'a> Domains<'a> {
    fn new(constraint: &'a Spread, nodes: &'a [NodeSnapshot]) -> Self {
        let mut counts: HashMap<&str, i64> = HashMap::new();
        for m in nodes {
            if let Some(d) = m.labels.get(&constraint.topology_key) {
                *counts.entry(d.as_str()).or_default() +=
                    constraint.per_node.get(&m.name).copied().unwrap_or(0);
            }
        }
        let min = counts.values().copied().min().unwrap_or(0);
        let max = counts.values().copied().max().unwrap_or(0);
        Self {
            constraint,
            counts,
            min,
            max,
        }
    }

    /// The skew with the pod on `n`: its domain's count plus one, minus the smallest count of
    /// any domain (None when `n` has no value for the key).
    fn skew_after(&self, n: &NodeSnapshot) -> Option<i64> {
        let domain = n.labels.get(&self.constraint.topology_key)?;
        Some(self.counts.get(domain.as_str()).copied().unwrap_or(0) + 1 - self.min)
    }

    /// The largest skew the pod could cause on any node.
    fn most(&self) -> Option<i64> {
        (!self.counts.is_empty()).then(|| self.max + 1 - self.min)
    }
}

/// Kubernetes' default scores, weighted as kube-scheduler weighs them: least allocated (1),
/// balanced allocation (1), preferred node affinity (2), topology spread and spreading an
/// owner's pods (2). Each part is in 0..=1.
fn score(pod: &PodRequest, n: &NodeSnapshot, domains: &[Domains], siblings_most: i64) -> f64 {
    let free = |used: i64, want: i64, cap: i64| {
        if cap <= 0 {
            0.0
        } else {
            (cap - used - want) as f64 / cap as f64
        }
    };
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
            .filter(|p| placement::term_matches(&p.preference, &n.name, &n.labels))
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
    let soft: Vec<f64> = domains
        .iter()
        .filter(|d| !d.constraint.hard)
        .filter_map(|d| Some(fewer(d.skew_after(n)?, d.most()?)))
        .collect();
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

/// How many feasible nodes kube-scheduler looks for before it stops filtering (its
/// `numFeasibleNodesToFind` with the default, adaptive `percentageOfNodesToScore`): every node
/// of a cluster up to 100 nodes; beyond that 50 % less one point per 125 nodes (5 % at least),
/// and 100 nodes at least.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    if all <= 100 {
        return all;
    }
    let percent = 50usize.saturating_sub(all / 125).max(5);
    (all * percent / 100).max(100)
}

/// Choose a node for `pod`: filter, then score (ties by name). Every node is examined.
pub fn decide(pod: &PodRequest, nodes: &[NodeSnapshot]) -> Decision {
    decide_among(pod, nodes, 0, nodes.len()).0
}

/// [`decide`] as kube-scheduler runs it: examine nodes from `start` on (wrapping around) and
/// stop once `enough` of them fit (see [`feasible_nodes_to_find`]); when none fits, every node
/// has been examined and the message counts them all. Also returns how many nodes were
/// examined, so that the next pod can start after them.
pub fn decide_among(
    pod: &PodRequest,
    nodes: &[NodeSnapshot],
    start: usize,
    enough: usize,
) -> (Decision, usize) {
    let domains: Vec<Domains> = pod.spread.iter().map(|c| Domains::new(c, nodes)).collect();
    let siblings_most = pod.siblings.values().copied().max().unwrap_or(0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(f64, &str)> = None;
    let (mut feasible, mut examined) = (0, 0);
    let len = nodes.len();
    for k in 0..len {
        if feasible >= enough.max(1) {
            break;
        }
        let n = &nodes[(start + k) % len];
        examined += 1;
        // A taint with a scheduling effect the pod does not tolerate.
        let untolerated = n.taints.iter().find(|t| {
            (t.effect == "NoSchedule" || t.effect == "NoExecute")
                && !placement::tolerates(&pod.tolerations, t)
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
        } else if !placement::selects(
            &pod.node_selector,
            pod.required_affinity.as_ref(),
            &n.name,
            &n.labels,
        ) {
            Some("node(s) didn't match Pod's node affinity/selector")
        } else if domains.iter().any(|d| {
            d.constraint.hard
                && d.skew_after(n)
                    .is_none_or(|skew| skew > d.constraint.max_skew)
        }) {
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
                feasible += 1;
                let score = score(pod, n, &domains, siblings_most);
                if best.is_none_or(|(s, name)| score > s || (score == s && n.name.as_str() < name))
                {
                    best = Some((score, &n.name));
                }
            }
        }
    }
    let decision = match best {
        Some((_, name)) => Decision::Bind(name.to_string()),
        None => {
            let detail: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
            let mut msg = format!("0/{len} nodes are available");
            if !detail.is_empty() {
                msg.push_str(": ");
                msg.push_str(&detail.join(", "));
            }
            msg.push('.');
            Decision::Unschedulable(msg)
        }
    };
    (decision, examined)
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

/// A node's static part as the scheduler sees it (`requested` is left at zero).
fn node_snapshot(n: &Node) -> NodeSnapshot {
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
            q("pods", quantity::count),
        ),
        requested: (0, 0, 0),
    }
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

/// How many unschedulable decisions a pass remembers for the pods after them.
const REMEMBERED_FAILURES: usize = 16;

/// Whether two pods without topology spread constraints are filtered alike: the same requests,
/// node selector, required node affinity and tolerations (scores may differ, feasibility not).
fn same_feasibility(a: &PodRequest, b: &PodRequest) -> bool {
    a.spread.is_empty()
        && b.spread.is_empty()
        && a.cpu_millis == b.cpu_millis
        && a.memory == b.memory
        && a.node_selector == b.node_selector
        && a.required_affinity == b.required_affinity
        && a.tolerations == b.tolerations
}

/// Whether a pod changed in what can make it fit: kube-scheduler's `isPodUpdated`, which ignores
/// `resourceVersion`, `generation`, `managedFields`, `finalizers` and the status. Otherwise the
/// scheduler's own report on an unschedulable pod would make it worth a try again, and each try
/// doubles its back-off (up to 10 s) while nothing changed.
fn updated_for_scheduling(old: &Pod, new: &Pod) -> bool {
    let (a, b) = (&old.metadata, &new.metadata);
    old.spec != new.spec
        || a.labels != b.labels
        || a.annotations != b.annotations
        || a.owner_references != b.owner_references
        || a.deletion_timestamp != b.deletion_timestamp
        || a.deletion_grace_period_seconds != b.deletion_grace_period_seconds
        || a.name != b.name
        || a.namespace != b.namespace
        || a.uid != b.uid
        || a.generate_name != b.generate_name
        || a.creation_timestamp != b.creation_timestamp
        || old
            .status
            .as_ref()
            .and_then(|s| s.resource_claim_statuses.as_ref())
            != new
                .status
                .as_ref()
                .and_then(|s| s.resource_claim_statuses.as_ref())
}

/// The node a pod counts against: bound, unfinished and not being deleted.
fn counts_on(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    (!node.is_empty() && !is_finished(pod) && pod.metadata.deletion_timestamp.is_none())
        .then_some(node)
}

/// A pod counted against a node: bound, or assumed bound while its binding is on its way.
struct Placed {
    node: String,
    cpu_millis: i64,
    memory: i64,
    owner: Option<String>,
}

impl Placed {
    /// Add (sign 1) or take away (-1) this pod's requests on `requested` (cpu, memory, pods).
    fn count(&self, requested: &mut (i64, i64, i64), sign: i64) {
        requested.0 += sign * self.cpu_millis;
        requested.1 += sign * self.memory;
        requested.2 += sign;
    }

    fn of(pod: &Pod, node: &str) -> Self {
        let r = pod_request(pod);
        Placed {
            node: node.to_string(),
            cpu_millis: r.cpu_millis,
            memory: r.memory,
            owner: crate::controllers::controller_uid(&pod.metadata).map(str::to_string),
        }
    }
}

/// A pod waiting for a node.
struct Waiting {
    pod: Arc<Pod>,
    /// Tried since the last change that could help it.
    tried: bool,
    /// Found unschedulable this many times in a row.
    failures: u32,
    /// Not tried again before this: kube-scheduler's back-off for unschedulable pods.
    not_before: Option<std::time::Instant>,
    /// The unschedulable message last reported on the pod (its condition and event), so the
    /// same one is not written again; it leaves with the pod's entry.
    reported: Option<String>,
}

impl Waiting {
    /// Not tried since the last change that could help it, and not being bound (its uid is not
    /// in `assumed`).
    fn untried(&self, uid: &str, assumed: &std::collections::HashSet<String>) -> bool {
        !self.tried && !assumed.contains(uid)
    }
}

/// How long a pod found unschedulable `failures` times waits before it is tried again, as
/// kube-scheduler's defaults: 1 s, doubling, 10 s at most.
pub fn unschedulable_backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1);
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(4))
        .min(Duration::from_secs(10))
}

/// What the scheduler knows between passes, kept current from watch events (as kube-scheduler's
/// cache and queue are) rather than rebuilt from every pod for each pass.
#[derive(Default)]
struct Cache {
    /// The nodes, with what their placed pods request.
    nodes: Vec<NodeSnapshot>,
    /// Index of each node in `nodes`.
    index: HashMap<String, usize>,
    /// Pods counted against nodes, by uid.
    placed: HashMap<String, Placed>,
    /// Of those, the ones whose binding the watch has not shown yet (kube-scheduler's "assumed").
    assumed: std::collections::HashSet<String>,
    /// Placed pods per owner (controller uid) per node, for spreading an owner's pods.
    by_owner: HashMap<String, HashMap<String, i64>>,
    /// Pods waiting for a node, by uid.
    pending: HashMap<String, Waiting>,
    /// Where the next decision starts examining nodes.
    next_start: usize,
}

impl Cache {
    /// Add (sign 1) or take away (-1) a placed pod's requests on its node and owner.
    fn account(&mut self, p: &Placed, sign: i64) {
        if let Some(&i) = self.index.get(&p.node) {
            p.count(&mut self.nodes[i].requested, sign);
        }
        if let Some(owner) = &p.owner {
            let per_node = self.by_owner.entry(owner.clone()).or_default();
            let count = per_node.entry(p.node.clone()).or_default();
            *count += sign;
            if *count <= 0 {
                per_node.remove(&p.node);
                if per_node.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
        }
    }

    fn place(&mut self, uid: &str, p: Placed) {
        self.account(&p, 1);
        if let Some(old) = self.placed.insert(uid.to_string(), p) {
            self.account(&old, -1);
        }
    }

    fn unplace(&mut self, uid: &str) -> bool {
        self.assumed.remove(uid);
        match self.placed.remove(uid) {
            Some(old) => {
                self.account(&old, -1);
                true
            }
            None => false,
        }
    }

    /// Every pending pod may fit now.
    fn retry_all(&mut self) {
        for w in self.pending.values_mut() {
            w.tried = false;
        }
    }

    /// The pods a pass tries, marked tried: those not tried since the last change that could
    /// help them and not being bound whose back-off is over at `now`, oldest first. When there
    /// are none, those still backing off, soonest first (kube-scheduler's
    /// SchedulerPopFromBackoffQ): with nothing else to do, a change that may help them is tried
    /// at once. A failure still lengthens the back-off, which matters once there is other work.
    fn take_untried(&mut self, now: std::time::Instant) -> Vec<Arc<Pod>> {
        let assumed = &self.assumed;
        let mut untried: Vec<&mut Waiting> = self
            .pending
            .iter_mut()
            .filter(|(uid, w)| w.untried(uid, assumed))
            .map(|(_, w)| w)
            .collect();
        let over = |w: &Waiting| w.not_before.is_none_or(|t| t <= now);
        if untried.iter().any(|w| over(w)) {
            untried.retain(|w| over(w));
            untried.sort_by_key(|w| w.pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        } else {
            untried.sort_by_key(|w| w.not_before.unwrap_or(now));
        }
        untried
            .into_iter()
            .map(|w| {
                w.tried = true;
                Arc::clone(&w.pod)
            })
            .collect()
    }

    /// A node was added or changed; true if pending pods may fit now. A change that leaves what
    /// the scheduler sees of the node as it was (a heartbeat) costs one snapshot and retries
    /// nothing; otherwise only that node's entry is replaced or inserted.
    fn node_applied(&mut self, node: &Node) -> bool {
        let mut fresh = node_snapshot(node);
        if let Some(&i) = self.index.get(&fresh.name) {
            fresh.requested = self.nodes[i].requested;
            if self.nodes[i] == fresh {
                return false;
            }
            self.nodes[i] = fresh;
        } else {
            for p in self.placed.values().filter(|p| p.node == fresh.name) {
                p.count(&mut fresh.requested, 1);
            }
            let at = self
                .nodes
                .partition_point(|n| n.name.as_str() < fresh.name.as_str());
            self.nodes.insert(at, fresh);
            self.reindex(at);
        }
        self.retry_all();
        true
    }

    /// A node is gone. Its pods stay placed (counted nowhere) until the watch shows them gone.
    fn node_deleted(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            self.nodes.remove(i);
            self.reindex(i);
        }
    }

    /// Index the nodes from position `from` on (those after an insertion or removal).
    fn reindex(&mut self, from: usize) {
        for (i, n) in self.nodes.iter().enumerate().skip(from) {
            self.index.insert(n.name.clone(), i);
        }
    }

    /// The node watch listed every node again: take their static parts and count the placed pods
    /// again.
    fn set_nodes(&mut self, nodes: &[Arc<Node>]) {
        self.nodes = nodes.iter().map(|n| node_snapshot(n)).collect();
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        self.index.clear();
        self.reindex(0);
        for p in self.placed.values() {
            if let Some(&i) = self.index.get(&p.node) {
                p.count(&mut self.nodes[i].requested, 1);
            }
        }
        self.retry_all();
    }

    /// A pod was created or changed; true if a pass may now bind something.
    fn applied(&mut self, pod: Arc<Pod>) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if wants_us(&pod) {
            // A change to a pending pod (its tolerations, say) is worth another try, once its
            // back-off is over; one to its status only (the scheduler's own report that it is
            // unschedulable, say) is not.
            match self.pending.get_mut(&uid) {
                Some(w) => {
                    let changed = updated_for_scheduling(&w.pod, &pod);
                    w.pod = pod;
                    if !changed {
                        return false;
                    }
                    w.tried = false;
                }
                None => {
                    self.pending.insert(
                        uid,
                        Waiting {
                            pod,
                            tried: false,
                            failures: 0,
                            not_before: None,
                            reported: None,
                        },
                    );
                }
            }
            return true;
        }
        self.pending.remove(&uid);
        match counts_on(&pod) {
            Some(node) => {
                let known = self.placed.get(&uid).is_some_and(|p| p.node == node);
                self.assumed.remove(&uid);
                if !known {
                    let p = Placed::of(&pod, node);
                    self.place(&uid, p);
                }
                false
            }
            // Finished, being deleted or never bound: whatever it held is free again.
            None => {
                let freed = self.unplace(&uid);
                if freed {
                    self.retry_all();
                }
                freed
            }
        }
    }

    /// A pod is gone; true if that freed room for pending pods.
    fn deleted(&mut self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.pending.remove(uid);
        let freed = self.unplace(uid);
        if freed {
            self.retry_all();
        }
        freed
    }

    /// The watch listed every pod again: start over from them, keeping the bindings in flight.
    fn resync(&mut self, pods: &[Arc<Pod>]) {
        let in_flight: Vec<(String, Placed)> = self
            .assumed
            .iter()
            .filter_map(|uid| Some((uid.clone(), self.placed.remove(uid)?)))
            .collect();
        let before = std::mem::take(&mut self.pending);
        self.placed.clear();
        self.assumed.clear();
        self.by_owner.clear();
        for n in &mut self.nodes {
            n.requested = (0, 0, 0);
        }
        for p in pods {
            self.applied(p.clone());
        }
        // What was reported on a pod still pending stays reported.
        for (uid, w) in &mut self.pending {
            w.reported = before.get(uid).and_then(|b| b.reported.clone());
        }
        for (uid, p) in in_flight {
            if self.pending.contains_key(&uid) {
                self.place(&uid, p);
                self.assumed.insert(uid);
            }
        }
        self.retry_all();
    }
}

/// Run the scheduler until the client's server goes away for good.
pub async fn run(client: kube::Client, informer: crate::controllers::PodInformer) {
    use crate::controllers::PodChange;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let (nodes, node_writer) = reflector::store();
    // A relist at start, then every pod change; each may or may not give a pass work.
    let pod_events = futures::stream::once(futures::future::ready(PodChange::Resynced))
        .chain(informer.changes())
        .map(Change::Pod);
    let node_events = reflector(node_writer, watcher(nodes_api, watcher::Config::default()))
        .default_backoff()
        .filter_map(|ev| futures::future::ready(ev.ok().map(|e| Change::Node(Box::new(e)))));
    // Claims, volumes and classes: a change may let a waiting pod through.
    let (claim_store, claim_writer) = reflector::store();
    let claim_events = reflector(
        claim_writer,
        watcher(
            Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|ev| futures::future::ready(ev.ok().map(|_| Change::Volumes)));
    let (volume_store, volume_writer) = reflector::store();
    let volume_events = reflector(
        volume_writer,
        watcher(
            Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|ev| futures::future::ready(ev.ok().map(|_| Change::Volumes)));
    let (class_store, class_writer) = reflector::store();
    let class_events = reflector(
        class_writer,
        watcher(
            Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|ev| futures::future::ready(ev.ok().map(|_| Change::Volumes)));
    let volume_changes = futures::stream::select(
        claim_events,
        futures::stream::select(volume_events, class_events),
    );
    let mut changes = std::pin::pin!(futures::stream::select(
        futures::stream::select(pod_events, node_events),
        volume_changes
    ));
    let recorder = Recorder::new(client.clone(), "default-scheduler", None);
    let mut cache = Cache::default();
    // Bindings and reports run in the background, so a slow one never holds up the next pass.
    let mut writes: tokio::task::JoinSet<Written> = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(BIND_CONCURRENCY));
    // When to wake up, and whether that is for 5 s without a change (not a back-off's end).
    let mut wake: Option<(tokio::time::Instant, bool)> = None;
    loop {
        // Wait for a change, a finished binding (or retry periodically), then take whatever else
        // is ready.
        let take = |change: Change, cache: &mut Cache| match change {
            Change::Pod(PodChange::Applied(p)) => cache.applied(p),
            Change::Pod(PodChange::Deleted(p)) => cache.deleted(&p),
            Change::Pod(PodChange::Resynced) => {
                cache.resync(&informer.store.state());
                true
            }
            Change::Volumes => {
                cache.retry_all();
                true
            }
            Change::Node(ev) => match *ev {
                watcher::Event::Apply(n) => cache.node_applied(&n),
                watcher::Event::Delete(n) => {
                    cache.node_deleted(n.metadata.name.as_deref().unwrap_or_default());
                    false
                }
                // A relist: the reflector's store holds every node once it is done.
                watcher::Event::Init | watcher::Event::InitApply(_) => false,
                watcher::Event::InitDone => {
                    cache.set_nodes(&nodes.state());
                    true
                }
            },
        };
        // The earliest end of a back-off of a pod still to try, or 5 s from now; worked out again
        // only after something that can change it (not for every pod the watch shows bound).
        let (wake_at, quiet) = *wake.get_or_insert_with(|| {
            let quiet = tokio::time::Instant::now() + Duration::from_secs(5);
            // (Pods being bound wait for their binding, not for a timer.)
            cache
                .pending
                .iter()
                .filter(|(uid, w)| w.untried(uid, &cache.assumed))
                .filter_map(|(_, w)| w.not_before)
                .map(tokio::time::Instant::from_std)
                .min()
                .filter(|t| *t < quiet)
                .map_or((quiet, true), |t| (t, false))
        });
        // A finished write whose pod is to be tried again moves the wake-up, not a pass.
        let mut retry = false;
        // A pass after 5 s without a change decides every pod it tries, so that reports kept by
        // skipped pods (below) are brought up to date once things settle.
        let mut settled = false;
        let mut relevant = tokio::select! {
            change = changes.next() => match change {
                None => return,
                Some(c) => take(c, &mut cache),
            },
            Some(done) = writes.join_next(), if !writes.is_empty() => {
                retry = written(done, &mut cache);
                false
            }
            // A back-off is over, or 5 s without a change for pending pods: try them all again.
            _ = tokio::time::sleep_until(wake_at) => {
                cache.retry_all();
                settled = quiet;
                true
            }
        };
        while let Some(Some(c)) = futures::FutureExt::now_or_never(changes.next()) {
            relevant |= take(c, &mut cache);
        }
        while let Some(done) = writes.try_join_next() {
            retry |= written(done, &mut cache);
        }
        if relevant || retry {
            wake = None;
        }
        if !relevant {
            continue;
        }
        let pass_began = std::time::Instant::now();
        let todo = cache.take_untried(pass_began);
        // Where every placed pod is, for topology spread constraints (only worked out when a pod
        // to try has some).
        let constrained = todo.iter().any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.topology_spread_constraints.as_ref())
                .is_some_and(|c| !c.is_empty())
        });
        let mut located: Vec<(Arc<Pod>, String)> = Vec::new();
        if constrained {
            for p in informer.store.state() {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                if let Some(placed) = cache.placed.get(uid) {
                    located.push((p, placed.node.clone()));
                }
            }
        }
        let enough = feasible_nodes_to_find(cache.nodes.len());
        let mut binds = 0;
        // What failed in this pass: a pod that asks the same fails the same way, since a pass's
        // placements only take room (kube-scheduler's old equivalence cache). Such a pod is not
        // decided again; one already reported keeps its report and back-off, and is tried again
        // at the next change. So a backlog of like pods costs one failure per pass, not one each,
        // and nodes arriving one by one do not push every pending pod's back-off up. A pass
        // after 5 s without a change remembers nothing, so a kept report is brought up to date
        // once things settle.
        let mut failed: Vec<(PodRequest, String)> = Vec::new();
        let mut skipped = 0;
        let uses_claims = todo.iter().any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.persistent_volume_claim.is_some())
        });
        let (claims, volumes, waiting_classes) = if uses_claims {
            let claims: BTreeMap<_, _> = claim_store
                .state()
                .iter()
                .map(|c| {
                    let key = (
                        c.metadata.namespace.clone().unwrap_or_default(),
                        c.metadata.name.clone().unwrap_or_default(),
                    );
                    (key, c.as_ref().clone())
                })
                .collect();
            let volumes: BTreeMap<_, _> = volume_store
                .state()
                .iter()
                .map(|v| {
                    (
                        v.metadata.name.clone().unwrap_or_default(),
                        v.as_ref().clone(),
                    )
                })
                .collect();
            let waiting: Vec<String> = class_store
                .state()
                .iter()
                .filter(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            (claims, volumes, waiting)
        } else {
            Default::default()
        };
        for pod in &todo {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let mut req = pod_request(pod);
            let volume_reason = if uses_claims {
                match volume_check(pod, &claims, &volumes, &|c| {
                    waiting_classes.iter().any(|w| w == c)
                }) {
                    Ok(Some(affinity)) => {
                        req.required_affinity = Some(match &req.required_affinity {
                            None => affinity,
                            Some(r) => and_selectors(r, &affinity),
                        });
                        None
                    }
                    Ok(None) => None,
                    Err(why) => Some(why),
                }
            } else {
                None
            };
            let owner = crate::controllers::controller_uid(&pod.metadata).map(str::to_string);
            if let Some(o) = &owner {
                req.siblings = cache.by_owner.get(o).cloned().unwrap_or_default();
            }
            if constrained {
                req.spread = spread_counts(pod, &located);
            }
            let known = failed
                .iter()
                .find(|(f, _)| same_feasibility(f, &req))
                .map(|(_, msg)| msg.clone());
            let decision = match (volume_reason, known) {
                (Some(why), _) => Decision::Unschedulable(format!(
                    "0/{} nodes are available: {why}.",
                    cache.nodes.len()
                )),
                (None, known) => match known {
                    Some(msg) => {
                        if cache
                            .pending
                            .get(&uid)
                            .is_some_and(|w| w.reported.is_some())
                        {
                            skipped += 1;
                            continue;
                        }
                        Decision::Unschedulable(msg)
                    }
                    None => {
                        let (decision, examined) =
                            decide_among(&req, &cache.nodes, cache.next_start, enough);
                        cache.next_start = (cache.next_start + examined) % cache.nodes.len().max(1);
                        if let Decision::Unschedulable(msg) = &decision {
                            if !settled
                                && req.spread.is_empty()
                                && failed.len() < REMEMBERED_FAILURES
                            {
                                let filtered = PodRequest {
                                    cpu_millis: req.cpu_millis,
                                    memory: req.memory,
                                    node_selector: req.node_selector.clone(),
                                    tolerations: req.tolerations.clone(),
                                    required_affinity: req.required_affinity.clone(),
                                    ..PodRequest::default()
                                };
                                failed.push((filtered, msg.clone()));
                            }
                        }
                        decision
                    }
                },
            };
            match decision {
                Decision::Bind(node) => {
                    if constrained {
                        located.push((Arc::clone(pod), node.clone()));
                    }
                    let placed = Placed {
                        node: node.clone(),
                        cpu_millis: req.cpu_millis,
                        memory: req.memory,
                        owner,
                    };
                    cache.place(&uid, placed);
                    cache.assumed.insert(uid.clone());
                    let (client, recorder, pod) = (client.clone(), recorder.clone(), pod.clone());
                    spawn_write(&mut writes, &permits, async move {
                        let ok = self::bind(&client, &recorder, &pod, &node).await;
                        Written::Binding(uid, ok)
                    });
                    binds += 1;
                }
                Decision::Unschedulable(msg) => {
                    let Some(w) = cache.pending.get_mut(&uid) else {
                        continue;
                    };
                    w.failures += 1;
                    w.not_before = Some(pass_began + unschedulable_backoff(w.failures));
                    if w.reported.as_ref() == Some(&msg) {
                        continue;
                    }
                    w.reported = Some(msg.clone());
                    let (client, recorder, pod) = (client.clone(), recorder.clone(), pod.clone());
                    spawn_write(&mut writes, &permits, async move {
                        let ok = self::report(&client, &recorder, &pod, &msg).await;
                        Written::Report(uid, ok)
                    });
                }
            }
        }
        tracing::debug!(
            binds,
            skipped,
            tried = todo.len(),
            pending = cache.pending.len(),
            pass_us = pass_began.elapsed().as_micros() as u64,
            "scheduling pass"
        );
    }
}

/// What the scheduler's loop hears from its watches.
enum Change {
    Pod(crate::controllers::PodChange),
    Node(Box<watcher::Event<Node>>),
    /// A claim, volume or storage class changed.
    Volumes,
}

/// A write a pass started in the background, and whether it succeeded.
enum Written {
    /// A binding.
    Binding(String, bool),
    /// A pod's `PodScheduled=False` condition and `FailedScheduling` event.
    Report(String, bool),
}

/// A background write finished. A failed binding is no longer assumed (the pod is tried again
/// at the next change or retry); a successful one stays assumed until the watch shows it bound.
/// A failed report is forgotten, so it is written again. True if a pod is to be tried again.
fn written(done: Result<Written, tokio::task::JoinError>, cache: &mut Cache) -> bool {
    match done {
        Ok(Written::Binding(uid, true)) => {
            if let Some(w) = cache.pending.get_mut(&uid) {
                w.reported = None;
            }
            false
        }
        Ok(Written::Binding(uid, false)) => {
            if cache.assumed.contains(&uid) {
                cache.unplace(&uid);
            }
            if let Some(w) = cache.pending.get_mut(&uid) {
                w.tried = false;
            }
            true
        }
        Ok(Written::Report(uid, ok)) => {
            if let Some(w) = cache.pending.get_mut(&uid).filter(|_| !ok) {
                w.reported = None;
            }
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "a scheduler write task failed");
            false
        }
    }
}

/// Run one of a pass's writes in the background, at most [`BIND_CONCURRENCY`] at once.
fn spawn_write(
    writes: &mut tokio::task::JoinSet<Written>,
    permits: &Arc<tokio::sync::Semaphore>,
    write: impl std::future::Future<Output = Written> + Send + 'static,
) {
    let permits = Arc::clone(permits);
    writes.spawn(async move {
        let _permit = permits.acquire_owned().await;
        write.await
    });
}

/// Writes in flight at once. Each waits for a group commit of the store, so the rate of bindings
/// is about this many per commit: 32 capped a backlog at ~2,000 bindings/s on 2 cores.
const BIND_CONCURRENCY: usize = 256;

/// Say why `pod` fits nowhere: `PodScheduled=False`, reason `Unschedulable`, and a
/// `FailedScheduling` event; false if the status could not be written.
async fn report(client: &kube::Client, recorder: &Recorder, pod: &Pod, msg: &str) -> bool {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": skiff_common::now()}]}});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => {
            recorder
                .record(&pod_ref(pod), EventType::Warning, "FailedScheduling", msg)
                .await;
            true
        }
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "could not report unschedulable pod");
            false
        }
    }
}

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

    use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

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
    fn feasible_nodes_to_find_table() {
        // (nodes, how many feasible nodes kube-scheduler looks for)
        for (all, want) in [
            (0, 0),
            (3, 3),
            (100, 100),
            (101, 100),
            (250, 120),
            (1000, 420),
            (5000, 500),
            (6000, 300),
            (15000, 750),
        ] {
            assert_eq!(feasible_nodes_to_find(all), want, "{all} nodes");
        }
    }

    #[test]
    fn unschedulable_backoff_table() {
        for (failures, secs) in [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10)] {
            assert_eq!(
                unschedulable_backoff(failures),
                Duration::from_secs(secs),
                "{failures} failures"
            );
        }
    }

    #[test]
    fn decide_among_stops_early_and_rotates() {
        let nodes: Vec<NodeSnapshot> = (0..10)
            .map(|i| node(&format!("n{i}"), true, (1000, 1 << 30, 10), (0, 0, 0)))
            .collect();
        let pod = PodRequest::default();
        // (start, enough, decision, examined): equal scores, so the first name examined wins.
        for (start, enough, want, examined) in [
            (0, 10, "n0", 10),
            (0, 3, "n0", 3),
            (4, 3, "n4", 3),
            (8, 3, "n0", 3),
            (13, 2, "n3", 2),
        ] {
            let (d, n) = decide_among(&pod, &nodes, start, enough);
            assert_eq!(
                (d, n),
                (Decision::Bind(want.into()), examined),
                "start {start}"
            );
        }
        // Nothing fits: every node is examined and counted in the message.
        let too_big = PodRequest {
            cpu_millis: 5000,
            ..Default::default()
        };
        assert_eq!(
            decide_among(&too_big, &nodes, 7, 3),
            (
                Decision::Unschedulable("0/10 nodes are available: 10 Insufficient cpu.".into()),
                10
            )
        );
    }

    fn cache_pod(uid: &str, node: Option<&str>, phase: &str, owner: Option<&str>) -> Arc<Pod> {
        Arc::new(serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "d", "uid": uid,
                "ownerReferences": owner.map(|o| vec![serde_json::json!({"apiVersion": "apps/v1",
                    "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true})])},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}}}]},
            "status": {"phase": phase}
        }))
        .expect("a valid pod"))
    }

    #[test]
    fn take_untried_table() {
        // (uid, created at second, tried, being bound, back-off ends this many seconds from now)
        type Entry = (&'static str, i64, bool, bool, Option<i64>);
        let cases: Vec<(&str, Vec<Entry>, Vec<&str>)> = vec![
            ("nothing pending", vec![], vec![]),
            (
                "oldest first",
                vec![("b", 2, false, false, None), ("a", 1, false, false, None)],
                vec!["a", "b"],
            ),
            (
                "tried and being bound are left out",
                vec![
                    ("a", 1, true, false, None),
                    ("b", 2, false, true, None),
                    ("c", 3, false, false, Some(-1)),
                ],
                vec!["c"],
            ),
            (
                "a pod whose back-off is over goes before those still backing off",
                vec![
                    ("a", 1, false, false, Some(5)),
                    ("b", 2, false, false, None),
                ],
                vec!["b"],
            ),
            (
                "with none over, those backing off, soonest first",
                vec![
                    ("a", 1, false, false, Some(9)),
                    ("b", 2, false, false, Some(3)),
                    ("c", 3, true, false, Some(1)),
                ],
                vec!["b", "a"],
            ),
        ];
        let now = std::time::Instant::now();
        for (name, entries, want) in cases {
            let mut cache = Cache::default();
            for &(uid, created, tried, bound, backoff) in &entries {
                let mut pod = (*cache_pod(uid, None, "Pending", None)).clone();
                pod.metadata.creation_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::from_second(1_700_000_000 + created).expect("a time"),
                    ));
                let not_before = backoff.map(|s| {
                    if s >= 0 {
                        now + Duration::from_secs(s as u64)
                    } else {
                        now - Duration::from_secs(s.unsigned_abs())
                    }
                });
                cache.pending.insert(
                    uid.to_string(),
                    Waiting {
                        pod: Arc::new(pod),
                        tried,
                        failures: 0,
                        not_before,
                        reported: None,
                    },
                );
                if bound {
                    cache.assumed.insert(uid.to_string());
                }
            }
            let got: Vec<String> = cache
                .take_untried(now)
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            assert_eq!(got, want, "{name}");
            for uid in &want {
                assert!(cache.pending[*uid].tried, "{name}: {uid} is marked tried");
            }
            // Taken once, not again until something makes them worth a try.
            let again: Vec<String> = cache
                .take_untried(now)
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            assert!(
                again.iter().all(|uid| !want.contains(&uid.as_str())),
                "{name}: {again:?}"
            );
        }
    }

    #[test]
    fn same_feasibility_table() {
        let base = PodRequest {
            cpu_millis: 100,
            memory: 1 << 20,
            node_selector: [("k".to_string(), "v".to_string())].into(),
            tolerations: vec![Toleration {
                key: Some("t".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }],
            ..PodRequest::default()
        };
        let spread = Spread {
            topology_key: "kubernetes.io/hostname".into(),
            max_skew: 1,
            hard: true,
            per_node: HashMap::new(),
        };
        // (change to the second pod, filtered alike)
        let cases: Vec<(&str, PodRequest, bool)> = vec![
            ("nothing", base.clone(), true),
            (
                "its owner's pods (a score)",
                PodRequest {
                    siblings: [("n".to_string(), 3)].into(),
                    ..base.clone()
                },
                true,
            ),
            (
                "preferred affinity (a score)",
                PodRequest {
                    preferred_affinity: vec![PreferredSchedulingTerm::default()],
                    ..base.clone()
                },
                true,
            ),
            (
                "cpu",
                PodRequest {
                    cpu_millis: 200,
                    ..base.clone()
                },
                false,
            ),
            (
                "memory",
                PodRequest {
                    memory: 2 << 20,
                    ..base.clone()
                },
                false,
            ),
            (
                "nodeSelector",
                PodRequest {
                    node_selector: BTreeMap::new(),
                    ..base.clone()
                },
                false,
            ),
            (
                "tolerations",
                PodRequest {
                    tolerations: Vec::new(),
                    ..base.clone()
                },
                false,
            ),
            (
                "required affinity",
                PodRequest {
                    required_affinity: Some(NodeSelector::default()),
                    ..base.clone()
                },
                false,
            ),
            (
                "a spread constraint",
                PodRequest {
                    spread: vec![spread],
                    ..base.clone()
                },
                false,
            ),
        ];
        for (what, other, alike) in cases {
            assert_eq!(same_feasibility(&base, &other), alike, "{what}");
            assert_eq!(same_feasibility(&other, &base), alike, "{what}, swapped");
        }
    }

    #[test]
    fn pending_pod_updates_table() {
        let base = serde_json::json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "p", "resourceVersion": "1",
                "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"}
        });
        // (change, whether the pod is worth another try)
        let cases: [(&str, &str, serde_json::Value, bool); 8] = [
            (
                "the scheduler's report",
                "/status",
                serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                    "status": "False", "reason": "Unschedulable"}]}),
                false,
            ),
            (
                "a new resourceVersion",
                "/metadata/resourceVersion",
                serde_json::json!("2"),
                false,
            ),
            (
                "managedFields",
                "/metadata/managedFields",
                serde_json::json!([{"manager": "m", "operation": "Update"}]),
                false,
            ),
            (
                "a finalizer",
                "/metadata/finalizers",
                serde_json::json!(["f"]),
                false,
            ),
            (
                "a label",
                "/metadata/labels",
                serde_json::json!({"app": "b"}),
                true,
            ),
            (
                "an annotation",
                "/metadata/annotations",
                serde_json::json!({"k": "v"}),
                true,
            ),
            (
                "a toleration",
                "/spec/tolerations",
                serde_json::json!([{"key": "k", "operator": "Exists"}]),
                true,
            ),
            (
                "a nodeSelector",
                "/spec/nodeSelector",
                serde_json::json!({"k": "v"}),
                true,
            ),
        ];
        for (what, at, value, retried) in cases {
            let mut c = Cache::default();
            let pod: Pod = serde_json::from_value(base.clone()).expect("a valid pod");
            assert!(
                c.applied(Arc::new(pod)),
                "{what}: a new pending pod is tried"
            );
            if let Some(w) = c.pending.get_mut("p") {
                w.tried = true;
            }
            let mut changed = base.clone();
            let (parent, key) = at.rsplit_once('/').expect("a path");
            let target = if parent.is_empty() {
                &mut changed
            } else {
                changed.pointer_mut(parent).expect("the parent exists")
            };
            target[key] = value;
            let pod = Arc::new(serde_json::from_value::<Pod>(changed).expect("a valid pod"));
            assert_eq!(c.applied(Arc::clone(&pod)), retried, "{what}: pass wanted");
            let w = c.pending.get("p").expect("still pending");
            assert_eq!(!w.tried, retried, "{what}: worth another try");
            assert!(Arc::ptr_eq(&w.pod, &pod), "{what}: the latest pod is kept");
        }
    }

    #[test]
    fn cache_follows_the_watch() {
        let node_obj = |name: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(serde_json::json!({"metadata": {"name": name},
                    "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                        "conditions": [{"type": "Ready", "status": "True"}]}}))
                .expect("a valid node"),
            )
        };
        let mut c = Cache::default();
        c.set_nodes(&[node_obj("b"), node_obj("a")]);
        assert_eq!(c.nodes[0].name, "a", "nodes are kept in name order");
        let used = |c: &Cache, n: usize| c.nodes[n].requested;
        // (step, change, whether a pass may now bind something, a's and b's requests, pending)
        type Step = (&'static str, Box<dyn Fn(&mut Cache) -> bool>);
        type Used = (i64, i64, i64);
        let steps: Vec<(Step, bool, Used, Used, usize)> = vec![
            (
                (
                    "pending pod",
                    Box::new(|c| c.applied(cache_pod("p1", None, "Pending", Some("rs1")))),
                ),
                true,
                (0, 0, 0),
                (0, 0, 0),
                1,
            ),
            (
                (
                    "bound pod",
                    Box::new(|c| c.applied(cache_pod("p2", Some("a"), "Running", Some("rs1")))),
                ),
                false,
                (100, 1 << 20, 1),
                (0, 0, 0),
                1,
            ),
            (
                (
                    "p1 bound",
                    Box::new(|c| c.applied(cache_pod("p1", Some("b"), "Pending", Some("rs1")))),
                ),
                false,
                (100, 1 << 20, 1),
                (100, 1 << 20, 1),
                0,
            ),
            (
                (
                    "p2 again",
                    Box::new(|c| c.applied(cache_pod("p2", Some("a"), "Running", Some("rs1")))),
                ),
                false,
                (100, 1 << 20, 1),
                (100, 1 << 20, 1),
                0,
            ),
            (
                (
                    "p2 finished",
                    Box::new(|c| c.applied(cache_pod("p2", Some("a"), "Succeeded", Some("rs1")))),
                ),
                true,
                (0, 0, 0),
                (100, 1 << 20, 1),
                0,
            ),
            (
                (
                    "p1 deleted",
                    Box::new(|c| c.deleted(&cache_pod("p1", Some("b"), "Running", Some("rs1")))),
                ),
                true,
                (0, 0, 0),
                (0, 0, 0),
                0,
            ),
            (
                (
                    "unknown pod deleted",
                    Box::new(|c| c.deleted(&cache_pod("p9", None, "Pending", None))),
                ),
                false,
                (0, 0, 0),
                (0, 0, 0),
                0,
            ),
        ];
        for ((what, change), relevant, a, b, pending) in steps {
            assert_eq!(change(&mut c), relevant, "{what}: relevant");
            assert_eq!((used(&c, 0), used(&c, 1)), (a, b), "{what}: requests");
            assert_eq!(c.pending.len(), pending, "{what}: pending");
        }
        assert!(c.by_owner.is_empty(), "owner counts go with the pods");

        // An assumed pod survives a relist that still shows it pending, and counts once.
        c.applied(cache_pod("p3", None, "Pending", Some("rs1")));
        c.place(
            "p3",
            Placed {
                node: "b".into(),
                cpu_millis: 100,
                memory: 1 << 20,
                owner: Some("rs1".into()),
            },
        );
        c.assumed.insert("p3".into());
        let listed = vec![cache_pod("p3", None, "Pending", Some("rs1"))];
        c.resync(&listed);
        assert_eq!(used(&c, 1), (100, 1 << 20, 1));
        assert!(c.assumed.contains("p3"));
        assert_eq!(c.by_owner["rs1"]["b"], 1);
        // The watch shows the binding: no longer assumed, still counted once.
        c.applied(cache_pod("p3", Some("b"), "Pending", Some("rs1")));
        assert!(c.assumed.is_empty());
        assert_eq!(used(&c, 1), (100, 1 << 20, 1));
        // A node change recounts from the placed pods.
        c.set_nodes(&[node_obj("a"), node_obj("b"), node_obj("c")]);
        assert_eq!(used(&c, 1), (100, 1 << 20, 1));
    }

    #[test]
    fn node_changes_update_one_entry() {
        fn node(name: &str, heartbeat: &str, labels: serde_json::Value, ready: &str) -> Node {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": ready,
                        "lastHeartbeatTime": heartbeat}]}}),
            )
            .expect("a valid node")
        }
        const T1: &str = "2026-11-29T00:00:00Z";
        const T2: &str = "2026-11-29T00:00:10Z";
        let mut c = Cache::default();
        c.set_nodes(&[Arc::new(node("b", T1, json!({}), "True"))]);
        // A pod bound to a node the scheduler has not seen yet, and one pending.
        c.applied(cache_pod("p1", Some("c"), "Running", None));
        c.applied(cache_pod("p2", None, "Pending", None));
        // (step, change, whether pending pods are tried again, node names in order)
        type Step = (&'static str, Box<dyn Fn(&mut Cache) -> bool>);
        let steps: Vec<(Step, bool, &[&str])> = vec![
            (
                (
                    "heartbeat only",
                    Box::new(|c| c.node_applied(&node("b", T2, json!({}), "True"))),
                ),
                false,
                &["b"],
            ),
            (
                (
                    "new node before",
                    Box::new(|c| c.node_applied(&node("a", T1, json!({}), "True"))),
                ),
                true,
                &["a", "b"],
            ),
            (
                (
                    "new node after, with a bound pod",
                    Box::new(|c| c.node_applied(&node("c", T1, json!({}), "True"))),
                ),
                true,
                &["a", "b", "c"],
            ),
            (
                (
                    "label added",
                    Box::new(|c| c.node_applied(&node("b", T2, json!({"disk": "ssd"}), "True"))),
                ),
                true,
                &["a", "b", "c"],
            ),
            (
                (
                    "not ready",
                    Box::new(|c| c.node_applied(&node("a", T2, json!({}), "False"))),
                ),
                true,
                &["a", "b", "c"],
            ),
            (
                (
                    "deleted",
                    Box::new(|c| {
                        c.node_deleted("a");
                        false
                    }),
                ),
                false,
                &["b", "c"],
            ),
            (
                (
                    "deleted, unknown",
                    Box::new(|c| {
                        c.node_deleted("x");
                        false
                    }),
                ),
                false,
                &["b", "c"],
            ),
        ];
        for ((step, change), retried, names) in steps {
            for w in c.pending.values_mut() {
                w.tried = true;
            }
            assert_eq!(change(&mut c), retried, "{step}");
            assert_eq!(
                !c.pending["p2"].tried, retried,
                "{step}: pending pod tried again"
            );
            let got: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(got, names, "{step}");
            for (i, n) in c.nodes.iter().enumerate() {
                assert_eq!(
                    c.index.get(&n.name),
                    Some(&i),
                    "{step}: index of {}",
                    n.name
                );
            }
            assert_eq!(c.index.len(), c.nodes.len(), "{step}");
            let on_c = c.nodes.iter().find(|n| n.name == "c").map(|n| n.requested);
            if names.contains(&"c") {
                assert_eq!(
                    on_c,
                    Some((100, 1 << 20, 1)),
                    "{step}: the pod bound to c counts"
                );
            }
        }
        assert_eq!(
            c.nodes[0].labels.get("disk").map(String::as_str),
            Some("ssd")
        );
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
