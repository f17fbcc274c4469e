//! The `skiff` binary: command-line parsing and wiring only.

mod bench;
mod hollow;
mod kubeconfig;
mod ocipush;

/// mimalloc: the API server allocates and frees many small JSON values per request, and glibc's
/// allocator spent a fifth of the server's CPU time (and contended on its arena locks) under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Kubernetes for WebAssembly in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What a node (embedded or joined) is configured with.
#[derive(clap::Args)]
struct NodeOptions {
    /// Most pods the node runs.
    #[arg(long, default_value_t = 1000)]
    max_pods: u32,
    /// A host directory pods may mount with hostPath (repeatable; none by default).
    #[arg(long = "allow-host-path")]
    allow_host_paths: Vec<PathBuf>,
    /// A host name or address that pods may reach by outbound HTTP although it is the node's
    /// or the control plane's own (loopback, the node's address), when a pod's
    /// `skiff.dev/allowed-outbound-hosts` names it exactly (repeatable; none by default).
    #[arg(long = "allow-local-outbound")]
    allow_local_outbound: Vec<String>,
    /// CPU kept back from pods for the host and the agent (a quantity: 500m, 1).
    #[arg(long, default_value = "0")]
    reserved_cpu: String,
    /// Memory kept back from pods for the host and the agent (a quantity: 512Mi).
    #[arg(long, default_value = "0")]
    reserved_memory: String,
    /// A container's log file is rotated when it grows past this (a quantity, as the kubelet's
    /// containerLogMaxSize).
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container run, the current one included (containerLogMaxFiles).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    container_log_max_files: u32,
    /// Port of the node's HTTP gateway (pods, Services and Ingresses by host name; 0 picks a
    /// free port). It listens on the node's address.
    #[arg(long, default_value_t = 8080)]
    gateway_port: u16,
    /// A registry (HOST:PORT) to pull modules from over plain HTTP (repeatable; none by
    /// default: HTTPS with the system's roots).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// A PEM file of CA certificates that registries' HTTPS certificates may chain to, besides
    /// the system's roots (repeatable).
    #[arg(long = "registry-ca")]
    registry_cas: Vec<PathBuf>,
    /// The most the node's module cache holds (10Gi, 512Mi). Past it, the least recently used
    /// modules that no pod on the node uses are removed, as the kubelet's image GC does.
    #[arg(long, default_value = "10Gi")]
    module_cache_max_size: String,
    /// A module used more recently than this is never removed from the cache (the kubelet's
    /// --image-minimum-gc-age).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    module_minimum_gc_age: std::time::Duration,
}

/// The parts of a node's configuration that come from [`NodeOptions`].
struct NodeSettings {
    gateway_port: u16,
    insecure_registries: Vec<String>,
    registry_cas: Vec<Vec<u8>>,
    module_cache_max_size: u64,
    module_minimum_gc_age: std::time::Duration,
    max_pods: u32,
    allow_host_paths: Vec<PathBuf>,
    allow_local_outbound: Vec<String>,
    reserved: (i64, i64),
    log_rotation: skiff_node::logs::Rotation,
}

impl NodeOptions {
    fn settings(self) -> Result<NodeSettings> {
        let cpu = skiff_common::quantity::cpu_millis(&self.reserved_cpu)
            .map_err(|e| anyhow::anyhow!("--reserved-cpu {:?}: {e}", self.reserved_cpu))?;
        let memory = skiff_common::quantity::bytes(&self.reserved_memory)
            .map_err(|e| anyhow::anyhow!("--reserved-memory {:?}: {e}", self.reserved_memory))?;
        let max_bytes = skiff_common::quantity::bytes(&self.container_log_max_size)
            .ok()
            .filter(|b| *b >= 1024)
            .with_context(|| {
                format!(
                    "--container-log-max-size {:?}: give a size of at least 1Ki (10Mi, 512Ki)",
                    self.container_log_max_size
                )
            })?;
        let mut registry_cas = Vec::new();
        for f in &self.registry_cas {
            let pem = std::fs::read(f).with_context(|| format!("--registry-ca {}", f.display()))?;
            anyhow::ensure!(
                pem_certificates(&pem) > 0,
                "--registry-ca {}: no PEM certificate in it",
                f.display()
            );
            registry_cas.push(pem);
        }
        let module_cache_max_size = skiff_common::quantity::bytes(&self.module_cache_max_size)
            .ok()
            .filter(|b| *b >= 1 << 20)
            .with_context(|| {
                format!(
                    "--module-cache-max-size {:?}: give a size of at least 1Mi (10Gi, 512Mi)",
                    self.module_cache_max_size
                )
            })?;
        Ok(NodeSettings {
            gateway_port: self.gateway_port,
            insecure_registries: self.insecure_registries,
            registry_cas,
            module_cache_max_size: module_cache_max_size as u64,
            module_minimum_gc_age: self.module_minimum_gc_age,
            max_pods: self.max_pods,
            allow_host_paths: self.allow_host_paths,
            allow_local_outbound: self.allow_local_outbound,
            reserved: (cpu, memory),
            log_rotation: skiff_node::logs::Rotation {
                max_bytes: max_bytes as u64,
                max_files: self.container_log_max_files,
            },
        })
    }
}

