//! The ReplicaSet controller, which also runs ReplicationControllers (the same machinery, as in
//! kube-controller-manager): keeps `spec.replicas` active pods matching the selector, adopts
//! matching orphans and releases pods that stopped matching (by `ownerReferences`), deletes the
//! least valuable pods first (unscheduled, pending, not ready, most restarted, newest) and
//! reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` and
//! `observedGeneration`. [`plan`], [`deletion_order`] and [`status`] are pure and table-tested.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Value};
use skiff_common::events::{EventType, Recorder};

use super::{controller_uid, is_active, ready_since, ControllerError, Expectations, PodInformer};
use crate::api::selectors::LabelSelector;

/// Most pods created or deleted in one reconcile (kube-controller-manager's burst).
const BURST: usize = 500;

/// What the controller needs of a kind that keeps replicas of a pod template.
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// `kind`.
    const KIND: &'static str;
    /// `apiVersion`.
    const API_VERSION: &'static str;
    /// The events' reporting component.
    const COMPONENT: &'static str;
    /// The selector, as a label selector.
    fn selector(&self) -> Result<LabelSelector, String>;
    /// `spec.replicas` (defaulted).
    fn replicas(&self) -> usize;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i64;
    /// `spec.template`.
    fn template(&self) -> Option<PodTemplateSpec>;
    /// The current `status`, as JSON.
    fn status_value(&self) -> Value;
}

/// The methods of [`Replicated`] that read fields both kinds' specs name alike.
macro_rules! spec_fields {
    () => {
        fn replicas(&self) -> usize {
            self.spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1)
                .max(0) as usize
        }
        fn min_ready_seconds(&self) -> i64 {
            self.spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                .max(0) as i64
        }
        fn template(&self) -> Option<PodTemplateSpec> {
            self.spec.as_ref().and_then(|s| s.template.clone())
        }
        fn status_value(&self) -> Value {
            serde_json::to_value(&self.status).unwrap_or(Value::Null)
        }
    };
}

impl Replicated for ReplicaSet {
    const KIND: &'static str = "ReplicaSet";
    const API_VERSION: &'static str = "apps/v1";
    const COMPONENT: &'static str = "replicaset-controller";
    fn selector(&self) -> Result<LabelSelector, String> {
        let spec = self.spec.as_ref().ok_or("no spec")?;
        let v = serde_json::to_value(&spec.selector).map_err(|e| e.to_string())?;
        LabelSelector::from_object(&v)
    }
    spec_fields!();
}

impl Replicated for ReplicationController {
    const KIND: &'static str = "ReplicationController";
    const API_VERSION: &'static str = "v1";
    const COMPONENT: &'static str = "replication-controller";
    /// A plain map of labels (defaulted from the template's).
    fn selector(&self) -> Result<LabelSelector, String> {
        let spec = self.spec.as_ref().ok_or("no spec")?;
        let labels = spec.selector.clone().unwrap_or_default();
        if labels.is_empty() {
            return Err("empty selector".into());
        }
        LabelSelector::from_object(&json!({ "matchLabels": labels }))
    }
    spec_fields!();
}

/// What a ReplicaSet must do about its pods.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: usize,
    /// Pods to delete (names), least valuable first.
    pub delete: Vec<String>,
    /// Orphans to adopt (names).
    pub adopt: Vec<String>,
    /// Owned pods that no longer match, to release (names).
    pub release: Vec<String>,
}

