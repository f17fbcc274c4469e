//! What every namespace holds, as kube-controller-manager's service account and root CA
//! publisher controllers keep it: a `default` ServiceAccount and the `kube-root-ca.crt`
//! ConfigMap with the cluster CA. Both are put back when deleted or changed; nothing is
//! written in a namespace that is being deleted. [`wanted_ca`] is pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerError;

/// The ConfigMap with the cluster CA in every namespace.
pub const ROOT_CA: &str = "kube-root-ca.crt";

struct Ctx {
    client: kube::Client,
    ca_pem: String,
}

/// The data `kube-root-ca.crt` must hold.
pub fn wanted_ca(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("ca.crt".to_string(), ca_pem.to_string())])
}

/// Run the controller until its streams end.
pub async fn run(client: kube::Client, ca_pem: String) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        ca_pem,
    });
    let by_namespace =
        |meta: &ObjectMeta| meta.namespace.as_deref().map(ObjectRef::<Namespace>::new);
    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={ROOT_CA}")),
        move |cm: ConfigMap| by_namespace(&cm.metadata),
    )
    .watches(
        Api::<ServiceAccount>::all(client),
        watcher::Config::default().fields("metadata.name=default"),
        move |sa: ServiceAccount| by_namespace(&sa.metadata),
    )
    .run(reconcile, super::retry, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    let Some(name) = ns.metadata.name.as_deref().filter(|_| active) else {
        return Ok(Action::await_change());
    };
    let sas = Api::<ServiceAccount>::namespaced(ctx.client.clone(), name);
    if sas.get_opt("default").await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ignore_exists(sas.create(&PostParams::default(), &sa).await)?;
    }
    let cms = Api::<ConfigMap>::namespaced(ctx.client.clone(), name);
    let want = wanted_ca(&ctx.ca_pem);
    match cms.get_opt(ROOT_CA).await? {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA.into()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_string(),
                        "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(want),
                ..Default::default()
            };
            ignore_exists(cms.create(&PostParams::default(), &cm).await)?;
        }
        Some(mut cm) if cm.data.as_ref() != Some(&want) => {
            cm.data = Some(want);
            cm.binary_data = None;
            match cms.replace(ROOT_CA, &PostParams::default(), &cm).await {
                // A concurrent change: its event brings this namespace back.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                other => {
                    other?;
                }
            }
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

fn ignore_exists<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        // The namespace began terminating meanwhile.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}
