//! The node's HTTP gateway: one hyper listener per node (plus one per NodePort) that serves the
//! `wasi:http` pods of this node, a fresh instance per request, and routes by host name to
//! Services (`<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc[.cluster.local]`), Ingress rules and pods
//! (`<pod>.<ns>.pod`), proxying to the gateway of another node when the chosen endpoint lives
//! there. The routing table is rebuilt from watches of Services, EndpointSlices, Ingresses and
//! Nodes; components' outbound HTTP goes through [`Outbound`](crate::egress::Outbound), which allows in-cluster names
//! and the hosts a pod allows, and denies the rest.
//!
//! Invariants: a request never reaches a pod that is not ready unless no ready endpoint is
//! left (then serving, terminating endpoints take it, as kube-proxy does); a request without a
//! body whose endpoint vanished under it is retried on another endpoint; a guest trap, timeout
//! or overload is an HTTP error answer, never a crash of the node; a call a NetworkPolicy
//! refuses (`policy`) never reaches the callee.

mod apiserver;
mod policy;
mod zero;

pub use apiserver::{ApiServer, ApiServerError};
pub use policy::{Caller, DENIED_REASON};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use wasmtime::Store as WasmStore;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpView;

use crate::runtime::{CpuShare, MemoryCap, P2State, RunSpec};

/// Bodies through the gateway (the same type `wasi:http` uses).
pub type Body = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

pub use skiff_common::GATEWAY_PORT_ANNOTATION;
/// Pod annotation: requests one HTTP container serves at once (default
/// [`DEFAULT_CONCURRENCY`]); more wait for a slot until the request timeout.
pub const CONCURRENCY_ANNOTATION: &str = "skiff.dev/max-concurrent-requests";
/// Pod annotation: seconds one request may take (default [`DEFAULT_TIMEOUT`]).
pub const TIMEOUT_ANNOTATION: &str = "skiff.dev/request-timeout-seconds";
/// Requests one HTTP container serves at once unless its pod says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 1000;
/// How long one request may take unless its pod says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most concurrent requests a pod's annotation may ask for.
pub const MAX_CONCURRENCY: usize = 10_000;
/// The longest request timeout a pod's annotation may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// A terminating HTTP container stops once no request came for this long (or its grace period ends).
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);
/// Who sent a request to [`Gateway::route`].
#[derive(Clone)]
pub enum Origin {
    /// A client of a listener (outside the cluster, or another node's gateway, which proves
    /// itself with the peer header).
    Listener,
    /// A guest's outbound request on this node, routed in process.
    Pod(Arc<Caller>),
}

/// What the gateway needs to tell its peers from outside clients and to keep guests off the
/// node's own addresses.
#[derive(Clone, Debug, Default)]
pub struct GatewaySecurity {
    /// The value other nodes' gateways send in `skiff_common::token::GATEWAY_PEER_HEADER`.
    pub peer_secret: String,
    /// The node's and control plane's addresses, never reachable by a pod's outbound HTTP.
    pub protected: Vec<IpAddr>,
    /// Hosts the admin lets pods reach although they resolve to protected addresses, when a
    /// pod's allow-list names them exactly (`--allow-local-outbound`).
    pub local_allowed: Vec<String>,
    /// Where guests' calls to `kubernetes.default.svc` go.
    pub api_server: Option<Arc<ApiServer>>,
}

/// Header a gateway adds when it forwards to another node's gateway (loop guard and hop count).
const HOPS_HEADER: &str = "skiff-hops";
/// Header on a gateway's own answer that the pod asked for is not served here (retry elsewhere).
const MISS_HEADER: &str = "skiff-gateway-miss";
const MAX_HOPS: u32 = 8;

/// Errors of starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listener could not be bound.
    #[error("gateway listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The gateway's runtime could not be started.
    #[error("starting the gateway's threads: {0}")]
    Runtime(std::io::Error),
}

/// The gateway's own tokio runtime: listeners, connections and the instances that answer
/// requests run on threads of their own, so a request does not wait in a run queue behind the
/// API server's and the agent's tasks (a pod start is a burst of those).
struct Serving(Option<tokio::runtime::Runtime>);

impl Drop for Serving {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused in async code; this does not block.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Threads of the gateway's runtime.
const SERVING_THREADS: usize = 2;

/// Bind a listener (blocking bind, non-blocking socket) to be registered with the runtime that
/// polls it.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Latency buckets (seconds) of `skiff_http_request_duration_seconds`.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Requests served by one HTTP container.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Answers by status class: 1xx..5xx at index 0..4.
    pub by_class: [AtomicU64; 5],
    /// Requests the guest failed (trap, timeout, no answer).
    pub errors: AtomicU64,
    /// Cumulative histogram counts per [`LATENCY_BUCKETS`] bound (time to response headers).
    pub buckets: [AtomicU64; 12],
    /// Sum of latencies in microseconds.
    pub sum_micros: AtomicU64,
    /// Requests timed.
    pub count: AtomicU64,
}

