//! The table of served resource types: group, version, kind, plural, scope, short names,
//! subresources, the kind's strategy and its typed form. Discovery, OpenAPI, routing, storage
//! keys and each kind's behaviour are all derived from this table: a built-in kind is one
//! entry here and one strategy file in `api/strategy/`.

use k8s_openapi::api;

use crate::api::schema::{Schema, Typed};
use crate::api::strategy::workloads::{Kind, Workload};
use crate::api::strategy::{
    batch, certificates, config, crd, disruption, endpoints, event, hpa, ingress, lease, namespace,
    networkpolicy, node, pod, priority, quota, rbac, replicationcontroller, revision, service,
    serviceaccount, storage, Strategy,
};

/// One served resource type.
pub struct ResourceType {
    /// API group, empty for core.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural (the path segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [&'static str],
    /// Field labels that `fieldSelector` may use beyond `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// The storage key of another resource this one is a view of (`events.k8s.io` events are
    /// core events), converted on the way in and out.
    pub storage: Option<&'static str>,
    /// The kind's behaviour: defaults, validation, table, deletion, conversion.
    pub(crate) strategy: &'static dyn Strategy,
    /// The kind's typed form: unknown fields, OpenAPI schema.
    pub schema: &'static dyn Schema,
}

impl std::fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

