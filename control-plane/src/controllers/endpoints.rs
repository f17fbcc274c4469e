//! The endpoints controller: for every Service with a selector, the `Endpoints` object of the
//! same name and its `EndpointSlices` list the selected pods' addresses and ports, ready ones
//! apart from the others, as Kubernetes' endpoints and endpointslice controllers keep them.
//! [`desired`] is pure and table-tested; objects are written only when they differ.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::{ControllerError, PodInformer};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that says which controller manages an EndpointSlice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`], as Kubernetes' own.
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// One port of a Service as it resolves for one pod.
type Port = (String, i32, String);

/// A selected pod as the endpoints list it.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    ip: String,
    node: Option<String>,
    target: Value,
    /// The pod's Ready condition is True.
    serving: bool,
    terminating: bool,
}

impl Member {
    /// Ready for new traffic: serving and not terminating.
    fn ready(&self) -> bool {
        self.serving && !self.terminating
    }
}

/// What a Service's endpoints should be: the `Endpoints` object's `subsets` and one
/// EndpointSlice body (`endpoints` and `ports`) per distinct port mapping, keyed by a stable
/// name suffix. None when the Service has no selector (its endpoints are the user's).
pub fn desired(svc: &Service, pods: &[Arc<Pod>]) -> Option<(Value, BTreeMap<String, Value>)> {
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = svc.metadata.namespace.as_deref();
    // Pods grouped by how the Service's ports resolve on them (a named targetPort may differ).
    let mut groups: BTreeMap<Vec<Port>, Vec<Member>> = BTreeMap::new();
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        if pod.metadata.namespace.as_deref() != ns
            || !selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ports = resolve_ports(svc, pod);
        groups.entry(ports).or_default().push(Member {
            ip,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target: json!({"kind": "Pod", "name": pod.metadata.name,
                "namespace": pod.metadata.namespace, "uid": pod.metadata.uid}),
            serving,
            terminating,
        });
    }
    for members in groups.values_mut() {
        members.sort_by(|a, b| {
            let key = |m: &Member| (m.ip.clone(), m.target["name"].as_str().map(str::to_string));
            key(a).cmp(&key(b))
        });
    }
    let port_json = |ports: &[Port], with_name_always: bool| -> Vec<Value> {
        ports
            .iter()
            .map(|(name, port, protocol)| {
                if name.is_empty() && !with_name_always {
                    json!({"port": port, "protocol": protocol})
                } else {
                    json!({"name": name, "port": port, "protocol": protocol})
                }
            })
            .collect()
    };
    let address = |m: &Member| {
        let mut a = json!({"ip": m.ip, "targetRef": m.target});
        if let Some(n) = &m.node {
            a["nodeName"] = json!(n);
        }
        a
    };
    let subsets: Vec<Value> = groups
        .iter()
        .filter(|(ports, _)| !ports.is_empty())
        .map(|(ports, members)| {
            let mut subset = json!({"ports": port_json(ports, false)});
            let (ready, not): (Vec<&Member>, Vec<&Member>) =
                members.iter().partition(|m| m.ready());
            if !ready.is_empty() {
                subset["addresses"] = json!(ready.iter().map(|m| address(m)).collect::<Vec<_>>());
            }
            if !not.is_empty() {
                subset["notReadyAddresses"] =
                    json!(not.iter().map(|m| address(m)).collect::<Vec<_>>());
            }
            subset
        })
        .collect();
    let mut slices = BTreeMap::new();
    for (ports, members) in &groups {
        let endpoints: Vec<Value> = members
            .iter()
            .map(|m| {
                let mut e = json!({"addresses": [m.ip], "targetRef": m.target,
                    "conditions": {"ready": m.ready(), "serving": m.serving,
                        "terminating": m.terminating}});
                if let Some(n) = &m.node {
                    e["nodeName"] = json!(n);
                }
                e
            })
            .collect();
        slices.insert(
            suffix(ports),
            json!({"endpoints": endpoints, "ports": port_json(ports, true)}),
        );
    }
    // A Service that selects nothing still has one (empty) slice, as in Kubernetes.
    if slices.is_empty() {
        let ports = resolve_ports(svc, &Pod::default());
        slices.insert(
            suffix(&ports),
            json!({"endpoints": [], "ports": port_json(&ports, true)}),
        );
    }
    Some((json!(subsets), slices))
}