impl HttpMetrics {
    fn observe(&self, status: StatusCode, took: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A plain-text answer of the gateway itself.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The gateway's own answer that the request reached no guest (so another endpoint may take it).
fn miss(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = text(status, msg);
    r.headers_mut()
        .insert(MISS_HEADER, HeaderValue::from_static("1"));
    r
}

fn empty_body() -> Body {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// One HTTP container of a pod on this node.
pub struct Served {
    /// Namespace and name of the pod.
    pub pod: (String, String),
    /// Container name.
    pub container: String,
    /// Its `containerPort`s (name, number); none declared: it answers on any port.
    pub ports: Vec<(Option<String>, u16)>,
    pre: ProxyPre<P2State>,
    spec: RunSpec,
    slots: Arc<Semaphore>,
    timeout: Duration,
    inflight: AtomicUsize,
    idle: Notify,
    last_request: Mutex<Instant>,
    /// The pod is terminating: it takes what still reaches it, but Services prefer others.
    terminating: std::sync::atomic::AtomicBool,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<Served>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.last_request.lock() {
            *t = Instant::now();
        }
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Served {
    /// An HTTP container ready to take requests.
    pub fn new(
        pod: (String, String),
        container: String,
        ports: Vec<(Option<String>, u16)>,
        pre: ProxyPre<P2State>,
        spec: RunSpec,
        concurrency: usize,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Served {
            pod,
            container,
            ports,
            pre,
            spec,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            last_request: Mutex::new(Instant::now()),
            terminating: Default::default(),
        })
    }

    /// Does this container answer on `port` (`None`: whichever)?
    fn answers_on(&self, port: Option<u16>) -> bool {
        match port {
            None => true,
            Some(p) => self.ports.is_empty() || self.ports.iter().any(|(_, n)| *n == p),
        }
    }

    /// Resolve a probe's or Service's named port against this container's ports.
    pub fn port_named(&self, name: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name))
            .map(|(_, p)| *p)
    }

    /// The container's log is complete (it stopped serving).
    pub fn finish(&self) {
        self.spec.log.finish();
    }

    /// Stop taking part in Service routing (the pod is being deleted).
    pub fn mark_terminating(&self) {
        self.terminating.store(true, Ordering::Relaxed);
    }

    /// Wait until no request is in flight and none came for [`DRAIN_QUIET`].
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.inflight.load(Ordering::Acquire) == 0 {
                let since = self
                    .last_request
                    .lock()
                    .map(|t| t.elapsed())
                    .unwrap_or(DRAIN_QUIET);
                if since >= DRAIN_QUIET {
                    return;
                }
                tokio::time::sleep(DRAIN_QUIET - since).await;
                continue;
            }
            idle.await;
        }
    }

    /// Serve one request with a fresh instance.
    pub async fn handle(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        let began = Instant::now();
        let resp = self.handle_inner(req).await;
        self.spec.usage.http.observe(resp.status(), began.elapsed());
        resp
    }

    /// Serve a probe: as a request, but not counted in the container's request metrics (an
    /// idle service is idle, probes or not: `http_requests_per_second` scales it to zero).
    pub async fn probe(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        self.handle_inner(req).await
    }

    async fn handle_inner(self: &Arc<Self>, req: Request<Body>) -> Response<Body> {
        let (ns, name) = &self.pod;
        let permit =
            match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    self.spec.usage.http.errors.fetch_add(1, Ordering::Relaxed);
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "pod {ns}/{name}: every request slot stayed busy for {:?}",
                            self.timeout
                        ),
                    );
                }
            };
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let inflight = InFlight(self.clone());
        let wasi = match self.spec.wasi() {
            Ok(mut b) => b.build(),
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("pod {ns}/{name}: {e}"),
                )
            }
        };
        let mut store = WasmStore::new(
            self.pre.engine(),
            P2State::new(
                wasi,
                MemoryCap::new(self.spec.memory_limit, Some(self.spec.usage.clone())),
                (self.spec.outbound)(),
            ),
        );
        store.limiter(|s| s.limits_mut());
        store.set_epoch_deadline(1);
        let mut share = CpuShare::new(self.spec.cpu_millis, self.spec.usage.clone());
        store.epoch_deadline_callback(move |_| Ok(share.on_tick()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| {
                let out = store.data_mut().http().new_response_outparam(tx)?;
                Ok((req, out))
            });
        let (wreq, out) = match resources {
            Ok(x) => x,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e:#}")),
        };
        let pre = self.pre.clone();
        let timeout = self.timeout;
        let running = self.spec.usage.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let _inflight = inflight;
            let _running = running.running();
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, wreq, out)
                    .await
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    let oom = store.data().out_of_memory();
                    Err(if oom {
                        format!("out of memory (the container's memory limit): {e:#}")
                    } else {
                        format!("{e:#}")
                    })
                }
                Err(_) => Err(format!("the request took longer than {timeout:?}")),
            }
        });
        let log = self.spec.log.clone();
        let outcome = tokio::time::timeout(self.timeout, rx).await;
        match outcome {
            Ok(Ok(Ok(resp))) => {
                // The guest may still be streaming the body; note a failure there in the log.
                tokio::spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        log_line(&log, &format!("request failed: {e}"));
                    }
                });
                resp
            }
            Ok(Ok(Err(code))) => {
                self.spec.usage.http.errors.fetch_add(1, Ordering::Relaxed);
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("pod {ns}/{name} answered with an error: {code:?}"),
                )
            }
            Ok(Err(_)) => {
                self.spec.usage.http.errors.fetch_add(1, Ordering::Relaxed);
                let why = match task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "the handler returned without setting a response".into(),
                    Err(e) => e.to_string(),
                };
                log_line(&log, &format!("request failed: {why}"));
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("pod {ns}/{name} failed the request: {why}"),
                )
            }
            Err(_) => {
                task.abort();
                self.spec.usage.http.errors.fetch_add(1, Ordering::Relaxed);
                text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("pod {ns}/{name} did not answer within {:?}", self.timeout),
                )
            }
        }
    }
}

fn log_line(log: &crate::logs::LogSink, line: &str) {
    log.note(&format!("skiff: {line}"));
}

/// How a Service port names its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// By number.
    Number(u16),
    /// By name.
    Name(String),
}

/// Where a request goes: a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Namespace of the Service.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Service port (none: the Service's first port).
    pub port: Option<PortRef>,
}

/// One ready (or serving) endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Pod namespace and name.
    pub pod: (String, String),
    /// Node it runs on.
    pub node: String,
    /// Target port on the pod.
    pub port: u16,
    /// Ready (serving and not terminating).
    pub ready: bool,
    /// Serving (may be terminating).
    pub serving: bool,
}