// Parsed once per process; boxing the server's flags would only make clap's derive harder to read.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the control plane (and, unless --no-node, a node in the same process).
    Server {
        /// Where the cluster keeps its state.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
        /// Address of the HTTPS API (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Do not run the embedded node.
        #[arg(long)]
        no_node: bool,
        /// Name of the embedded node (default: the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// The embedded node's settings.
        #[command(flatten)]
        node: NodeOptions,
        /// A node whose Lease was not renewed for this long (seconds, or with a unit: 20s, 1m)
        /// becomes Ready=Unknown and is tainted node.kubernetes.io/unreachable:NoExecute.
        /// Nodes renew their Leases every 5 s, so keep this well above that.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        node_monitor_grace_period: std::time::Duration,
        /// How long new pods tolerate a not-ready or unreachable node before they are evicted
        /// (and replaced elsewhere by their controllers).
        #[arg(long, default_value_t = 30)]
        default_unreachable_toleration_seconds: i64,
        /// Encrypt resources at rest as this Kubernetes EncryptionConfiguration file says
        /// (apiserver.config.k8s.io/v1; aescbc, aesgcm, secretbox and identity providers).
        #[arg(long)]
        encryption_provider_config: Option<PathBuf>,
        /// Write one JSON line per API request to this file (audit.k8s.io/v1 Events at the
        /// Metadata level: user, verb, resource, namespace, name, response code, time).
        #[arg(long)]
        audit_log: Option<PathBuf>,
        /// Rotate the audit log when it passes this many megabytes.
        #[arg(long, default_value_t = 100)]
        audit_log_maxsize: u64,
        /// Rotated audit logs to keep.
        #[arg(long, default_value_t = 5)]
        audit_log_maxbackup: u32,
        /// The longest validity of a certificate the cluster signs (nodes' and users' client
        /// certificates, nodes' serving certificates), as kube-controller-manager's flag.
        #[arg(long, default_value = "8760h", value_parser = parse_duration)]
        cluster_signing_duration: std::time::Duration,
        /// How often the nodes' resource metrics are scraped for `kubectl top` and the
        /// HorizontalPodAutoscaler (metrics-server's flag).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        metric_resolution: std::time::Duration,
        /// How often each HorizontalPodAutoscaler is synced (kube-controller-manager's flag).
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        horizontal_pod_autoscaler_sync_period: std::time::Duration,
        /// Take a snapshot of the cluster this often (`skiff snapshot restore` brings one
        /// back); 0 (the default) takes none.
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        snapshot_interval: std::time::Duration,
        /// Scheduled snapshots kept (the oldest are removed).
        #[arg(long, default_value_t = 5)]
        snapshot_retention: usize,
        /// Where scheduled snapshots go (default: DATA_DIR/snapshots).
        #[arg(long)]
        snapshot_dir: Option<PathBuf>,
        #[command(flatten)]
        datastore: Datastore,
    },
    /// Join a running cluster as a node.
    Node {
        /// API server URL, e.g. https://127.0.0.1:6443; several, comma separated, for a
        /// cluster of several API servers (the node moves to the next when one is down).
        #[arg(long)]
        server: String,
        /// Join token (the server's DATA_DIR/node-token).
        #[arg(long, env = "SKIFF_TOKEN", conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the join token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Node name (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Cluster CA (default: fetched from the server and checked against the token).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Local state of the node.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address of the node's endpoint for the API server (its IP becomes the node's InternalIP).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The node's settings.
        #[command(flatten)]
        node: NodeOptions,
    },
    /// Upload a WebAssembly module to the cluster's module store as NAME:TAG, or to an OCI
    /// registry as HOST:PORT/REPOSITORY:TAG, port and tag optional (credentials from Docker's
    /// config.json).
    Push {
        /// NAME:TAG (TAG defaults to latest).
        reference: String,
        /// The .wasm file.
        file: PathBuf,
        /// Kubeconfig to take the server, CA and token from (default: $KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// API server URL (with --token).
        #[arg(long, requires = "token")]
        server: Option<String>,
        /// Bearer token (with --server).
        #[arg(long)]
        token: Option<String>,
        /// CA file of the API server (with --server) or of the registry, besides the system's
        /// roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// For a registry reference (HOST:PORT/REPOSITORY:TAG): speak plain HTTP to it.
        #[arg(long)]
        insecure: bool,
    },
    /// Print a kubeconfig for a new user with a client certificate from the cluster's signer
    /// (a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client`, approved):
    /// `skiff kubeconfig --user alice --group devs --namespace team-a > alice.yaml`. What the
    /// user may do is up to RBAC (bind a role to the user or one of its groups).
    Kubeconfig {
        /// User name (the certificate's common name).
        #[arg(long)]
        user: String,
        /// A group of the user (repeatable; each an organization of the certificate).
        #[arg(long)]
        group: Vec<String>,
        /// Default namespace of the kubeconfig's context.
        #[arg(long)]
        namespace: Option<String>,
        /// How long the certificate is valid (`24h`, `30d`; at least 10m, at most 365d).
        #[arg(long, default_value = "365d")]
        duration: String,
        /// The admin's kubeconfig (default: $KUBECONFIG or ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Snapshots of a cluster: save one (online, from the server's data dir) or restore one
    /// into a new data dir.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCommand,
    },
    /// Benchmarks against a running cluster.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// Where a cluster on etcd lives (`skiff server`, `skiff snapshot`).