/// The pods a ReplicaSet manages (owned and matching, plus matching orphans), and the plan.
/// `pods` are the namespace's pods; `manage` is false while earlier writes are not yet seen
/// (then only adoption and release are planned).
pub fn plan(
    replicas: usize,
    uid: &str,
    selector: &LabelSelector,
    pods: &[Arc<Pod>],
    manage: bool,
    being_deleted: bool,
) -> (Plan, Vec<Arc<Pod>>) {
    let mut plan = Plan::default();
    let mut mine = Vec::new();
    for p in pods {
        let matches = selector.matches_map(p.metadata.labels.as_ref());
        match controller_uid(&p.metadata) {
            Some(owner) if owner == uid => {
                if matches {
                    mine.push(p.clone());
                } else if p.metadata.deletion_timestamp.is_none() {
                    plan.release
                        .push(p.metadata.name.clone().unwrap_or_default());
                }
            }
            None if matches && is_active(p) && !being_deleted => {
                plan.adopt.push(p.metadata.name.clone().unwrap_or_default());
                mine.push(p.clone());
            }
            _ => {}
        }
    }
    if manage && !being_deleted {
        let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
        if active.len() < replicas {
            plan.create = (replicas - active.len()).min(BURST);
        } else if active.len() > replicas {
            let mut ranked = active.clone();
            ranked.sort_by(|a, b| deletion_order(a, b));
            plan.delete = ranked
                .iter()
                .take((active.len() - replicas).min(BURST))
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
        }
    }
    (plan, mine)
}

/// Which of two pods goes first when scaling down (kube-controller-manager's order):
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before ready,
/// lower `controller.kubernetes.io/pod-deletion-cost` first, ready for less time first, more
/// restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let cost = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
            .and_then(|c| c.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| {
                cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
            })
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase(a).cmp(&phase(b)))
        .then(ready_since(a).is_some().cmp(&ready_since(b).is_some()))
        .then(cost(a).cmp(&cost(b)))
        // Ready more recently goes first.
        .then(ready_since(b).cmp(&ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// The status its pods give a ReplicaSet or ReplicationController (the conditions it has are
/// kept), and when to look again (a ready pod becoming available).
pub fn status<R: Replicated>(
    rs: &R,
    mine: &[Arc<Pod>],
    now: jiff::Timestamp,
) -> (Value, Option<Duration>) {
    let min_ready = rs.min_ready_seconds();
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let mut ready = 0;
    let mut available = 0;
    let mut recheck: Option<Duration> = None;
    for p in &active {
        if let Some(since) = ready_since(p) {
            ready += 1;
            let ready_for = now.duration_since(since).as_secs();
            if ready_for >= min_ready {
                available += 1;
            } else {
                let left = Duration::from_secs((min_ready - ready_for).max(1) as u64);
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
            }
        }
    }
    let mut status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
    });
    if let Some(g) = rs.meta().generation {
        status["observedGeneration"] = json!(g);
    }
    if let Some(c) = rs.status_value().get("conditions").filter(|c| !c.is_null()) {
        status["conditions"] = c.clone();
    }
    (status, recheck)
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    expectations: Expectations,
    recorder: Recorder,
}

/// Run the controller for ReplicaSets and ReplicationControllers.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let sets = run_kind::<ReplicaSet>(client.clone(), pods.clone());
    let rcs = run_kind::<ReplicationController>(client, pods);
    futures::future::join(sets, rcs).await;
}

