//! The built-in controllers (ReplicaSet, Deployment), run in the server process as API clients
//! like any other: they read through watch caches and write through the API server, never the
//! store. Each is a kube-rs `Controller` (level-triggered, by key, never two reconciles of one
//! key at once); they share one pod watch ([`PodInformer`]) instead of one each.
//!
//! Invariants: a controller acts on what its caches show plus what it is still waiting to see
//! ([`Expectations`]), so a slow watch never makes it create or delete twice.

pub mod clusterroles;
pub mod cronjob;
pub mod csrapproving;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod history;
pub mod hpa;
pub mod ingress;
pub mod job;
pub mod namespaces;
pub mod nodelifecycle;
pub mod quota;
pub mod replicaset;
pub mod statefulset;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a controller's reconcile can fail with (it is retried with a back-off).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// An object the controller reads is malformed.
    #[error("{0}")]
    Invalid(String),
    /// JSON (de)serialisation of an object.
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// One watch of all pods, shared by the controllers and the scheduler: a cache to read and every
/// change (deletions included) for each subscriber, shared (one decoded pod, never copied).
#[derive(Clone)]
pub struct PodInformer {
    /// Every pod, as last seen.
    pub store: Store<Pod>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<PodChange>>>>,
}

/// A change the pod watch saw (the store already shows it).
#[derive(Clone, Debug)]
pub enum PodChange {
    /// Created or updated (or listed again after a relist).
    Applied(Arc<Pod>),
    /// Deleted; its last state.
    Deleted(Arc<Pod>),
    /// A relist finished: anything may have changed.
    Resynced,
}

impl PodInformer {
    /// Start watching pods until `stop`.
    pub fn start(client: kube::Client, stop: CancellationToken) -> PodInformer {
        let (store, writer) = reflector::store();
        let informer = PodInformer {
            store,
            subscribers: Arc::default(),
        };
        let subscribers = informer.subscribers.clone();
        let pods: Api<Pod> = Api::all(client);
        let events = reflector::reflector(writer, watcher(pods, watcher::Config::default()))
            .default_backoff()
            .for_each(move |ev| {
                let changed = match ev {
                    Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                        Some(PodChange::Applied(Arc::new(p)))
                    }
                    Ok(watcher::Event::Delete(p)) => Some(PodChange::Deleted(Arc::new(p))),
                    Ok(watcher::Event::InitDone) => Some(PodChange::Resynced),
                    _ => None,
                };
                if let (Some(c), Ok(mut subs)) = (changed, subscribers.lock()) {
                    subs.retain(|s| s.send(c.clone()).is_ok());
                }
                futures::future::ready(())
            });
        tokio::spawn(async move {
            tokio::select! {
                _ = events => {}
                _ = stop.cancelled() => {}
            }
        });
        informer
    }

    /// Every pod change from now on, as a shared stream a `Controller` can own or watch.
    pub fn subscribe(&self) -> impl futures::Stream<Item = Arc<Pod>> {
        self.changes().filter_map(|c| {
            futures::future::ready(match c {
                PodChange::Applied(p) | PodChange::Deleted(p) => Some(p),
                PodChange::Resynced => None,
            })
        })
    }

    /// Every change from now on, with its kind.
    pub fn changes(&self) -> impl futures::Stream<Item = PodChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        tokio_stream_from(rx)
    }

    /// The pods of one namespace.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.store
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
            .collect()
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Pods a controller created or deleted and has not seen so in its cache yet, by owner key.
/// While some are outstanding the owner is not managed again (only its status is written); an
/// expectation older than [`EXPECTATION_TTL`] is dropped, as kube-controller-manager does.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Instant,
}

/// How long a controller waits to see its own writes before acting again anyway.
pub const EXPECTATION_TTL: Duration = Duration::from_secs(30);

impl Expectations {
    /// Expect these pods (by name) to appear and these (by uid) to go or be marked deleted.
    pub fn expect(&self, key: &str, creates: Vec<String>, deletes: Vec<String>) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            let e = m.entry(key.to_string()).or_insert_with(|| Pending {
                creates: HashSet::new(),
                deletes: HashSet::new(),
                since: Instant::now(),
            });
            e.creates.extend(creates);
            e.deletes.extend(deletes);
            e.since = Instant::now();
        }
    }

    /// A create that failed will never be seen.
    pub fn forget_create(&self, key: &str, name: &str) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(e) = m.get_mut(key) {
                e.creates.remove(name);
            }
        }
    }

    /// Has the cache (`pods`, the owner's namespace) caught up with what `key` did?
    pub fn satisfied(&self, key: &str, pods: &[Arc<Pod>]) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return true;
        };
        let Some(e) = m.get_mut(key) else {
            return true;
        };
        e.creates.retain(|name| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        });
        e.deletes.retain(|uid| {
            pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            })
        });
        let done =
            (e.creates.is_empty() && e.deletes.is_empty()) || e.since.elapsed() > EXPECTATION_TTL;
        if done {
            m.remove(key);
        }
        done
    }
}