#[derive(clap::Args)]
struct Datastore {
    /// Keep the cluster in etcd instead of DATA_DIR/state.db: its endpoints, comma
    /// separated (`https://e1:2379,https://e2:2379`).
    #[arg(long, value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
    /// The key prefix in etcd (several clusters can share one etcd).
    #[arg(long, default_value = "/registry")]
    datastore_prefix: String,
    /// CA file to verify etcd's certificate.
    #[arg(long)]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, requires = "datastore_keyfile")]
    datastore_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, requires = "datastore_certfile")]
    datastore_keyfile: Option<PathBuf>,
}

impl Datastore {
    /// The etcd to use, or None for SQLite.
    fn config(self) -> Result<Option<skiff_control_plane::store::etcd::EtcdConfig>> {
        if self.datastore_endpoint.is_empty() {
            return Ok(None);
        }
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(Some(skiff_control_plane::store::etcd::EtcdConfig {
            endpoints: self.datastore_endpoint,
            prefix: self.datastore_prefix,
            ca_pem: self.datastore_cafile.as_ref().map(read).transpose()?,
            identity: match (&self.datastore_certfile, &self.datastore_keyfile) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
        }))
    }
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Take a consistent snapshot of the cluster in DATA_DIR (the server may be running) into
    /// FILE: the store, the cluster's keys and tokens, and the module store. With
    /// --datastore-endpoint the objects come from that etcd, at one revision.
    Save {
        /// The snapshot file to write (never overwritten).
        file: PathBuf,
        /// The server's data dir.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
        #[command(flatten)]
        datastore: Datastore,
    },
    /// Bring the cluster of FILE back into DATA_DIR, which must not exist or be empty (never
    /// under a running server); then start `skiff server --data-dir DATA_DIR`. With
    /// --datastore-endpoint the objects go into that etcd (under a prefix that holds nothing):
    /// a snapshot of a SQLite cluster restored into etcd, or the reverse, is a migration.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data dir to restore into.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        datastore: Datastore,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// A pod's first start when its module must be fetched, from an OCI registry and from the
    /// module store side by side, a new tag of a module the node has, and a start from the
    /// node's cache (pods in `default`; the modules stay in the registry and the store).
    Pull {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The registry (HOST:PORT) the node can pull from.
        #[arg(long)]
        registry: String,
        /// Speak plain HTTP to it (start the node with --insecure-registry HOST:PORT).
        #[arg(long)]
        insecure: bool,
        /// The module (it should run to completion, as hello does).
        #[arg(long)]
        module: PathBuf,
        /// How many rounds.
        #[arg(long, default_value_t = 20)]
        n: usize,
    },
    /// Create a pod N times and time creation to Succeeded, as a watch sees it.
    PodStartup {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// A Pod manifest that runs to completion.
        #[arg(long, default_value = "wasm-examples/manifests/hello.yaml")]
        manifest: PathBuf,
        /// How many pods.
        #[arg(long, default_value_t = 20)]
        n: usize,
    },
    /// API and store: creates/s and updates/s with latencies at several concurrencies, watch
    /// delivery latency, and LIST of many pods (in a scratch namespace, deleted afterwards).
    Api {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Writes per concurrency level.
        #[arg(long, default_value_t = 2000)]
        writes: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        clients: Vec<usize>,
        /// Pods to create for the LIST benchmark.
        #[arg(long, default_value_t = 10000)]
        list_pods: usize,
        /// Write as a ServiceAccount bound to `edit` (every request authorized by RBAC) instead
        /// of the admin (`system:masters`, which skips RBAC).
        #[arg(long)]
        tenant: bool,
        /// RoleBindings to other users to create in the bench namespace first.
        #[arg(long, default_value_t = 0)]
        role_bindings: usize,
    },
    /// Pods: create N long-running pods at a steady rate and time create → Running as a watch
    /// sees it, report the node's RSS per running pod (with --pid), delete them all; then the
    /// runtime's own numbers in this process: compile, compile-cache hit, instantiate.
    Pods {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How many pods.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Creates per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Module the pods run (pushed already; it must keep running).
        #[arg(long, default_value = "ticker:latest")]
        image: String,
        /// The same module as a file, for the in-process runtime numbers.
        #[arg(
            long,
            default_value = "wasm-examples/target/wasm32-wasip1/release/ticker.wasm"
        )]
        module: PathBuf,
        /// PID of the process that runs the node agent, to report its RSS.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// HTTP services: a wasi:http pod through its node's gateway (directly, and through a
    /// Service) under load; then `--pods` pods of distinct modules on the node, the latency of
    /// each one's first request once it is Ready, and the node's RSS.
    Http {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The HTTP component (pushed by the benchmark as bench-http, and as one distinct
        /// module per pod).
        #[arg(
            long,
            default_value = "wasm-examples/target/wasm32-wasip2/release/http_hello.wasm"
        )]
        module: PathBuf,
        /// Concurrent clients (keep-alive connections).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// How long each load runs (10s, 1m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// HTTP pods of distinct modules for the first-request and RSS numbers (0: skip).
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// PID of the process that runs the node agent, to report its RSS.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Scale from zero: a Deployment behind a Service with an HPA of `minReplicas: 0`, scaled
    /// to zero, then one request through a gateway, timed to its answer, N times; p50/p99.
    ScaleFromZero {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The HTTP component.
        #[arg(
            long,
            default_value = "wasm-examples/target/wasm32-wasip2/release/http_hello.wasm"
        )]
        module: PathBuf,
        /// Timed cycles.
        #[arg(long, default_value_t = 100)]
        cycles: usize,
    },
    /// HPA reaction: an HTTP Deployment with an HPA on `http_requests_per_second`; each step
    /// starts a steady load through a gateway and times until the replicas go up.
    HpaReaction {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The HTTP component.
        #[arg(
            long,
            default_value = "wasm-examples/target/wasm32-wasip2/release/http_hello.wasm"
        )]
        module: PathBuf,
        /// Load steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Requests a second during a step.
        #[arg(long, default_value_t = 200)]
        rate: u64,
    },
    /// Scheduler: register hollow nodes (they renew Leases and report their pods Running, as
    /// KWOK's do), create pods as fast as the API takes them and report pods/s scheduled and
    /// bound; first the decision function's own rate in this process.
    Scheduler {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Hollow nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Pods.
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        /// Concurrent clients creating the pods.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Create every pod (and let the scheduler find it unschedulable) before the nodes
        /// register, so the binding rate is the scheduler's alone rather than the creates'.
        #[arg(long)]
        backlog: bool,
    },
    /// Deployments: on hollow nodes, time a Deployment from create to every replica Available,
    /// then a rolling update of it to complete (as `kubectl rollout status` judges it).
    Deployments {
        /// Kubeconfig of the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Hollow nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Replicas of the Deployment.
        #[arg(long, default_value_t = 1000)]
        replicas: i32,
        /// Deployments to time, one after another.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The same durable-write load against etcd's v3 HTTP gateway (for `bench/etcd-compare.sh`):
    /// puts of a pod-sized value at several concurrencies.
    Etcd {
        /// etcd client URL (plain HTTP on loopback).
        #[arg(long, default_value = "http://127.0.0.1:2379")]
        endpoint: String,
        /// Puts per concurrency level.
        #[arg(long, default_value_t = 2000)]
        writes: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        clients: Vec<usize>,
    },
}

