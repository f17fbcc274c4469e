//! The authorizer every request passes: RBAC over an in-memory policy kept current by one store
//! watch (as kube-apiserver's RBAC authorizer reads informer caches), so a decision costs no
//! store read.
//!
//! Nodes (`system:node:NAME` in `system:nodes`) are also decided as Kubernetes' Node authorizer
//! does: a node may get a Secret or ConfigMap only while a pod bound to it refers to it (the
//! graph of bound pods is kept from the same watch); everything else a node does is RBAC's
//! (the `system:node` role) and NodeRestriction's (`api::registry::noderestriction`).
//!
//! Invariants: the policy and the graph reflect the store up to [`Authorizer::revision`]; a request that would
//! be denied by a policy older than the store's revision when it arrived is decided again once the
//! policy has caught up (bounded wait), so a binding created before a request always counts;
//! members of `system:masters` never wait for the policy.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::rbac::{Allowed, Attributes, Policy, UserInfo};
use crate::store::{Event, EventKind, Storage, StoreError};

const ROLES: &str = "rbac.authorization.k8s.io/roles";
const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
const BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";
const CLUSTER_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";
const PODS: &str = "pods";

/// How long a denial waits for the policy to reach the revision its request arrived at.
const CATCH_UP: Duration = Duration::from_secs(2);

/// RBAC decisions over a policy that follows the store.
pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
    graph: RwLock<NodeGraph>,
    revision: tokio::sync::watch::Sender<u64>,
}

/// What each node's bound pods refer to.
#[derive(Default)]
struct NodeGraph {
    /// Pod (namespace, name) → its node and the objects it refers to.
    pods: HashMap<(String, String), (String, Vec<Ref>)>,
    /// Node → referenced object → how many of its pods refer to it.
    grants: HashMap<String, HashMap<Ref, u32>>,
}

/// An object a pod refers to: (resource, namespace, name).
type Ref = (&'static str, String, String);

impl NodeGraph {
    /// Take a pod's change into account.
    fn apply(&mut self, event: &Event) {
        let key = &event.object.key;
        let k = (key.namespace.clone(), key.name.clone());
        if let Some((node, refs)) = self.pods.remove(&k) {
            if let Some(g) = self.grants.get_mut(&node) {
                for r in refs {
                    if let Some(n) = g.get_mut(&r) {
                        *n -= 1;
                        if *n == 0 {
                            g.remove(&r);
                        }
                    }
                }
                if g.is_empty() {
                    self.grants.remove(&node);
                }
            }
        }
        let data = &event.object.data;
        // Only bound pods matter; most writes of unbound pods are passed over unparsed.
        if event.kind == EventKind::Deleted || memchr::memmem::find(data, b"\"nodeName\"").is_none()
        {
            return;
        }
        let Ok(pod) = serde_json::from_slice::<k8s_openapi::api::core::v1::Pod>(data) else {
            return;
        };
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let (config_maps, secrets) = skiff_common::podrefs::referenced(&pod);
        let ns = key.namespace.clone();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let refs: Vec<Ref> = config_maps
            .into_iter()
            .map(|n| ("configmaps", ns.clone(), n))
            .chain(secrets.into_iter().map(|n| ("secrets", ns.clone(), n)))
            .chain(std::iter::once(("serviceaccounts", ns.clone(), account)))
            .collect();
        let g = self.grants.entry(node.clone()).or_default();
        for r in &refs {
            *g.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(k, (node, refs));
    }

    /// May `node` read the object `attrs` names (a Secret or ConfigMap), or ask for a token of
    /// it (a ServiceAccount)? Only when a pod bound to the node refers to it; which pod a
    /// token may be bound to is NodeRestriction's (`api::tokens`).
    fn allows(&self, node: &str, attrs: &Attributes) -> Option<Allowed> {
        let Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            namespace,
        } = attrs
        else {
            return None;
        };
        let readable = matches!(verb.as_str(), "get" | "list" | "watch")
            && subresource.is_empty()
            && matches!(resource.as_str(), "secrets" | "configmaps");
        let token = verb == "create" && subresource == "token" && resource == "serviceaccounts";
        if !(readable || token) || !group.is_empty() || name.is_empty() {
            return None;
        }
        let r: Ref = match resource.as_str() {
            "secrets" => ("secrets", namespace.clone(), name.clone()),
            "serviceaccounts" => ("serviceaccounts", namespace.clone(), name.clone()),
            _ => ("configmaps", namespace.clone(), name.clone()),
        };
        self.grants.get(node)?.contains_key(&r).then(|| {
            Allowed::By(format!(
                "NodeAuthorizer: {resource} {namespace}/{name} is referenced by a pod bound to node {node:?}"
            ))
        })
    }
}

/// The node a user is, if it is one (`system:node:NAME` in `system:nodes`).
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == "system:nodes")).then_some(name)
}

/// The RBAC objects, by (namespace, name).
#[derive(Default)]
struct Objects {
    roles: HashMap<(String, String), Role>,
    cluster_roles: HashMap<(String, String), ClusterRole>,
    bindings: HashMap<(String, String), RoleBinding>,
    cluster_bindings: HashMap<(String, String), ClusterRoleBinding>,
}

