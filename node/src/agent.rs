//! The agent loop: register the Node, renew its Lease, and reconcile the pods bound to this node
//! (start a worker for each new pod, stop it when the pod is deleted, finish graceful deletions).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{NodeConfig, NodeContext, NodeError};

/// How often the Lease is renewed.
pub const LEASE_RENEW: Duration = Duration::from_secs(5);
/// The Lease duration the node announces.
pub const LEASE_SECONDS: i32 = 40;

fn meminfo_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The host's cpu (millicores) and memory (bytes).
fn capacity() -> (i64, i64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpus as i64 * 1000, meminfo_total_kib() as i64 * 1024)
}

/// The node's allocatable cpu (millicores) and memory (bytes): capacity minus `reserved`, what
/// the scheduler may place and what a container without a limit may use.
pub fn allocatable(reserved: (i64, i64)) -> (i64, i64) {
    let (cpu, mem) = capacity();
    ((cpu - reserved.0).max(0), (mem - reserved.1).max(0))
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The modules the node has, once its cache is collected (file system work: off the async
/// threads).
async fn images(
    ctx: &NodeContext,
    config: &NodeConfig,
) -> Vec<k8s_openapi::api::core::v1::ContainerImage> {
    let (fetcher, runtime) = (ctx.fetcher.clone(), ctx.runtime.clone());
    let (max, age) = (config.module_cache_max_size, config.module_minimum_gc_age);
    tokio::task::spawn_blocking(move || crate::modulegc::collect(&fetcher, &runtime, max, age))
        .await
        .unwrap_or_default()
}

/// The Node's status as this agent reports it.
fn node_status(
    ctx: &NodeContext,
    config: &NodeConfig,
    port: u16,
    since: &Time,
    images: Vec<k8s_openapi::api::core::v1::ContainerImage>,
) -> NodeStatus {
    let now = skiff_common::now();
    let quantities = |(cpu, mem): (i64, i64)| -> BTreeMap<String, Quantity> {
        [
            (
                "cpu".to_string(),
                Quantity(if cpu % 1000 == 0 {
                    (cpu / 1000).to_string()
                } else {
                    format!("{cpu}m")
                }),
            ),
            ("memory".to_string(), Quantity(format!("{}Ki", mem / 1024))),
            ("pods".to_string(), Quantity(config.max_pods.to_string())),
        ]
        .into()
    };
    let capacity = quantities(capacity());
    let cond = |t: &str, s: &str, reason: &str, message: &str| NodeCondition {
        type_: t.into(),
        status: s.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    };
    NodeStatus {
        allocatable: Some(quantities(ctx.allocatable)),
        capacity: Some(capacity),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "skiff node agent is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ctx.host_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "wasm32".into(),
            operating_system: "wasi".into(),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            machine_id: read_trim("/etc/machine-id"),
            system_uuid: read_trim("/etc/machine-id"),
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            os_image: format!("skiff (wasmtime {})", crate::runtime::Runtime::version()),
            container_runtime_version: format!("wasmtime://{}", crate::runtime::Runtime::version()),
            kubelet_version: skiff_common::KUBE_GIT_VERSION.into(),
            kube_proxy_version: String::new(),
            swap: None,
        }),
        images: Some(images),
        ..Default::default()
    }
}

async fn register(
    ctx: &NodeContext,
    config: &NodeConfig,
    port: u16,
    since: &Time,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), config.name.clone()),
        ("kubernetes.io/os".to_string(), "wasi".to_string()),
        ("kubernetes.io/arch".to_string(), "wasm32".to_string()),
    ]
    .into();
    labels.extend(config.labels.iter().cloned());
    let status = node_status(ctx, config, port, since, images(ctx, config).await);
    let mut annotations: BTreeMap<String, String> = [(
        crate::gateway::GATEWAY_PORT_ANNOTATION.to_string(),
        ctx.gateway.addr.port().to_string(),
    )]
    .into();
    // Where its claims' directories are, for the PersistentVolumes the provisioner makes.
    let claims = std::path::absolute(&ctx.claims_root).unwrap_or_else(|_| ctx.claims_root.clone());
    annotations.insert(
        skiff_common::CLAIMS_DIR_ANNOTATION.to_string(),
        claims.display().to_string(),
    );
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: None,
        status: Some(status.clone()),
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    &config.name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"labels": labels, "annotations": annotations}}),
                    ),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    nodes
        .patch_status(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    Ok(())
}

