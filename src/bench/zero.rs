//! `skiff bench scale-from-zero`: the cold path of a Service scaled to zero, cycle after cycle:
//! the Deployment behind it is scaled to zero (its pods gone, its endpoints empty), then one
//! request goes to a node's gateway and is timed until its answer. That time is the gateway's
//! hold, the wake call, the scale write, the Deployment and ReplicaSet controllers, the
//! scheduler, the node starting the pod (its module compiled already) and the routing table
//! showing it. The first cycle (which compiles the module) is reported apart.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use super::{client_for, gateway_of, report, RawApi};

const NAME: &str = "bench-zero";

/// Poll `f` every few milliseconds until it holds, for at most `within`.
async fn until<F, Fut>(what: &str, within: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Run `cycles` timed cycles (after one untimed first start) with the HTTP component `module`.
pub async fn scale_from_zero(kubeconfig: &Path, module: &Path, cycles: usize) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let raw = RawApi::from_kubeconfig(kubeconfig)?;
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let status = raw
        .request(
            reqwest::Method::PUT,
            &format!("{}/{NAME}:latest", skiff_common::MODULES_PATH),
            "application/wasm",
            bytes,
        )
        .await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "pushing the module answered {status}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let hpas: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
        )),
    );
    let dp = DeleteParams::default();
    let _ = deployments.delete(NAME, &dp).await;
    let _ = services.delete(NAME, &dp).await;
    let _ = hpas.delete(NAME, &dp).await;
    let labels = serde_json::json!({"skiff-bench": "zero"});
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
                "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "hello", "image": format!("{NAME}:latest"),
                            "ports": [{"name": "http", "containerPort": 8080}]}]}}}
            }))?,
        )
        .await?;
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
                "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}
            }))?,
        )
        .await?;
    // `minReplicas: 0` lets the gateway start it; the HPA itself scales neither way, so the
    // cycles alone decide the replicas.
    hpas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": NAME},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                "minReplicas": 0, "maxReplicas": 1,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "1000"}}}],
                "behavior": {"scaleUp": {"selectPolicy": "Disabled"},
                    "scaleDown": {"selectPolicy": "Disabled"}}}
        }))?,
    )
    .await?;
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let node = nodes
        .items
        .first()
        .and_then(|n| n.metadata.name.clone())
        .context("the cluster has no node")?;
    let gw = gateway_of(&client, &node).await?;
    eprintln!("# through the gateway of {node}: {gw}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let selector = ListParams::default().labels("skiff-bench=zero");
    let slice_selector =
        ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}"));
    let mut first = Vec::new();
    let mut timed = Vec::new();
    for cycle in 0..=cycles {
        // To zero: no pod left, no endpoint left.
        deployments
            .patch_scale(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
            )
            .await?;
        until("the pods to go", Duration::from_secs(60), || async {
            pods.list(&selector).await.is_ok_and(|l| l.items.is_empty())
        })
        .await?;
        until(
            "the endpoints to empty",
            Duration::from_secs(60),
            || async {
                slices
                    .list(&slice_selector)
                    .await
                    .is_ok_and(|l| l.items.iter().all(|s| s.endpoints.is_empty()))
            },
        )
        .await?;
        // The gateway's own watch of the slices, a moment behind the API.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = Instant::now();
        let resp = http
            .get(format!("http://{gw}/"))
            .header("host", NAME)
            .send()
            .await?;
        let took = began.elapsed().as_secs_f64() * 1000.0;
        let code = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::ensure!(code.is_success(), "cycle {cycle}: {code} {body}");
        if cycle == 0 {
            first.push(took);
        } else {
            timed.push(took);
        }
    }
    report("scale-from-zero-first-start", first);
    report("scale-from-zero-first-request", timed);
    let _ = hpas.delete(NAME, &dp).await;
    let _ = services.delete(NAME, &dp).await;
    let _ = deployments.delete(NAME, &dp).await;
    Ok(())
}
