//! What every cluster has from its first start, created (or brought up to date) through the
//! registry before the server answers: the namespaces `default`, `kube-system`, `kube-public`
//! and `kube-node-lease`; the built-in PriorityClasses; the default StorageClass
//! (`local-path`, as k3s') and IngressClass (`skiff`); the `default/kubernetes` Service (its
//! Endpoints are `crate::apiservers`'); the default ClusterRoles and
//! ClusterRoleBindings (`auth::defaults`, reconciled when they lack what the defaults have);
//! and the claims of objects stored before claims
//! existed.

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::registry::{self, Query};
use super::strategy::priority::SYSTEM_CLASSES;
use super::AppState;
use crate::resources::{self, ResourceType};

/// The cluster IP of the `kubernetes` Service (the first of the service range, as k3s).
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";

/// The default StorageClass and its provisioner (node-local directories).
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The provisioner of [`LOCAL_PATH_CLASS`].
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.dev/local-path";

fn rt(group: &str, version: &str, plural: &str) -> ApiResult<&'static ResourceType> {
    resources::find(group, version, plural)
        .ok_or_else(|| ApiError::Internal(format!("{plural} not registered")))
}

/// Create `obj` unless it exists.
async fn ensure(state: &AppState, rt: &ResourceType, ns: &str, obj: Value) -> ApiResult<()> {
    match registry::create(state, rt, ns, obj, &Query::new(), false).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the cluster-scoped `want`, or put back into the stored one what `merge` says it lacks
/// (the default RBAC objects, reconciled as kube-apiserver does at start).
async fn ensure_reconciled(
    state: &AppState,
    rt: &ResourceType,
    want: Value,
    merge: fn(&mut Value, &Value) -> bool,
) -> ApiResult<()> {
    let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
    match registry::create(state, rt, "", want.clone(), &Query::new(), false).await {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists { .. }) => {
            let mut stored = registry::get_object(state, rt, "", &name).await?;
            if !merge(&mut stored, &want) {
                return Ok(());
            }
            tracing::info!(resource = rt.plural, %name, "put back what a default RBAC object lacked");
            registry::update(state, rt, "", &name, stored, false, &Query::new())
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Create what every cluster has; see the module's documentation.
pub async fn bootstrap(state: &AppState) -> ApiResult<()> {
    let namespaces = rt("", "v1", "namespaces")?;
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        skiff_common::NODE_LEASE_NAMESPACE,
    ] {
        ensure(state, namespaces, "", json!({"metadata": {"name": ns}})).await?;
    }
    registry::repair_claims(state).await?;
    super::crd::sync(state).await?;
    let cluster_roles = rt("rbac.authorization.k8s.io", "v1", "clusterroles")?;
    for role in crate::auth::defaults::cluster_roles() {
        ensure_reconciled(
            state,
            cluster_roles,
            role,
            crate::auth::defaults::reconcile_role,
        )
        .await?;
    }
    let bindings = rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings")?;
    for binding in crate::auth::defaults::cluster_role_bindings() {
        ensure_reconciled(
            state,
            bindings,
            binding,
            crate::auth::defaults::reconcile_binding,
        )
        .await?;
    }
    let classes = rt("scheduling.k8s.io", "v1", "priorityclasses")?;
    for (name, value) in SYSTEM_CLASSES {
        let description = if *name == "system-node-critical" {
            "Used for system critical pods that must not be moved from their current node."
        } else {
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
        };
        let obj = json!({"metadata": {"name": name}, "value": value, "description": description});
        ensure(state, classes, "", obj).await?;
    }
    let storage = rt("storage.k8s.io", "v1", "storageclasses")?;
    let local = json!({
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {
            super::strategy::storage::DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": LOCAL_PATH_PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    });
    ensure(state, storage, "", local).await?;
    let ingress_classes = rt("networking.k8s.io", "v1", "ingressclasses")?;
    let skiff = json!({
        "metadata": {"name": "skiff", "annotations": {
            super::strategy::ingress::DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": "skiff.dev/gateway"},
    });
    ensure(state, ingress_classes, "", skiff).await?;
    kubernetes_service(state).await
}

/// The `default/kubernetes` Service (its Endpoints and EndpointSlices list every live API
/// server: `crate::apiservers`).
async fn kubernetes_service(state: &AppState) -> ApiResult<()> {
    let port = state
        .advertise
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(6443);
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "metadata": {"name": "kubernetes", "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": KUBERNETES_SERVICE_IP,
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    });
    ensure(state, rt("", "v1", "services")?, "default", service).await
}
