//! Names, small types and helpers that both the control plane and the node agent need:
//! the cluster join token, module references, the API client set-up and the event recorder.
//! It holds no policy and does no IO of its own except through the clients it builds.

pub mod client;
pub mod csr;
pub mod dockerconfig;
pub mod events;
pub mod files;
pub mod image;
pub mod labels;
pub mod names;
pub mod podrefs;
pub mod quantity;
pub mod token;
pub mod wasm;

/// The Kubernetes minor version skiff reports and implements (stock kubectl picks its client by it).
pub const KUBE_MAJOR: &str = "1";
/// See [`KUBE_MAJOR`].
pub const KUBE_MINOR: &str = "32";
/// The `gitVersion` skiff reports in `/version` and as the node's kubelet version.
pub const KUBE_GIT_VERSION: &str = "v1.32.0-skiff";
/// Namespace that holds node heartbeats (Leases), as in Kubernetes.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Header-free path prefix of the built-in module store on the API server.
pub const MODULES_PATH: &str = "/skiff/v1/modules";
/// Path of the blob endpoint of the built-in module store.
pub const BLOBS_PATH: &str = "/skiff/v1/blobs";
/// Public, unauthenticated path that serves the cluster CA (verified by the join token's hash).
pub const CACERTS_PATH: &str = "/cacerts";
/// The path on a node agent that serves container logs to the API server.
pub const NODE_LOGS_PATH: &str = "/containerLogs";
/// The Node annotation with the absolute directory under which the node keeps the directories
/// of persistentVolumeClaims (`<dir>/<namespace>/<claim>`), which the local-path provisioner
/// names in the PersistentVolumes it makes.
pub const CLAIMS_DIR_ANNOTATION: &str = "skiff.dev/claims-dir";

/// The Node annotation that tells other nodes (and the Ingress status) where the node's HTTP
/// gateway listens, on its InternalIP.
pub const GATEWAY_PORT_ANNOTATION: &str = "skiff.dev/gateway-port";

/// Now, as a Kubernetes `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())
}