/// What the controllers need to know of the cluster.
#[derive(Clone)]
pub struct ControllerConfig {
    /// How long a node may go without renewing its Lease before it is marked unreachable.
    pub node_grace: Duration,
    /// The cluster CA (PEM), published in every namespace.
    pub ca_pem: String,
    /// The cluster CA's key (PEM), which signs approved client certificate requests.
    pub ca_key_pem: String,
    /// The longest validity of a signed certificate.
    pub signing_duration: Duration,
    /// How often every HorizontalPodAutoscaler is synced.
    pub hpa_sync: Duration,
}

/// Start the controllers; they stop with `stop` (the handle ends when they have).
pub fn run(
    client: kube::Client,
    pods: PodInformer,
    stop: CancellationToken,
    config: ControllerConfig,
) -> tokio::task::JoinHandle<()> {
    let node_grace = config.node_grace;
    let rs = replicaset::run(client.clone(), pods.clone());
    let jobs = job::run(client.clone(), pods.clone());
    let nodes = nodelifecycle::run(client.clone(), pods.clone(), node_grace);
    let daemons = daemonset::run(client.clone(), pods.clone());
    let crons = cronjob::run(client.clone());
    let sets = statefulset::run(client.clone(), pods.clone());
    let endpoints = endpoints::run(client.clone(), pods.clone());
    let ingresses = ingress::run(client.clone());
    let approvals = csrapproving::run(client.clone());
    let quotas = quota::run(client.clone(), pods.clone());
    let csrs = csrsigning::run(
        client.clone(),
        config.ca_pem.clone(),
        config.ca_key_pem,
        config.signing_duration,
    );
    let namespaces = namespaces::run(client.clone(), config.ca_pem);
    let budgets = disruption::run(client.clone(), pods.clone());
    let claims = volumes::run(client.clone(), pods.clone());
    let roles = clusterroles::run(client.clone());
    let hpas = hpa::run(client.clone(), pods.clone(), config.hpa_sync);
    let deploy = deployment::run(client);
    tokio::spawn(async move {
        tokio::select! {
            _ = rs => {}
            _ = jobs => {}
            _ = nodes => {}
            _ = daemons => {}
            _ = crons => {}
            _ = sets => {}
            _ = deploy => {}
            _ = endpoints => {}
            _ = ingresses => {}
            _ = namespaces => {}
            _ = budgets => {}
            _ = claims => {}
            _ = roles => {}
            _ = csrs => {}
            _ = approvals => {}
            _ = quotas => {}
            _ = hpas => {}
            _ = stop.cancelled() => {}
        }
    })
}

/// Every controller's error policy: log, then retry after `RETRY`.
pub fn retry<K: kube::Resource<DynamicType = ()>, C>(
    obj: Arc<K>,
    e: &ControllerError,
    _: Arc<C>,
) -> kube::runtime::controller::Action {
    tracing::warn!(kind = %K::kind(&()), name = ?obj.meta().name, error = %e, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(RETRY)
}

/// How long a failed reconcile waits before it runs again.
pub const RETRY: Duration = Duration::from_secs(2);

/// The objects of `store` in a pod's namespace: what a controller whose objects select pods
/// (Services, disruption budgets) reconciles when a pod changes.
pub fn in_pod_namespace<K>(
    store: &kube::runtime::reflector::Store<K>,
    pod: &Pod,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace == pod.metadata.namespace)
        .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The pods among `pods` that the object with `uid` controls.
pub fn owned_by(pods: &[Arc<Pod>], uid: &str) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid))
        .cloned()
        .collect()
}

/// A write whose object is already gone did what it had to.
pub fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Is the pod running and Ready, and since when?
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0)
        })
}

/// Not finished and not being deleted: a pod that counts as a replica.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The uid of the object that controls `pod` (its controller ownerReference), if any.
pub fn controller_uid(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}
