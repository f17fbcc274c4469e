//! What pods and nodes use, for `metrics.k8s.io` (`kubectl top`) and the HPA, kept as
//! metrics-server keeps it: every `--metric-resolution` (10 s by default) each API server
//! scrapes every Ready node's `/metrics/resource` (its agent endpoint, with the server's
//! kubelet client certificate), and from each container's two last samples derives its CPU
//! rate (nanocores), its working set and its HTTP requests per second. Nothing is stored: a
//! restarted server has figures again after two scrapes.
//!
//! Invariants: a node's figures count only for the pods bound to it (a node cannot speak for
//! another node's pods); a rate needs two samples of the same container on the same node (a counter that
//! went down, a restarted node, gives no rate until the next scrape); a node's figures replace
//! all of that node's previous ones; a node that stops answering loses its figures after
//! three resolutions. [`rates`] is pure and table-tested; [`parse`] reads the text.

pub mod parse;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::store::Storage;
use parse::Scrape;

/// The default `--metric-resolution` (metrics-server's is 15 s).
pub const RESOLUTION: Duration = Duration::from_secs(10);
/// The largest scrape taken from a node.
const MAX_SCRAPE: usize = 16 << 20;

/// One container's usage.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    /// Container name.
    pub name: String,
    /// CPU, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
}

/// One pod's usage over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    /// The end of the window (milliseconds since the epoch).
    pub at_ms: i64,
    /// The window's length.
    pub window: Duration,
    /// Per container, by name.
    pub containers: Vec<ContainerUsage>,
    /// HTTP requests answered per second, over the window.
    pub http_per_second: f64,
}

/// One node's usage over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    /// The end of the window (milliseconds since the epoch).
    pub at_ms: i64,
    /// The window's length.
    pub window: Duration,
    /// CPU, in billionths of a core.
    pub cpu_nanocores: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
}

/// (namespace, pod).
type PodKey = (String, String);

/// Pod and node usage from two scrapes of one node, `prev` then `now`. Pure.
pub fn rates(prev: &Scrape, now: &Scrape) -> (Vec<(PodKey, PodUsage)>, Option<NodeUsage>) {
    let window_ms = now.at_ms - prev.at_ms;
    if window_ms <= 0 {
        return (Vec::new(), None);
    }
    let secs = window_ms as f64 / 1000.0;
    let window = Duration::from_millis(window_ms as u64);
    let mut pods: std::collections::BTreeMap<PodKey, PodUsage> = Default::default();
    for ((ns, pod, container), s) in &now.containers {
        let Some(p) = prev
            .containers
            .get(&(ns.clone(), pod.clone(), container.clone()))
        else {
            continue;
        };
        if s.cpu_seconds < p.cpu_seconds || s.http_requests < p.http_requests {
            continue;
        }
        let entry = pods
            .entry((ns.clone(), pod.clone()))
            .or_insert_with(|| PodUsage {
                at_ms: now.at_ms,
                window,
                containers: Vec::new(),
                http_per_second: 0.0,
            });
        entry.containers.push(ContainerUsage {
            name: container.clone(),
            cpu_nanocores: ((s.cpu_seconds - p.cpu_seconds) / secs * 1e9) as u64,
            memory_bytes: s.memory_bytes,
        });
        entry.http_per_second += (s.http_requests - p.http_requests) as f64 / secs;
    }
    let node = match (prev.node, now.node) {
        (Some((c0, _)), Some((c1, mem))) if c1 >= c0 => Some(NodeUsage {
            at_ms: now.at_ms,
            window,
            cpu_nanocores: ((c1 - c0) / secs * 1e9) as u64,
            memory_bytes: mem,
        }),
        _ => None,
    };
    (pods.into_iter().collect(), node)
}

#[derive(Default)]
struct State {
    pods: HashMap<PodKey, PodUsage>,
    /// The node each pod's figures came from.
    pod_node: HashMap<PodKey, String>,
    nodes: HashMap<String, NodeUsage>,
    /// Each node's last scrape.
    last: HashMap<String, Scrape>,
}

impl State {
    /// Drop the figures of `node` and of the pods they came from (not its last scrape).
    fn drop_node(&mut self, node: &str) {
        let pods = &mut self.pods;
        self.pod_node.retain(|k, n| {
            let keep = n != node;
            if !keep {
                pods.remove(k);
            }
            keep
        });
        self.nodes.remove(node);
    }
}

/// The figures of the last scrapes.
#[derive(Default)]
pub struct Usage {
    state: RwLock<State>,
}

