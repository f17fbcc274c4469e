//! The default ClusterRoles and ClusterRoleBindings every cluster has, with Kubernetes' names and
//! meanings (rules written for the kinds skiff serves): `cluster-admin` (bound to
//! `system:masters`), the user-facing `admin` ⊃ `edit` ⊃ `view`, aggregated by label from the
//! `system:aggregate-to-*` roles (and from any ClusterRole a user or operator labels so), and
//! what every authenticated user may do: `system:basic-user`, `system:discovery`,
//! `system:public-info-viewer`. Pure data and merges; created at start by `api::bootstrap`,
//! and reconciled there as kube-apiserver does: a stored default whose
//! `rbac.authorization.kubernetes.io/autoupdate` annotation is not `"false"` gets back the
//! rules, aggregation selectors, subjects and labels it lacks (nothing it has is removed).

use serde_json::{json, Value};

const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    })
}

/// A role whose rules the aggregation controller fills from the roles labelled
/// `aggregate-to-<name>`.
fn aggregated(name: &str, labels: Value) -> Value {
    let mut r = role(name, labels, Vec::new());
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE_TO}{name}"): "true"}}]});
    r
}

fn label(into: &str) -> Value {
    json!({format!("{AGGREGATE_TO}{into}"): "true", "kubernetes.io/bootstrapping": "rbac-defaults"})
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let bootstrapping = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    vec![
        role(
            "cluster-admin",
            bootstrapping.clone(),
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", bootstrapping.clone()),
        aggregated("edit", label("admin")),
        aggregated("view", label("edit")),
        role(
            "system:aggregate-to-admin",
            label("admin"),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                    &[READ, WRITE].concat(),
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            label("edit"),
            vec![
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                    &[READ, WRITE].concat(),
                ),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                    &[READ, WRITE].concat(),
                ),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                    &[READ, WRITE].concat(),
                ),
                rule(
                    &["autoscaling"],
                    &["horizontalpodautoscalers"],
                    &[READ, WRITE].concat(),
                ),
                rule(&["batch"], &["cronjobs", "jobs"], &[READ, WRITE].concat()),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    &[READ, WRITE].concat(),
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets"],
                    &[READ, WRITE].concat(),
                ),
            ],
        ),
        // Who may read `metrics.k8s.io` (`kubectl top`): whoever may view, as metrics-server's
        // role of the same name grants.
        role(
            "system:aggregated-metrics-reader",
            label("view"),
            vec![rule(&["metrics.k8s.io"], &["pods", "nodes"], READ)],
        ),
        role(
            "system:aggregate-to-view",
            label("view"),
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                    READ,
                ),
                rule(
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                    READ,
                ),
                rule(&[""], &["namespaces"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                    READ,
                ),
                rule(
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                    READ,
                ),
                rule(
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                    READ,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                    READ,
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    READ,
                ),
            ],
        ),
        role(
            "system:basic-user",
            bootstrapping.clone(),
            vec![
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:discovery",
            bootstrapping.clone(),
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            bootstrapping.clone(),
            vec![urls(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:monitoring",
            bootstrapping.clone(),
            vec![urls(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/readyz",
                    "/readyz/*",
                    "/metrics",
                ],
                &["get"],
            )],
        ),
        role(
            "system:auth-delegator",
            bootstrapping.clone(),
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        role("system:node", bootstrapping.clone(), node_rules()),
        role(
            "system:node-bootstrapper",
            bootstrapping.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        role(
            NODE_CLIENT,
            bootstrapping.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &["create"],
            )],
        ),
        role(
            SELF_NODE_CLIENT,
            bootstrapping.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &["create"],
            )],
        ),
        role(
            "system:kube-scheduler",
            bootstrapping.clone(),
            scheduler_rules(),
        ),
        role(
            "system:kube-controller-manager",
            bootstrapping.clone(),
            controller_manager_rules(),
        ),
        role(
            KUBELET_API_ADMIN,
            bootstrapping.clone(),
            vec![
                rule(&[""], &["nodes"], &["get", "list", "watch", "proxy"]),
                rule(
                    &[""],
                    &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                    &["*"],
                ),
            ],
        ),
        role(
            "system:public-info-viewer",
            bootstrapping,
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
    ]
}

