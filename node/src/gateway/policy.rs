//! NetworkPolicy enforcement where the gateway routes: the cluster's policies compiled from a
//! watch (`netpolicy::PolicySet`), and the pods and namespaces they select, watched only once
//! the first policy exists (a cluster without policies pays nothing). The gateway that picks
//! an endpoint decides, for the caller it knows (a guest of this node, or a client outside the
//! cluster by address); a request another node's gateway forwards was decided there.
//!
//! Invariants: a pod the view does not know yet is denied whenever a policy could isolate it
//! or its caller (what is unknown denies); a denial is answered at once (403) and recorded as
//! an event, on the calling pod or, for clients outside the cluster, on the Service they
//! called (without their address, so distinct clients do not multiply events).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{ObjectRef, Store};
use skiff_common::events::{EventType, Recorder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::netpolicy::{Denial, Labels, Party, PodInfo, PolicySet};

/// Event reason of a call a NetworkPolicy refused.
pub const DENIED_REASON: &str = "NetworkPolicyDenied";

/// A pod of this node making a call (an outbound request of one of its guests).
pub struct Caller {
    /// The pod when its container started (its current labels come from the watch).
    pub pod: PodInfo,
    /// Where its denials go (event reason, message): the pod's event recorder.
    pub denied: tokio::sync::mpsc::UnboundedSender<(&'static str, String)>,
}

/// Who a routed request comes from, for policy.
#[derive(Clone)]
pub enum From {
    /// Another node's gateway, which decided already.
    Decided,
    /// A guest of this node.
    Pod(Arc<Caller>),
    /// A client outside the cluster.
    Outside(IpAddr),
}

/// The caller of a request, resolved for policy.
enum Resolved {
    Pod(PodInfo),
    Outside(IpAddr),
}

/// Decides one request's calls (see [`Enforcer::decider`]).
pub struct Decider<'a> {
    enforcer: &'a Enforcer,
    set: Arc<PolicySet>,
    caller: Resolved,
}

impl Decider<'_> {
    /// May the caller call pod `to` (namespace, name) on `port`?
    pub fn check(&self, to: &(String, String), port: u16) -> Result<(), Denial> {
        let Some(dst) = self.enforcer.pod(&to.0, &to.1) else {
            return Err(Denial {
                policies: String::new(),
                message: format!(
                    "network policy: pod {}/{} is not known to this node's policy view yet; retry",
                    to.0, to.1
                ),
            });
        };
        let labels = |ns: &str| self.enforcer.namespace_labels(ns);
        let from = match &self.caller {
            Resolved::Pod(p) => Party::Pod(p),
            Resolved::Outside(ip) => Party::Outside(*ip),
        };
        self.set.check(from, Party::Pod(&dst), port, &labels)
    }
}

/// The policy view of one gateway.
pub struct Enforcer {
    set: RwLock<Arc<PolicySet>>,
    pods: OnceLock<Store<Pod>>,
    namespaces: OnceLock<Store<Namespace>>,
    recorder: Recorder,
}

impl Enforcer {
    /// An empty view recording outside denials with `recorder`.
    pub fn new(recorder: Recorder) -> Enforcer {
        Enforcer {
            set: RwLock::new(Arc::new(PolicySet::default())),
            pods: OnceLock::new(),
            namespaces: OnceLock::new(),
            recorder,
        }
    }

    fn set(&self) -> Arc<PolicySet> {
        self.set.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// What decides calls from `from` to pods of `namespace`, or None when no policy could
    /// refuse one (the fast path: a cluster without policies in either namespace). The policy
    /// set and the caller are looked up once, for all the endpoints a request may go to.
    pub fn decider(&self, from: &From, namespace: &str) -> Option<Decider<'_>> {
        let set = self.set();
        let applies = match from {
            From::Decided => false,
            From::Outside(_) => set.has_policies_in(namespace),
            From::Pod(c) => set.has_policies_in(namespace) || set.has_policies_in(&c.pod.namespace),
        };
        if !applies {
            return None;
        }
        let caller = match from {
            From::Pod(c) => Resolved::Pod(
                self.pod(&c.pod.namespace, &c.pod.name)
                    .unwrap_or_else(|| c.pod.clone()),
            ),
            From::Outside(ip) => Resolved::Outside(*ip),
            From::Decided => return None,
        };
        Some(Decider {
            enforcer: self,
            set,
            caller,
        })
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<PodInfo> {
        let pod = self
            .pods
            .get()?
            .get(&ObjectRef::new(name).within(namespace))?;
        Some(PodInfo::of(&pod))
    }

    fn namespace_labels(&self, namespace: &str) -> Option<Labels> {
        let ns = self.namespaces.get()?.get(&ObjectRef::new(namespace))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }

    /// May `caller` reach `addr`, outside the cluster, on `port` (its egress policies)?
    pub fn check_outside(&self, caller: &PodInfo, addr: IpAddr, port: u16) -> Result<(), Denial> {
        let set = self.set();
        if !set.has_policies_in(&caller.namespace) {
            return Ok(());
        }
        let src = self
            .pod(&caller.namespace, &caller.name)
            .unwrap_or_else(|| caller.clone());
        let labels = |ns: &str| self.namespace_labels(ns);
        set.check(Party::Pod(&src), Party::Outside(addr), port, &labels)
    }

    /// Record a denial: on the calling pod, or on the Service an outside client called.
    pub fn report(
        &self,
        from: &From,
        service: Option<(&str, &str)>,
        to: &(String, String),
        d: &Denial,
    ) {
        match from {
            From::Pod(c) => {
                let _ = c.denied.send((DENIED_REASON, d.message.clone()));
            }
            From::Outside(_) => {
                let Some((ns, name)) = service else { return };
                let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    ..Default::default()
                };
                let object = skiff_common::events::object_ref(&meta, "Service", "v1");
                let message = format!(
                    "a call from outside the cluster to pod {}/{} was denied by NetworkPolicy {}",
                    to.0, to.1, d.policies
                );
                let recorder = self.recorder.clone();
                tokio::spawn(async move {
                    recorder
                        .record(&object, EventType::Warning, DENIED_REASON, &message)
                        .await;
                });
            }
            From::Decided => {}
        }
    }

    /// Keep the view current until `stop`: policies always, pods and namespaces from the
    /// first policy on.
    pub async fn watch(self: Arc<Self>, client: kube::Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let policies: Store<NetworkPolicy> = super::reflect(&client, &changed, &stop, |_| {});
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = stop.cancelled() => return,
            }
            let set = PolicySet::build(&policies.state());
            if !set.is_empty() && self.pods.get().is_none() {
                let quiet = Arc::new(Notify::new());
                // Only what selectors and named ports need is kept of each pod.
                let pods = super::reflect::<Pod>(&client, &quiet, &stop, |p| {
                    p.status = None;
                    p.metadata.managed_fields = None;
                    p.metadata.annotations = None;
                    if let Some(spec) = p.spec.as_mut() {
                        spec.volumes = None;
                        spec.init_containers = None;
                        for c in &mut spec.containers {
                            c.env = None;
                            c.args = None;
                            c.command = None;
                            c.volume_mounts = None;
                        }
                    }
                });
                let namespaces = super::reflect::<Namespace>(&client, &quiet, &stop, |n| {
                    n.metadata.managed_fields = None;
                });
                let _ = self.pods.set(pods);
                let _ = self.namespaces.set(namespaces);
            }
            if let Ok(mut s) = self.set.write() {
                *s = Arc::new(set);
            }
        }
    }
}