/// `--reserved-cpu` and `--reserved-memory` as millicores and bytes.
/// `20`, `20s`, `500ms`, `2m`: a duration for a flag.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (20s, 500ms, 2m, 720h)"))?;
    let seconds = |per: u64| {
        n.checked_mul(per)
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{s:?} is not a duration (20s, 500ms, 2m, 720h)")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "skiff-node".into())
}

async fn shutdown_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    token.cancel();
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| "info,kube_runtime=warn,kube_client=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file or a journal stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Server {
            data_dir,
            listen,
            no_node,
            node_name,
            node,
            node_monitor_grace_period,
            default_unreachable_toleration_seconds,
            encryption_provider_config,
            audit_log,
            audit_log_maxsize,
            audit_log_maxbackup,
            cluster_signing_duration,
            metric_resolution,
            horizontal_pod_autoscaler_sync_period,
            snapshot_interval,
            snapshot_retention,
            snapshot_dir,
            datastore,
        } => {
            let datastore = datastore.config()?;
            if node_monitor_grace_period <= skiff_node::agent::LEASE_RENEW {
                tracing::warn!(
                    grace = ?node_monitor_grace_period,
                    renew = ?skiff_node::agent::LEASE_RENEW,
                    "--node-monitor-grace-period is not longer than the nodes' Lease renewal interval: live nodes will be found silent between renewals"
                );
            }
            let snapshots = (!snapshot_interval.is_zero()).then(|| {
                skiff_control_plane::server::SnapshotSchedule {
                    dir: snapshot_dir.unwrap_or_else(|| data_dir.join("snapshots")),
                    every: snapshot_interval,
                    keep: snapshot_retention,
                }
            });
            let config = skiff_control_plane::ServerConfig {
                data_dir,
                listen,
                store: Default::default(),
                node_monitor_grace: node_monitor_grace_period,
                default_toleration_seconds: default_unreachable_toleration_seconds,
                encryption: encryption_provider_config
                    .as_deref()
                    .map(skiff_control_plane::store::EncryptionConfig::load)
                    .transpose()
                    .context("--encryption-provider-config")?,
                audit: audit_log.map(|path| skiff_control_plane::api::audit::AuditConfig {
                    path,
                    max_bytes: audit_log_maxsize.saturating_mul(1 << 20),
                    max_backups: audit_log_maxbackup,
                }),
                cluster_signing_duration,
                metric_resolution: metric_resolution.max(std::time::Duration::from_secs(1)),
                hpa_sync: horizontal_pod_autoscaler_sync_period
                    .max(std::time::Duration::from_secs(1)),
                snapshots,
                datastore,
            };
            server(config, no_node, node_name, node.settings()?).await
        }
        Command::Node {
            server,
            token,
            token_file,
            name,
            ca_file,
            data_dir,
            listen,
            node,
        } => {
            let settings = node.settings()?;
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim()
                    .to_string(),
                (None, None) => bail!("give the join token with --token or --token-file"),
            };
            let name = name.unwrap_or_else(hostname);
            let data_dir =
                data_dir.unwrap_or_else(|| PathBuf::from(format!("/var/lib/skiff-node/{name}")));
            let stop = CancellationToken::new();
            tokio::spawn(shutdown_signal(stop.clone()));
            let config = skiff_node::NodeConfig {
                server,
                token,
                name,
                ca_file,
                data_dir,
                listen,
                max_pods: settings.max_pods,
                labels: vec![],
                allow_host_paths: settings.allow_host_paths,
                allow_local_outbound: settings.allow_local_outbound,
                reserved: settings.reserved,
                log_rotation: settings.log_rotation,
                gateway_port: settings.gateway_port,
                insecure_registries: settings.insecure_registries.clone(),
                registry_cas: settings.registry_cas.clone(),
                module_cache_max_size: settings.module_cache_max_size,
                module_minimum_gc_age: settings.module_minimum_gc_age,
                client: None,
                identity: None,
            };
            skiff_node::run(config, stop).await.context("node agent")
        }
        Command::Snapshot { action } => match action {
            SnapshotCommand::Save {
                file,
                data_dir,
                datastore,
            } => {
                let s = match datastore.config()? {
                    Some(etcd) => {
                        skiff_control_plane::snapshot::save_from_etcd(&data_dir, &file, &etcd).await
                    }
                    None => skiff_control_plane::snapshot::save(&data_dir, &file).await,
                }
                .context("skiff snapshot save")?;
                println!(
                    "snapshot {} saved: revision {}, {} objects, {} files",
                    file.display(),
                    s.revision,
                    s.objects,
                    s.files
                );
                Ok(())
            }
            SnapshotCommand::Restore {
                file,
                data_dir,
                datastore,
            } => {
                let etcd = datastore.config()?;
                let s = match &etcd {
                    Some(etcd) => {
                        skiff_control_plane::snapshot::restore_into_etcd(&file, &data_dir, etcd)
                            .await
                    }
                    None => skiff_control_plane::snapshot::restore(&file, &data_dir).await,
                }
                .context("skiff snapshot restore")?;
                let flags = match &etcd {
                    Some(e) => format!(
                        " --datastore-endpoint {} --datastore-prefix {}",
                        e.endpoints.join(","),
                        e.prefix
                    ),
                    None => String::new(),
                };
                println!(
                    "restored {} into {}: revision {}, {} objects, {} files; start it with `skiff server --data-dir {}{flags}`",
                    file.display(),
                    data_dir.display(),
                    s.revision,
                    s.objects,
                    s.files,
                    data_dir.display()
                );
                Ok(())
            }
        },
        Command::Kubeconfig {
            user,
            group,
            namespace,
            duration,
            kubeconfig,
        } => {
            let span: jiff::Span = duration.parse().with_context(|| {
                format!("--duration {duration:?} is not a duration like 24h or 30d")
            })?;
            let seconds = span
                .total((jiff::Unit::Second, jiff::civil::date(2000, 1, 1)))
                .context("--duration")? as i64;
            if !(600..=365 * 24 * 3600).contains(&seconds) {
                bail!("--duration must be between 10m and 365d");
            }
            let text = kubeconfig::make(kubeconfig::Request {
                kubeconfig: default_kubeconfig(kubeconfig)?,
                user,
                groups: group,
                namespace,
                seconds,
            })
            .await?;
            print!("{text}");
            Ok(())
        }
        Command::Push {
            reference,
            file,
            kubeconfig,
            server,
            token,
            ca_file,
            insecure,
        } => match skiff_common::image::ImageRef::parse(&reference) {
            // A registry host in the reference: to that OCI registry.
            Ok(skiff_common::image::ImageRef::Registry { .. }) => {
                let url = ocipush::push(&reference, &file, insecure, ca_file.as_deref()).await?;
                println!("pushed {reference} ({url})");
                Ok(())
            }
            _ => push(&reference, &file, kubeconfig, server, token, ca_file).await,
        },
        Command::Bench {
            which:
                BenchCommand::Pull {
                    kubeconfig,
                    registry,
                    insecure,
                    module,
                    n,
                },
        } => bench::pull(&kubeconfig, &registry, insecure, &module, n).await,
        Command::Bench {
            which:
                BenchCommand::PodStartup {
                    kubeconfig,
                    manifest,
                    n,
                },
        } => bench::pod_startup(&kubeconfig, &manifest, n).await,
        Command::Bench {
            which:
                BenchCommand::Api {
                    kubeconfig,
                    writes,
                    clients,
                    list_pods,
                    tenant,
                    role_bindings,
                },
        } => {
            let writer = bench::Writer {
                tenant,
                role_bindings,
            };
            bench::api(&kubeconfig, writes, &clients, list_pods, writer).await
        }
        Command::Bench {
            which:
                BenchCommand::Pods {
                    kubeconfig,
                    n,
                    rate,
                    image,
                    module,
                    pid,
                },
        } => bench::pods(&kubeconfig, n, rate, &image, &module, pid).await,
        Command::Bench {
            which:
                BenchCommand::Http {
                    kubeconfig,
                    module,
                    connections,
                    duration,
                    pods,
                    pid,
                },
        } => bench::http(&kubeconfig, &module, connections, duration, pods, pid).await,
        Command::Bench {
            which:
                BenchCommand::ScaleFromZero {
                    kubeconfig,
                    module,
                    cycles,
                },
        } => bench::scale_from_zero(&kubeconfig, &module, cycles).await,
        Command::Bench {
            which:
                BenchCommand::HpaReaction {
                    kubeconfig,
                    module,
                    steps,
                    rate,
                },
        } => bench::hpa_reaction(&kubeconfig, &module, steps, rate).await,
        Command::Bench {
            which:
                BenchCommand::Scheduler {
                    kubeconfig,
                    nodes,
                    pods,
                    clients,
                    backlog,
                },
        } => bench::scheduler(&kubeconfig, nodes, pods, clients, backlog).await,
        Command::Bench {
            which:
                BenchCommand::Deployments {
                    kubeconfig,
                    nodes,
                    replicas,
                    runs,
                },
        } => bench::deployments(&kubeconfig, nodes, replicas, runs).await,
        Command::Bench {
            which:
                BenchCommand::Etcd {
                    endpoint,
                    writes,
                    clients,
                },
        } => bench::etcd(&endpoint, writes, &clients).await,
    }
}