async fn run_kind<R: Replicated>(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client.clone(), R::COMPONENT, None),
    });
    let api: Api<R> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .owns_shared_stream(pods.subscribe())
        .run(reconcile::<R>, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn owner_ref<R: Replicated>(rs: &R) -> serde_json::Value {
    json!({"apiVersion": R::API_VERSION, "kind": R::KIND,
        "name": rs.meta().name, "uid": rs.meta().uid,
        "controller": true, "blockOwnerDeletion": true})
}

async fn reconcile<R: Replicated>(rs: Arc<R>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = rs.meta().namespace.clone().unwrap_or_default();
    let name = rs.meta().name.clone().unwrap_or_default();
    let uid = rs.meta().uid.clone().unwrap_or_default();
    let key = format!("{}/{ns}/{name}", R::KIND);
    let selector = rs
        .selector()
        .map_err(|e| ControllerError::Invalid(format!("{key}: selector: {e}")))?;
    let replicas = rs.replicas();
    let pods = ctx.pods.in_namespace(&ns);
    let manage = ctx.expectations.satisfied(&key, &pods);
    let being_deleted = rs.meta().deletion_timestamp.is_some();
    let (plan, mine) = plan(replicas, &uid, &selector, &pods, manage, being_deleted);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let object = skiff_common::events::object_ref(rs.meta(), R::KIND, R::API_VERSION);

    for pod in &plan.adopt {
        let patch = json!({"metadata": {"ownerReferences": [owner_ref(rs.as_ref())]}});
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for pod in &plan.release {
        let others: Vec<_> = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod))
            .and_then(|p| p.metadata.owner_references.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        let patch = json!({"metadata": {"ownerReferences": others}});
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    if plan.create > 0 {
        create_pods(&ctx, rs.as_ref(), &key, &object, plan.create).await?;
    }
    if !plan.delete.is_empty() {
        let uids: Vec<String> = plan
            .delete
            .iter()
            .filter_map(|n| {
                pods.iter()
                    .find(|p| p.metadata.name.as_deref() == Some(n))
                    .and_then(|p| p.metadata.uid.clone())
            })
            .collect();
        ctx.expectations.expect(&key, vec![], uids);
        let deletes = plan.delete.iter().map(|pod| {
            let (api, recorder, object) = (api.clone(), ctx.recorder.clone(), object.clone());
            async move {
                super::ignore_missing(api.delete(pod, &DeleteParams::default()).await)?;
                recorder
                    .record(
                        &object,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {pod}"),
                    )
                    .await;
                Ok::<(), kube::Error>(())
            }
        });
        for r in futures::future::join_all(deletes).await {
            r?;
        }
    }

    let (status, recheck) = status(rs.as_ref(), &mine, jiff::Timestamp::now());
    if !same_status(&rs.status_value(), &status) {
        let rs_api: Api<R> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": status});
        super::ignore_missing(
            rs_api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )?;
    }
    Ok(match recheck {
        Some(d) => Action::requeue(d),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// Does the stored status say what `want` says (absent counts read back as 0)?
fn same_status(have: &Value, want: &Value) -> bool {
    want.as_object().is_some_and(|w| {
        w.iter().all(|(k, v)| {
            let h = have.get(k).filter(|h| !h.is_null());
            h == Some(v) || (h.is_none() && v.as_i64() == Some(0))
        })
    })
}

/// Create `n` pods from the template, in slow-start batches (1, 2, 4, ...) as
/// kube-controller-manager does, so a failing create does not repeat hundreds of times.
async fn create_pods<R: Replicated>(
    ctx: &Ctx,
    rs: &R,
    key: &str,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    n: usize,
) -> Result<(), ControllerError> {
    let ns = rs.meta().namespace.clone().unwrap_or_default();
    let name = rs.meta().name.clone().unwrap_or_default();
    let template = rs
        .template()
        .ok_or_else(|| ControllerError::Invalid(format!("{key} has no template")))?;
    let meta = template.metadata.unwrap_or_default();
    let labels: BTreeMap<String, String> = meta.labels.unwrap_or_default();
    let body = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": labels,
            "annotations": meta.annotations, "ownerReferences": [owner_ref(rs)]},
        "spec": template.spec,
    });
    let pod: Pod = serde_json::from_value(body)?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut left = n;
    let mut batch = 1;
    while left > 0 {
        let size = batch.min(left);
        let creates = (0..size).map(|_| {
            let (api, pod) = (api.clone(), pod.clone());
            async move { api.create(&PostParams::default(), &pod).await }
        });
        let results = futures::future::join_all(creates).await;
        let created: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        ctx.expectations.expect(key, created.clone(), vec![]);
        for c in &created {
            ctx.recorder
                .record(
                    object,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {c}"),
                )
                .await;
        }
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            ctx.recorder
                .record(
                    object,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
            return Err(e.into());
        }
        left -= size;
        batch *= 2;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)], owner: Option<&str>, state: &str) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        });
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]);
        }
        match state {
            "pending" => v["status"] = json!({"phase": "Pending"}),
            "running" => {
                v["spec"]["nodeName"] = json!("n1");
                v["status"] = json!({"phase": "Running"});
            }
            "ready" => {
                v["spec"]["nodeName"] = json!("n1");
                v["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}]});
            }
            "done" => v["status"] = json!({"phase": "Succeeded"}),
            "deleting" => v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z"),
            _ => {}
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn plan_table() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"}})).unwrap();
        let web = [("app", "web")];
        let other = [("app", "db")];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        type Case = (&'static str, usize, Vec<Arc<Pod>>, bool, Plan);
        let cases: Vec<Case> = vec![
            (
                "nothing yet: create all",
                3,
                vec![],
                true,
                Plan {
                    create: 3,
                    ..Default::default()
                },
            ),
            (
                "finished and deleting pods do not count",
                2,
                vec![
                    pod("a", &web, Some("me"), "done"),
                    pod("b", &web, Some("me"), "deleting"),
                    pod("c", &web, Some("me"), "ready"),
                ],
                true,
                Plan {
                    create: 1,
                    ..Default::default()
                },
            ),
            (
                "scale down: pending before ready",
                1,
                vec![
                    pod("a", &web, Some("me"), "ready"),
                    pod("b", &web, Some("me"), "pending"),
                ],
                true,
                Plan {
                    delete: names(&["b"]),
                    ..Default::default()
                },
            ),
            (
                "orphans are adopted, other owners' pods left alone",
                2,
                vec![
                    pod("a", &web, None, "ready"),
                    pod("b", &web, Some("other"), "ready"),
                ],
                true,
                Plan {
                    create: 1,
                    adopt: names(&["a"]),
                    ..Default::default()
                },
            ),
            (
                "a pod that stopped matching is released and replaced",
                1,
                vec![pod("a", &other, Some("me"), "ready")],
                true,
                Plan {
                    create: 1,
                    release: names(&["a"]),
                    ..Default::default()
                },
            ),
            (
                "while writes are unseen: no creates or deletes",
                3,
                vec![pod("a", &web, Some("me"), "ready")],
                false,
                Plan::default(),
            ),
            (
                "burst limit",
                2000,
                vec![],
                true,
                Plan {
                    create: BURST,
                    ..Default::default()
                },
            ),
        ];
        for (what, replicas, pods, manage, want) in cases {
            let (got, _) = plan(replicas, "me", &sel, &pods, manage, false);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn deletion_order_table() {
        let web = [("app", "web")];
        let unscheduled = pod("unscheduled", &web, None, "pending");
        let running = pod("running", &web, None, "running");
        let ready = pod("ready", &web, None, "ready");
        let mut all = [ready, running, unscheduled];
        all.sort_by(|a, b| deletion_order(a, b));
        let order: Vec<_> = all
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(order, vec!["unscheduled", "running", "ready"]);
    }

    #[test]
    fn status_counts_ready_and_available() {
        let web = [("app", "web")];
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "rs", "generation": 3},
            "spec": {"replicas": 3, "minReadySeconds": 30, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap();
        let mine = vec![
            pod("a", &web, Some("me"), "ready"),
            pod("b", &web, Some("me"), "running"),
            pod("c", &web, Some("me"), "done"),
        ];
        // Ready since 00:00:10; at 00:00:20 it is not yet available (30 s), at 00:01:00 it is.
        let (s, recheck) = status(&rs, &mine, "2026-01-01T00:00:20Z".parse().unwrap());
        assert_eq!(
            (
                &s["replicas"],
                &s["readyReplicas"],
                &s["availableReplicas"],
                &s["observedGeneration"]
            ),
            (&json!(2), &json!(1), &json!(0), &json!(3))
        );
        assert_eq!(recheck, Some(Duration::from_secs(20)));
        let (s, recheck) = status(&rs, &mine, "2026-01-01T00:01:00Z".parse().unwrap());
        assert_eq!((&s["availableReplicas"], recheck), (&json!(1), None));
        // A ReplicationController counts the same way, with its map selector.
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "rc", "generation": 1},
            "spec": {"replicas": 3, "selector": {"app": "web"},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap();
        assert_eq!(rc.selector().unwrap().to_string(), "app=web");
        let (s, _) = status(&rc, &mine, "2026-01-01T00:01:00Z".parse().unwrap());
        assert_eq!(
            (&s["replicas"], &s["readyReplicas"]),
            (&json!(2), &json!(1))
        );
    }
}