async fn renew_lease(ctx: &NodeContext) -> Result<(), kube::Error> {
    let leases: Api<Lease> =
        Api::namespaced(ctx.client.clone(), skiff_common::NODE_LEASE_NAMESPACE);
    let now = MicroTime(jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(ctx.node_name.clone()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(now),
        ..Default::default()
    };
    match leases
        .patch(
            &ctx.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(ctx.node_name.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

struct Worker {
    stop: CancellationToken,
    /// The deadline of a graceful deletion, once there is one.
    terminate: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    done: Option<JoinHandle<()>>,
    /// Cancelled once the pod's task has ended (its files are no longer written).
    finished: CancellationToken,
    /// The pod's directory (logs, emptyDirs, termination files).
    dir: std::path::PathBuf,
}

/// Remove a pod's directory once its task has ended: the pod is gone from the API, so its
/// logs and emptyDirs go with it, as the kubelet removes them.
fn remove_pod_dir(dir: std::path::PathBuf, finished: Option<CancellationToken>) {
    tokio::spawn(async move {
        if let Some(f) = finished {
            f.cancelled().await;
        }
        let shown = dir.display().to_string();
        let error = match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(dir = %shown, %error, "could not remove a deleted pod's directory");
    });
}

/// Directories under `root` of pods that are not bound here any more (deleted while the agent
/// was not running): `<namespace>_<pod>_<uid>` whose uid is not in `bound`.
fn orphaned_pod_dirs(root: &std::path::Path, bound: &HashSet<String>) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.rsplit_once('_'))
                .is_some_and(|(_, uid)| !bound.contains(uid))
        })
        .map(|e| e.path())
        .collect()
}

fn pod_dir_of(ctx: &NodeContext, pod: &Pod) -> Option<std::path::PathBuf> {
    crate::logs::pod_dir(
        &ctx.log_root,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Finish a graceful deletion: give the pod's containers until the end of the grace period
/// (`deletionGracePeriodSeconds` from now; a later, shorter one wins), then remove the object.
fn finish_deletion(ctx: &Arc<NodeContext>, pod: &Pod, worker: Option<&mut Worker>) {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(0)
        .max(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace as u64);
    let done = match worker {
        Some(w) => {
            w.terminate.send_if_modified(|d| match d {
                Some(at) if *at <= deadline => false,
                _ => {
                    *d = Some(deadline);
                    true
                }
            });
            match w.done.take() {
                Some(done) => Some(done),
                // Already finishing.
                None => return,
            }
        }
        None => None,
    };
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone();
    tokio::spawn(async move {
        if let Some(d) = done {
            let _ = d.await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %name, "pod stopped and deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "could not finish deleting the pod"),
        }
    });
}

/// Register, heartbeat and reconcile pods until `shutdown`.
pub async fn run(
    ctx: Arc<NodeContext>,
    config: &NodeConfig,
    port: u16,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    // The conditions this agent reports hold from its start on.
    let since = skiff_common::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match register(&ctx, config, port, &since).await {
            Ok(()) => break,
            Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => {
                return Err(NodeError::Register(format!(
                    "the server refused the join token: {}",
                    e.message
                )));
            }
            Err(e) if delay < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(NodeError::Register(e.to_string())),
        }
    }
    tracing::info!(node = %config.name, "node registered");
    ctx.registered.notify_one();
    let hb_ctx = ctx.clone();
    let hb_stop = shutdown.clone();
    let hb_config = config.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LEASE_RENEW);
        let mut n: u64 = 0;
        let mut unreachable = false;
        loop {
            // A new module in the cache shows in `status.images` at once.
            let added = tokio::select! {
                _ = tick.tick() => false,
                _ = hb_ctx.fetcher.added.notified() => true,
                _ = hb_stop.cancelled() => return,
            };
            let mut back = false;
            if !added {
                let renewed = renew_lease(&hb_ctx).await;
                if let Err(e) = &renewed {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
                n += 1;
                // The Node's conditions carry a heartbeat too, refreshed less often, and at
                // once when the server can be reached again (it may have marked the node
                // unknown).
                back = renewed.is_ok() && unreachable;
                unreachable = renewed.is_err();
            }
            if n.is_multiple_of(6) || back || added {
                let images = images(&hb_ctx, &hb_config).await;
                let status = node_status(&hb_ctx, &hb_config, port, &since, images);
                let nodes: Api<Node> = Api::all(hb_ctx.client.clone());
                if let Err(e) = nodes
                    .patch_status(
                        &hb_ctx.node_name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "node status update failed");
                }
            }
        }
    });

    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", config.name));
    let mut events = std::pin::pin!(watcher(pods, cfg).default_backoff());
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut swept = false;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = shutdown.cancelled() => break,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
            None => break,
        };
        match ev {
            watcher::Event::Init => seen.clear(),
            watcher::Event::InitApply(pod) => {
                seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                apply(&ctx, &mut workers, pod);
            }
            watcher::Event::InitDone => {
                // Pods that disappeared while we were not watching.
                workers.retain(|uid, w| {
                    let keep = seen.contains(uid);
                    if !keep {
                        w.stop.cancel();
                        remove_pod_dir(w.dir.clone(), Some(w.finished.clone()));
                    }
                    keep
                });
                // Once, at start: the directories of pods deleted while the agent was down.
                if !swept {
                    swept = true;
                    let (root, bound) = (ctx.log_root.clone(), seen.clone());
                    if let Ok(dirs) =
                        tokio::task::spawn_blocking(move || orphaned_pod_dirs(&root, &bound)).await
                    {
                        for d in dirs {
                            tracing::info!(dir = %d.display(), "removing the directory of a pod that is gone");
                            remove_pod_dir(d, None);
                        }
                    }
                }
            }
            watcher::Event::Apply(pod) => apply(&ctx, &mut workers, pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match workers.remove(&uid) {
                    Some(w) => {
                        w.stop.cancel();
                        remove_pod_dir(w.dir, Some(w.finished));
                    }
                    // A pod that finished (or never started) here.
                    None => {
                        if let Some(dir) = pod_dir_of(&ctx, &pod) {
                            remove_pod_dir(dir, None);
                        }
                    }
                }
                ctx.forget_pod(&uid);
            }
        }
    }
    for w in workers.values() {
        w.stop.cancel();
    }
    // Tell the scheduler not to place pods here any more (best effort: the server may be gone).
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let now = skiff_common::now();
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NodeShutdown",
        "message": "the skiff node agent was stopped", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let (params, patch) = (PatchParams::default(), Patch::Strategic(patch));
    let update = nodes.patch_status(&config.name, &params, &patch);
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), update).await {
        tracing::debug!(error = %e, "could not mark the node NotReady on shutdown");
    }
    Ok(())
}