async fn server(
    config: skiff_control_plane::ServerConfig,
    no_node: bool,
    node_name: Option<String>,
    settings: NodeSettings,
) -> Result<()> {
    let started = std::time::Instant::now();
    let data_dir = config.data_dir.clone();
    let running = skiff_control_plane::start(config)
        .await
        .context("starting the control plane")?;
    let stop = running.shutdown.clone();
    tokio::spawn(shutdown_signal(stop.clone()));
    println!(
        "skiff API server ready at {} in {:?}; kubeconfig: {}",
        running.url,
        started.elapsed(),
        running.kubeconfig.display()
    );
    let mut node = None;
    if !no_node {
        let name = node_name.unwrap_or_else(hostname);
        let config = skiff_node::NodeConfig {
            server: running.url.clone(),
            token: running.node_token.clone(),
            name: name.clone(),
            ca_file: Some(data_dir.join("tls/ca.crt")),
            data_dir: data_dir.join("node"),
            listen: "127.0.0.1:0".parse()?,
            max_pods: settings.max_pods,
            // Its role label is the server's to set (NodeRestriction keeps nodes from giving
            // themselves roles): see `label_control_plane`.
            labels: Vec::new(),
            allow_host_paths: settings.allow_host_paths,
            allow_local_outbound: settings.allow_local_outbound,
            reserved: settings.reserved,
            log_rotation: settings.log_rotation,
            gateway_port: settings.gateway_port,
            insecure_registries: settings.insecure_registries.clone(),
            registry_cas: settings.registry_cas.clone(),
            module_cache_max_size: settings.module_cache_max_size,
            module_minimum_gc_age: settings.module_minimum_gc_age,
            // In process: the loopback client acting as the node, and a certificate for
            // `system:node:NAME` issued by the server (for module downloads), as a joined node
            // gets through its signing request.
            client: Some(
                running.loopback_client_as(&skiff_control_plane::auth::authn::node_user(&name))?,
            ),
            identity: Some({
                let (cert_pem, key_pem) = running
                    .node_credential(&name)
                    .context("issuing the embedded node's certificate")?;
                skiff_node::credential::Credential { cert_pem, key_pem }
            }),
        };
        let node_stop = stop.clone();
        node = Some(tokio::spawn(async move {
            if let Err(e) = skiff_node::run(config, node_stop).await {
                tracing::error!(error = %e, "embedded node stopped");
            }
        }));
        tokio::spawn(label_control_plane(
            running.loopback_client(&running.admin_token)?,
            name.clone(),
            stop.clone(),
        ));
        println!("embedded node {name} starting");
    }
    stop.cancelled().await;
    if let Some(n) = node {
        let _ = n.await;
    }
    let _ = running.serving.await;
    Ok(())
}

