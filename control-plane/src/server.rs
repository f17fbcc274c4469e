//! Wiring of the control plane: identity, store, module store, the HTTPS listener serving the
//! API router, the bootstrap namespaces and the scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::api::{self, AppState};
use crate::auth::authn::{self, Authenticator};
use crate::auth::authorizer::Authorizer;
use crate::auth::defaults;
use crate::auth::rbac::UserInfo;
use crate::modules::ModuleStore;
use crate::pki::{self, Pki};
use crate::store::{Store, StoreConfig};

/// Errors of starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Identity could not be loaded or created.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The module store could not be opened.
    #[error(transparent)]
    Modules(#[from] crate::modules::ModuleError),
    /// Binding or TLS set-up failed.
    #[error("{0}")]
    Io(String),
    /// Building the in-process API client failed.
    #[error(transparent)]
    Client(#[from] skiff_common::client::ClientError),
    /// Bootstrapping objects failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] api::ApiError),
}

/// How to run the control plane.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where state lives.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Store tuning.
    pub store: StoreConfig,
    /// A node whose Lease is older than this is `Ready=Unknown` and tainted unreachable.
    pub node_monitor_grace: Duration,
    /// How long new pods tolerate a not-ready or unreachable node before eviction.
    pub default_toleration_seconds: i64,
    /// Encryption at rest (`--encryption-provider-config`); none by default.
    pub encryption: Option<crate::store::EncryptionConfig>,
    /// The audit log (`--audit-log`); none by default.
    pub audit: Option<api::audit::AuditConfig>,
    /// The longest validity of a certificate the cluster signs (`--cluster-signing-duration`).
    pub cluster_signing_duration: Duration,
    /// Scheduled snapshots (`--snapshot-interval`); none by default.
    pub snapshots: Option<SnapshotSchedule>,
    /// Keep the cluster in etcd instead of `DATA_DIR/state.db` (`--datastore-endpoint`).
    pub datastore: Option<crate::store::etcd::EtcdConfig>,
    /// How often the nodes' resource metrics are scraped (`--metric-resolution`).
    pub metric_resolution: Duration,
    /// How often each HPA is synced (`--horizontal-pod-autoscaler-sync-period`).
    pub hpa_sync: Duration,
}

/// When and where a server takes snapshots of its cluster.
#[derive(Clone, Debug)]
pub struct SnapshotSchedule {
    /// Where they go.
    pub dir: PathBuf,
    /// How often.
    pub every: Duration,
    /// How many are kept (the oldest go).
    pub keep: usize,
}

/// A running control plane.
pub struct RunningServer {
    /// `https://host:port` clients use.
    pub url: String,
    /// Cluster CA, PEM.
    pub ca_pem: String,
    /// Admin token.
    pub admin_token: String,
    /// Node join token.
    pub node_token: String,
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Cancel to shut down.
    pub shutdown: CancellationToken,
    /// The CA's key (signs the embedded node's certificate).
    ca_key_pem: String,
    /// Ends when the listener has stopped.
    pub serving: tokio::task::JoinHandle<()>,
    router: axum::Router,
    /// The data dir's lock, held while the server runs.
    _lock: std::fs::File,
}

impl RunningServer {
    /// A client for a component in this process that authenticates with `token` and sends its
    /// requests straight into the API router (see `loopback`).
    pub fn loopback_client(&self, token: &str) -> Result<kube::Client, ServerError> {
        loopback(self.router.clone(), token)
    }

    /// A loopback client for an in-process component that acts as `user`, as a client
    /// certificate for it would (the embedded node).
    pub fn loopback_client_as(&self, user: &UserInfo) -> Result<kube::Client, ServerError> {
        let cert = api::ClientCertUser(user.clone());
        let service = tower::ServiceBuilder::new()
            .map_request(move |req: axum::http::Request<kube::client::Body>| {
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(cert.clone());
                axum::http::Request::from_parts(parts, axum::body::Body::new(body))
            })
            .service(self.router.clone());
        Ok(kube::Client::new(service, "default"))
    }

