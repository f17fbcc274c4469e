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

use anyhow::Result;

use super::report;
use super::scaled::Scaled;

const NAME: &str = "bench-hpa";

/// Run `steps` load steps of `rate` requests a second with the HTTP component `module`.
pub async fn hpa_reaction(kubeconfig: &Path, module: &Path, steps: usize, rate: u64) -> Result<()> {
    let scaled = Scaled::create(
        kubeconfig,
        module,
        NAME,
        "hpa",
        1,
        serde_json::json!({"minReplicas": 1, "maxReplicas": 4,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "20"}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}),
    )
    .await?;
    let gw = scaled.gateway.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut reactions = Vec::new();
    for step in 0..steps {
        // Back at one replica, idle.
        let deadline = Instant::now() + Duration::from_secs(300);
        while scaled.replicas().await != 1 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "step {step}: never back to one replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And serving (the first step's pod may still be starting).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if answers(&http, &gw).await {
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
                        if !answers(&http, &gw).await {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            })
        };
        let began = Instant::now();
        let deadline = began + Duration::from_secs(300);
        while scaled.replicas().await <= 1 {
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
    scaled.delete().await;
    Ok(())
}

/// One request to the Service through the gateway `gw`: did it succeed?
async fn answers(http: &reqwest::Client, gw: &str) -> bool {
    http.get(format!("http://{gw}/"))
        .header("host", NAME)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