fn apply(ctx: &Arc<NodeContext>, workers: &mut HashMap<String, Worker>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        finish_deletion(ctx, &pod, workers.get_mut(&uid));
        return;
    }
    if workers.contains_key(&uid) || is_terminal(&pod) {
        return;
    }
    // A pod whose names could not be a directory of ours is never started (the API refuses
    // such names; the node does not rely on it).
    let Some(dir) = pod_dir_of(ctx, &pod) else {
        tracing::error!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, "refusing a pod whose names are not valid Kubernetes names");
        return;
    };
    let stop = CancellationToken::new();
    let (terminate, termination) = tokio::sync::watch::channel(None);
    tracing::info!(pod = %pod.metadata.name.clone().unwrap_or_default(), "starting pod");
    let finished = CancellationToken::new();
    // Boxed: the wrapper below would otherwise hold the (large) future twice.
    let run = Box::pin(crate::pod::run(ctx.clone(), pod, stop.clone(), termination));
    // Cancelled when the task ends however it ends (returns, panics or is aborted).
    let on_end = finished.clone().drop_guard();
    let done = tokio::spawn(async move {
        let _on_end = on_end;
        run.await;
    });
    workers.insert(
        uid,
        Worker {
            stop,
            terminate,
            done: Some(done),
            finished,
            dir,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphaned_pod_dirs_are_those_of_pods_not_bound_here() {
        let root = std::env::temp_dir().join(format!("skiff-orphans-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // (directory name, still bound, is a directory)
        let cases = [
            ("default_web_uid-1", true, true),
            ("default_gone_uid-2", false, true),
            ("team-a_job-x_uid-3", false, true),
            ("default_web_uid-4", true, true),
            ("not-a-pod-file_uid-5", false, false),
            ("no-separator", false, true),
        ];
        for (name, _, dir) in cases {
            let p = root.join(name);
            if dir {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(&root).unwrap();
                std::fs::write(&p, "x").unwrap();
            }
        }
        let bound: HashSet<String> = cases
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0.rsplit_once('_').unwrap().1.to_string())
            .collect();
        let mut got: Vec<String> = orphaned_pod_dirs(&root, &bound)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(got, ["default_gone_uid-2", "team-a_job-x_uid-3"]);
        assert!(orphaned_pod_dirs(&root.join("missing"), &bound).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