    /// A client certificate and key (PEM) for node `name` (`system:node:NAME` in
    /// `system:nodes`), signed by the cluster CA: the embedded node's credential.
    pub fn node_credential(&self, name: &str) -> Result<(String, String), ServerError> {
        Ok(pki::issue_client(
            &self.ca_pem,
            &self.ca_key_pem,
            &format!("system:node:{name}"),
            &["system:nodes"],
            365,
        )?)
    }
}

/// Start the control plane and return once the API answers.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ServerError::Io(format!("{}: {e}", config.data_dir.display())))?;
    // The data dir holds the cluster's credentials and Secrets: the server's user only (an
    // existing one, from before this rule, is tightened too).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ServerError::Io(format!("{}: {e}", config.data_dir.display())))?;
    }
    // One server per data dir: a second one (or a restore) is refused while this one runs.
    let lock = crate::snapshot::lock(&config.data_dir)
        .map_err(|e| ServerError::Io(e.to_string()))?
        .ok_or_else(|| {
            ServerError::Io(format!(
                "another skiff server is running on {} ({} is locked)",
                config.data_dir.display(),
                crate::snapshot::LOCK_FILE
            ))
        })?;
    let pki = Pki::load_or_create(&config.data_dir, &pki::server_names(&[config.listen.ip()]))?;
    let mut store: Arc<dyn crate::store::Storage> = match &config.datastore {
        Some(etcd) => {
            let etcd = crate::store::etcd::EtcdStore::connect(etcd).await?;
            Arc::new(crate::store::Cached::new(Arc::new(etcd)).await?)
        }
        None => {
            Arc::new(Store::open(&config.data_dir.join("state.db"), config.store.clone()).await?)
        }
    };
    if let Some(enc) = config.encryption.clone() {
        let resources = enc.resources();
        store = Arc::new(crate::store::Encrypted::new(store, enc));
        // Every stored object of an encrypted resource must decrypt with the keys given: a
        // wrong or missing key stops the start with the object it failed on, rather than
        // serving errors later.
        for r in resources {
            store.list(&r, None).await?;
        }
    }
    let modules = ModuleStore::new(&config.data_dir.join("modules"), store.clone())?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Io(format!("listening on {}: {e}", config.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    let advertise = if host.contains(':') {
        format!("[{host}]:{}", local.port())
    } else {
        format!("{host}:{}", local.port())
    };
    let url = format!("https://{advertise}");

    // Calls to the nodes' agent endpoints: the node's serving certificate must chain to the
    // cluster CA, and the API server proves itself with its own client certificate (new at
    // every start, never written down).
    let (kubelet_cert, kubelet_key) = pki::issue_client(
        &pki.ca_pem,
        &pki.ca_key_pem,
        defaults::KUBELET_CLIENT,
        &[],
        365,
    )?;
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .tls_built_in_root_certs(false)
        .identity(
            reqwest::Identity::from_pem(format!("{kubelet_key}\n{kubelet_cert}").as_bytes())
                .map_err(|e| ServerError::Io(format!("the kubelet client certificate: {e}")))?,
        );
    for der in skiff_common::client::pem_to_der(pki.ca_pem.as_bytes()) {
        http = http.add_root_certificate(
            reqwest::Certificate::from_der(&der).map_err(|e| ServerError::Io(e.to_string()))?,
        );
    }
    let http = http.build().map_err(|e| ServerError::Io(e.to_string()))?;
    // With several servers on etcd, a blob pushed to one is fetched by the others on demand,
    // with a client certificate of this server's own (new at every start, never written down).
    let modules = if config.datastore.is_some() {
        let (cert, key) = pki::issue_client(
            &pki.ca_pem,
            &pki.ca_key_pem,
            "system:apiserver",
            &[crate::auth::rbac::MASTERS],
            365,
        )?;
        let mut peers = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_built_in_root_certs(false)
            .identity(
                reqwest::Identity::from_pem(format!("{key}\n{cert}").as_bytes())
                    .map_err(|e| ServerError::Io(format!("the peer client certificate: {e}")))?,
            );
        for der in skiff_common::client::pem_to_der(pki.ca_pem.as_bytes()) {
            peers = peers.add_root_certificate(
                reqwest::Certificate::from_der(&der).map_err(|e| ServerError::Io(e.to_string()))?,
            );
        }
        modules.with_peers(crate::modules::Peers {
            http: peers.build().map_err(|e| ServerError::Io(e.to_string()))?,
            me: advertise.clone(),
        })
    } else {
        modules
    };
    // The in-process components' credentials: new at every start, never written down.
    let scheduler_token = random_token();
    let controllers_token = random_token();
    let apiserver_token = random_token();
    let signer = crate::auth::satoken::Signer::new(&pki.sa_key_der, &pki.sa_public)
        .map_err(|e| ServerError::Io(e.to_string()))?;
    let authn = Authenticator::new(
        vec![
            (
                pki.admin_token.clone(),
                authn::user("system:admin", &[crate::auth::rbac::MASTERS]),
            ),
            // The join token, shared by every node, only lets a node ask for its own
            // certificate (as a kubeadm bootstrap token).
            (
                pki.node_token.to_string(),
                authn::user(
                    "system:bootstrap:node-join-token",
                    &["system:bootstrappers"],
                ),
            ),
            (
                scheduler_token.clone(),
                authn::user(defaults::SCHEDULER, &[]),
            ),
            (
                controllers_token.clone(),
                authn::user(defaults::CONTROLLER_MANAGER, &[]),
            ),
            // kube-apiserver's own loopback identity (its Lease and the kubernetes Endpoints).
            (
                apiserver_token.clone(),
                authn::user("system:apiserver", &[crate::auth::rbac::MASTERS]),
            ),
        ],
        signer,
    );
    let authorizer = Authorizer::new();
    let shutdown = CancellationToken::new();
    if let Some(s) = &config.snapshots {
        tokio::spawn(crate::snapshot::schedule(
            config.data_dir.clone(),
            config.datastore.clone(),
            s.dir.clone(),
            s.every,
            s.keep,
            shutdown.clone(),
        ));
    }
    tokio::spawn(authorizer.clone().run(store.clone(), shutdown.clone()));
    let usage = Arc::new(crate::usage::Usage::default());
    tokio::spawn(crate::usage::run(
        store.clone(),
        http.clone(),
        usage.clone(),
        config.metric_resolution,
        shutdown.clone(),
    ));
    let state = Arc::new(AppState {
        store,
        authn,
        authorizer,
        node_token: pki.node_token.to_string(),
        modules,
        ca_pem: pki.ca_pem.clone(),
        advertise: advertise.clone(),
        usage,
        http,
        continue_key: api::continue_key(&pki.server_key_pem),
        snapshots: Default::default(),
        audit: match config.audit.clone() {
            Some(a) => Some(
                api::audit::AuditLog::start(a.clone())
                    .map_err(|e| ServerError::Io(format!("{}: {e}", a.path.display())))?,
            ),
            None => None,
        },
    });
    api::bootstrap(&state).await?;

    let tls = tls_config(&pki)?;
    let router = api::router(state.clone());
    let identity = crate::leader::identity(&config.data_dir);
    // This server in the `kubernetes` Endpoints (with every other live one) before it answers.
    let mut peers = crate::apiservers::Reconciler::new(
        loopback(router.clone(), &apiserver_token)?,
        &identity,
        &advertise,
    );
    if let Err(e) = peers.round().await {
        tracing::warn!(error = %e, "the kubernetes Endpoints");
    }
    let leaving = tokio::spawn(crate::apiservers::run(peers, shutdown.clone()));
    let serving = {
        let (router, stop) = (router.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve(listener, tls, router, stop).await;
            // Out of the Endpoints before the process ends (bounded: the store may be gone).
            let _ = tokio::time::timeout(Duration::from_secs(3), leaving).await;
        })
    };

    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    pki::write_secret(&kubeconfig, &pki.kubeconfig(&url))?;

    let client = loopback(router.clone(), &controllers_token)?;
    let scheduler = loopback(router.clone(), &scheduler_token)?;
    crate::api::strategy::pod::set_default_toleration_seconds(config.default_toleration_seconds);
    // One pod watch for the controllers and the scheduler.
    let pods = crate::controllers::PodInformer::start(client.clone(), shutdown.clone());
    // The controllers and the scheduler run where they hold their Lease: with several API
    // servers on one etcd, on one of them at a time.
    let controller_config = crate::controllers::ControllerConfig {
        node_grace: config.node_monitor_grace,
        ca_pem: pki.ca_pem.clone(),
        ca_key_pem: pki.ca_key_pem.clone(),
        signing_duration: config.cluster_signing_duration,
        hpa_sync: config.hpa_sync,
    };
    {
        let (client, pods, stop, id) = (
            client.clone(),
            pods.clone(),
            shutdown.clone(),
            identity.clone(),
        );
        tokio::spawn(async move {
            let elected = client.clone();
            crate::leader::run_elected(elected, "kube-controller-manager", &id, stop, |token| {
                // The garbage collector is kube-controller-manager's too: one at a time.
                let collecting = tokio::spawn(api::gc::run(state.clone(), token.clone()));
                let running = crate::controllers::run(
                    client.clone(),
                    pods.clone(),
                    token,
                    controller_config.clone(),
                );
                async move {
                    let _ = running.await;
                    let _ = collecting.await;
                }
            })
            .await;
        });
    }
    {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let elected = scheduler.clone();
            crate::leader::run_elected(elected, "kube-scheduler", &identity, stop, |token| {
                let (scheduler, pods) = (scheduler.clone(), pods.clone());
                async move {
                    tokio::select! {
                        _ = crate::scheduler::run(scheduler, pods) => {}
                        _ = token.cancelled() => {}
                    }
                }
            })
            .await;
        });
    }
    Ok(RunningServer {
        url,
        ca_pem: pki.ca_pem,
        admin_token: pki.admin_token,
        node_token: pki.node_token.to_string(),
        kubeconfig,
        shutdown,
        serving,
        router,
        ca_key_pem: pki.ca_key_pem,
        _lock: lock,
    })
}

