//! NodeRestriction, as kube-apiserver's admission plugin: a node (`system:node:NAME` in
//! `system:nodes`) may write only what is its own, whatever RBAC lets nodes do in general:
//! - its own Node object (create, update, status, delete), never another's; and of its labels
//!   only those a kubelet may set (`labels_forbidden`: none under
//!   `node-restriction.kubernetes.io`, and under `kubernetes.io`/`k8s.io` only the kubelet's
//!   own: hostname, os, arch, instance type, zone and region, `kubelet.kubernetes.io/*`,
//!   `node.kubernetes.io/*`), so a node cannot give itself a role or a dedicated workload's
//!   label; once registered, it changes neither its taints (it could shed one that keeps
//!   workloads away, or steer some to itself) nor its ownerReferences (`own_node_update`);
//! - the status of pods bound to it, and the deletion of those pods; it creates no pods and
//!   changes no pod's spec or metadata;
//! - its own Lease in `kube-node-lease`;
//! - ServiceAccount tokens only bound to a pod (by uid) that is bound to it.
//!
//! [`decide`] is pure and table-tested; [`check`] applies it to the request's user.

use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::REQUEST_USER;
use crate::auth::authorizer::node_of;
use crate::auth::rbac::UserInfo;
use crate::resources::ResourceType;

/// What a write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create.
    Create,
    /// Update or patch of the object (not its status).
    Update,
    /// Update or patch of the status.
    Status,
    /// Delete.
    Delete,
}

/// May `node` do `op` on the object `name` of `plural` in `group` (`ns`), whose stored state is
/// `old` (`None` on create)? `Err` says why not.
pub(crate) fn decide(
    node: &str,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    op: Op,
) -> Result<(), String> {
    let bound_here = || {
        old.and_then(|o| o.pointer("/spec/nodeName"))
            .and_then(Value::as_str)
            == Some(node)
    };
    match (group, plural) {
        ("", "nodes") if name != node => Err(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        )),
        ("", "pods") => match op {
            Op::Create => Err(format!("node {node:?} can not create pods")),
            Op::Update => Err(format!(
                "node {node:?} can only update the status of pods bound to it"
            )),
            Op::Status | Op::Delete if !bound_here() => Err(format!(
                "node {node:?} can only {} pod {ns}/{name} if it is bound to it",
                if op == Op::Delete {
                    "delete"
                } else {
                    "update the status of"
                }
            )),
            _ => Ok(()),
        },
        ("coordination.k8s.io", "leases")
            if ns != skiff_common::NODE_LEASE_NAMESPACE || name != node =>
        {
            Err(format!(
                "node {node:?} can only access its own lease in {:?}",
                skiff_common::NODE_LEASE_NAMESPACE
            ))
        }
        _ => Ok(()),
    }
}

/// Label keys a kubelet sets on its own Node (Kubernetes' `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// May a node set (add, change or remove) the label `key` on its own Node? Pure.
pub(crate) fn node_may_label(key: &str) -> bool {
    let Some((namespace, _)) = key.split_once('/') else {
        return true;
    };
    let under = |ns: &str| namespace == ns || namespace.ends_with(&format!(".{ns}"));
    if under("node-restriction.kubernetes.io") {
        return false;
    }
    if under("kubernetes.io") || under("k8s.io") {
        return KUBELET_LABELS.contains(&key)
            || under("kubelet.kubernetes.io")
            || under("node.kubernetes.io");
    }
    true
}