/// The Service's ports as they resolve on `pod`: a numeric targetPort (or none: the port
/// itself) as is, a named one to the pod's container port of that name (left out when the pod
/// has none).
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut out: Vec<Port> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let target = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => match name.parse::<i32>() {
                    Ok(n) => n,
                    Err(_) => pod
                        .spec
                        .iter()
                        .flat_map(|s| &s.containers)
                        .flat_map(|c| c.ports.iter().flatten())
                        .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                        .map(|cp| cp.container_port)?,
                },
            };
            Some((p.name.clone().unwrap_or_default(), target, protocol))
        })
        .collect();
    out.sort();
    out
}

/// A short, stable name suffix for a port mapping.
fn suffix(ports: &[Port]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ports.hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
}

/// Run the controller: any pod change in a namespace may change its Services' endpoints.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
    });
    let controller = Controller::new(Api::<Service>::all(client), watcher::Config::default());
    let services = controller.store();
    controller
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            super::in_pod_namespace(&services, &pod)
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some((subsets, slices)) = desired(&svc, &ctx.pods.in_namespace(&ns)) else {
        return Ok(Action::await_change());
    };
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name,
        "uid": svc.metadata.uid, "controller": true, "blockOwnerDeletion": true}]);
    let params = PatchParams::default();

    // Endpoints, named as the Service.
    let endpoints: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(ctx.client.clone(), &ns);
    let empty = subsets.as_array().is_none_or(|a| a.is_empty());
    match endpoints.get_opt(&name).await? {
        None => {
            let mut body = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": svc.metadata.labels,
                    "ownerReferences": owner}});
            if !empty {
                body["subsets"] = subsets;
            }
            endpoints
                .create(&PostParams::default(), &serde_json::from_value(body)?)
                .await?;
        }
        Some(have) => {
            let current = serde_json::to_value(&have.subsets)?;
            let same = if empty {
                current.is_null() || current.as_array().is_some_and(|a| a.is_empty())
            } else {
                current == subsets
            };
            if !same {
                let body = json!({"subsets": if empty { Value::Null } else { subsets }});
                endpoints
                    .patch(&name, &params, &Patch::Merge(&body))
                    .await?;
            }
        }
    }

    // EndpointSlices: `<service>-<ports hash>`; stale ones of this Service are deleted.
    let api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(ctx.client.clone(), &ns);
    let have = api
        .list(
            &ListParams::default()
                .labels(&format!("{SERVICE_NAME}={name},{MANAGED_BY}={CONTROLLER}")),
        )
        .await?;
    let mut existing: BTreeMap<String, Value> = BTreeMap::new();
    for s in have.items {
        let slice_name = s.metadata.name.clone().unwrap_or_default();
        existing.insert(
            slice_name,
            json!({"endpoints": serde_json::to_value(&s.endpoints)?,
                "ports": serde_json::to_value(&s.ports)?}),
        );
    }
    for (suffix, body) in &slices {
        let slice_name = format!("{name}-{suffix}");
        match existing.remove(&slice_name) {
            Some(current) if same_slice(&current, body) => {}
            Some(_) => {
                api.patch(&slice_name, &params, &Patch::Merge(body)).await?;
            }
            None => {
                let mut full = body.clone();
                full["apiVersion"] = json!("discovery.k8s.io/v1");
                full["kind"] = json!("EndpointSlice");
                full["addressType"] = json!("IPv4");
                full["metadata"] = json!({"name": slice_name, "namespace": ns,
                    "labels": {SERVICE_NAME: name, MANAGED_BY: CONTROLLER},
                    "ownerReferences": owner});
                api.create(&PostParams::default(), &serde_json::from_value(full)?)
                    .await?;
            }
        }
    }
    for stale in existing.keys() {
        super::ignore_missing(api.delete(stale, &DeleteParams::default()).await)?;
    }
    Ok(Action::await_change())
}