fn random_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The client of the in-process controllers and scheduler: kube-rs sending its requests straight
/// into the API router (kube-apiserver's loopback client, without its socket). Requests still go
/// through authentication, admission and the store's one writer as any client's do; only TLS,
/// TCP and HTTP framing are skipped.
fn loopback(router: axum::Router, token: &str) -> Result<kube::Client, ServerError> {
    let auth = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| ServerError::Io(format!("loopback token: {e}")))?;
    let service = tower::ServiceBuilder::new()
        .map_request(move |req: axum::http::Request<kube::client::Body>| {
            let (mut parts, body) = req.into_parts();
            parts
                .headers
                .insert(axum::http::header::AUTHORIZATION, auth.clone());
            axum::http::Request::from_parts(parts, axum::body::Body::new(body))
        })
        .service(router);
    Ok(kube::Client::new(service, "default"))
}

fn tls_config(pki: &Pki) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pki.server_cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Io(format!("serving certificate: {e}")))?;
    let key = rustls_pemfile::private_key(&mut pki.server_key_pem.as_bytes())
        .map_err(|e| ServerError::Io(format!("serving key: {e}")))?
        .ok_or_else(|| ServerError::Io("serving key: no key in PEM".into()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerError::Io(e.to_string()))?
    .with_client_cert_verifier(client_verifier(&pki.ca_pem)?)
    .with_single_cert(certs, key)
    .map_err(|e| ServerError::Io(format!("TLS set-up: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Client certificates are optional (most clients send a token); one that is sent must be
/// signed by the cluster CA for client authentication.
fn client_verifier(
    ca_pem: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServerError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ServerError::Io(format!("cluster CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ServerError::Io(format!("cluster CA: {e}")))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ServerError::Io(format!("client certificate verifier: {e}")))
}

/// The user a verified client certificate names: CN is the user, each O a group.
fn certificate_user(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<api::ClientCertUser> {
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let orgs: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    authn::certificate_user(&cn, &orgs).map(api::ClientCertUser)
}

async fn serve(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // A client that never finishes the handshake is dropped (slowloris).
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert_user = certificate_user(&stream);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                if let Some(u) = &cert_user {
                    req.extensions_mut().insert(u.clone());
                }
                req.extensions_mut().insert(api::PeerAddr(peer));
                router.clone().call(req)
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Headers that trickle in (slowloris) and dead HTTP/2 peers are cut off; a
            // client gets a bounded number of concurrent streams per connection.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20))
                .max_concurrent_streams(1000);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
