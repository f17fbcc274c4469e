//! NetworkPolicy (`networking.k8s.io/v1`) for the HTTP traffic skiff routes: the pure decision
//! of whether one party may call another on a port, with Kubernetes' semantics.
//!
//! - A pod is isolated for ingress (egress) when a policy of its namespace selects it and lists
//!   `Ingress` (`Egress`) in `policyTypes`; a call is allowed only when the caller's egress and
//!   the callee's ingress both allow it (a party that is not isolated allows everything).
//! - A rule with no peers allows every peer, with no ports every port. A peer with a
//!   `podSelector` alone selects pods of the policy's namespace; with a `namespaceSelector`
//!   alone every pod of the selected namespaces; with both, the selected pods of the selected
//!   namespaces. Every namespace carries `kubernetes.io/metadata.name` (added here too, for
//!   namespaces stored before the API server set it).
//! - Pods have no addresses of their own in skiff: an `ipBlock` matches parties outside the
//!   cluster only (the address of a gateway's client, the resolved address of an outbound call).
//! - Ports are the callee's: a number (with `endPort`, a range) or the name of one of the
//!   callee pod's `containerPort`s; HTTP is TCP, so UDP and SCTP rules never match.
//!
//! Invariant: what cannot be understood denies (a selector that does not parse selects every
//! pod of its policy and matches no peer), so a damaged policy never opens a hole.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_common::labels::LabelSelector;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A pod as policies see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// Named `containerPort`s of its containers (name, number).
    pub ports: Vec<(String, u16)>,
}

impl PodInfo {
    /// From a pod object.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> PodInfo {
        let ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
            .collect();
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        }
    }
}

/// One side of a call.
#[derive(Clone, Copy, Debug)]
pub enum Party<'a> {
    /// A pod of the cluster.
    Pod(&'a PodInfo),
    /// Something outside the cluster, by address.
    Outside(IpAddr),
}

impl std::fmt::Display for Party<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Party::Pod(p) => write!(f, "pod {}/{}", p.namespace, p.name),
            Party::Outside(ip) => write!(f, "{ip} (outside the cluster)"),
        }
    }
}

/// Which way a policy's rules look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// A peer of a rule.
#[derive(Clone, Debug)]
enum Peer {
    /// Pods: of the namespaces a selector picks (None: the policy's own), picked by a selector
    /// (None: all of them).
    Pods {
        namespaces: Option<LabelSelector>,
        pods: Option<LabelSelector>,
    },
    /// Addresses outside the cluster.
    Block { cidr: IpNet, except: Vec<IpNet> },
    /// A peer that could not be understood: matches nothing.
    Nothing,
}

/// A port of a rule.
#[derive(Clone, Debug)]
enum Port {
    /// Any port (TCP).
    Any,
    /// A range of numbers (a single one: `from == to`).
    Numbers(u16, u16),
    /// A named container port of the callee.
    Named(String),
    /// Another protocol than TCP, or unreadable: never HTTP.
    Never,
}