/// Mark the embedded node `node-role.kubernetes.io/control-plane` once it has registered, as
/// the admin (a node may not set role labels on itself).
async fn label_control_plane(client: kube::Client, name: String, stop: CancellationToken) {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let patch = serde_json::json!({"metadata": {"labels": {
        "node-role.kubernetes.io/control-plane": "true"}}});
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        let labelled = nodes
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
        match labelled {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "the embedded node is not registered yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

/// The kubeconfig given, else $KUBECONFIG, else ~/.kube/config.
fn default_kubeconfig(given: Option<PathBuf>) -> Result<PathBuf> {
    given
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .context("no kubeconfig: give --kubeconfig")
}

/// Server, CA and token from a kubeconfig's current context.
fn from_kubeconfig(path: &Path) -> Result<(String, Option<Vec<u8>>, String)> {
    use base64::Engine;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let current = doc["current-context"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let find = |list: &str, name: &str| -> serde_yaml::Value {
        doc[list]
            .as_sequence()
            .and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(name)).cloned())
            .unwrap_or(serde_yaml::Value::Null)
    };
    let ctx = find("contexts", &current);
    let cluster = find(
        "clusters",
        ctx["context"]["cluster"].as_str().unwrap_or_default(),
    );
    let user = find("users", ctx["context"]["user"].as_str().unwrap_or_default());
    let server = cluster["cluster"]["server"]
        .as_str()
        .context("the kubeconfig's current context names no server")?
        .to_string();
    let ca = match cluster["cluster"]["certificate-authority-data"].as_str() {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("decoding certificate-authority-data")?,
        ),
        None => match cluster["cluster"]["certificate-authority"].as_str() {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {f}"))?),
            None => None,
        },
    };
    let token = user["user"]["token"]
        .as_str()
        .context("the kubeconfig's user has no token")?
        .to_string();
    Ok((server, ca, token))
}

