//! The default ClusterRoles and ClusterRoleBindings every cluster has, with Kubernetes' names and
//! meanings (rules written for the kinds skiff serves): `cluster-admin` (bound to
//! `system:masters`), the user-facing `admin` ⊃ `edit` ⊃ `view`, aggregated by label from the
//! `system:aggregate-to-*` roles (and from any ClusterRole a user or operator labels so), and
//! what every authenticated user may do: `system:basic-user`, `system:discovery`,
//! `system:public-info-viewer`. Pure data; created at start by `api::bootstrap`.

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
            "system:public-info-viewer",
            bootstrapping,
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let bind = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"kind": "Group", "name": g, "apiGroup": "rbac.authorization.k8s.io"}))
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
    vec![
        bind("cluster-admin", &["system:masters"]),
        bind("system:basic-user", &["system:authenticated"]),
        bind("system:discovery", &["system:authenticated"]),
        bind(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}