/// Does a stored slice (as read back) say what `want` says? Absent lists read back as null.
fn same_slice(current: &Value, want: &Value) -> bool {
    let norm = |v: &Value| match v {
        Value::Null => json!([]),
        other => other.clone(),
    };
    norm(&current["endpoints"]) == norm(&want["endpoints"])
        && norm(&current["ports"]) == norm(&want["ports"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(selector: Value, ports: Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "d", "uid": "s1"},
            "spec": {"selector": selector, "ports": ports}}),
        )
        .expect("a valid service")
    }

    fn pod(name: &str, labels: Value, ip: Option<&str>, ready: bool, extra: Value) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "d", "uid": name, "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if let (Some(p), Value::Object(extra)) = (p.as_object_mut(), extra) {
            for (k, v) in extra {
                if let (Some(Value::Object(into)), Value::Object(v)) = (p.get_mut(&k), v.clone()) {
                    into.extend(v);
                } else {
                    p.insert(k, v);
                }
            }
        }
        Arc::new(serde_json::from_value(p).expect("a valid pod"))
    }

    #[test]
    fn desired_table() {
        let app = json!({"app": "web"});
        let port80 = json!([{"name": "http", "port": 80, "targetPort": "http"}]);
        let a = pod("a", app.clone(), Some("10.0.0.1"), true, json!({}));
        let b = pod("b", app.clone(), Some("10.0.0.2"), false, json!({}));
        let no_ip = pod("c", app.clone(), None, true, json!({}));
        let other = pod("o", json!({"app": "db"}), Some("10.0.0.9"), true, json!({}));
        let done = pod(
            "f",
            app.clone(),
            Some("10.0.0.3"),
            true,
            json!({"status": {"phase": "Succeeded"}}),
        );
        let going = pod(
            "g",
            app.clone(),
            Some("10.0.0.4"),
            true,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let target = |n: &str| json!({"kind": "Pod", "name": n, "namespace": "d", "uid": n});
        let addr = |n: &str, ip: &str| json!({"ip": ip, "nodeName": "n1", "targetRef": target(n)});
        type Case = (&'static str, Service, Vec<Arc<Pod>>, Option<Value>);
        let cases: Vec<Case> = vec![
            ("no selector: not ours", svc(json!({}), port80.clone()), vec![a.clone()], None),
            (
                "ready and not ready apart; no IP, other labels and finished pods left out; terminating not ready",
                svc(app.clone(), port80.clone()),
                vec![a.clone(), b.clone(), no_ip, other, done, going],
                Some(json!([{"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "addresses": [addr("a", "10.0.0.1")],
                    "notReadyAddresses": [addr("b", "10.0.0.2"), addr("g", "10.0.0.4")]}])),
            ),
            (
                "numeric targetPort, unnamed port, nothing selected",
                svc(json!({"app": "none"}), json!([{"port": 80, "targetPort": 9000}])),
                vec![a.clone()],
                Some(json!([])),
            ),
        ];
        for (what, s, pods, want) in cases {
            let got = desired(&s, &pods);
            assert_eq!(
                got.as_ref().map(|(subsets, _)| subsets.clone()),
                want,
                "{what}"
            );
        }
        // The slices: one per port mapping, conditions as Kubernetes sets them.
        let (_, slices) = desired(&svc(app.clone(), port80.clone()), &[a, b]).expect("selected");
        assert_eq!(slices.len(), 1);
        let slice = slices.values().next().expect("one slice");
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            slice["endpoints"][0]["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(slice["endpoints"][1]["addresses"], json!(["10.0.0.2"]));
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], json!(false));
        // Nothing selected: one empty slice with the Service's own ports.
        let (_, slices) =
            desired(&svc(json!({"app": "none"}), json!([{"port": 80}])), &[]).expect("selector");
        let slice = slices.values().next().expect("one slice");
        assert_eq!(slice["endpoints"], json!([]));
        assert_eq!(
            slice["ports"],
            json!([{"name": "", "port": 80, "protocol": "TCP"}])
        );
    }
}
