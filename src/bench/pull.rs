//! `skiff bench pull`: what a pod's first start costs when its module must be fetched, side by
//! side for an OCI registry and the cluster's own module store, and what a start costs once
//! the node has it. Each round makes a module of its own (the given one with a custom section
//! naming the round: a new digest, so the node downloads and compiles it), puts it in both
//! places (not timed), then times creation → `Succeeded` as a watch sees it for:
//! - `registry-new-module`: a new module from the registry (manifest, config, blob, compile);
//! - `store-new-module`: the same from the module store (tag, blob, compile);
//! - `registry-new-tag`: a module the node has, under a new registry tag (the registry's round
//!   trips alone);
//! - `cached`: the module again by a tag the node resolved (`IfNotPresent`: nothing fetched).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;

use super::{client_for, report};

/// Put `bytes` in the cluster's module store as `reference`.
async fn store_push(client: &kube::Client, reference: &str, bytes: Vec<u8>) -> Result<()> {
    let req = http::Request::put(format!("{}/{reference}", skiff_common::MODULES_PATH))
        .header("content-type", "application/wasm")
        .body(bytes)?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("pushing {reference} to the module store"))?;
    Ok(())
}

/// Create a pod of `image`, wait for it to finish, delete it; the time to `Succeeded`.
async fn start(api: &Api<Pod>, name: &str, image: &str) -> Result<f64> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"}]}
    }))?;
    let t0 = Instant::now();
    api.create(&PostParams::default(), &pod).await?;
    let done = await_condition(api.clone(), name, |p: Option<&Pod>| {
        matches!(
            p.and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        )
    });
    let pod = tokio::time::timeout(Duration::from_secs(120), done)
        .await
        .with_context(|| format!("{name} did not finish within 120 s"))??;
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    let phase = pod
        .and_then(|p| p.status)
        .and_then(|s| s.phase)
        .unwrap_or_default();
    anyhow::ensure!(phase == "Succeeded", "{name} ended {phase}");
    api.delete(name, &DeleteParams::default()).await?;
    Ok(took)
}

/// `skiff bench pull`.
pub async fn pull(
    kubeconfig: &Path,
    registry: &str,
    insecure: bool,
    module: &Path,
    rounds: usize,
) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    let run = std::process::id();
    let dir = std::env::temp_dir().join(format!("skiff-bench-pull-{run}"));
    std::fs::create_dir_all(&dir)?;
    let (mut registry_new, mut store_new, mut new_tag, mut cached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let result = async {
        for i in 0..rounds {
            let tag = format!("r{run}-{i}");
            // Two modules of their own: one for the registry, one for the store, so each
            // start downloads and compiles.
            for (k, times, reference) in [
                (
                    "registry",
                    &mut registry_new,
                    format!("{registry}/bench/pull:{tag}"),
                ),
                ("store", &mut store_new, format!("bench-pull-{i}:{tag}")),
            ] {
                let own = skiff_common::wasm::with_custom_section(
                    &bytes,
                    "skiff-bench",
                    format!("{k}-{tag}").as_bytes(),
                );
                if k == "registry" {
                    let file = dir.join("module.wasm");
                    std::fs::write(&file, &own)?;
                    crate::ocipush::push(&reference, &file, insecure, None).await?;
                } else {
                    store_push(&client, &reference, own).await?;
                }
                times.push(start(&api, &format!("bench-pull-{k}-{i}"), &reference).await?);
            }
            // The registry's module under a second tag: the registry's round trips only.
            let again = format!("{registry}/bench/pull:{tag}-again");
            let file = dir.join("module.wasm");
            crate::ocipush::push(&again, &file, insecure, None).await?;
            new_tag.push(start(&api, &format!("bench-pull-tag-{i}"), &again).await?);
            // And by the first tag once more: the node has it.
            let first = format!("{registry}/bench/pull:{tag}");
            cached.push(start(&api, &format!("bench-pull-cached-{i}"), &first).await?);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    report("registry-new-module", registry_new);
    report("store-new-module", store_new);
    report("registry-new-tag", new_tag);
    report("cached", cached);
    Ok(())
}