/// Full access to the nodes' agent endpoints (logs, metrics), as Kubernetes' role.
pub const KUBELET_API_ADMIN: &str = "system:kubelet-api-admin";
/// The user of the API server's client certificate when it calls a node's agent endpoint.
pub const KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// Who may ask for a node's first client certificate with the join token.
pub const NODE_CLIENT: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
/// Who may renew its own node client certificate.
pub const SELF_NODE_CLIENT: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

/// What any node may do by RBAC; NodeRestriction (`api::registry::noderestriction`) narrows
/// writes to the node's own objects, and the node authorizer (`auth::authorizer`) lets it read
/// the Secrets and ConfigMaps its pods refer to, and no others.
fn node_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &["nodes"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        rule(&[""], &["nodes/status"], &["patch", "update"]),
        rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["services", "endpoints"], READ),
        // The gateway asks for a Service scaled to zero to start (`api::wake`).
        rule(&[""], &["services/wake"], &["create"]),
        // NetworkPolicy enforcement in the gateway selects pods by their namespace's labels.
        rule(&[""], &["namespaces"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            READ,
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[READ, &["create", "update", "patch", "delete"]].concat(),
        ),
        rule(&["", "events.k8s.io"], &["events"], EVENTS),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        urls(&["/skiff/v1/modules/*", "/skiff/v1/blobs/*"], &["get"]),
        // The agent endpoint authenticates and authorizes its callers through the API, as the
        // kubelet's webhook modes do.
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

/// The in-process scheduler's user.
pub const SCHEDULER: &str = "system:kube-scheduler";
/// The in-process controllers' user.
pub const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";

const EVENTS: &[&str] = &["create", "patch", "update"];

/// What the scheduler reads and writes: pods and their bindings and status, what placement
/// looks at (nodes, claims, volumes, classes, budgets), events.
fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "pods",
                "nodes",
                "namespaces",
                "services",
                "replicationcontrollers",
            ],
            READ,
        ),
        rule(&[""], &["pods/binding", "bindings"], &["create"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["pods"], &["delete"]),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            &[READ, &["patch", "update"]].concat(),
        ),
        rule(&["storage.k8s.io"], &["storageclasses", "csinodes"], READ),
        rule(&["apps"], &["replicasets", "statefulsets"], READ),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[READ, WRITE].concat(),
        ),
        rule(&["", "events.k8s.io"], &["events"], EVENTS),
    ]
}

