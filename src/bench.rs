//! `skiff bench`: benchmarks a user can run against any cluster. Results are printed as one JSON
//! line per benchmark plus a human summary on stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;

/// Median, p99, min, max of samples in milliseconds, as one JSON line and a summary.
pub fn report(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        eprintln!("# {name}: no samples");
        return;
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p99 = ms[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "{}",
        serde_json::json!({"bench": name, "unit": "ms", "n": n, "median": median, "p99": p99, "min": ms[0], "max": ms[n - 1]})
    );
    eprintln!(
        "# {name}: median {median:.1} ms, p99 {p99:.1} ms (n={n}, min {:.1}, max {:.1})",
        ms[0],
        ms[n - 1]
    );
}

/// Create a pod from `manifest` `n` times and time creation → `Succeeded` as a watch sees it.
pub async fn pod_startup(kubeconfig: &Path, manifest: &Path, n: usize) -> Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let template: Pod = serde_yaml::from_str(&text).context("the manifest must be one Pod")?;
    let ns = template
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut pod = template.clone();
        let name = format!("bench-{}-{i}", std::process::id());
        pod.metadata.name = Some(name.clone());
        let t0 = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        let done = await_condition(api.clone(), &name, |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        });
        tokio::time::timeout(Duration::from_secs(60), done)
            .await
            .context("the pod did not finish within 60 s")??;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        api.delete(&name, &DeleteParams::default()).await?;
    }
    report("pod-create-to-succeeded", samples);
    Ok(())
}