/// One rule: peers (empty: all) and ports (empty: all).
#[derive(Clone, Debug)]
struct Rule {
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

/// One compiled policy.
#[derive(Clone, Debug)]
struct Policy {
    name: String,
    namespace: String,
    /// The pods it applies to; None: its selector did not parse, so all of the namespace.
    selects: Option<LabelSelector>,
    /// Present when `policyTypes` has Ingress.
    ingress: Option<Vec<Rule>>,
    /// Present when `policyTypes` has Egress.
    egress: Option<Vec<Rule>>,
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The isolating policies (`namespace/name`, comma separated).
    pub policies: String,
    /// What to tell the caller.
    pub message: String,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every NetworkPolicy of the cluster, by namespace.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    by_namespace: HashMap<String, Vec<Policy>>,
}

fn selector(sel: &TypedSelector) -> Option<LabelSelector> {
    let v = serde_json::to_value(sel).ok()?;
    LabelSelector::from_object(&v).ok()
}

fn peer(p: &NetworkPolicyPeer) -> Peer {
    if let Some(block) = &p.ip_block {
        let Ok(cidr) = block.cidr.parse::<IpNet>() else {
            return Peer::Nothing;
        };
        let mut except = Vec::new();
        for e in block.except.iter().flatten() {
            match e.parse::<IpNet>() {
                Ok(n) => except.push(n),
                // An exception we cannot read: the block cannot be trusted to leave it out.
                Err(_) => return Peer::Nothing,
            }
        }
        return Peer::Block { cidr, except };
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Peer::Nothing;
    }
    let namespaces = match &p.namespace_selector {
        Some(s) => match selector(s) {
            Some(s) => Some(s),
            None => return Peer::Nothing,
        },
        None => None,
    };
    let pods = match &p.pod_selector {
        Some(s) => match selector(s) {
            Some(s) => Some(s),
            None => return Peer::Nothing,
        },
        None => None,
    };
    Peer::Pods { namespaces, pods }
}

fn port(p: &NetworkPolicyPort) -> Port {
    if p.protocol.as_deref().unwrap_or("TCP") != "TCP" {
        return Port::Never;
    }
    match &p.port {
        None => Port::Any,
        Some(IntOrString::String(name)) => Port::Named(name.clone()),
        Some(IntOrString::Int(n)) => {
            let Ok(from) = u16::try_from(*n) else {
                return Port::Never;
            };
            let to = match p.end_port {
                Some(e) => match u16::try_from(e) {
                    Ok(e) if e >= from => e,
                    _ => return Port::Never,
                },
                None => from,
            };
            Port::Numbers(from, to)
        }
    }
}

fn rules<R>(
    rules: Option<&Vec<R>>,
    parts: impl Fn(
        &R,
    ) -> (
        Option<&Vec<NetworkPolicyPeer>>,
        Option<&Vec<NetworkPolicyPort>>,
    ),
) -> Vec<Rule> {
    rules
        .into_iter()
        .flatten()
        .map(|r| {
            let (peers, ports) = parts(r);
            Rule {
                peers: peers.into_iter().flatten().map(peer).collect(),
                ports: ports.into_iter().flatten().map(port).collect(),
            }
        })
        .collect()
}

impl PolicySet {
    /// Compile the cluster's policies.
    pub fn build(policies: &[Arc<NetworkPolicy>]) -> PolicySet {
        let mut set = PolicySet::default();
        for np in policies {
            let (Some(namespace), Some(name)) = (&np.metadata.namespace, &np.metadata.name) else {
                continue;
            };
            let Some(spec) = &np.spec else { continue };
            let types: Vec<&str> = match &spec.policy_types {
                Some(t) if !t.is_empty() => t.iter().map(String::as_str).collect(),
                // The API server defaults this; older objects get the same default here.
                _ if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) => {
                    vec!["Ingress", "Egress"]
                }
                _ => vec!["Ingress"],
            };
            let policy = Policy {
                name: name.clone(),
                namespace: namespace.clone(),
                selects: spec
                    .pod_selector
                    .as_ref()
                    .map_or_else(|| Some(LabelSelector::default()), selector),
                ingress: types.contains(&"Ingress").then(|| {
                    rules(spec.ingress.as_ref(), |r| {
                        (r.from.as_ref(), r.ports.as_ref())
                    })
                }),
                egress: types
                    .contains(&"Egress")
                    .then(|| rules(spec.egress.as_ref(), |r| (r.to.as_ref(), r.ports.as_ref()))),
            };
            set.by_namespace
                .entry(namespace.clone())
                .or_default()
                .push(policy);
        }
        for list in set.by_namespace.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        set
    }

