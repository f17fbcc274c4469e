//! `skiff bench scale-from-zero`: the cold path of a Service scaled to zero, cycle after cycle:
//! the Deployment behind it is scaled to zero (its pods gone, its endpoints empty), then one
//! request goes to a node's gateway and is timed until its answer. That time is the gateway's
//! hold, the wake call, the scale write, the Deployment and ReplicaSet controllers, the
//! scheduler, the node starting the pod (its module compiled already) and the routing table
//! showing it. The first cycle (which compiles the module) is reported apart.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::report;
use super::scaled::Scaled;

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
    // `minReplicas: 0` lets the gateway start it; the HPA itself scales neither way, so the
    // cycles alone decide the replicas.
    let scaled = Scaled::create(
        kubeconfig,
        module,
        NAME,
        "zero",
        0,
        serde_json::json!({"minReplicas": 0, "maxReplicas": 1,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "1000"}}}],
            "behavior": {"scaleUp": {"selectPolicy": "Disabled"},
                "scaleDown": {"selectPolicy": "Disabled"}}}),
    )
    .await?;
    let gw = scaled.gateway.clone();
    let pods: Api<Pod> = Api::namespaced(scaled.client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(scaled.client.clone(), "default");
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
        scaled
            .deployments
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
    scaled.delete().await;
    Ok(())
}
