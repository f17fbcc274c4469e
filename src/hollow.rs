//! Hollow nodes for the scheduler and controller benchmarks (as KWOK's fake nodes): Node objects
//! that register, renew their Leases and report the pods bound to them Running and Ready, without
//! running anything. They carry a `NoSchedule` taint and a label of their own, so only pods that
//! ask for them land on them, and a real node's pods never do.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::json;

use crate::bench::RawApi;

/// The label and taint key of hollow nodes; its value names the benchmark run.
pub const KEY: &str = "skiff.dev/hollow";

/// How often each hollow node renews its Lease (as the kubelet does).
const RENEW: Duration = Duration::from_secs(10);

/// Status writes in flight at once.
const WORKERS: usize = 32;

/// A set of hollow nodes and the tasks that keep them alive.
pub struct Hollow {
    api: RawApi,
    names: Vec<String>,
    tasks: tokio::task::JoinSet<()>,
}

/// What a pod needs to land on the hollow nodes of run `run`: merged into its spec.
pub fn placement(run: &str) -> serde_json::Value {
    json!({
        "nodeSelector": {KEY: run},
        "tolerations": [{"key": KEY, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

fn micro_now() -> Result<serde_json::Value> {
    Ok(serde_json::to_value(MicroTime(jiff::Timestamp::now()))?)
}

impl Hollow {
    /// Register `n` hollow nodes named `hollow-<run>-<i>` (each with `pods` pods of capacity,
    /// 64 cpus and 256 GiB), then keep their Leases fresh and act as their kubelet for the pods
    /// of namespace `ns`.
    pub async fn start(
        client: kube::Client,
        api: RawApi,
        run: &str,
        n: usize,
        pods: u32,
        ns: &str,
    ) -> Result<Self> {
        let names: Vec<String> = (0..n).map(|i| format!("hollow-{run}-{i}")).collect();
        let now = serde_json::to_value(skiff_common::now())?;
        let register = {
            let (api, run, names) = (api.clone(), run.to_string(), names.clone());
            move |i: usize| {
                let (api, run, name, now) =
                    (api.clone(), run.clone(), names[i].clone(), now.clone());
                async move {
                    let cond = |t: &str, s: &str, reason: &str| {
                        json!({"type": t, "status": s, "reason": reason, "message": "hollow node",
                            "lastHeartbeatTime": now, "lastTransitionTime": now})
                    };
                    let capacity =
                        json!({"cpu": "64", "memory": "256Gi", "pods": pods.to_string()});
                    let status = json!({
                        "capacity": capacity, "allocatable": capacity,
                        "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                            cond("Ready", "True", "KubeletReady")],
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                            {"type": "Hostname", "address": name}],
                        "nodeInfo": {"architecture": "wasm32", "operatingSystem": "wasi",
                            "bootID": "", "machineID": "", "systemUUID": "", "kernelVersion": "",
                            "osImage": "hollow", "containerRuntimeVersion": "hollow://",
                            "kubeletVersion": skiff_common::KUBE_GIT_VERSION, "kubeProxyVersion": ""},
                    });
                    let node = json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": name, "labels": {KEY: run,
                            "kubernetes.io/hostname": name, "kubernetes.io/os": "wasi",
                            "kubernetes.io/arch": "wasm32"}},
                        "spec": {"taints": [{"key": KEY, "value": run, "effect": "NoSchedule"}]},
                        "status": status});
                    api.send(
                        reqwest::Method::POST,
                        "/api/v1/nodes",
                        "application/json",
                        serde_json::to_vec(&node)?,
                        201,
                    )
                    .await?;
                    api.send(
                        reqwest::Method::PATCH,
                        &format!("/api/v1/nodes/{name}/status"),
                        "application/merge-patch+json",
                        serde_json::to_vec(&json!({"status": status}))?,
                        200,
                    )
                    .await?;
                    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                            "renewTime": micro_now()?}});
                    api.send(
                        reqwest::Method::POST,
                        &lease_path(""),
                        "application/json",
                        serde_json::to_vec(&lease)?,
                        201,
                    )
                    .await
                }
            }
        };
        let mut hollow = Self {
            api: api.clone(),
            names: names.clone(),
            tasks: tokio::task::JoinSet::new(),
        };
        if let Err(e) = crate::bench::concurrent(n, 16, register).await {
            hollow.stop().await;
            return Err(e.context("registering hollow nodes"));
        }
        hollow.tasks.spawn(renew(api.clone(), names));
        hollow.tasks.spawn(kubelet(
            Api::namespaced(client, ns),
            api,
            ns.to_string(),
            format!("hollow-{run}-"),
        ));
        Ok(hollow)
    }

    /// Stop acting for the nodes and delete them and their Leases.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        let (api, names) = (self.api.clone(), Arc::new(std::mem::take(&mut self.names)));
        let n = names.len();
        let result = crate::bench::concurrent(n, 16, move |i| {
            let (api, name) = (api.clone(), names[i].clone());
            async move {
                for path in [format!("/api/v1/nodes/{name}"), lease_path(&name)] {
                    let code = api
                        .request(
                            reqwest::Method::DELETE,
                            &path,
                            "application/json",
                            Vec::new(),
                        )
                        .await?;
                    anyhow::ensure!(
                        matches!(code, 200 | 202 | 404),
                        "DELETE {path} answered {code}"
                    );
                }
                Ok(())
            }
        })
        .await;
        if let Err(e) = result {
            eprintln!("# could not delete every hollow node: {e:#}");
        }
    }
}

