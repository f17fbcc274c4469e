//! `skiff bench hpa-reaction`: how long an HPA takes to answer a load step. A Deployment of one
//! HTTP pod behind a Service, with an HPA on `http_requests_per_second` (target 20 per pod);
//! each step starts a steady load well above the target through a node's gateway and times
//! until the Deployment's replicas go up, then stops the load and waits for the HPA to bring it
//! back to one. What it measures is the metric resolution plus the sync period plus the
//! write: the cluster's `--metric-resolution` and `--horizontal-pod-autoscaler-sync-period`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::{client_for, gateway_of, report, RawApi};

const NAME: &str = "bench-hpa";

async fn replicas(deployments: &Api<Deployment>) -> i32 {
    deployments
        .get(NAME)
        .await
        .ok()
        .and_then(|d| d.spec.and_then(|s| s.replicas))
        .unwrap_or(-1)
}

/// Run `steps` load steps of `rate` requests a second with the HTTP component `module`.
pub async fn hpa_reaction(kubeconfig: &Path, module: &Path, steps: usize, rate: u64) -> Result<()> {
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
    let labels = serde_json::json!({"skiff-bench": "hpa"});
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels},
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
    hpas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": NAME},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "20"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut reactions = Vec::new();
    for step in 0..steps {
        // Back at one replica, idle.
        let deadline = Instant::now() + Duration::from_secs(300);
        while replicas(&deployments).await != 1 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "step {step}: never back to one replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And serving (the first step's pod may still be starting).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = http
                .get(format!("http://{gw}/"))
                .header("host", NAME)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "step {step}: the Service never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let load = {
            let (stop, failed, http, gw) = (stop.clone(), failed.clone(), http.clone(), gw.clone());
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (http, gw, failed) = (http.clone(), gw.clone(), failed.clone());
                    tokio::spawn(async move {
                        let ok = http
                            .get(format!("http://{gw}/"))
                            .header("host", NAME)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            })
        };
        let began = Instant::now();
        let deadline = began + Duration::from_secs(300);
        while replicas(&deployments).await <= 1 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "step {step}: the HPA never scaled up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reactions.push(began.elapsed().as_secs_f64() * 1000.0);
        stop.store(true, Ordering::Relaxed);
        let _ = load.await;
        eprintln!(
            "# step {step}: scaled up after {:.0} ms; {} requests failed",
            reactions[step],
            failed.load(Ordering::Relaxed)
        );
    }
    report("hpa-reaction-to-a-load-step", reactions);
    let _ = hpas.delete(NAME, &dp).await;
    let _ = services.delete(NAME, &dp).await;
    let _ = deployments.delete(NAME, &dp).await;
    Ok(())
}