impl ResourceType {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store's resource key: `plural` in the core group, else `group/plural`.
    pub fn storage_key(&self) -> String {
        if let Some(s) = self.storage {
            return s.to_string();
        }
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// `plural` or `plural.group`, as Kubernetes names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Verbs of the main resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENTS_K8S_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "reportingController",
    "type",
];

/// Every served resource, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            "status",
            "binding",
            "log",
            "exec",
            "attach",
            "portforward",
            "eviction",
        ],
        field_labels: POD_FIELDS,
        storage: None,
        strategy: &pod::Pod,
        schema: &Typed::<api::core::v1::Pod>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
        field_labels: &["status.phase"],
        storage: None,
        strategy: &namespace::Namespace,
        schema: &Typed::<api::core::v1::Namespace>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        field_labels: &["spec.unschedulable"],
        storage: None,
        strategy: &node::Node,
        schema: &Typed::<api::core::v1::Node>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &["spec.clusterIP", "spec.type"],
        storage: None,
        strategy: &service::Service,
        schema: &Typed::<api::core::v1::Service>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &endpoints::Endpoints,
        schema: &Typed::<api::core::v1::Endpoints>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &config::ConfigMap,
        schema: &Typed::<api::core::v1::ConfigMap>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &["type"],
        storage: None,
        strategy: &config::Secret,
        schema: &Typed::<api::core::v1::Secret>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_labels: EVENT_FIELDS,
        storage: None,
        strategy: &event::Event,
        schema: &Typed::<api::core::v1::Event>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &["token"],
        field_labels: &[],
        storage: None,
        strategy: &serviceaccount::ServiceAccount,
        schema: &Typed::<api::core::v1::ServiceAccount>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &storage::PersistentVolume,
        schema: &Typed::<api::core::v1::PersistentVolume>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &storage::PersistentVolumeClaim,
        schema: &Typed::<api::core::v1::PersistentVolumeClaim>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        namespaced: true,
        short_names: &["rc"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: None,
        strategy: &replicationcontroller::ReplicationController,
        schema: &Typed::<api::core::v1::ReplicationController>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        singular: "resourcequota",
        namespaced: true,
        short_names: &["quota"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &quota::ResourceQuota,
        schema: &Typed::<api::core::v1::ResourceQuota>::NEW,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        singular: "limitrange",
        namespaced: true,
        short_names: &["limits"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &quota::LimitRange,
        schema: &Typed::<api::core::v1::LimitRange>::NEW,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: None,
        strategy: &Workload(Kind::Deployment),
        schema: &Typed::<api::apps::v1::Deployment>::NEW,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &["status.replicas"],
        storage: None,
        strategy: &Workload(Kind::ReplicaSet),
        schema: &Typed::<api::apps::v1::ReplicaSet>::NEW,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_labels: &[],
        storage: None,
        strategy: &Workload(Kind::StatefulSet),
        schema: &Typed::<api::apps::v1::StatefulSet>::NEW,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &Workload(Kind::DaemonSet),
        schema: &Typed::<api::apps::v1::DaemonSet>::NEW,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "ControllerRevision",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &revision::ControllerRevision,
        schema: &Typed::<api::apps::v1::ControllerRevision>::NEW,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        singular: "job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &["status.successful"],
        storage: None,
        strategy: &batch::Job,
        schema: &Typed::<api::batch::v1::Job>::NEW,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        singular: "cronjob",
        namespaced: true,
        short_names: &["cj"],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &batch::CronJob,
        schema: &Typed::<api::batch::v1::CronJob>::NEW,
    },
    ResourceType {
        group: "autoscaling",
        version: "v2",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &hpa::HorizontalPodAutoscaler,
        schema: &Typed::<api::autoscaling::v2::HorizontalPodAutoscaler>::NEW,
    },
    ResourceType {
        group: "autoscaling",
        version: "v1",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        subresources: &["status"],
        field_labels: &[],
        storage: Some("autoscaling/horizontalpodautoscalers"),
        strategy: &hpa::HorizontalPodAutoscalerV1,
        schema: &Typed::<api::autoscaling::v1::HorizontalPodAutoscaler>::NEW,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &lease::Lease,
        schema: &Typed::<api::coordination::v1::Lease>::NEW,
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &endpoints::EndpointSlice,
        schema: &Typed::<api::discovery::v1::EndpointSlice>::NEW,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        kind: "Ingress",
        plural: "ingresses",
        singular: "ingress",
        namespaced: true,
        short_names: &["ing"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &ingress::Ingress,
        schema: &Typed::<api::networking::v1::Ingress>::NEW,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        kind: "IngressClass",
        plural: "ingressclasses",
        singular: "ingressclass",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &ingress::IngressClass,
        schema: &Typed::<api::networking::v1::IngressClass>::NEW,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_labels: EVENTS_K8S_FIELDS,
        storage: Some("events"),
        strategy: &event::EventsV1,
        schema: &Typed::<api::events::v1::Event>::NEW,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        singular: "networkpolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &networkpolicy::NetworkPolicy,
        schema: &Typed::<api::networking::v1::NetworkPolicy>::NEW,
    },
    ResourceType {
        group: "policy",
        version: "v1",
        kind: "PodDisruptionBudget",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &disruption::PodDisruptionBudget,
        schema: &Typed::<api::policy::v1::PodDisruptionBudget>::NEW,
    },
    ResourceType {
        group: "scheduling.k8s.io",
        version: "v1",
        kind: "PriorityClass",
        plural: "priorityclasses",
        singular: "priorityclass",
        namespaced: false,
        short_names: &["pc"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &priority::PriorityClass,
        schema: &Typed::<api::scheduling::v1::PriorityClass>::NEW,
    },
    ResourceType {
        group: "storage.k8s.io",
        version: "v1",
        kind: "StorageClass",
        plural: "storageclasses",
        singular: "storageclass",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &storage::StorageClass,
        schema: &Typed::<api::storage::v1::StorageClass>::NEW,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &rbac::Role { cluster: false },
        schema: &Typed::<api::rbac::v1::Role>::NEW,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &rbac::Role { cluster: true },
        schema: &Typed::<api::rbac::v1::ClusterRole>::NEW,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &rbac::Binding { cluster: false },
        schema: &Typed::<api::rbac::v1::RoleBinding>::NEW,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_labels: &[],
        storage: None,
        strategy: &rbac::Binding { cluster: true },
        schema: &Typed::<api::rbac::v1::ClusterRoleBinding>::NEW,
    },
    ResourceType {
        group: "certificates.k8s.io",
        version: "v1",
        kind: "CertificateSigningRequest",
        plural: "certificatesigningrequests",
        singular: "certificatesigningrequest",
        namespaced: false,
        short_names: &["csr"],
        categories: &[],
        subresources: &["status", "approval"],
        field_labels: &["spec.signerName"],
        storage: None,
        strategy: &certificates::CertificateSigningRequest,
        schema: &Typed::<api::certificates::v1::CertificateSigningRequest>::NEW,
    },
    ResourceType {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        singular: "customresourcedefinition",
        namespaced: false,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        subresources: &["status"],
        field_labels: &[],
        storage: None,
        strategy: &crd::CustomResourceDefinition,
        schema: &Typed::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::NEW,
    },
];

/// The kinds CustomResourceDefinitions define, replaced as a whole when CRDs change (types are
/// interned and leaked: `&'static` like the built-in table; a CRD's unchanged version reuses
/// its type, so memory grows only with distinct CRD versions ever served).
static CUSTOM: std::sync::RwLock<Vec<&'static ResourceType>> = std::sync::RwLock::new(Vec::new());

/// Bumped on each change of the custom kinds (documents derived from the table are remade).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Every served resource type: the built-in ones, then those CRDs define.
pub fn all() -> Vec<&'static ResourceType> {
    let mut out: Vec<&'static ResourceType> = RESOURCES.iter().collect();
    if let Ok(custom) = CUSTOM.read() {
        out.extend(custom.iter().copied());
    }
    out
}

/// Replace the custom kinds.
pub fn set_custom(types: Vec<&'static ResourceType>) {
    if let Ok(mut custom) = CUSTOM.write() {
        *custom = types;
    }
    GENERATION.fetch_add(1, std::sync::atomic::Ordering::Release);
}

/// Changes with every change of the served types.
pub fn generation() -> u64 {
    GENERATION.load(std::sync::atomic::Ordering::Acquire)
}

/// Look a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| {
            CUSTOM.read().ok().and_then(|c| {
                c.iter()
                    .copied()
                    .find(|r| r.group == group && r.version == version && r.plural == plural)
            })
        })
}

/// Look a resource up by kind.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    all()
        .into_iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The served groups, each with its versions in preference order (the first served first);
/// the core group first.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in group_versions() {
        match out.iter_mut().find(|(group, _)| *group == g) {
            Some((_, versions)) => versions.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

/// The served group/versions, in preference order; the core group first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