fn lease_path(name: &str) -> String {
    let base = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        skiff_common::NODE_LEASE_NAMESPACE
    );
    if name.is_empty() {
        base
    } else {
        format!("{base}/{name}")
    }
}

/// Renew every node's Lease once per [`RENEW`], spread evenly over the period.
async fn renew(api: RawApi, names: Vec<String>) {
    let gap = RENEW / names.len().max(1) as u32;
    let mut tick = tokio::time::interval(gap);
    for name in names.iter().cycle() {
        tick.tick().await;
        let Ok(now) = micro_now() else { continue };
        let body = json!({"spec": {"renewTime": now}}).to_string().into_bytes();
        let api = api.clone();
        let path = lease_path(name);
        tokio::spawn(async move {
            if let Err(e) = api
                .send(
                    reqwest::Method::PATCH,
                    &path,
                    "application/merge-patch+json",
                    body,
                    200,
                )
                .await
            {
                tracing::warn!(error = %e, "hollow lease renewal failed");
            }
        });
    }
}

enum Work {
    /// Report the pod Running and Ready.
    Run(Arc<Pod>),
    /// The pod is being deleted: remove it (there is nothing to stop).
    Remove(Arc<Pod>),
}

/// Act as the kubelet of every node whose name starts with `prefix` for the pods of `ns`: report
/// bound pods Running and Ready, remove pods being deleted.
async fn kubelet(pods: Api<Pod>, api: RawApi, ns: String, prefix: String) {
    let (tx, rx) = async_channel(WORKERS * 64);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (api, rx, ns) = (api.clone(), rx.clone(), ns.clone());
        workers.spawn(async move {
            while let Ok(work) = rx.recv().await {
                if let Err(e) = act(&api, &ns, work).await {
                    tracing::warn!(error = %e, "hollow kubelet");
                }
            }
        });
    }
    let mut started: HashSet<String> = HashSet::new();
    let mut removing: HashSet<String> = HashSet::new();
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "hollow kubelet watch");
                continue;
            }
        };
        let pod = match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
            watcher::Event::Delete(p) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                started.remove(&uid);
                removing.remove(&uid);
                continue;
            }
            _ => continue,
        };
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with(&prefix));
        if !ours {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod = Arc::new(pod);
        let work = if pod.metadata.deletion_timestamp.is_some() {
            if !removing.insert(uid) {
                continue;
            }
            Work::Remove(pod)
        } else {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Running") || !started.insert(uid) {
                continue;
            }
            Work::Run(pod)
        };
        if tx.send(work).await.is_err() {
            return;
        }
    }
}

/// A bounded multi-consumer queue (tokio's mpsc behind a mutex for the consumers).
fn async_channel(cap: usize) -> (tokio::sync::mpsc::Sender<Work>, Shared) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap);
    (tx, Shared(Arc::new(tokio::sync::Mutex::new(rx))))
}

#[derive(Clone)]
struct Shared(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Work>>>);

impl Shared {
    async fn recv(&self) -> Result<Work, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

async fn act(api: &RawApi, ns: &str, work: Work) -> Result<()> {
    match work {
        Work::Run(pod) => {
            let name = pod
                .metadata
                .name
                .as_deref()
                .context("a pod without a name")?;
            let now = serde_json::to_value(skiff_common::now())?;
            let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
            let containers: Vec<serde_json::Value> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| {
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": true,
                    "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
                })
                .collect();
            let status = json!({"status": {"phase": "Running", "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": now,
                "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"),
                    cond("ContainersReady"), cond("Ready"), cond("PodScheduled")],
                "containerStatuses": containers}});
            let code = api
                .request(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
                    "application/merge-patch+json",
                    serde_json::to_vec(&status)?,
                )
                .await?;
            anyhow::ensure!(
                matches!(code, 200 | 404),
                "status of {name} answered {code}"
            );
        }
        Work::Remove(pod) => {
            let name = pod
                .metadata
                .name
                .as_deref()
                .context("a pod without a name")?;
            let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": pod.metadata.uid}});
            let code = api
                .request(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/namespaces/{ns}/pods/{name}"),
                    "application/json",
                    serde_json::to_vec(&body)?,
                )
                .await?;
            anyhow::ensure!(
                matches!(code, 200 | 202 | 404 | 409),
                "delete of {name} answered {code}"
            );
        }
    }
    Ok(())
}