    /// No policy anywhere.
    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }

    /// Does some policy live in `namespace` (so its pods may be isolated)?
    pub fn has_policies_in(&self, namespace: &str) -> bool {
        self.by_namespace.contains_key(namespace)
    }

    /// May `from` call `to` on `port` (the callee's port)? `namespace_labels` gives a
    /// namespace's labels (None: no such namespace known). The error says which side's
    /// policies refused and names them.
    pub fn check(
        &self,
        from: Party<'_>,
        to: Party<'_>,
        port: u16,
        namespace_labels: &dyn Fn(&str) -> Option<Labels>,
    ) -> Result<(), Denial> {
        let dst_ports: &[(String, u16)] = match to {
            Party::Pod(p) => &p.ports,
            Party::Outside(_) => &[],
        };
        if let Party::Pod(src) = from {
            self.direction(Direction::Egress, src, to, port, dst_ports, namespace_labels)
                .map_err(|policies| Denial {
                    message: format!(
                        "network policy denies {from} calling {to} on port {port}: the egress of {from} is isolated by NetworkPolicy {policies} and no egress rule allows it"
                    ),
                    policies,
                })?;
        }
        if let Party::Pod(dst) = to {
            self.direction(Direction::Ingress, dst, from, port, dst_ports, namespace_labels)
                .map_err(|policies| Denial {
                    message: format!(
                        "network policy denies {from} calling {to} on port {port}: the ingress of {to} is isolated by NetworkPolicy {policies} and no ingress rule allows it"
                    ),
                    policies,
                })?;
        }
        Ok(())
    }

    /// Whether `subject`'s policies of `dir` allow `other`; the error names the isolating
    /// policies.
    fn direction(
        &self,
        dir: Direction,
        subject: &PodInfo,
        other: Party<'_>,
        port: u16,
        dst_ports: &[(String, u16)],
        namespace_labels: &dyn Fn(&str) -> Option<Labels>,
    ) -> Result<(), String> {
        let Some(policies) = self.by_namespace.get(&subject.namespace) else {
            return Ok(());
        };
        let mut isolating = Vec::new();
        for p in policies {
            let rules = match dir {
                Direction::Ingress => p.ingress.as_ref(),
                Direction::Egress => p.egress.as_ref(),
            };
            let Some(rules) = rules else { continue };
            let selected = p
                .selects
                .as_ref()
                .is_none_or(|s| s.matches_map(Some(&subject.labels)));
            if !selected {
                continue;
            }
            if rules
                .iter()
                .any(|r| rule_allows(r, &p.namespace, other, port, dst_ports, namespace_labels))
            {
                return Ok(());
            }
            isolating.push(format!("{}/{}", p.namespace, p.name));
        }
        if isolating.is_empty() {
            Ok(())
        } else {
            Err(isolating.join(", "))
        }
    }
}

fn rule_allows(
    rule: &Rule,
    policy_namespace: &str,
    other: Party<'_>,
    port: u16,
    dst_ports: &[(String, u16)],
    namespace_labels: &dyn Fn(&str) -> Option<Labels>,
) -> bool {
    let port_ok = rule.ports.is_empty()
        || rule.ports.iter().any(|p| match p {
            Port::Any => true,
            Port::Numbers(from, to) => (*from..=*to).contains(&port),
            Port::Named(name) => dst_ports.iter().any(|(n, p)| n == name && *p == port),
            Port::Never => false,
        });
    if !port_ok {
        return false;
    }
    rule.peers.is_empty()
        || rule
            .peers
            .iter()
            .any(|p| peer_matches(p, policy_namespace, other, namespace_labels))
}

