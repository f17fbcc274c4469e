//! What the autoscaling benchmarks share: an HTTP Deployment behind a Service, with an HPA, in
//! `default`, and a node's gateway to reach it.

use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};

use super::{client_for, gateway_of, RawApi};

/// A Deployment `name` of the HTTP component, its Service and its HPA.
pub struct Scaled {
    /// The cluster.
    pub client: kube::Client,
    /// Its Deployment.
    pub deployments: Api<Deployment>,
    /// The first node's gateway (`host:port`).
    pub gateway: String,
    name: String,
    services: Api<Service>,
    hpas: Api<DynamicObject>,
}

impl Scaled {
    /// Push `module` as `name:latest`, and create (anew) the Deployment of `replicas`, pods
    /// labelled `skiff-bench: <label>`, the Service `name` and an HPA of `hpa_spec` (its
    /// `scaleTargetRef` filled in).
    pub async fn create(
        kubeconfig: &Path,
        module: &Path,
        name: &str,
        label: &str,
        replicas: i32,
        mut hpa_spec: serde_json::Value,
    ) -> Result<Scaled> {
        let client = client_for(kubeconfig).await?;
        let raw = RawApi::from_kubeconfig(kubeconfig)?;
        let bytes =
            std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
        let status = raw
            .request(
                reqwest::Method::PUT,
                &format!("{}/{name}:latest", skiff_common::MODULES_PATH),
                "application/wasm",
                bytes,
            )
            .await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "pushing the module answered {status}"
        );
        let gvk = GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler");
        let scaled = Scaled {
            deployments: Api::namespaced(client.clone(), "default"),
            services: Api::namespaced(client.clone(), "default"),
            hpas: Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk)),
            gateway: String::new(),
            name: name.to_string(),
            client,
        };
        scaled.delete().await;
        let labels = serde_json::json!({"skiff-bench": label});
        let pp = PostParams::default();
        scaled
            .deployments
            .create(
                &pp,
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                    "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels}, "spec": {
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "hello", "image": format!("{name}:latest"),
                                "ports": [{"name": "http", "containerPort": 8080}]}]}}}
                }))?,
            )
            .await?;
        scaled
            .services
            .create(
                &pp,
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}
                }))?,
            )
            .await?;
        hpa_spec["scaleTargetRef"] =
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": name});
        scaled
            .hpas
            .create(
                &pp,
                &serde_json::from_value(serde_json::json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": name}, "spec": hpa_spec,
                }))?,
            )
            .await?;
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(scaled.client.clone())
            .list(&Default::default())
            .await?;
        let node = nodes
            .items
            .first()
            .and_then(|n| n.metadata.name.clone())
            .context("the cluster has no node")?;
        let gateway = gateway_of(&scaled.client, &node).await?;
        eprintln!("# through the gateway of {node}: {gateway}");
        Ok(Scaled { gateway, ..scaled })
    }

    /// The Deployment's `spec.replicas` (-1 when it cannot be read).
    pub async fn replicas(&self) -> i32 {
        self.deployments
            .get(&self.name)
            .await
            .ok()
            .and_then(|d| d.spec.and_then(|s| s.replicas))
            .unwrap_or(-1)
    }

    /// Delete the HPA, the Service and the Deployment.
    pub async fn delete(&self) {
        let dp = DeleteParams::default();
        let _ = self.hpas.delete(&self.name, &dp).await;
        let _ = self.services.delete(&self.name, &dp).await;
        let _ = self.deployments.delete(&self.name, &dp).await;
    }
}
