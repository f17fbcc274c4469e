//! The StatefulSet controller: pods with stable names (`<set>-0`, `<set>-1`, ...), hostnames
//! and per-pod directories from `volumeClaimTemplates` (claims `<template>-<set>-<ordinal>`,
//! kept on the node across pod restarts); `OrderedReady` starts them one at a time in order and
//! removes them from the highest ordinal, `Parallel` does both at once; `RollingUpdate` replaces
//! out-of-date pods from the highest ordinal down to `partition`, one at a time, each once the
//! others are Ready; `OnDelete` waits for the user. [`plan`] is pure and table-tested.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use skiff_common::events::{EventType, Recorder};

use super::{is_active, ready_since, ControllerError, Expectations, PodInformer};

/// One pod of the set as the plan sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Running (not finished, not being deleted).
    pub active: bool,
    /// Being deleted.
    pub deleting: bool,
    /// Ready.
    pub ready: bool,
    /// Made from the current template.
    pub current: bool,
}

/// What to do now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Ordinals to create.
    pub create: Vec<i32>,
    /// Ordinals to delete (scale-down, finished pods, updates).
    pub delete: Vec<i32>,
}

/// Decide from the members by ordinal.
pub fn plan(
    replicas: i32,
    parallel: bool,
    partition: Option<i32>,
    members: &BTreeMap<i32, Member>,
) -> Plan {
    let mut p = Plan::default();
    // Finished pods are deleted, to be created again.
    for (i, m) in members {
        if !m.active && !m.deleting {
            p.delete.push(*i);
        }
    }
    let settled = |i: &i32| members.get(i).is_some_and(|m| m.active && m.ready);
    // Create the missing ordinals: all at once, or the lowest once all below are Ready.
    for i in 0..replicas {
        let present = members.get(&i).is_some_and(|m| m.active || m.deleting);
        if present {
            if !parallel && !settled(&i) {
                break;
            }
            continue;
        }
        if p.delete.contains(&i) {
            if !parallel {
                break;
            }
            continue;
        }
        p.create.push(i);
        if !parallel {
            break;
        }
    }
    // Scale down from the highest ordinal (one at a time when ordered, and only once the rest
    // is Ready).
    let extra: Vec<i32> = members
        .iter()
        .filter(|(i, m)| **i >= replicas && m.active)
        .map(|(i, _)| *i)
        .rev()
        .collect();
    let terminating = members.values().any(|m| m.deleting);
    let all_ready = (0..replicas).all(|i| settled(&i));
    if parallel {
        p.delete.extend(extra);
    } else if let Some(highest) = extra.first() {
        if all_ready && !terminating {
            p.delete.push(*highest);
        }
    }
    // Rolling update: the highest out-of-date ordinal at or above the partition, once every
    // other pod is Ready and nothing is going away.
    if let Some(partition) = partition {
        if all_ready && !terminating && p.delete.is_empty() && p.create.is_empty() {
            if let Some(i) = (partition.max(0)..replicas)
                .rev()
                .find(|i| members.get(i).is_some_and(|m| !m.current))
            {
                p.delete.push(i);
            }
        }
    }
    p
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    expectations: Expectations,
    recorder: Recorder,
}

/// Run the StatefulSet controller.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client.clone(), "statefulset-controller", None),
    });
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_shared_stream(pods.subscribe())
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