fn peer_matches(
    peer: &Peer,
    policy_namespace: &str,
    other: Party<'_>,
    namespace_labels: &dyn Fn(&str) -> Option<Labels>,
) -> bool {
    match (peer, other) {
        (Peer::Nothing, _) => false,
        (Peer::Block { cidr, except }, Party::Outside(ip)) => {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
        (Peer::Block { .. }, Party::Pod(_)) | (Peer::Pods { .. }, Party::Outside(_)) => false,
        (Peer::Pods { namespaces, pods }, Party::Pod(pod)) => {
            let namespace_ok = match namespaces {
                None => pod.namespace == policy_namespace,
                Some(sel) => {
                    let mut labels = namespace_labels(&pod.namespace).unwrap_or_default();
                    labels.insert(NAMESPACE_NAME_LABEL.into(), pod.namespace.clone());
                    sel.matches_map(Some(&labels))
                }
            };
            namespace_ok
                && pods
                    .as_ref()
                    .is_none_or(|s| s.matches_map(Some(&pod.labels)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policies(list: serde_json::Value) -> PolicySet {
        let list: Vec<Arc<NetworkPolicy>> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| Arc::new(serde_json::from_value(v.clone()).unwrap()))
            .collect();
        PolicySet::build(&list)
    }

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![("http".into(), 8080)],
        }
    }

    fn np(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
    }

    type Case<'a> = (&'a str, Party<'a>, Party<'a>, u16, bool);

    #[test]
    fn network_policy_decisions() {
        let web = pod("shop", "web", &[("app", "web")]);
        let db = pod("shop", "db", &[("app", "db")]);
        let client = pod("shop", "client", &[("role", "client")]);
        let other = pod("lab", "x", &[("role", "client")]);
        let trusted = pod("ops", "probe", &[("app", "probe")]);
        let outside: IpAddr = "203.0.113.7".parse().unwrap();
        let inside_block: IpAddr = "10.1.2.3".parse().unwrap();
        let excepted: IpAddr = "10.1.9.9".parse().unwrap();
        let set = policies(json!([
            // db: only from app=web in its namespace, only on its named port.
            np(
                "shop",
                "db-from-web",
                json!({
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                 "ports": [{"port": "http"}]}],
                })
            ),
            // web: from role=client pods of this namespace, from namespaces labelled team=ops,
            // and from 10.0.0.0/8 except 10.1.9.0/24, on 8080-8090.
            np(
                "shop",
                "web-in",
                json!({
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [
                        {"podSelector": {"matchLabels": {"role": "client"}}},
                        {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.9.0/24"]}},
                    ], "ports": [{"port": 8080, "endPort": 8090}]}],
                })
            ),
            // web: egress only to db, and to 198.51.100.0/24.
            np(
                "shop",
                "web-out",
                json!({
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}},
                                       {"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
                })
            ),
            // lab: default deny of everything.
            np(
                "lab",
                "deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
            ),
            // ops: a UDP-only rule never allows HTTP.
            np(
                "ops",
                "udp-only",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"protocol": "UDP", "port": 8080}]}]})
            ),
        ]));
        let ns_labels = |ns: &str| match ns {
            "ops" => Some(Labels::from([("team".to_string(), "ops".to_string())])),
            "shop" | "lab" => Some(Labels::new()),
            _ => None,
        };
        let cases: &[Case] = &[
            (
                "web to db on its named port",
                Party::Pod(&web),
                Party::Pod(&db),
                8080,
                true,
            ),
            (
                "web to db on another port",
                Party::Pod(&web),
                Party::Pod(&db),
                9090,
                false,
            ),
            (
                "client to db",
                Party::Pod(&client),
                Party::Pod(&db),
                8080,
                false,
            ),
            (
                "client to web",
                Party::Pod(&client),
                Party::Pod(&web),
                8080,
                true,
            ),
            (
                "client to web at the range's end",
                Party::Pod(&client),
                Party::Pod(&web),
                8090,
                true,
            ),
            (
                "client to web past the range",
                Party::Pod(&client),
                Party::Pod(&web),
                8091,
                false,
            ),
            (
                "same labels, other namespace",
                Party::Pod(&other),
                Party::Pod(&web),
                8080,
                false,
            ),
            (
                "a namespace the selector picks",
                Party::Pod(&trusted),
                Party::Pod(&web),
                8080,
                true,
            ),
            (
                "outside, in the block",
                Party::Outside(inside_block),
                Party::Pod(&web),
                8080,
                true,
            ),
            (
                "outside, in the exception",
                Party::Outside(excepted),
                Party::Pod(&web),
                8080,
                false,
            ),
            (
                "outside, not in the block",
                Party::Outside(outside),
                Party::Pod(&web),
                8080,
                false,
            ),
            (
                "web egress to an allowed block",
                Party::Pod(&web),
                Party::Outside("198.51.100.9".parse().unwrap()),
                443,
                true,
            ),
            (
                "web egress elsewhere",
                Party::Pod(&web),
                Party::Outside(outside),
                443,
                false,
            ),
            (
                "web egress to client (not db)",
                Party::Pod(&web),
                Party::Pod(&client),
                8080,
                false,
            ),
            (
                "client is not egress-isolated",
                Party::Pod(&client),
                Party::Outside(outside),
                443,
                true,
            ),
            (
                "default deny: ingress",
                Party::Pod(&trusted),
                Party::Pod(&other),
                8080,
                false,
            ),
            (
                "default deny: egress",
                Party::Pod(&other),
                Party::Pod(&trusted),
                8080,
                false,
            ),
            (
                "UDP rules never allow HTTP",
                Party::Pod(&client),
                Party::Pod(&trusted),
                8080,
                false,
            ),
            (
                "nothing isolates client's ingress",
                Party::Pod(&db),
                Party::Pod(&client),
                8080,
                true,
            ),
        ];
        for (what, from, to, port, want) in cases {
            let got = set.check(*from, *to, *port, &ns_labels);
            assert_eq!(got.is_ok(), *want, "{what}: {got:?}");
        }
        // The message names the isolating policy and both parties.
        let err = set
            .check(Party::Pod(&client), Party::Pod(&db), 8080, &ns_labels)
            .unwrap_err();
        assert_eq!(err.policies, "shop/db-from-web");
        assert!(
            err.message.contains("NetworkPolicy shop/db-from-web"),
            "{err}"
        );
        assert!(
            err.message.contains("pod shop/client calling pod shop/db"),
            "{err}"
        );
    }

    #[test]
    fn namespaces_are_selected_by_their_name_label() {
        let set = policies(json!([np(
            "b",
            "from-a",
            json!({
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "a"}}, "podSelector": {"matchLabels": {"x": "1"}}}]}],
            })
        )]));
        let none = |_: &str| None;
        let dst = pod("b", "svc", &[]);
        let a1 = pod("a", "p", &[("x", "1")]);
        let a2 = pod("a", "q", &[("x", "2")]);
        let c1 = pod("c", "p", &[("x", "1")]);
        assert!(set
            .check(Party::Pod(&a1), Party::Pod(&dst), 80, &none)
            .is_ok());
        assert!(set
            .check(Party::Pod(&a2), Party::Pod(&dst), 80, &none)
            .is_err());
        assert!(set
            .check(Party::Pod(&c1), Party::Pod(&dst), 80, &none)
            .is_err());
    }

    #[test]
    fn what_cannot_be_understood_denies() {
        let set = policies(json!([
            np(
                "n",
                "bad-selector",
                json!({
                    "podSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]},
                    "ingress": [{}],
                })
            ),
            np(
                "m",
                "bad-peer",
                json!({
                    "podSelector": {},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}, {}]}],
                })
            ),
        ]));
        let none = |_: &str| None;
        let src = pod("x", "src", &[]);
        // A policy whose selector does not parse selects every pod of its namespace; its empty
        // rule still allows, as written.
        assert!(set
            .check(Party::Pod(&src), Party::Pod(&pod("n", "a", &[])), 80, &none)
            .is_ok());
        // Unreadable peers match nothing.
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(set
            .check(
                Party::Outside(ip),
                Party::Pod(&pod("m", "a", &[])),
                80,
                &none
            )
            .is_err());
        assert!(set
            .check(Party::Pod(&src), Party::Pod(&pod("m", "a", &[])), 80, &none)
            .is_err());
        assert!(PolicySet::default().is_empty());
        assert!(set.has_policies_in("m") && !set.has_policies_in("x"));
    }
}