/// The labels a write of a Node by itself may not make (added, changed or removed ones a node
/// may not set), sorted. Pure.
pub(crate) fn labels_forbidden(old: Option<&Value>, new: &Value) -> Vec<String> {
    let labels = |v: Option<&Value>| -> std::collections::BTreeMap<String, Value> {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (before, after) = (labels(old), labels(Some(new)));
    let mut keys: Vec<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
        .filter(|k| !node_may_label(k))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What an update of a node's own Node may not change besides labels: its taints and its
/// ownerReferences (Kubernetes' words). Pure.
pub(crate) fn own_node_update(node: &str, old: &Value, new: &Value) -> Result<(), String> {
    let same = |p: &str| {
        let empty = |v: Option<&Value>| {
            v.is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
        };
        let (a, b) = (old.pointer(p), new.pointer(p));
        a == b || (empty(a) && empty(b))
    };
    if !same("/spec/taints") {
        return Err(format!("node {node:?} is not allowed to modify taints"));
    }
    if !same("/metadata/ownerReferences") {
        return Err(format!(
            "node {node:?} is not allowed to modify ownerReferences"
        ));
    }
    Ok(())
}

/// Refuse a node's create or update of its own Node that sets labels a node may not, or
/// (on update) changes its taints or ownerReferences (403, in Kubernetes' words).
pub(super) fn check_own_node(
    rt: &ResourceType,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if (rt.group, rt.plural) != ("", "nodes") {
        return Ok(());
    }
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    let denied = |message: String| ApiError::Denied {
        group: rt.group.into(),
        resource: rt.plural.into(),
        name: name.into(),
        message,
    };
    if let Some(old) = old {
        own_node_update(&node, old, new).map_err(denied)?;
    }
    let forbidden = labels_forbidden(old, new);
    if forbidden.is_empty() {
        return Ok(());
    }
    let message = match old {
        None => format!(
            "node {node:?} is not allowed to set the following labels: {}",
            forbidden.join(", ")
        ),
        Some(_) => format!(
            "node {node:?} is not allowed to modify labels: {}",
            forbidden.join(", ")
        ),
    };
    Err(denied(message))
}

/// May `node` have a ServiceAccount token bound as `bound` says: (the uid the request names,
/// the node of the pod it names), None when it names no pod? Kubernetes' messages.
pub(crate) fn token_binding(node: &str, bound: Option<(&str, Option<&str>)>) -> Result<(), String> {
    match bound {
        None => Err("node requested token not bound to a pod".into()),
        Some(("", _)) => Err("node requested token with a pod binding without a uid".into()),
        Some((_, pod_node)) if pod_node != Some(node) => {
            Err("node requested token bound to a pod scheduled on a different node".into())
        }
        Some(_) => Ok(()),
    }
}

/// The node that makes the current request, if a node makes it.
pub(crate) fn requesting_node() -> Option<String> {
    REQUEST_USER
        .try_with(|u: &UserInfo| node_of(u).map(str::to_string))
        .ok()
        .flatten()
}

/// Refuse a node's write of something not its own (403).
pub(super) fn check(
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    op: Op,
) -> ApiResult<()> {
    // Runs on every write: only a node's name is taken from the request's user.
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    decide(&node, rt.group, rt.plural, ns, name, old, op).map_err(|why| ApiError::Denied {
        group: rt.group.into(),
        resource: rt.plural.into(),
        name: name.into(),
        message: why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn own_node_update_table() {
        let node = |taints: Value, owners: Value| json!({"metadata": {"name": "n1", "ownerReferences": owners}, "spec": {"taints": taints}});
        let t = |k: &str| json!([{"key": k, "effect": "NoSchedule"}]);
        let o = json!([{"apiVersion": "v1", "kind": "Node", "name": "x", "uid": "u"}]);
        // (old, new, the refusal's words, if refused)
        let cases = [
            (node(t("a"), json!(null)), node(t("a"), json!(null)), None),
            (
                node(json!(null), json!(null)),
                node(json!([]), json!([])),
                None,
            ),
            (
                node(t("a"), json!(null)),
                node(json!(null), json!(null)),
                Some("modify taints"),
            ),
            (
                node(json!(null), json!(null)),
                node(t("a"), json!(null)),
                Some("modify taints"),
            ),
            (
                node(t("a"), json!(null)),
                node(t("b"), json!(null)),
                Some("modify taints"),
            ),
            (
                node(json!(null), json!(null)),
                node(json!(null), o.clone()),
                Some("modify ownerReferences"),
            ),
            (node(json!(null), o.clone()), node(json!(null), o), None),
        ];
        for (old, new, want) in cases {
            let got = own_node_update("n1", &old, &new);
            match want {
                None => assert_eq!(got, Ok(()), "{old} -> {new}"),
                Some(words) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(words)),
                    "{old} -> {new}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn node_self_labelling_table() {
        let cases = [
            ("rack", true),
            ("example.com/dedicated", true),
            ("kubernetes.io/hostname", true),
            ("kubernetes.io/arch", true),
            ("topology.kubernetes.io/zone", true),
            (
                "node.kubernetes.io/exclude-from-external-load-balancers",
                true,
            ),
            ("x.node.kubernetes.io/y", true),
            ("kubelet.kubernetes.io/config", true),
            ("node-role.kubernetes.io/control-plane", false),
            ("node-restriction.kubernetes.io/tenant", false),
            ("a.node-restriction.kubernetes.io/tenant", false),
            ("kubernetes.io/role", false),
            ("k8s.io/anything", false),
            ("storage.k8s.io/x", false),
        ];
        for (key, want) in cases {
            assert_eq!(node_may_label(key), want, "{key}");
        }
        let old = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "true", "rack": "a"}}});
        // Keeping a label it may not set is fine; changing, adding or removing one is not.
        let same = json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "true", "rack": "b"}}});
        assert!(labels_forbidden(Some(&old), &same).is_empty());
        let removed = json!({"metadata": {"labels": {"rack": "a"}}});
        assert_eq!(
            labels_forbidden(Some(&old), &removed),
            ["node-role.kubernetes.io/control-plane"]
        );
        let added = json!({"metadata": {"labels": {"node-restriction.kubernetes.io/t": "x",
            "node-role.kubernetes.io/control-plane": "true"}}});
        assert_eq!(
            labels_forbidden(None, &added),
            [
                "node-restriction.kubernetes.io/t",
                "node-role.kubernetes.io/control-plane"
            ]
        );
    }

    #[test]
    fn node_token_binding_table() {
        type Case<'a> = (Option<(&'a str, Option<&'a str>)>, Result<(), &'a str>);
        let cases: &[Case] = &[
            (Some(("u1", Some("n1"))), Ok(())),
            (None, Err("node requested token not bound to a pod")),
            (
                Some(("", Some("n1"))),
                Err("node requested token with a pod binding without a uid"),
            ),
            (
                Some(("u1", Some("n2"))),
                Err("node requested token bound to a pod scheduled on a different node"),
            ),
            (
                Some(("u1", None)),
                Err("node requested token bound to a pod scheduled on a different node"),
            ),
        ];
        for (bound, want) in cases {
            assert_eq!(
                token_binding("n1", *bound),
                want.map_err(str::to_string),
                "{bound:?}"
            );
        }
    }

    #[test]
    fn node_restriction_table() {
        let mine = json!({"spec": {"nodeName": "n1"}});
        let theirs = json!({"spec": {"nodeName": "n2"}});
        let unbound = json!({"spec": {}});
        let lease_ns = skiff_common::NODE_LEASE_NAMESPACE;
        // (group, plural, ns, name, old, op, allowed)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Option<&'a Value>,
            Op,
            bool,
        );
        let cases: Vec<Case> = vec![
            ("", "nodes", "", "n1", None, Op::Create, true),
            ("", "nodes", "", "n1", Some(&unbound), Op::Status, true),
            ("", "nodes", "", "n2", None, Op::Create, false),
            ("", "nodes", "", "n2", Some(&unbound), Op::Status, false),
            ("", "nodes", "", "n2", Some(&unbound), Op::Update, false),
            ("", "nodes", "", "n2", Some(&unbound), Op::Delete, false),
            ("", "pods", "a", "p", Some(&mine), Op::Status, true),
            ("", "pods", "a", "p", Some(&mine), Op::Delete, true),
            ("", "pods", "a", "p", Some(&theirs), Op::Status, false),
            ("", "pods", "a", "p", Some(&theirs), Op::Delete, false),
            ("", "pods", "a", "p", Some(&unbound), Op::Delete, false),
            ("", "pods", "a", "p", Some(&mine), Op::Update, false),
            ("", "pods", "a", "p", None, Op::Create, false),
            (
                "coordination.k8s.io",
                "leases",
                lease_ns,
                "n1",
                None,
                Op::Create,
                true,
            ),
            (
                "coordination.k8s.io",
                "leases",
                lease_ns,
                "n1",
                Some(&unbound),
                Op::Update,
                true,
            ),
            (
                "coordination.k8s.io",
                "leases",
                lease_ns,
                "n2",
                Some(&unbound),
                Op::Update,
                false,
            ),
            (
                "coordination.k8s.io",
                "leases",
                "kube-system",
                "n1",
                None,
                Op::Create,
                false,
            ),
            ("", "events", "a", "e", None, Op::Create, true),
            (
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "c",
                None,
                Op::Create,
                true,
            ),
        ];
        for (group, plural, ns, name, old, op, want) in cases {
            assert_eq!(
                decide("n1", group, plural, ns, name, old, op).is_ok(),
                want,
                "{group}/{plural} {ns}/{name} {op:?}"
            );
        }
    }
}