async fn push(
    reference: &str,
    file: &Path,
    kubeconfig: Option<PathBuf>,
    server: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    let (server, ca, token) = match (server, token) {
        (Some(s), Some(t)) => (
            s,
            ca_file
                .map(std::fs::read)
                .transpose()
                .context("reading the CA file")?,
            t,
        ),
        _ => from_kubeconfig(&default_kubeconfig(kubeconfig)?)?,
    };
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut http = reqwest::Client::builder();
    if let Some(ca) = ca {
        for der in skiff_common::client::pem_to_der(&ca) {
            http = http.add_root_certificate(reqwest::Certificate::from_der(&der)?);
        }
    }
    let url = format!(
        "{}{}/{}",
        server.trim_end_matches('/'),
        skiff_common::MODULES_PATH,
        reference
    );
    let resp = http
        .build()?
        .put(&url)
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("uploading to {server}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "push failed ({status}): {}",
            body["message"].as_str().unwrap_or("no message")
        );
    }
    println!(
        "pushed {}:{} {} ({} bytes)",
        body["name"].as_str().unwrap_or(""),
        body["tag"].as_str().unwrap_or(""),
        body["digest"].as_str().unwrap_or(""),
        body["size"]
    );
    Ok(())
}

/// How many PEM certificates `pem` holds.
fn pem_certificates(pem: &[u8]) -> usize {
    pem.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"-----BEGIN CERTIFICATE-----"))
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse_as_flags_write_them() {
        use std::time::Duration;
        let cases: &[(&str, Option<Duration>)] = &[
            ("20", Some(Duration::from_secs(20))),
            ("20s", Some(Duration::from_secs(20))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("8760h", Some(Duration::from_secs(8760 * 3600))),
            ("1d", None),
            ("h", None),
            ("-1s", None),
            ("99999999999999999999h", None),
            ("9999999999999999h", None),
        ];
        for (s, want) in cases {
            assert_eq!(super::parse_duration(s).ok(), *want, "{s}");
        }
    }
}
