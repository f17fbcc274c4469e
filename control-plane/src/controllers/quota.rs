//! ResourceQuota status, as kube-controller-manager's resourcequota controller: each quota's
//! `status.hard` mirrors its spec and `status.used` is what exists in its namespace now (pods in
//! a terminal phase no longer count), so deletions give usage back and a new quota starts from
//! the truth. Usage is computed by the same function admission charges with
//! (`api::registry::quota::usage`). The quota is read first and written with its
//! resourceVersion, so a create charged in between (admission) is never overwritten: the write
//! conflicts and the quota is computed again. Pod changes requeue their namespace's quotas;
//! every quota is also recomputed every 15 s (other kinds' deletions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Value};

use super::{ControllerError, PodInformer};
use crate::api::registry::limits::format_amount;
use crate::api::registry::quota::{hard, usage, Usage};
use crate::resources::{self, ResourceType};

const RESYNC: Duration = Duration::from_secs(15);

struct Ctx {
    client: kube::Client,
}

/// Run the controller until its streams end.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let controller = Controller::new(
        Api::<ResourceQuota>::all(client),
        watcher::Config::default(),
    );
    let quotas = controller.store();
    controller
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            super::in_pod_namespace(&quotas, &pod)
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The resource types whose objects a quota with these hard keys counts.
fn counted(hard: &Usage) -> Vec<&'static ResourceType> {
    let mut out: Vec<&'static ResourceType> = Vec::new();
    let mut add = |group: &str, plural: &str| {
        if let Some(rt) = resources::all()
            .into_iter()
            .find(|r| r.group == group && r.plural == plural)
        {
            if !out.iter().any(|o| std::ptr::eq(*o, rt)) {
                out.push(rt);
            }
        }
    };
    for key in hard.keys() {
        let core = |p: &str| ("", p.to_string());
        let (group, plural) = match key.as_str() {
            "pods" | "cpu" | "memory" => core("pods"),
            k if k.starts_with("requests.") || k.starts_with("limits.") => {
                if k == "requests.storage" {
                    core("persistentvolumeclaims")
                } else {
                    core("pods")
                }
            }
            "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
            "persistentvolumeclaims"
            | "configmaps"
            | "secrets"
            | "replicationcontrollers"
            | "resourcequotas" => core(key),
            k => match k.strip_prefix("count/") {
                Some(rest) => match rest.split_once('.') {
                    Some((plural, group)) => (group, plural.to_string()),
                    None => core(rest),
                },
                None => continue,
            },
        };
        add(group, &plural);
    }
    out
}

async fn reconcile(quota: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let (Some(ns), Some(name)) = (
        quota.metadata.namespace.clone(),
        quota.metadata.name.clone(),
    ) else {
        return Ok(Action::await_change());
    };
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
    // Read first: its resourceVersion guards the write against charges made meanwhile.
    let Some(current) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let value = serde_json::to_value(&current)?;
    let hard = hard(&value);
    let mut used: Usage = hard.keys().map(|k| (k.clone(), 0)).collect();
    for rt in counted(&hard) {
        let gvk = GroupVersionKind::gvk(rt.group, rt.version, rt.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, rt.plural);
        let objects: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        for obj in objects.list(&ListParams::default()).await?.items {
            let v = serde_json::to_value(&obj)?;
            let terminal = matches!(
                v.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            if (rt.group, rt.plural) == ("", "pods") && terminal {
                continue;
            }
            if !crate::api::registry::quota::selects(&value, rt, &v) {
                continue;
            }
            for (k, amount) in usage(rt, &v) {
                if let Some(u) = used.get_mut(&k) {
                    *u = u.saturating_add(amount);
                }
            }
        }
    }
    let text = |u: &Usage| -> BTreeMap<String, String> {
        u.iter()
            .map(|(k, v)| (k.clone(), format_amount(k, *v)))
            .collect()
    };
    let want = json!({"hard": value.pointer("/spec/hard").cloned().unwrap_or(json!({})), "used": text(&used)});
    let have = value.get("status").cloned().unwrap_or(Value::Null);
    let same = have
        .get("used")
        .map(crate::api::registry::quota::amounts_of)
        == Some(used.clone())
        && have.get("hard") == want.get("hard");
    if !same {
        let mut next = current.clone();
        next.status = Some(serde_json::from_value(want)?);
        match api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {}
            // Charged meanwhile: compute again from the new state.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::ZERO))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::requeue(RESYNC))
}
