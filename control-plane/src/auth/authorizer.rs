//! The authorizer every request passes: RBAC over an in-memory policy kept current by one store
//! watch (as kube-apiserver's RBAC authorizer reads informer caches), so a decision costs no
//! store read.
//!
//! Invariants: the policy reflects the store up to [`Authorizer::revision`]; a request that would
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

/// How long a denial waits for the policy to reach the revision its request arrived at.
const CATCH_UP: Duration = Duration::from_secs(2);

/// RBAC decisions over a policy that follows the store.
pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
    revision: tokio::sync::watch::Sender<u64>,
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

    /// The policy once it reflects at least `revision` (or after [`CATCH_UP`], as it is).
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
        let decision = self.policy().allows(user, attrs);
        if decision.is_some() || self.revision() >= revision {
            return decision;
        }
        self.policy_at(revision).await.allows(user, attrs)
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
        for resource in [ROLES, CLUSTER_ROLES, BINDINGS, CLUSTER_BINDINGS] {
            for o in store.list(resource, None).await?.objects {
                objects.apply(&Event {
                    kind: EventKind::Added,
                    object: o,
                    previous: None,
                    memo: Default::default(),
                });
            }
        }
        let mut changes = store.watch(None, from).await?;
        self.publish(objects.policy(), from);
        loop {
            let first = changes.next().await?;
            let mut changed = objects.apply(&first);
            let mut last = first.object.revision;
            use futures::FutureExt;
            while let Some(next) = changes.next().now_or_never() {
                let event = next?;
                changed |= objects.apply(&event);
                last = event.object.revision;
            }
            if changed {
                self.publish(objects.policy(), last);
            } else {
                self.revision.send_replace(last);
            }
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