/// What the controllers read and write: the workload kinds they run (with status and scale),
/// the pods they create, endpoints, claims and volumes, the `default` ServiceAccount and root CA
/// of each namespace, node conditions and taints, and the rules of aggregated ClusterRoles
/// (`escalate`, as kube-controller-manager's clusterrole-aggregation controller has), signing
/// and approving node certificates, and listing any kind to count quota usage (as
/// kube-controller-manager's resourcequota controller). No writes of Secrets or bindings, no
/// impersonation.
fn controller_manager_rules() -> Vec<Value> {
    let rw = &[READ, WRITE].concat();
    let status = &[READ, &["patch", "update"]].concat();
    vec![
        rule(
            &[""],
            &[
                "pods",
                "serviceaccounts",
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumes",
                "replicationcontrollers",
                "nodes",
            ],
            rw,
        ),
        rule(
            &[""],
            &[
                "pods/status",
                "nodes/status",
                "persistentvolumeclaims/status",
                "persistentvolumes/status",
                "replicationcontrollers/status",
                "replicationcontrollers/scale",
                "services/status",
            ],
            status,
        ),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(&[""], &["namespaces", "services"], READ),
        rule(
            &["apps"],
            &[
                "deployments",
                "replicasets",
                "statefulsets",
                "daemonsets",
                "controllerrevisions",
            ],
            rw,
        ),
        rule(
            &["apps"],
            &[
                "deployments/status",
                "replicasets/status",
                "statefulsets/status",
                "daemonsets/status",
                "deployments/scale",
                "replicasets/scale",
                "statefulsets/scale",
            ],
            status,
        ),
        rule(&["batch"], &["jobs", "cronjobs"], rw),
        rule(&["batch"], &["jobs/status", "cronjobs/status"], status),
        rule(&["discovery.k8s.io"], &["endpointslices"], rw),
        rule(&["networking.k8s.io"], &["ingresses"], READ),
        rule(&["networking.k8s.io"], &["ingresses/status"], status),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(&["policy"], &["poddisruptionbudgets/status"], status),
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        rule(&["coordination.k8s.io"], &["leases"], rw),
        // The HorizontalPodAutoscaler: what it scales, and the metrics it reads.
        rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
        rule(
            &["autoscaling"],
            &["horizontalpodautoscalers/status"],
            status,
        ),
        rule(&["*"], &["*/scale"], &["get", "update", "patch"]),
        rule(&["metrics.k8s.io"], &["pods", "nodes"], READ),
        rule(&["custom.metrics.k8s.io"], &["*"], READ),
        rule(
            &["rbac.authorization.k8s.io"],
            &["clusterroles"],
            &[READ, &["update", "patch", "escalate"]].concat(),
        ),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            READ,
        ),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests/status"],
            &["patch", "update"],
        ),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests/approval"],
            &["patch", "update"],
        ),
        json!({"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
            "resourceNames": [crate::controllers::csrsigning::CLIENT_SIGNER,
                crate::controllers::csrsigning::KUBELET_SIGNER,
                crate::controllers::csrsigning::SERVING_SIGNER], "verbs": ["sign"]}),
        json!({"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
            "resourceNames": [crate::controllers::csrsigning::KUBELET_SIGNER,
                crate::controllers::csrsigning::SERVING_SIGNER], "verbs": ["approve"]}),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
        // The quota controller counts objects of any kind (as kube-controller-manager's).
        rule(&["*"], &["*"], &["list", "watch"]),
        rule(&[""], &["resourcequotas"], READ),
        rule(&[""], &["resourcequotas/status"], &["update", "patch"]),
        rule(&["", "events.k8s.io"], &["events"], EVENTS),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let bind_subjects = |name: &str, kind: &str, names: &[&str]| {
        let subjects: Vec<Value> = names
            .iter()
            .map(|g| json!({"kind": kind, "name": g, "apiGroup": "rbac.authorization.k8s.io"}))
            .collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {AUTOUPDATE: "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subjects,
        })
    };
    let bind = |name: &str, groups: &[&str]| bind_subjects(name, "Group", groups);
    vec![
        bind_subjects(SCHEDULER, "User", &[SCHEDULER]),
        bind_subjects(CONTROLLER_MANAGER, "User", &[CONTROLLER_MANAGER]),
        bind_subjects(KUBELET_API_ADMIN, "User", &[KUBELET_CLIENT]),
        bind("cluster-admin", &["system:masters"]),
        bind("system:node", &["system:nodes"]),
        bind("system:monitoring", &["system:monitoring"]),
        bind("system:node-bootstrapper", &["system:bootstrappers"]),
        bind(NODE_CLIENT, &["system:bootstrappers"]),
        bind(SELF_NODE_CLIENT, &["system:nodes"]),
        bind("system:basic-user", &["system:authenticated"]),
        bind("system:discovery", &["system:authenticated"]),
        bind(
            "system:service-account-issuer-discovery",
            &["system:serviceaccounts"],
        ),
        bind(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

/// Put back into a stored default ClusterRole what `want` has and it lacks: rules (or, for an
/// aggregated role, its selectors: the controller owns its rules) and labels. True when it
/// changed. A role whose `autoupdate` annotation is `"false"` is left alone.
pub fn reconcile_role(stored: &mut Value, want: &Value) -> bool {
    if !autoupdate(stored) {
        return false;
    }
    let mut changed = merge_labels(stored, want);
    let (key, list) = match want.get("aggregationRule") {
        Some(_) => ("aggregationRule", "/aggregationRule/clusterRoleSelectors"),
        None => ("rules", "/rules"),
    };
    let wanted = want
        .pointer(list)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if stored.get(key).is_none_or(Value::is_null) {
        stored[key] = if key == "rules" {
            json!([])
        } else {
            json!({"clusterRoleSelectors": []})
        };
    }
    if let Some(have) = stored.pointer_mut(list) {
        if !have.is_array() {
            *have = json!([]);
        }
        if let Some(have) = have.as_array_mut() {
            for w in wanted {
                if !have.contains(&w) {
                    have.push(w);
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Put back into a stored default ClusterRoleBinding the subjects and labels `want` has and it
/// lacks. True when it changed.
pub fn reconcile_binding(stored: &mut Value, want: &Value) -> bool {
    if !autoupdate(stored) {
        return false;
    }
    let mut changed = merge_labels(stored, want);
    if !stored.get("subjects").is_some_and(Value::is_array) {
        stored["subjects"] = json!([]);
    }
    let wanted = want["subjects"].as_array().cloned().unwrap_or_default();
    if let Some(have) = stored["subjects"].as_array_mut() {
        for w in wanted {
            let named = |s: &Value| s["kind"] == w["kind"] && s["name"] == w["name"];
            if !have.iter().any(named) {
                have.push(w);
                changed = true;
            }
        }
    }
    changed
}

fn autoupdate(stored: &Value) -> bool {
    stored
        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
        .and_then(Value::as_str)
        != Some("false")
}

fn merge_labels(stored: &mut Value, want: &Value) -> bool {
    let Some(wanted) = want.pointer("/metadata/labels").and_then(Value::as_object) else {
        return false;
    };
    if !stored["metadata"]["labels"].is_object() {
        stored["metadata"]["labels"] = json!({});
    }
    let mut changed = false;
    if let Some(have) = stored["metadata"]["labels"].as_object_mut() {
        for (k, v) in wanted {
            if !have.contains_key(k) {
                have.insert(k.clone(), v.clone());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(all: &'a [Value], name: &str) -> &'a Value {
        all.iter()
            .find(|v| v["metadata"]["name"] == name)
            .expect("a default")
    }

    #[test]
    fn reconciling_puts_back_what_is_missing_and_keeps_what_was_added() {
        let roles = cluster_roles();
        let view = find(&roles, "system:aggregate-to-view");
        // (what the stored object looks like, whether it changes, rules it ends with)
        let mut lost_a_rule = view.clone();
        lost_a_rule["rules"].as_array_mut().unwrap().remove(0);
        lost_a_rule["rules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"apiGroups": ["x"], "resources": ["y"], "verbs": ["get"]}));
        let mut opted_out = lost_a_rule.clone();
        opted_out["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        let mut no_rules = view.clone();
        no_rules.as_object_mut().unwrap().remove("rules");
        let n = view["rules"].as_array().unwrap().len();
        let cases = [
            (view.clone(), false, n),
            (lost_a_rule, true, n + 1),
            (opted_out, false, n),
            (no_rules, true, n),
        ];
        for (i, (mut stored, changes, rules)) in cases.into_iter().enumerate() {
            assert_eq!(reconcile_role(&mut stored, view), changes, "case {i}");
            assert_eq!(stored["rules"].as_array().unwrap().len(), rules, "case {i}");
        }
        // An aggregated role gets its selectors back, never rules (the controller's).
        let edit = find(&roles, "edit");
        let mut stored = edit.clone();
        stored["aggregationRule"] =
            json!({"clusterRoleSelectors": [{"matchLabels": {"mine": "true"}}]});
        stored["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
        stored["metadata"]["labels"] = json!({});
        assert!(reconcile_role(&mut stored, edit));
        assert_eq!(
            stored["aggregationRule"]["clusterRoleSelectors"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(stored["rules"].as_array().unwrap().len(), 1);
        assert_eq!(stored["metadata"]["labels"], edit["metadata"]["labels"]);
    }

    #[test]
    fn reconciling_a_binding_adds_missing_subjects_only() {
        let bindings = cluster_role_bindings();
        let admin = find(&bindings, "cluster-admin");
        let mut stored = admin.clone();
        stored["subjects"] =
            json!([{"kind": "User", "name": "root", "apiGroup": "rbac.authorization.k8s.io"}]);
        assert!(reconcile_binding(&mut stored, admin));
        let names: Vec<&str> = stored["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(names, ["root", "system:masters"]);
        assert!(!reconcile_binding(&mut stored, admin));
        stored["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        stored["subjects"] = json!([]);
        assert!(!reconcile_binding(&mut stored, admin));
    }
}
