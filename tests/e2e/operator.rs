//! An operator written against kube-rs, as users write them: a `WebApp` custom resource
//! (its CRD applied with kubectl) reconciled by a kube-rs `Controller` into a Deployment it
//! owns (server-side apply), with the WebApp's status written through its status
//! subresource. skiff serves it as kube-apiserver would: the controller's watches, the
//! dynamic API, apply, ownership and garbage collection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::harness::Cluster;
use crate::T;

const WEBAPP_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: webapps.demo.skiff.dev
spec:
  group: demo.skiff.dev
  scope: Namespaced
  names: {plural: webapps, singular: webapp, kind: WebApp, shortNames: [wa]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Image, type: string, jsonPath: .spec.image}
    - {name: Ready, type: integer, jsonPath: .status.readyReplicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [image]
            properties:
              image: {type: string}
              replicas: {type: integer, minimum: 0, default: 1}
          status:
            type: object
            properties:
              readyReplicas: {type: integer}
              deployment: {type: string}
"#;

struct Ctx {
    client: kube::Client,
    resource: ApiResource,
}

async fn reconcile(app: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = app.metadata.namespace.clone().unwrap_or_default();
    let name = app.metadata.name.clone().unwrap_or_default();
    let image = app.data["spec"]["image"].as_str().unwrap_or("").to_string();
    let replicas = app.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let owner = json!({"apiVersion": "demo.skiff.dev/v1", "kind": "WebApp", "name": name,
        "uid": app.metadata.uid, "controller": true, "blockOwnerDeletion": true});
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"webapp": name}},
            "template": {"metadata": {"labels": {"webapp": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}}},
    });
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PatchParams::apply("webapp-operator").force();
    let made = deployments
        .patch(&name, &pp, &Patch::Apply(&deploy))
        .await?;
    let ready = made.status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let apps: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.resource);
    let status = json!({"status": {"readyReplicas": ready, "deployment": name}});
    apps.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_: Arc<DynamicObject>, _: &kube::Error, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(500))
}

#[test]
fn a_kube_rs_operator_reconciles_its_custom_resource() {
    let c = Cluster::start(&["--no-node"]);
    c.apply(WEBAPP_CRD);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(crate::crash::client(&c));
    let gvk = GroupVersionKind::gvk("demo.skiff.dev", "v1", "WebApp");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "webapps");
    let apps: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        resource: resource.clone(),
    });
    let operator = rt.spawn(
        Controller::new_with(apps, watcher::Config::default(), resource)
            .owns(Api::<Deployment>::all(client), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| futures::future::ready(())),
    );
    c.apply(
        "apiVersion: demo.skiff.dev/v1
kind: WebApp
metadata: {name: shop}
spec: {image: 'hello:latest', replicas: 2}
",
    );
    c.wait_for(
        &["deployment", "shop"],
        "{.spec.replicas} {.spec.template.spec.containers[0].image}",
        "2 hello:latest",
        T,
    );
    c.wait_for(&["webapp", "shop"], "{.status.deployment}", "shop", T);
    assert_eq!(
        c.jsonpath(
            &["deployment", "shop"],
            "{.metadata.ownerReferences[0].kind}"
        ),
        "WebApp"
    );
    // A change of the resource reaches the Deployment.
    c.kubectl_ok(&[
        "patch",
        "webapp",
        "shop",
        "--type=merge",
        "-p",
        r#"{"spec": {"replicas": 3}}"#,
    ]);
    c.wait_for(&["deployment", "shop"], "{.spec.replicas}", "3", T);
    // Deleting the resource deletes what it owns.
    c.kubectl_ok(&["delete", "webapp", "shop"]);
    c.wait_for(&["deployments"], "{.items[*].metadata.name}", "", T);
    operator.abort();
}