const HASH: &str = "controller-revision-hash";

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set
        .spec
        .clone()
        .ok_or_else(|| ControllerError::Invalid(format!("statefulset {key} has no spec")))?;
    let hash = super::deployment::template_hash(&serde_json::to_value(&spec.template)?, None);
    let (revision, _) = super::history::record(
        &ctx.client,
        &super::history::Owner {
            kind: "StatefulSet",
            namespace: &ns,
            name: &name,
            uid: &uid,
            template: serde_json::to_value(&spec.template)?,
            history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
        },
        &hash,
    )
    .await?;
    let all = ctx.pods.in_namespace(&ns);
    let mine = super::owned_by(&all, &uid);
    let ordinal = |p: &Pod| {
        p.metadata
            .name
            .as_deref()?
            .strip_prefix(&format!("{name}-"))?
            .parse::<i32>()
            .ok()
    };
    let members: BTreeMap<i32, Member> = mine
        .iter()
        .filter_map(|p| {
            let i = ordinal(p)?;
            Some((
                i,
                Member {
                    active: is_active(p),
                    deleting: p.metadata.deletion_timestamp.is_some(),
                    ready: ready_since(p).is_some(),
                    current: p.metadata.labels.as_ref().and_then(|l| l.get(HASH))
                        == Some(&revision),
                },
            ))
        })
        .collect();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let partition = match strategy.and_then(|s| s.type_.as_deref()) {
        Some("OnDelete") => None,
        _ => Some(
            strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
        ),
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let object = skiff_common::events::object_ref(&set.metadata, "StatefulSet", "apps/v1");
    if ctx.expectations.satisfied(&key, &all) {
        let p = plan(replicas, parallel, partition, &members);
        let pod_name = |i: i32| format!("{name}-{i}");
        let uids = mine
            .iter()
            .filter(|pod| ordinal(pod).is_some_and(|i| p.delete.contains(&i)))
            .filter_map(|pod| pod.metadata.uid.clone())
            .collect();
        ctx.expectations.expect(&key, vec![], uids);
        for i in &p.delete {
            super::ignore_missing(pods.delete(&pod_name(*i), &DeleteParams::default()).await)?;
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!(
                        "delete Pod {} in StatefulSet {name} successful",
                        pod_name(*i)
                    ),
                )
                .await;
        }
        let mut created = Vec::new();
        for i in &p.create {
            ensure_claims(&ctx.client, &set, &spec, *i).await?;
            let pod = member_pod(&set, &spec, *i, &revision)?;
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => {}
                // The previous pod of that ordinal is still going away.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!(
                        "create Pod {} in StatefulSet {name} successful",
                        pod_name(*i)
                    ),
                )
                .await;
            created.push(pod_name(*i));
        }
        ctx.expectations.expect(&key, created, vec![]);
    }

    // Status.
    let active: Vec<&Arc<Pod>> = mine.iter().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count() as i32;
    let updated = active
        .iter()
        .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH)) == Some(&revision))
        .count() as i32;
    let previous = set.status.clone().unwrap_or_default();
    let current_revision = if updated == replicas && active.len() as i32 == replicas {
        revision.clone()
    } else {
        previous
            .current_revision
            .clone()
            .unwrap_or_else(|| revision.clone())
    };
    let current_replicas = active
        .iter()
        .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH)) == Some(&current_revision))
        .count() as i32;
    let status = json!({
        "observedGeneration": set.metadata.generation,
        "replicas": active.len() as i32, "readyReplicas": ready, "availableReplicas": ready,
        "currentReplicas": current_replicas, "updatedReplicas": updated,
        "currentRevision": current_revision, "updateRevision": revision,
        "collisionCount": previous.collision_count.unwrap_or(0),
    });
    let current = serde_json::to_value(&previous)?;
    let differs = status.as_object().is_some_and(|o| {
        o.iter()
            .any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v)
    });
    if differs {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        super::ignore_missing(
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await,
        )?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The pod of ordinal `i`: stable name and hostname, the service as subdomain, the claims of
/// The PersistentVolumeClaims of member `i` (`<template>-<set>-<i>`), made from the
/// `volumeClaimTemplates` when missing, as Kubernetes' StatefulSet controller does; they
/// outlive the pod (retention policy `Retain`).
async fn ensure_claims(
    client: &kube::Client,
    set: &StatefulSet,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    i: i32,
) -> Result<(), ControllerError> {
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &ns);
    for t in spec.volume_claim_templates.iter().flatten() {
        let template = t.metadata.name.clone().unwrap_or_default();
        let claim_name = format!("{template}-{name}-{i}");
        if claims.get_opt(&claim_name).await?.is_some() {
            continue;
        }
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let mut claim = k8s_openapi::api::core::v1::PersistentVolumeClaim {
            metadata: kube::api::ObjectMeta {
                name: Some(claim_name),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: t.spec.clone(),
            ..Default::default()
        };
        claim.status = None;
        match claims.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `volumeClaimTemplates` as volumes.
fn member_pod(
    set: &StatefulSet,
    spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
    i: i32,
    revision: &str,
) -> Result<Pod, ControllerError> {
    let name = set.metadata.name.clone().unwrap_or_default();
    let pod_name = format!("{name}-{i}");
    let meta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = serde_json::to_value(meta.labels.unwrap_or_default())?;
    labels[HASH] = json!(revision);
    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
    let mut pod_spec = serde_json::to_value(&spec.template.spec)?;
    pod_spec["hostname"] = json!(pod_name);
    if let Some(svc) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        pod_spec["subdomain"] = json!(svc);
    }
    let claims: Vec<serde_json::Value> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .map(|t| json!({"name": t, "persistentVolumeClaim": {"claimName": format!("{t}-{pod_name}")}}))
        .collect();
    if !claims.is_empty() {
        let volumes = pod_spec
            .as_object_mut()
            .map(|o| o.entry("volumes").or_insert(json!([])));
        if let Some(list) = volumes.and_then(|v| v.as_array_mut()) {
            list.retain(|v| !claims.iter().any(|c| c["name"] == v["name"]));
            list.extend(claims);
        }
    }
    let body = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels, "annotations": meta.annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": set.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": pod_spec});
    Ok(serde_json::from_value(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(active: bool, ready: bool, current: bool) -> Member {
        Member {
            active,
            deleting: false,
            ready,
            current,
        }
    }

    #[test]
    fn plan_table() {
        let ready = m(true, true, true);
        let starting = m(true, false, true);
        let old = m(true, true, false);
        let going = Member {
            active: false,
            deleting: true,
            ready: false,
            current: true,
        };
        let done = m(false, false, true);
        let set = |v: Vec<(i32, Member)>| v.into_iter().collect::<BTreeMap<_, _>>();
        type Case = (
            &'static str,
            i32,
            bool,
            Option<i32>,
            BTreeMap<i32, Member>,
            (Vec<i32>, Vec<i32>),
        );
        let cases: Vec<Case> = vec![
            (
                "ordered: first pod",
                3,
                false,
                Some(0),
                set(vec![]),
                (vec![0], vec![]),
            ),
            (
                "ordered: next only once the previous is ready",
                3,
                false,
                Some(0),
                set(vec![(0, starting.clone())]),
                (vec![], vec![]),
            ),
            (
                "ordered: then the next",
                3,
                false,
                Some(0),
                set(vec![(0, ready.clone())]),
                (vec![1], vec![]),
            ),
            (
                "parallel: all at once",
                3,
                true,
                Some(0),
                set(vec![]),
                (vec![0, 1, 2], vec![]),
            ),
            (
                "ordered scale down: highest first",
                1,
                false,
                Some(0),
                set(vec![
                    (0, ready.clone()),
                    (1, ready.clone()),
                    (2, ready.clone()),
                ]),
                (vec![], vec![2]),
            ),
            (
                "ordered scale down waits for the terminating pod",
                1,
                false,
                Some(0),
                set(vec![
                    (0, ready.clone()),
                    (1, ready.clone()),
                    (2, going.clone()),
                ]),
                (vec![], vec![]),
            ),
            (
                "a finished pod is replaced",
                1,
                false,
                Some(0),
                set(vec![(0, done)]),
                (vec![], vec![0]),
            ),
            (
                "rolling update from the highest",
                3,
                false,
                Some(0),
                set(vec![(0, old.clone()), (1, old.clone()), (2, old.clone())]),
                (vec![], vec![2]),
            ),
            (
                "partition keeps the low ordinals",
                3,
                false,
                Some(2),
                set(vec![(0, old.clone()), (1, old.clone()), (2, ready.clone())]),
                (vec![], vec![]),
            ),
            (
                "OnDelete: no updates",
                2,
                false,
                None,
                set(vec![(0, old.clone()), (1, old)]),
                (vec![], vec![]),
            ),
            (
                "an ordinal going away is not created twice",
                2,
                false,
                Some(0),
                set(vec![(0, ready), (1, going)]),
                (vec![], vec![]),
            ),
        ];
        for (what, replicas, parallel, partition, members, (create, delete)) in cases {
            let p = plan(replicas, parallel, partition, &members);
            assert_eq!((p.create, p.delete), (create, delete), "{what}");
        }
    }
}