/// One port of a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name ("" when unnamed).
    pub name: String,
    /// `port`.
    pub port: u16,
    /// `nodePort`, for NodePort Services.
    pub node_port: Option<u16>,
    /// Endpoints from the Service's EndpointSlices.
    pub endpoints: Vec<Endpoint>,
}

/// A Service as the gateway routes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoute {
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP`.
    pub client_ip_affinity: bool,
}

/// How an Ingress path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path.
    Exact,
    /// Element-wise prefix (`ImplementationSpecific` is treated as Prefix).
    Prefix,
}

/// One Ingress path rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressRule {
    /// `host` (`*.example.com` wildcards one label); none: any host.
    pub host: Option<String>,
    /// The path.
    pub path: String,
    /// How it matches.
    pub kind: PathMatch,
    /// Where it goes.
    pub backend: Backend,
}

/// The routing table: rebuilt from watches, read by every request.
#[derive(Debug, Default)]
pub struct Routes {
    /// Services by (namespace, name).
    pub services: HashMap<(String, String), ServiceRoute>,
    /// Ingress rules of every Ingress served by skiff.
    pub ingress: Vec<IngressRule>,
    /// Ingress default backends, oldest Ingress first.
    pub default_backends: Vec<Backend>,
    /// Gateway address of each node.
    pub nodes: HashMap<String, SocketAddr>,
    /// NodePort → (Service namespace, name, port).
    pub node_ports: BTreeMap<u16, Backend>,
}

/// What a host name asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostTarget {
    /// `<pod>.<ns>.pod[.cluster.local]`.
    Pod { namespace: String, name: String },
    /// A Service by a cluster name.
    Service { namespace: String, name: String },
    /// Not a cluster name (Ingress rules decide).
    Other(String),
}

/// Split `host[:port]` (an IPv6 literal keeps its brackets).
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(end) = authority.find(']') {
        let (h, rest) = authority.split_at(end + 1);
        return (h, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h, p.parse().ok())
        }
        _ => (authority, None),
    }
}

/// What `host` (no port, lower case) names, with `namespace` for one-label Service names.
/// Two labels are `<svc>.<ns>` only when such a Service exists (`exists`).
pub fn classify_host(
    host: &str,
    namespace: &str,
    exists: &dyn Fn(&str, &str) -> bool,
) -> HostTarget {
    let h = host.trim_end_matches('.');
    let h = h.strip_suffix(".cluster.local").unwrap_or(h);
    let labels: Vec<&str> = h.split('.').collect();
    match labels.as_slice() {
        [name, ns, "pod"] => HostTarget::Pod {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        [name, ns, "svc"] => HostTarget::Service {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        [name] if exists(namespace, name) => HostTarget::Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        [name, ns] if exists(ns, name) => HostTarget::Service {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        _ => HostTarget::Other(h.to_string()),
    }
}

/// Does an Ingress `Prefix` path match `path` element-wise?
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn host_matches(rule: &str, host: &str) -> bool {
    match rule.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|h| h.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => rule == host,
    }
}

/// The Ingress backend for `host` and `path`: rules of an exact host first, then wildcard
/// hosts, then host-less rules; among those the longest matching path, Exact before Prefix.
pub fn match_ingress<'a>(rules: &'a [IngressRule], host: &str, path: &str) -> Option<&'a Backend> {
    let rank = |r: &IngressRule| match &r.host {
        Some(h) if !h.starts_with("*.") => 0,
        Some(_) => 1,
        None => 2,
    };
    rules
        .iter()
        .filter(|r| r.host.as_deref().is_none_or(|h| host_matches(h, host)))
        .filter(|r| match r.kind {
            PathMatch::Exact => r.path == path,
            PathMatch::Prefix => prefix_matches(&r.path, path),
        })
        .min_by_key(|r| {
            (
                rank(r),
                std::cmp::Reverse(r.path.trim_end_matches('/').len()),
                r.kind != PathMatch::Exact,
            )
        })
        .map(|r| &r.backend)
}

/// Choose among `candidates` (indices into `eps`): for ClientIP affinity a stable hash of the
/// client's address, else the fewest requests outstanding, ties broken round robin from `turn`.
pub fn pick(
    eps: &[Endpoint],
    candidates: &[usize],
    outstanding: &dyn Fn(&Endpoint) -> usize,
    turn: usize,
    affinity: Option<IpAddr>,
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    if let Some(ip) = affinity {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut h);
        // Hash over the sorted pod names, so the choice survives reordering.
        let mut sorted: Vec<usize> = candidates.to_vec();
        sorted.sort_by(|a, b| eps[*a].pod.cmp(&eps[*b].pod));
        return Some(sorted[(h.finish() as usize) % sorted.len()]);
    }
    let n = candidates.len();
    (0..n)
        .map(|k| candidates[(turn + k) % n])
        .min_by_key(|i| outstanding(&eps[*i]))
}

/// Build the routing table from the watched objects. Ingresses whose class is neither unset
/// nor `skiff` belong to another controller and are skipped.
pub fn build_routes(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    ingresses: &[Arc<Ingress>],
    nodes: &[Arc<Node>],
) -> Routes {
    let mut routes = Routes::default();
    for s in services {
        let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
            continue;
        };
        let Some(spec) = &s.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: p.port as u16,
                node_port: p.node_port.filter(|n| *n > 0).map(|n| n as u16),
                endpoints: Vec::new(),
            })
            .collect::<Vec<_>>();
        for p in &ports {
            if let Some(np) = p.node_port {
                routes.node_ports.insert(
                    np,
                    Backend {
                        namespace: ns.clone(),
                        service: name.clone(),
                        port: Some(PortRef::Number(p.port)),
                    },
                );
            }
        }
        routes.services.insert(
            (ns.clone(), name.clone()),
            ServiceRoute {
                ports,
                client_ip_affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
            },
        );
    }
    for slice in slices {
        let Some(ns) = &slice.metadata.namespace else {
            continue;
        };
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let Some(route) = routes.services.get_mut(&(ns.clone(), svc.clone())) else {
            continue;
        };
        for sp in slice.ports.iter().flatten() {
            let pname = sp.name.clone().unwrap_or_default();
            let Some(port) = sp.port else { continue };
            let Some(target) = route.ports.iter_mut().find(|p| p.name == pname) else {
                continue;
            };
            for ep in &slice.endpoints {
                let Some(r) = &ep.target_ref else { continue };
                let (Some(pod), Some(node)) = (&r.name, &ep.node_name) else {
                    continue;
                };
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                target.endpoints.push(Endpoint {
                    pod: (
                        r.namespace.clone().unwrap_or_else(|| ns.clone()),
                        pod.clone(),
                    ),
                    node: node.clone(),
                    port: port as u16,
                    ready,
                    serving,
                });
            }
        }
    }
    let mut ingresses: Vec<&Arc<Ingress>> = ingresses
        .iter()
        .filter(|i| {
            i.spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref())
                .is_none_or(|c| c == "skiff")
        })
        .collect();
    ingresses.sort_by(|a, b| {
        (
            &a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &a.metadata.name,
        )
            .cmp(&(
                &b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &b.metadata.name,
            ))
    });
    let backend = |ns: &str, b: &k8s_openapi::api::networking::v1::IngressBackend| {
        b.service.as_ref().map(|s| Backend {
            namespace: ns.to_string(),
            service: s.name.clone(),
            port: s.port.as_ref().and_then(|p| match (&p.name, p.number) {
                (Some(n), _) if !n.is_empty() => Some(PortRef::Name(n.clone())),
                (_, Some(n)) => Some(PortRef::Number(n as u16)),
                _ => None,
            }),
        })
    };
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let Some(spec) = &ing.spec else { continue };
        if let Some(b) = spec.default_backend.as_ref().and_then(|b| backend(&ns, b)) {
            routes.default_backends.push(b);
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().filter(|h| !h.is_empty());
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let Some(b) = backend(&ns, &p.backend) else {
                    continue;
                };
                routes.ingress.push(IngressRule {
                    host: host.clone(),
                    path: p.path.clone().unwrap_or_else(|| "/".into()),
                    kind: if p.path_type == "Exact" {
                        PathMatch::Exact
                    } else {
                        PathMatch::Prefix
                    },
                    backend: b,
                });
            }
        }
    }
    for n in nodes {
        let Some(name) = &n.metadata.name else {
            continue;
        };
        let Some(port) = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(GATEWAY_PORT_ANNOTATION))
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<IpAddr>().ok());
        if let Some(ip) = ip {
            routes.nodes.insert(name.clone(), SocketAddr::new(ip, port));
        }
    }
    routes
}

/// A pod's namespace and name.
pub type PodKey = (String, String);

/// The node's gateway.
pub struct Gateway {
    node: String,
    local: RwLock<HashMap<PodKey, Vec<Arc<Served>>>>,
    routes: RwLock<Arc<Routes>>,
    outstanding: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
    turn: AtomicUsize,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    /// The address the gateway listens on.
    pub addr: SocketAddr,
    peer_secret: String,
    /// The node's and control plane's addresses (for `egress`).
    pub(crate) protected: Arc<Vec<IpAddr>>,
    /// `--allow-local-outbound` (for `egress`).
    pub(crate) local_allowed: Vec<String>,
    /// NetworkPolicy enforcement.
    policy: Arc<policy::Enforcer>,
    api_server: Option<Arc<ApiServer>>,
    /// The node's API client (scale from zero: `zero`).
    api: Option<kube::Client>,
    /// Told each time the routing table changes (requests held for a Service wait on it).
    routes_changed: tokio::sync::watch::Sender<()>,
    /// Requests held per Service scaled to zero.
    held: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
    /// Wake calls in flight per Service.
    waking: Mutex<HashMap<(String, String), zero::Waking>>,
    serving: tokio::runtime::Handle,
    _runtime: Serving,
}

/// Counts a request outstanding at an endpoint.
struct Outstanding(Arc<AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn retryable(req: &Request<Body>) -> bool {
    use http_body::Body as _;
    req.body().is_end_stream()
        || (req.body().size_hint().exact() == Some(0)
            && !req.headers().contains_key(http::header::TRANSFER_ENCODING))
}

fn copy_request(req: &Request<Body>) -> Request<Body> {
    let mut r = Request::new(empty_body());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

impl Gateway {
    /// Bind the gateway of node `node` on `listen`; it serves until `stop`.
    pub async fn start(
        node: &str,
        listen: SocketAddr,
        client: kube::Client,
        security: GatewaySecurity,
        stop: CancellationToken,
    ) -> Result<Arc<Gateway>, GatewayError> {
        let listener = bind(listen).map_err(|e| GatewayError::Listen(listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| GatewayError::Listen(listen, e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVING_THREADS)
            .thread_name("skiff-gateway")
            .enable_all()
            .build()
            .map_err(GatewayError::Runtime)?;
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let gw = Arc::new(Gateway {
            node: node.to_string(),
            local: RwLock::new(HashMap::new()),
            routes: RwLock::new(Arc::new(Routes::default())),
            outstanding: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
            addr,
            peer_secret: security.peer_secret,
            protected: Arc::new(security.protected),
            local_allowed: security.local_allowed,
            api_server: security.api_server,
            policy: Arc::new(policy::Enforcer::new(skiff_common::events::Recorder::new(
                client.clone(),
                "skiff-gateway",
                Some(node),
            ))),
            api: Some(client.clone()),
            routes_changed: tokio::sync::watch::Sender::new(()),
            held: Mutex::new(HashMap::new()),
            waking: Mutex::new(HashMap::new()),
            serving: runtime.handle().clone(),
            _runtime: Serving(Some(runtime)),
        });
        gw.serve(listener, None, stop.clone());
        // The routing table is built from watches on the agent's runtime.
        tokio::spawn(gw.policy.clone().watch(client.clone(), stop.clone()));
        tokio::spawn(gw.clone().watch(client, stop));
        Ok(gw)
    }

    /// Accept connections on `listener` on the gateway's own runtime until `stop`.
    fn serve(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        fixed: Option<Backend>,
        stop: CancellationToken,
    ) {
        let gw = self.clone();
        self.serving.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => gw.accept(l, fixed, stop).await,
                Err(e) => tracing::warn!(error = %e, "gateway listener unusable"),
            }
        });
    }

    /// Does the request carry this cluster's gateway peer proof? (Compared in constant time.)
    fn is_peer(&self, headers: &http::HeaderMap) -> bool {
        let Some(v) = headers.get(skiff_common::token::GATEWAY_PEER_HEADER) else {
            return false;
        };
        let (a, b) = (v.as_bytes(), self.peer_secret.as_bytes());
        !b.is_empty()
            && a.len() == b.len()
            && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// May `caller` reach `addr` outside the cluster on `port`, by its NetworkPolicies?
    pub(crate) fn check_outside(
        &self,
        caller: &crate::netpolicy::PodInfo,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), crate::netpolicy::Denial> {
        self.policy.check_outside(caller, addr, port)
    }

    /// The current routing table.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Serve an HTTP container of a pod on this node.
    pub fn add(&self, served: Arc<Served>) {
        if let Ok(mut l) = self.local.write() {
            l.entry(served.pod.clone()).or_default().push(served);
        }
    }

    /// Stop serving a container (its in-flight requests finish on their own).
    pub fn remove(&self, served: &Arc<Served>) {
        if let Ok(mut l) = self.local.write() {
            if let Some(v) = l.get_mut(&served.pod) {
                v.retain(|s| !Arc::ptr_eq(s, served));
                if v.is_empty() {
                    l.remove(&served.pod);
                }
            }
        }
    }

    fn local_container(&self, pod: &(String, String), port: Option<u16>) -> Option<Arc<Served>> {
        let l = self.local.read().ok()?;
        l.get(pod)?.iter().find(|s| s.answers_on(port)).cloned()
    }

    /// Answer `req` with a container of `pod` on this node, or say (as a miss) that it is not here.
    async fn serve_local(
        &self,
        pod: &(String, String),
        port: Option<u16>,
        req: Request<Body>,
    ) -> Response<Body> {
        match self.local_container(pod, port) {
            Some(s) => s.handle(req).await,
            None => miss(
                StatusCode::NOT_FOUND,
                format!(
                    "pod {}/{} is not served on node {}",
                    pod.0, pod.1, self.node
                ),
            ),
        }
    }

    async fn accept(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        fixed: Option<Backend>,
        stop: CancellationToken,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let fixed = fixed.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let gw = gw.clone();
                        let fixed = fixed.clone();
                        async move {
                            let req = req
                                .map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                            Ok::<_, Infallible>(
                                gw.route(req, peer.ip(), fixed.as_ref(), Origin::Listener)
                                    .await,
                            )
                        }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    }

    /// Route one request: to a pod on this node, a Service, an Ingress backend or the Service
    /// `fixed` names (a NodePort listener).
    pub async fn route(
        self: &Arc<Self>,
        mut req: Request<Body>,
        client_ip: IpAddr,
        fixed: Option<&Backend>,
        origin: Origin,
    ) -> Response<Body> {
        // Only the cluster may name a pod directly: guests on this node, or other nodes'
        // gateways (which prove it). The proof never reaches a guest.
        let from = match origin {
            _ if self.is_peer(req.headers()) => policy::From::Decided,
            Origin::Pod(c) => policy::From::Pod(c),
            Origin::Listener => policy::From::Outside(client_ip),
        };
        let from_cluster = !matches!(from, policy::From::Outside(_));
        req.headers_mut()
            .remove(skiff_common::token::GATEWAY_PEER_HEADER);
        let hops = req
            .headers()
            .get(HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if hops >= MAX_HOPS {
            return text(StatusCode::LOOP_DETECTED, "request loop between gateways");
        }
        req.headers_mut()
            .insert(HOPS_HEADER, HeaderValue::from(hops + 1));
        let authority = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (host, host_port) = split_host_port(&authority);
        let routes = self.routes();
        let backend = match fixed {
            Some(b) => b.clone(),
            None => {
                let exists = |ns: &str, n: &str| {
                    routes
                        .services
                        .contains_key(&(ns.to_string(), n.to_string()))
                };
                match classify_host(host, "default", &exists) {
                    HostTarget::Pod { .. } if !from_cluster => {
                        return text(
                            StatusCode::NOT_FOUND,
                            format!("pod host {host:?} is reachable only inside the cluster: expose the pod with a Service, an Ingress or a NodePort"),
                        );
                    }
                    HostTarget::Pod { namespace, name } => {
                        let pod = (namespace, name);
                        if let Some(port) = self
                            .local_container(&pod, host_port)
                            .and_then(|s| host_port.or(s.ports.first().map(|p| p.1)))
                        {
                            let decided = self
                                .policy
                                .decider(&from, &pod.0)
                                .map_or(Ok(()), |d| d.check(&pod, port));
                            if let Err(d) = decided {
                                self.policy.report(&from, None, &pod, &d);
                                return text(StatusCode::FORBIDDEN, d.message);
                            }
                        }
                        return self.serve_local(&pod, host_port, req).await;
                    }
                    HostTarget::Service { namespace, name } => Backend {
                        namespace,
                        service: name,
                        port: host_port.map(PortRef::Number),
                    },
                    HostTarget::Other(h) => {
                        match match_ingress(&routes.ingress, &h, req.uri().path())
                            .or(routes.default_backends.first())
                        {
                            Some(b) => b.clone(),
                            None => {
                                return text(
                                    StatusCode::NOT_FOUND,
                                    format!("no Service, pod or Ingress rule for host {h:?}"),
                                )
                            }
                        }
                    }
                }
            }
        };
        // A guest calling the `kubernetes` Service reaches the API server, with its own
        // credentials only.
        if let (policy::From::Pod(caller), Some(api)) = (&from, &self.api_server) {
            if backend.namespace == "default" && backend.service == "kubernetes" {
                if let Some(addr) = api.addr {
                    if let Err(d) = self
                        .policy
                        .check_outside(&caller.pod, addr.ip(), addr.port())
                    {
                        let _ = caller.denied.send((DENIED_REASON, d.message.clone()));
                        return text(StatusCode::FORBIDDEN, d.message);
                    }
                }
                return api.forward(req).await;
            }
        }
        self.to_service(req, &routes, &backend, client_ip, &from, true)
            .await
    }

    async fn to_service(
        self: &Arc<Self>,
        req: Request<Body>,
        routes: &Routes,
        b: &Backend,
        client_ip: IpAddr,
        from: &policy::From,
        may_hold: bool,
    ) -> Response<Body> {
        let Some(svc) = routes
            .services
            .get(&(b.namespace.clone(), b.service.clone()))
        else {
            return text(
                StatusCode::NOT_FOUND,
                format!("service {}/{} not found", b.namespace, b.service),
            );
        };
        let port = match &b.port {
            Some(PortRef::Number(n)) => svc
                .ports
                .iter()
                .find(|p| p.port == *n)
                .or(svc.ports.first()),
            Some(PortRef::Name(n)) => svc.ports.iter().find(|p| &p.name == n),
            None => svc.ports.first(),
        };
        let Some(port) = port else {
            return text(
                StatusCode::NOT_FOUND,
                format!("service {}/{} has no such port", b.namespace, b.service),
            );
        };
        let eps = &port.endpoints;
        let mut excluded: HashSet<usize> = HashSet::new();
        let can_retry = retryable(&req);
        let mut req = Some(req);
        loop {
            let usable = |want_ready: bool| -> Vec<usize> {
                (0..eps.len())
                    .filter(|i| !excluded.contains(i))
                    .filter(|i| {
                        let e = &eps[*i];
                        let local_terminating = e.node == self.node
                            && self
                                .local_container(&e.pod, Some(e.port))
                                .is_some_and(|s| s.terminating.load(Ordering::Relaxed));
                        if want_ready {
                            e.ready && !local_terminating
                        } else {
                            e.serving
                        }
                    })
                    .collect()
            };
            let mut candidates = usable(true);
            if candidates.is_empty() {
                candidates = usable(false);
            }
            // Endpoints a NetworkPolicy closes to this caller are not candidates; when it
            // closes all of them the call is refused.
            let decider = match candidates.is_empty() {
                true => None,
                false => self.policy.decider(from, &b.namespace),
            };
            if let Some(decider) = decider {
                let mut refused = None;
                candidates.retain(|i| match decider.check(&eps[*i].pod, eps[*i].port) {
                    Ok(()) => true,
                    Err(d) => {
                        refused.get_or_insert((*i, d));
                        false
                    }
                });
                if let (true, Some((i, d))) = (candidates.is_empty(), refused) {
                    self.policy
                        .report(from, Some((&b.namespace, &b.service)), &eps[i].pod, &d);
                    return text(StatusCode::FORBIDDEN, d.message);
                }
            }
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            let affinity = svc.client_ip_affinity.then_some(client_ip);
            let chosen = pick(
                eps,
                &candidates,
                &|e| self.outstanding_now(&e.pod),
                turn,
                affinity,
            );
            let Some(i) = chosen else {
                // Nothing ready and nothing tried yet: perhaps scaled to zero (`zero`).
                if let (true, true, Some(held)) = (may_hold, excluded.is_empty(), req.take()) {
                    return match self.hold_for(&b.namespace, &b.service).await {
                        Ok(now) => {
                            Box::pin(self.to_service(held, &now, b, client_ip, from, false)).await
                        }
                        Err(answer) => answer,
                    };
                }
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "service {}/{} has no ready endpoints",
                        b.namespace, b.service
                    ),
                );
            };
            let Some(current) = req.take() else {
                return text(StatusCode::BAD_GATEWAY, "request lost");
            };
            let spare = can_retry.then(|| copy_request(&current));
            let ep = &eps[i];
            let counter = self.outstanding_of(&ep.pod);
            counter.fetch_add(1, Ordering::Relaxed);
            let guard = Outstanding(counter);
            let resp = self.to_endpoint(current, ep, routes).await;
            drop(guard);
            // Only the gateway's own "not here" (no such pod, node unreachable) is retried: the
            // request never reached a guest.
            if resp.headers().contains_key(MISS_HEADER) {
                if let Some(spare) = spare {
                    excluded.insert(i);
                    req = Some(spare);
                    continue;
                }
            }
            return resp;
        }
    }

    /// Requests outstanding at a pod now (no entry: none).
    fn outstanding_now(&self, pod: &(String, String)) -> usize {
        self.outstanding
            .lock()
            .ok()
            .and_then(|m| m.get(pod).map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    fn outstanding_of(&self, pod: &(String, String)) -> Arc<AtomicUsize> {
        match self.outstanding.lock() {
            // Looked up per candidate on every request: clone the key only for a new pod.
            Ok(mut m) => match m.get(pod) {
                Some(c) => c.clone(),
                None => m.entry(pod.clone()).or_default().clone(),
            },
            Err(_) => Arc::default(),
        }
    }

    async fn to_endpoint(
        self: &Arc<Self>,
        mut req: Request<Body>,
        ep: &Endpoint,
        routes: &Routes,
    ) -> Response<Body> {
        if ep.node == self.node {
            return self.serve_local(&ep.pod, Some(ep.port), req).await;
        }
        let Some(addr) = routes.nodes.get(&ep.node) else {
            return miss(
                StatusCode::BAD_GATEWAY,
                format!("node {} has no gateway address", ep.node),
            );
        };
        let host = format!("{}.{}.pod:{}", ep.pod.1, ep.pod.0, ep.port);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri = match format!("http://{addr}{path}").parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let original = req.headers().get(http::header::HOST).cloned();
        *req.uri_mut() = uri;
        if let Ok(v) = HeaderValue::from_str(&host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        if let Some(o) = original {
            req.headers_mut().insert("x-forwarded-host", o);
        }
        if let Ok(v) = HeaderValue::from_str(&self.peer_secret) {
            req.headers_mut()
                .insert(skiff_common::token::GATEWAY_PEER_HEADER, v);
        }
        match self.client.request(req).await {
            Ok(resp) => resp.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()),
            Err(e) => {
                let msg = format!("forwarding to node {} ({addr}): {e}", ep.node);
                if e.is_connect() {
                    miss(StatusCode::BAD_GATEWAY, msg)
                } else {
                    text(StatusCode::BAD_GATEWAY, msg)
                }
            }
        }
    }

    /// Keep the routing table and the NodePort listeners current from watches.
    async fn watch(self: Arc<Self>, client: kube::Client, stop: CancellationToken) {
        let changed = Arc::new(Notify::new());
        let services: Store<Service> = reflect(&client, &changed, &stop, |_| {});
        let slices: Store<EndpointSlice> = reflect(&client, &changed, &stop, |_| {});
        let ingresses: Store<Ingress> = reflect(&client, &changed, &stop, |_| {});
        let nodes: Store<Node> = reflect(&client, &changed, &stop, |_| {});
        let mut listeners: BTreeMap<u16, CancellationToken> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = stop.cancelled() => break,
            }
            let routes = build_routes(
                &services.state(),
                &slices.state(),
                &ingresses.state(),
                &nodes.state(),
            );
            // NodePort listeners follow the table.
            let wanted: BTreeMap<u16, Backend> = routes.node_ports.clone();
            listeners.retain(|port, token| {
                let keep = wanted.contains_key(port);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for (port, backend) in wanted {
                if listeners.contains_key(&port) {
                    continue;
                }
                let addr = SocketAddr::new(self.addr.ip(), port);
                match bind(addr) {
                    Ok(l) => {
                        let token = stop.child_token();
                        self.serve(l, Some(backend), token.clone());
                        listeners.insert(port, token);
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot listen on a NodePort");
                    }
                }
            }
            // Forget the load counters of pods that are no endpoint any more.
            if let Ok(mut m) = self.outstanding.lock() {
                let live: HashSet<&PodKey> = routes
                    .services
                    .values()
                    .flat_map(|s| s.ports.iter())
                    .flat_map(|p| p.endpoints.iter())
                    .map(|e| &e.pod)
                    .collect();
                m.retain(|k, c| live.contains(k) || c.load(Ordering::Relaxed) > 0);
            }
            if let Ok(mut r) = self.routes.write() {
                *r = Arc::new(routes);
            }
            self.routes_changed.send_replace(());
        }
        for t in listeners.values() {
            t.cancel();
        }
    }
}

/// A reflector of every `K`, each object passed through `keep` (to drop what is not needed);
/// `changed` is notified on every event.
fn reflect<K>(
    client: &kube::Client,
    changed: &Arc<Notify>,
    stop: &CancellationToken,
    keep: impl FnMut(&mut K) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(keep)
        .reflect(writer);
    let changed = changed.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::pin!(stream);
        loop {
            tokio::select! {
                e = stream.next() => match e {
                    Some(Ok(_)) => changed.notify_one(),
                    Some(Err(e)) => tracing::debug!(error = %e, "gateway watch"),
                    None => return,
                },
                _ = stop.cancelled() => return,
            }
        }
    });
    reader
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_classify_as_kubernetes_names() {
        let exists =
            |ns: &str, n: &str| (ns, n) == ("default", "web") || (ns, n) == ("shop", "api");
        let svc = |ns: &str, n: &str| HostTarget::Service {
            namespace: ns.into(),
            name: n.into(),
        };
        let cases: Vec<(&str, &str, HostTarget)> = vec![
            ("web", "default", svc("default", "web")),
            ("web.default", "default", svc("default", "web")),
            ("web.default.svc", "x", svc("default", "web")),
            ("web.default.svc.cluster.local", "x", svc("default", "web")),
            ("api.shop", "default", svc("shop", "api")),
            ("api", "shop", svc("shop", "api")),
            // An unknown one-label or two-label name is not a Service.
            ("api", "default", HostTarget::Other("api".into())),
            (
                "example.com",
                "default",
                HostTarget::Other("example.com".into()),
            ),
            // .svc names a Service even before it exists (503/404 later says why).
            ("new.shop.svc", "default", svc("shop", "new")),
            (
                "p-1.default.pod.cluster.local",
                "x",
                HostTarget::Pod {
                    namespace: "default".into(),
                    name: "p-1".into(),
                },
            ),
        ];
        for (host, ns, want) in cases {
            assert_eq!(classify_host(host, ns, &exists), want, "{host} in {ns}");
        }
        assert_eq!(split_host_port("a.b:8080"), ("a.b", Some(8080)));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some(80)));
    }

    #[test]
    fn ingress_rules_match_as_kubernetes_defines() {
        let b = |s: &str| Backend {
            namespace: "default".into(),
            service: s.into(),
            port: None,
        };
        let rule = |host: Option<&str>, path: &str, kind: PathMatch, svc: &str| IngressRule {
            host: host.map(str::to_string),
            path: path.into(),
            kind,
            backend: b(svc),
        };
        use PathMatch::*;
        let rules = vec![
            rule(None, "/", Prefix, "catchall"),
            rule(Some("shop.example"), "/", Prefix, "shop"),
            rule(Some("shop.example"), "/api", Prefix, "api"),
            rule(Some("shop.example"), "/api/v2", Exact, "v2"),
            rule(Some("*.example"), "/", Prefix, "wild"),
            rule(None, "/foo", Prefix, "foo"),
        ];
        let cases: Vec<(&str, &str, Option<&str>)> = vec![
            ("shop.example", "/", Some("shop")),
            ("shop.example", "/api", Some("api")),
            ("shop.example", "/api/", Some("api")),
            ("shop.example", "/api/items", Some("api")),
            ("shop.example", "/apix", Some("shop")),
            ("shop.example", "/api/v2", Some("v2")),
            ("shop.example", "/api/v2/x", Some("api")),
            ("blog.example", "/", Some("wild")),
            // A wildcard covers exactly one label.
            ("a.b.example", "/", Some("catchall")),
            ("other", "/foo/bar", Some("foo")),
            ("other", "/foobar", Some("catchall")),
        ];
        for (host, path, want) in cases {
            assert_eq!(
                match_ingress(&rules, host, path).map(|b| b.service.as_str()),
                want,
                "{host}{path}"
            );
        }
        assert_eq!(match_ingress(&rules[1..5], "other", "/"), None);
    }

    #[test]
    fn endpoints_are_picked_by_load_or_client() {
        let ep = |n: &str| Endpoint {
            pod: ("default".into(), n.into()),
            node: "n".into(),
            port: 80,
            ready: true,
            serving: true,
        };
        let eps = vec![ep("a"), ep("b"), ep("c")];
        let load = |e: &Endpoint| match e.pod.1.as_str() {
            "a" => 3,
            "b" => 0,
            _ => 0,
        };
        // Fewest outstanding wins; ties go round robin from the turn.
        assert_eq!(pick(&eps, &[0, 1, 2], &load, 0, None), Some(1));
        assert_eq!(pick(&eps, &[0, 1, 2], &load, 2, None), Some(2));
        assert_eq!(pick(&eps, &[0], &load, 5, None), Some(0));
        assert_eq!(pick(&eps, &[], &load, 0, None), None);
        // ClientIP affinity: the same client gets the same pod, whatever the order or load.
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let first = pick(&eps, &[0, 1, 2], &load, 0, Some(ip)).unwrap();
        let again = pick(&eps, &[2, 1, 0], &|_| 0, 9, Some(ip)).unwrap();
        assert_eq!(eps[first].pod, eps[again].pod);
    }

    #[test]
    fn routes_are_built_from_services_slices_ingresses_and_nodes() {
        fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
            serde_json::from_value(v).unwrap()
        }
        let services: Vec<Arc<Service>> = vec![
            Arc::new(obj(
                serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [
                    {"name": "http", "port": 80, "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            )),
            Arc::new(obj(
                serde_json::json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            )),
        ];
        let slices: Vec<Arc<EndpointSlice>> = vec![Arc::new(obj(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "a", "conditions": {"ready": true, "serving": true},
                 "targetRef": {"kind": "Pod", "name": "web-x", "namespace": "default"}},
                {"addresses": ["10.0.0.2"], "nodeName": "b", "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "web-y", "namespace": "default"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": true}}]})))];
        let ingresses: Vec<Arc<Ingress>> = vec![
            Arc::new(obj(
                serde_json::json!({"metadata": {"name": "i", "namespace": "default"},
                "spec": {"rules": [{"host": "web.local", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}}]}}),
            )),
            // Another controller's class is not served.
            Arc::new(obj(
                serde_json::json!({"metadata": {"name": "other", "namespace": "default"},
                "spec": {"ingressClassName": "nginx", "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
            )),
        ];
        let nodes: Vec<Arc<Node>> = vec![
            Arc::new(obj(
                serde_json::json!({"metadata": {"name": "a", "annotations": {GATEWAY_PORT_ANNOTATION: "8080"}},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}]}}),
            )),
            Arc::new(obj(serde_json::json!({"metadata": {"name": "hollow"},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.3"}]}}))),
        ];
        let r = build_routes(&services, &slices, &ingresses, &nodes);
        let web = &r.services[&("default".to_string(), "web".to_string())];
        assert!(web.client_ip_affinity);
        assert_eq!(web.ports.len(), 1, "UDP ports are not routed");
        assert_eq!(web.ports[0].node_port, Some(30080));
        let eps: Vec<(&str, &str, u16, bool, bool)> = web.ports[0]
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.pod.1.as_str(),
                    e.node.as_str(),
                    e.port,
                    e.ready,
                    e.serving,
                )
            })
            .collect();
        assert_eq!(
            eps,
            vec![
                ("web-x", "a", 8080, true, true),
                ("web-y", "b", 8080, false, true)
            ],
            "endpoints without a pod or node are skipped"
        );
        assert!(!r
            .services
            .contains_key(&("default".to_string(), "ext".to_string())));
        assert_eq!(r.ingress.len(), 1);
        assert_eq!(
            r.ingress[0].backend.port,
            Some(PortRef::Name("http".into()))
        );
        assert!(r.default_backends.is_empty());
        assert_eq!(r.nodes.len(), 1);
        assert_eq!(r.nodes["a"], "127.0.0.2:8080".parse().unwrap());
        assert_eq!(r.node_ports[&30080].service, "web");
    }
}