impl Objects {
    fn policy(&self) -> Policy {
        Policy::new(
            self.cluster_roles.values().cloned(),
            self.roles.values().cloned(),
            self.cluster_bindings.values().cloned(),
            self.bindings.values().cloned(),
        )
    }

    /// Apply a change; true when it was an RBAC object's.
    fn apply(&mut self, event: &Event) -> bool {
        let key = &event.object.key;
        let k = (key.namespace.clone(), key.name.clone());
        let deleted = event.kind == EventKind::Deleted;
        let data = &event.object.data;
        match key.resource.as_str() {
            ROLES => upsert(&mut self.roles, k, data, deleted),
            CLUSTER_ROLES => upsert(&mut self.cluster_roles, k, data, deleted),
            BINDINGS => upsert(&mut self.bindings, k, data, deleted),
            CLUSTER_BINDINGS => upsert(&mut self.cluster_bindings, k, data, deleted),
            _ => return false,
        }
        true
    }
}

fn upsert<T: DeserializeOwned>(
    map: &mut HashMap<(String, String), T>,
    key: (String, String),
    data: &[u8],
    deleted: bool,
) {
    if deleted {
        map.remove(&key);
        return;
    }
    match serde_json::from_slice(data) {
        Ok(v) => {
            map.insert(key, v);
        }
        Err(e) => {
            // Validated on the way in; an object that does not parse grants nothing.
            tracing::warn!(name = %key.1, error = %e, "unreadable RBAC object ignored");
            map.remove(&key);
        }
    }
}

impl Authorizer {
    /// An authorizer with an empty policy (only masters are allowed anything) until
    /// [`Authorizer::run`] has loaded the store.
    pub fn new() -> Arc<Authorizer> {
        Arc::new(Authorizer {
            policy: RwLock::new(Arc::new(Policy::default())),
            graph: RwLock::default(),
            revision: tokio::sync::watch::channel(0).0,
        })
    }

    /// The store revision the policy reflects.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The policy once it reflects at least `revision` (or after `CATCH_UP`, as it is).
    pub async fn policy_at(&self, revision: u64) -> Arc<Policy> {
        if self.revision() < revision {
            let mut rx = self.revision.subscribe();
            let _ = tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= revision)).await;
        }
        self.policy()
    }

    /// Decide `attrs` for `user`, whose request arrived when the store was at `revision`.
    pub async fn authorize(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        revision: u64,
    ) -> Option<Allowed> {
        if user.is_master() {
            return Some(Allowed::Masters);
        }
        let decision = self.decide(user, attrs, &self.policy());
        if decision.is_some() || self.revision() >= revision {
            return decision;
        }
        let policy = self.policy_at(revision).await;
        self.decide(user, attrs, &policy)
    }

    fn decide(&self, user: &UserInfo, attrs: &Attributes, policy: &Policy) -> Option<Allowed> {
        if let Some(node) = node_of(user) {
            let graph = match self.graph.read() {
                Ok(g) => g.allows(node, attrs),
                Err(poisoned) => poisoned.into_inner().allows(node, attrs),
            };
            if graph.is_some() {
                return graph;
            }
        }
        policy.allows(user, attrs)
    }

    /// Keep the policy current from `store` until `stop`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Storage>, stop: CancellationToken) {
        loop {
            let result = tokio::select! {
                r = self.follow(store.as_ref()) => r,
                _ = stop.cancelled() => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "RBAC policy watch ended; reloading");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Load every RBAC object, then apply each later change (a burst is applied whole before
    /// the policy is rebuilt once).
    async fn follow(&self, store: &dyn Storage) -> Result<(), StoreError> {
        let from = store.revision();
        let mut objects = Objects::default();
        let mut graph = NodeGraph::default();
        for resource in [ROLES, CLUSTER_ROLES, BINDINGS, CLUSTER_BINDINGS, PODS] {
            for o in store.list(resource, None).await?.objects {
                let event = Event {
                    kind: EventKind::Added,
                    object: o,
                    previous: None,
                    memo: Default::default(),
                };
                if resource == PODS {
                    graph.apply(&event);
                } else {
                    objects.apply(&event);
                }
            }
        }
        self.with_graph(|g| *g = graph);
        let mut changes = store.watch(None, from).await?;
        self.publish(objects.policy(), from);
        loop {
            let mut batch = vec![changes.next().await?];
            use futures::FutureExt;
            while let Some(next) = changes.next().now_or_never() {
                batch.push(next?);
            }
            let last = batch.last().map_or(from, |e| e.object.revision);
            let mut changed = false;
            for event in &batch {
                changed |= objects.apply(event);
            }
            if batch.iter().any(|e| e.object.key.resource == PODS) {
                self.with_graph(|g| {
                    for e in batch.iter().filter(|e| e.object.key.resource == PODS) {
                        g.apply(e);
                    }
                });
            }
            if changed {
                self.publish(objects.policy(), last);
            } else {
                self.revision.send_replace(last);
            }
        }
    }

    fn with_graph(&self, f: impl FnOnce(&mut NodeGraph)) {
        match self.graph.write() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn publish(&self, policy: Policy, revision: u64) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
        self.revision.send_replace(revision);
    }
}