impl Usage {
    /// A pod's usage, if two scrapes have seen it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodUsage> {
        let s = self.state.read().ok()?;
        s.pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A node's usage, if two scrapes have seen it.
    pub fn node(&self, name: &str) -> Option<NodeUsage> {
        self.state.read().ok()?.nodes.get(name).cloned()
    }

    /// Take `scrape` of `node`: its figures replace the node's previous ones.
    pub fn record(&self, node: &str, scrape: Scrape) {
        let Ok(mut s) = self.state.write() else {
            return;
        };
        let (pods, node_usage) = match s.last.get(node) {
            Some(prev) => rates(prev, &scrape),
            None => (Vec::new(), None),
        };
        s.drop_node(node);
        for (k, u) in pods {
            s.pod_node.insert(k.clone(), node.to_string());
            s.pods.insert(k, u);
        }
        if let Some(u) = node_usage {
            s.nodes.insert(node.to_string(), u);
        }
        s.last.insert(node.to_string(), scrape);
    }

    /// Forget `node` (gone, or silent too long).
    pub fn forget(&self, node: &str) {
        let Ok(mut s) = self.state.write() else {
            return;
        };
        s.drop_node(node);
        s.last.remove(node);
    }

    fn known_nodes(&self) -> Vec<String> {
        self.state
            .read()
            .map(|s| s.last.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Keep of `scrape` only the containers of pods bound to `node` (`bound`: pod → node): a node
/// reports for its own pods, never for another node's. Pure.
pub fn confine(mut scrape: Scrape, node: &str, bound: &HashMap<PodKey, String>) -> Scrape {
    scrape.containers.retain(|(ns, pod, _), _| {
        bound
            .get(&(ns.clone(), pod.clone()))
            .is_some_and(|n| n == node)
    });
    scrape
}

/// Each pod's node, from the store.
async fn bound_pods(store: &dyn Storage) -> HashMap<PodKey, String> {
    let Ok(pods) = store.list("pods", None).await else {
        return HashMap::new();
    };
    pods.objects
        .iter()
        .filter_map(|o| {
            let v: Value = serde_json::from_slice(&o.data).ok()?;
            let node = v.pointer("/spec/nodeName")?.as_str()?.to_string();
            Some(((o.key.namespace.clone(), o.key.name.clone()), node))
        })
        .collect()
}

/// `https://host:port` of a node's agent endpoint, from its Node object.
pub fn agent_url(node: &Value) -> Result<String, String> {
    let name = node
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let addr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .ok_or_else(|| format!("node {name:?} reports no InternalIP address"))?;
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("node {name:?} reports an InternalIP that is not an address"))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| format!("node {name:?} reports no agent port"))?;
    Ok(match ip {
        std::net::IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
        std::net::IpAddr::V4(v4) => format!("https://{v4}:{port}"),
    })
}

fn ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// GET `url`, bounded.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_SCRAPE {
            return Err(format!("larger than {MAX_SCRAPE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|e| e.to_string())
}

/// Scrape every Ready node every `every` until `stop`.
pub async fn run(
    store: Arc<dyn Storage>,
    http: reqwest::Client,
    usage: Arc<Usage>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut silent: HashMap<String, u32> = HashMap::new();
    loop {
        let nodes = store.list("nodes", None).await.map(|l| l.objects);
        if let Ok(nodes) = nodes {
            let mut seen = std::collections::HashSet::new();
            let mut scrapes = tokio::task::JoinSet::new();
            for o in nodes {
                let Ok(node) = serde_json::from_slice::<Value>(&o.data) else {
                    continue;
                };
                let name = o.key.name.clone();
                seen.insert(name.clone());
                if !ready(&node) {
                    continue;
                }
                let Ok(base) = agent_url(&node) else {
                    continue;
                };
                let http = http.clone();
                scrapes.spawn(async move {
                    let got = fetch(&http, &format!("{base}/metrics/resource")).await;
                    (name, got)
                });
            }
            let bound = bound_pods(&*store).await;
            while let Some(Ok((name, got))) = scrapes.join_next().await {
                match got {
                    Ok(text) => {
                        silent.remove(&name);
                        usage.record(&name, confine(parse::parse(&text), &name, &bound));
                    }
                    Err(e) => {
                        tracing::debug!(node = %name, error = %e, "scraping resource metrics");
                        let n = silent.entry(name.clone()).or_default();
                        *n += 1;
                        if *n >= 3 {
                            usage.forget(&name);
                        }
                    }
                }
            }
            for gone in usage.known_nodes() {
                if !seen.contains(&gone) {
                    usage.forget(&gone);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::{ContainerSample, Scrape};
    use super::*;

    fn scrape(
        at_ms: i64,
        node: Option<(f64, u64)>,
        cs: &[(&str, &str, &str, f64, u64, u64)],
    ) -> Scrape {
        Scrape {
            at_ms,
            node,
            containers: cs
                .iter()
                .map(|(ns, pod, c, cpu, mem, http)| {
                    (
                        (ns.to_string(), pod.to_string(), c.to_string()),
                        ContainerSample {
                            cpu_seconds: *cpu,
                            memory_bytes: *mem,
                            http_requests: *http,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn rates_come_from_two_samples_of_the_same_container() {
        let prev = scrape(
            10_000,
            Some((100.0, 1 << 30)),
            &[
                ("a", "web", "main", 1.0, 100, 50),
                ("a", "web", "side", 0.5, 10, 0),
                ("a", "restarted", "main", 9.0, 10, 0),
                ("a", "gone", "main", 1.0, 10, 0),
            ],
        );
        let now = scrape(
            20_000,
            Some((105.0, 2 << 30)),
            &[
                ("a", "web", "main", 3.0, 200, 150),
                ("a", "web", "side", 0.5, 20, 0),
                ("a", "restarted", "main", 1.0, 10, 0),
                ("a", "new", "main", 1.0, 10, 0),
            ],
        );
        let (pods, node) = rates(&prev, &now);
        let node = node.expect("node usage");
        assert_eq!(
            (node.cpu_nanocores, node.memory_bytes, node.window),
            (500_000_000, 2 << 30, Duration::from_secs(10))
        );
        assert_eq!(pods.len(), 1, "{pods:?}");
        let (key, web) = &pods[0];
        assert_eq!(key, &("a".to_string(), "web".to_string()));
        assert_eq!(web.containers[0].cpu_nanocores, 200_000_000);
        assert_eq!(web.containers[0].memory_bytes, 200);
        assert_eq!(web.containers[1].cpu_nanocores, 0);
        assert!((web.http_per_second - 10.0).abs() < 1e-9);
        // Out of order or the same instant: nothing.
        assert_eq!(rates(&now, &prev), (Vec::new(), None));
    }

    #[test]
    fn a_node_speaks_only_for_its_own_pods() {
        let s = scrape(
            0,
            None,
            &[
                ("a", "mine", "c", 1.0, 1, 0),
                ("a", "theirs", "c", 1.0, 1, 0),
                ("a", "unbound", "c", 1.0, 1, 0),
            ],
        );
        let bound: HashMap<PodKey, String> = [
            (("a".to_string(), "mine".to_string()), "n1".to_string()),
            (("a".to_string(), "theirs".to_string()), "n2".to_string()),
        ]
        .into();
        let kept: Vec<String> = confine(s, "n1", &bound)
            .containers
            .into_keys()
            .map(|(_, pod, _)| pod)
            .collect();
        assert_eq!(kept, ["mine"]);
    }

    #[test]
    fn a_nodes_figures_replace_its_previous_ones() {
        let u = Usage::default();
        u.record(
            "n1",
            scrape(0, Some((0.0, 1)), &[("a", "p", "c", 0.0, 1, 0)]),
        );
        assert!(u.pod("a", "p").is_none(), "one sample is no rate");
        u.record(
            "n1",
            scrape(1000, Some((1.0, 1)), &[("a", "p", "c", 0.5, 1, 0)]),
        );
        assert_eq!(
            u.pod("a", "p").map(|p| p.containers[0].cpu_nanocores),
            Some(500_000_000)
        );
        assert_eq!(u.node("n1").map(|n| n.cpu_nanocores), Some(1_000_000_000));
        u.record("n1", scrape(2000, Some((2.0, 1)), &[]));
        assert!(u.pod("a", "p").is_none(), "the pod left the node");
        u.forget("n1");
        assert!(u.node("n1").is_none());
    }

    #[test]
    fn agent_urls_come_from_the_nodes_address_and_port() {
        let node = |addr: &str, port: u64| {
            serde_json::json!({"metadata": {"name": "n"}, "status": {
                "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": addr}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
        };
        assert_eq!(
            agent_url(&node("10.0.0.1", 10250)).as_deref(),
            Ok("https://10.0.0.1:10250")
        );
        assert_eq!(agent_url(&node("::1", 1)).as_deref(), Ok("https://[::1]:1"));
        assert!(agent_url(&node("evil.example/x?", 1)).is_err());
        assert!(agent_url(&node("10.0.0.1", 0)).is_err());
        assert!(agent_url(&serde_json::json!({})).is_err());
    }
}
