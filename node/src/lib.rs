//! The skiff node agent: joins a cluster over HTTPS, registers its Node and keeps it Ready with a
//! Lease heartbeat, watches the pods bound to it and runs each in a wasmtime sandbox, writes their
//! status, and serves their logs to the API server.
//!
//! Invariants: the node is an API client like any other (it never sees SQLite or the control
//! plane's internals); a failing workload is reported in its pod's status, never a crash of the agent.

pub mod agent;
pub mod credential;
pub mod egress;
pub mod fetch;
pub mod gateway;
pub mod logs;
pub mod logserver;
pub mod modulegc;
pub mod netpolicy;
pub mod pod;
pub mod probe;
pub mod pullsecrets;
pub mod registry;
pub mod resourcemetrics;
pub mod runtime;
pub mod safefs;
pub mod serving;
pub mod tokens;
pub mod volumes;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_common::events::Recorder;
use skiff_common::token::JoinToken;
use tokio_util::sync::CancellationToken;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The join token is malformed.
    #[error(transparent)]
    Token(#[from] skiff_common::token::TokenError),
    /// The cluster CA could not be obtained or does not match the token.
    #[error("cluster CA: {0}")]
    Ca(String),
    /// Building the API client failed.
    #[error(transparent)]
    Client(#[from] skiff_common::client::ClientError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// Module cache set-up failed.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// The HTTP gateway could not start.
    #[error(transparent)]
    Gateway(#[from] gateway::GatewayError),
    /// Local IO (data dir, log listener) failed.
    #[error("{0}")]
    Io(String),
    /// Registration failed for good.
    #[error("registering the node: {0}")]
    Register(String),
}

/// How to run a node agent.
#[derive(Clone)]
pub struct NodeConfig {
    /// `https://host:port` of the API server; several, comma separated, for a cluster of several
    /// API servers (the agent moves to the next when its server cannot be reached).
    pub server: String,
    /// Join token (`K10...`).
    pub token: String,
    /// Node name.
    pub name: String,
    /// CA file; fetched with the token and verified against its hash when absent.
    pub ca_file: Option<PathBuf>,
    /// Local state (module cache, compiled code, logs).
    pub data_dir: PathBuf,
    /// Address the agent's own endpoint (logs for the API server) listens on; its IP is the
    /// node's InternalIP.
    pub listen: SocketAddr,
    /// Most pods this node runs.
    pub max_pods: u32,
    /// Extra node labels.
    pub labels: Vec<(String, String)>,
    /// Host directories pods may mount with `hostPath` (none by default).
    pub allow_host_paths: Vec<PathBuf>,
    /// Hosts of the node or control plane that pods may reach by outbound HTTP when their
    /// allow-list names them exactly (none by default).
    pub allow_local_outbound: Vec<String>,
    /// CPU (millicores) and memory (bytes) kept back for the host and the agent: allocatable is
    /// capacity minus these.
    pub reserved: (i64, i64),
    /// When container log files rotate and how many are kept.
    pub log_rotation: logs::Rotation,
    /// Port of the node's HTTP gateway on the node's address (0: any free port).
    pub gateway_port: u16,
    /// Registries (`host:port`) pulled from over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// CA certificates (PEM) registries' certificates may chain to, besides the system's.
    pub registry_cas: Vec<Vec<u8>>,
    /// The most bytes the module cache holds before unused modules are removed.
    pub module_cache_max_size: u64,
    /// A module used more recently than this is never removed.
    pub module_minimum_gc_age: std::time::Duration,
    /// An API client to use instead of one built from `server` and the node's certificate (the
    /// embedded node of `skiff server` gets the control plane's loopback client).
    pub client: Option<kube::Client>,
    /// The node's client certificate, when it already has one (the embedded node's is issued
    /// by its server); otherwise it is obtained with the join token ([`credential`]).
    pub identity: Option<credential::Credential>,
}

/// What every part of a running agent shares.
pub struct NodeContext {
    /// API client.
    pub client: kube::Client,
    /// Node name.
    pub node_name: String,
    /// InternalIP.
    pub host_ip: String,
    /// The sandbox runtime.
    pub runtime: Arc<runtime::Runtime>,
    /// Module fetcher.
    pub fetcher: fetch::Fetcher,
    /// Event recorder (`kubelet`).
    pub recorder: Recorder,
    /// Root of the pod log directories.
    pub log_root: PathBuf,
    /// Root of the directories behind persistentVolumeClaims (they outlive pods).
    pub claims_root: PathBuf,
    /// Log files being written.
    pub active_logs: logs::ActiveLogs,
    /// When container log files rotate and how many are kept.
    pub log_rotation: logs::Rotation,
    /// Host directories pods may mount with `hostPath`.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Allocatable cpu (millicores) and memory (bytes): capacity minus what is reserved.
    pub allocatable: (i64, i64),
    /// The node's HTTP gateway.
    pub gateway: Arc<gateway::Gateway>,
    /// Notified once the node is registered (its serving certificate can be asked for then).
    pub registered: Arc<tokio::sync::Notify>,
    /// What each container uses, by (pod uid, namespace/name, container), for `/metrics`.
    pub usage:
        std::sync::Mutex<std::collections::BTreeMap<(String, String, String), Arc<runtime::Usage>>>,
}

impl NodeContext {
    /// What `fieldRef` and `resourceFieldRef` can name for this pod on this node.
    pub fn facts<'a>(&'a self, pod: &'a k8s_openapi::api::core::v1::Pod) -> volumes::PodFacts<'a> {
        volumes::PodFacts {
            pod,
            node: &self.node_name,
            host_ip: &self.host_ip,
            allocatable: self.allocatable,
        }
    }

    /// The usage counters of one container (kept across its restarts).
    pub fn usage_of(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        container: &str,
    ) -> Arc<runtime::Usage> {
        let key = (
            pod.metadata.uid.clone().unwrap_or_default(),
            format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            container.to_string(),
        );
        match self.usage.lock() {
            Ok(mut m) => m.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Forget the counters of a pod that is gone.
    pub fn forget_pod(&self, uid: &str) {
        if let Ok(mut m) = self.usage.lock() {
            m.retain(|k, _| k.0 != uid);
        }
        self.runtime.release_unused();
    }
}

impl NodeConfig {
    /// The API servers, in the order given.
    pub fn servers(&self) -> Vec<String> {
        self.server
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Obtain the cluster CA: from `ca_file`, or fetched from the server and checked against the
/// hash in the join token (as k3s does).
pub async fn cluster_ca(config: &NodeConfig, token: &JoinToken) -> Result<Vec<u8>, NodeError> {
    let pem = match &config.ca_file {
        Some(f) => std::fs::read(f).map_err(|e| NodeError::Ca(format!("{}: {e}", f.display())))?,
        None => {
            // The CA is public; the connection is not trusted, the hash check below is what counts.
            let http = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| NodeError::Ca(e.to_string()))?;
            // From the first server that answers.
            let mut last = String::from("no server given");
            let mut got = None;
            for server in config.servers() {
                let url = format!("{server}{}", skiff_common::CACERTS_PATH);
                let fetched = async {
                    http.get(&url)
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await
                }
                .await;
                match fetched {
                    Ok(b) => {
                        got = Some(b.to_vec());
                        break;
                    }
                    Err(e) => last = format!("fetching {url}: {e}"),
                }
            }
            got.ok_or(NodeError::Ca(last))?
        }
    };
    if !token.matches_ca(&pem) {
        return Err(NodeError::Ca("the server's CA does not match the hash in the join token (wrong server or wrong token?)".into()));
    }
    Ok(pem)
}

/// Pods hold open directories (each mount is an open handle, see `safefs`): raise the soft
/// limit on open files to the hard one, as Go programs do at start.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (l.current, l.maximum) {
        if current < maximum {
            l.current = Some(maximum);
            if let Err(e) = setrlimit(Resource::Nofile, l) {
                tracing::warn!(error = %e, "could not raise the open files limit");
            }
        }
    }
}

/// Start the agent and run it until `shutdown` is cancelled.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> Result<(), NodeError> {
    raise_open_files_limit();
    let token = JoinToken::parse(&config.token)?;
    let ca = cluster_ca(&config, &token).await?;
    let servers = config.servers();
    let first = servers.first().cloned().unwrap_or_default();
    let endpoint = skiff_common::client::ApiEndpoint {
        url: first.clone(),
        ca_pem: ca.clone(),
        token: config.token.clone(),
        fallbacks: servers.iter().skip(1).cloned().collect(),
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| NodeError::Io(format!("{}: {e}", config.data_dir.display())))?;
    // Pods' directories hold their Secret volumes and logs, and the node's credential is here:
    // the node's own only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| NodeError::Io(format!("{}: {e}", config.data_dir.display())))?;
    }
    // The join token only obtains the node's own certificate; everything after acts with it.
    let identity = match &config.identity {
        Some(c) => c.clone(),
        None => {
            credential::obtain(
                &endpoint,
                &config.name,
                &config.data_dir.join("credentials"),
            )
            .await?
        }
    };
    // The certificate is presented through a rotating identity: renewed while the agent runs
    // (`credential::keep_fresh`), new connections present the new one.
    let rotating =
        skiff_common::client::RotatingIdentity::new(&identity.cert_pem, &identity.key_pem)?;
    let client = match config.client.clone() {
        Some(c) => c,
        None => endpoint.client_with_identity(rotating.clone())?,
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .use_preconfigured_tls(endpoint.tls_with_identity(rotating.clone())?)
        .build()
        .map_err(|e| NodeError::Ca(e.to_string()))?;
    tokio::spawn(credential::keep_fresh(
        client.clone(),
        config.name.clone(),
        config.data_dir.join("credentials"),
        identity,
        rotating,
        shutdown.clone(),
    ));
    let runtime = runtime::Runtime::new(&config.data_dir.join("compiled"))?;
    let fetcher = fetch::Fetcher::new(
        http,
        &servers,
        &config.data_dir.join("modules"),
        &config.insecure_registries,
        &config.registry_cas,
    )?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| NodeError::Io(format!("listening on {}: {e}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| NodeError::Io(e.to_string()))?;
    let host_ip = if local.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    // The node's and the API server's addresses: no pod's outbound HTTP may reach them.
    let mut protected = vec![host_ip];
    for server in &servers {
        let Ok(url) = server.parse::<http::Uri>() else {
            continue;
        };
        if let Some(h) = url.host() {
            let port = url.port_u16().unwrap_or(443);
            let h = h.trim_start_matches('[').trim_end_matches(']');
            if let Ok(addrs) = tokio::net::lookup_host((h, port)).await {
                protected.extend(addrs.map(|a| a.ip()));
            }
        }
    }
    let security = gateway::GatewaySecurity {
        peer_secret: skiff_common::token::gateway_peer_secret(&config.token),
        protected,
        local_allowed: config
            .allow_local_outbound
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        api_server: Some(Arc::new(
            gateway::ApiServer::new(&first, &ca)
                .await
                .map_err(|e| NodeError::Ca(e.to_string()))?,
        )),
    };
    let gateway = gateway::Gateway::start(
        &config.name,
        SocketAddr::new(host_ip, config.gateway_port),
        client.clone(),
        security,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %config.name, addr = %gateway.addr, "HTTP gateway listening");
    let ctx = Arc::new(NodeContext {
        gateway,
        recorder: Recorder::new(client.clone(), "kubelet", Some(&config.name)),
        client,
        node_name: config.name.clone(),
        host_ip: host_ip.to_string(),
        runtime,
        fetcher,
        log_root: config.data_dir.join("pods"),
        claims_root: config.data_dir.join("claims"),
        active_logs: logs::ActiveLogs::default(),
        log_rotation: config.log_rotation,
        allowed_host_paths: config.allow_host_paths.clone(),
        allocatable: agent::allocatable(config.reserved),
        usage: Default::default(),
        registered: Arc::new(tokio::sync::Notify::new()),
    });
    // The agent endpoint: HTTPS with the node's serving certificate (issued once the node is
    // registered), callers authorized by the API server.
    let serving_cert = Arc::new(serving::ServingCert::default());
    tokio::spawn(serving::keep_cert(
        ctx.client.clone(),
        config.name.clone(),
        host_ip,
        config.data_dir.join("credentials"),
        serving_cert.clone(),
        ctx.registered.clone(),
        shutdown.clone(),
    ));
    let tls = serving::acceptor(&ca, serving_cert)?;
    let log_app = logserver::router(
        ctx.clone(),
        serving::Guard::new(ctx.client.clone(), &config.name),
    );
    tokio::spawn(serving::serve(listener, tls, log_app, shutdown.clone()));
    agent::run(ctx, &config, local.port(), shutdown).await
}
