//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled out with `RollingUpdate` (`maxSurge`,
//! `maxUnavailable`, numbers or percentages) or `Recreate`, with revision annotations,
//! `revisionHistoryLimit`, `paused`, and the status and conditions (`Available`, `Progressing`,
//! `ProgressDeadlineExceeded`) that `kubectl rollout status|history|undo|restart` read.
//! [`rolling_step`], [`resolve`] and [`template_hash`] are pure and table-tested.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Value};
use skiff_common::events::{EventType, Recorder};

use super::ControllerError;

/// The annotation that numbers a Deployment's revisions (on it and its ReplicaSets).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// `maxSurge`/`maxUnavailable` against `replicas`: surge rounds up, unavailable down, and both
/// zero means one may be unavailable (Kubernetes' rule).
pub fn resolve(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let value = |v: Option<&IntOrString>, default: &str, round_up: bool| -> i32 {
        match v {
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(s)) => percent(s, replicas, round_up),
            None => percent(default, replicas, round_up),
        }
    };
    let surge = value(surge, "25%", true).max(0);
    let mut unavailable = value(unavailable, "25%", false).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas.max(0)))
}

fn percent(s: &str, of: i32, round_up: bool) -> i32 {
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) => {
            let scaled = p * i64::from(of);
            (if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            }) as i32
        }
        None => s.parse().unwrap_or(0),
    }
}

/// One ReplicaSet as the rollout sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Set {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// One step of a rolling update: the new ReplicaSet's replicas and each old one's, given
/// `replicas` wanted, the resolved surge and unavailability, the new set and the old ones
/// (oldest first). Kubernetes' algorithm: scale the new set up within `replicas + surge`, then
/// scale old sets down (unavailable pods first) while `replicas - unavailable` stay available.
pub fn rolling_step(
    replicas: i32,
    surge: i32,
    unavailable: i32,
    new: &Set,
    old: &[Set],
) -> (i32, Vec<i32>) {
    let total: i32 = new.replicas + old.iter().map(|s| s.replicas).sum::<i32>();
    // Scale the new set up.
    let new_replicas = if new.replicas >= replicas {
        replicas
    } else {
        let room = (replicas + surge - total).max(0);
        new.replicas + room.min(replicas - new.replicas)
    };
    let mut old_replicas: Vec<i32> = old.iter().map(|s| s.replicas).collect();
    let all = new_replicas + old_replicas.iter().sum::<i32>();
    let min_available = replicas - unavailable;
    let new_unavailable = (new_replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return (new_replicas, old_replicas);
    }
    // Old pods that are not available go first: removing them costs no availability.
    for (i, s) in old.iter().enumerate() {
        let unhealthy = (old_replicas[i] - s.available).max(0).min(budget);
        old_replicas[i] -= unhealthy;
        budget -= unhealthy;
    }
    // Then available old pods, while enough stay available.
    let available: i32 = new.available + old.iter().map(|s| s.available).sum::<i32>();
    let mut can_remove = (available - min_available).max(0).min(budget);
    for (i, s) in old.iter().enumerate() {
        if can_remove == 0 {
            break;
        }
        let healthy_left = old_replicas[i].min(s.available);
        let down = healthy_left.min(can_remove);
        old_replicas[i] -= down;
        can_remove -= down;
    }
    (new_replicas, old_replicas)
}

/// The pod-template-hash of a template (FNV-1a over its JSON, plus the collision count), as a
/// short label-safe string.
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    // Kubernetes' SafeEncodeString alphabet: no vowels, so no words.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h as u64;
    let mut out = Vec::new();
    while n > 0 || out.is_empty() {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize]);
        n /= ALPHABET.len() as u64;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A template without the hash label, for comparing a ReplicaSet's template with the
/// Deployment's.
fn without_hash(template: &Option<PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    v
}

fn revision(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
}

/// Run the Deployment controller.
pub async fn run(client: kube::Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "deployment-controller", None),
    });
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client);
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn is_ours(rs: &ReplicaSet, uid: &str) -> bool {
    super::controller_uid(&rs.metadata) == Some(uid)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d
        .spec
        .clone()
        .ok_or_else(|| ControllerError::Invalid(format!("deployment {ns}/{name} has no spec")))?;
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    // A consistent read: the sets this controller created a moment ago are in it.
    let mut sets: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| is_ours(rs, &uid))
        .collect();
    sets.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let object = skiff_common::events::object_ref(&d.metadata, "Deployment", "apps/v1");
    let wanted = without_hash(&Some(spec.template.clone()));
    let max_revision = sets
        .iter()
        .map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let mut new_index = sets
        .iter()
        .position(|rs| without_hash(&rs.spec.as_ref().and_then(|s| s.template.clone())) == wanted);

    if spec.paused != Some(true) {
        // The ReplicaSet of the current template, created when missing.
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if new_index.is_none() {
            let old_running = sets.iter().any(|rs| {
                spec_replicas(rs) > 0 || rs.status.as_ref().is_some_and(|s| s.replicas > 0)
            });
            let first = if recreate && old_running {
                0
            } else if sets.is_empty() {
                replicas
            } else {
                0
            };
            let rs = create_set(&ctx, &d, &spec.template, first, max_revision + 1).await?;
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled up replica set {} from 0 to {first}",
                        rs.metadata.name.clone().unwrap_or_default()
                    ),
                )
                .await;
            sets.push(rs);
            new_index = Some(sets.len() - 1);
        }
        let Some(ni) = new_index else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        // A set that becomes current again (rollback) takes the next revision; the current set
        // carries the Deployment's change-cause (what `kubectl rollout history` shows).
        let cause = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(CHANGE_CAUSE))
                .cloned()
        };
        let stale_revision = revision(&sets[ni].metadata) < max_revision;
        let stale_cause =
            cause(&d.metadata).is_some() && cause(&d.metadata) != cause(&sets[ni].metadata);
        if stale_revision || stale_cause {
            let mut annotations = json!({});
            if stale_revision {
                annotations[REVISION] = json!((max_revision + 1).to_string());
            }
            if stale_cause {
                annotations[CHANGE_CAUSE] = json!(cause(&d.metadata));
            }
            let patch = json!({"metadata": {"annotations": annotations}});
            let n = sets[ni].metadata.name.clone().unwrap_or_default();
            sets[ni] = rs_api
                .patch(&n, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let new = Set {
            name: sets[ni].metadata.name.clone().unwrap_or_default(),
            replicas: spec_replicas(&sets[ni]),
            available: available(&sets[ni]),
        };
        let old: Vec<(usize, Set)> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ni)
            .map(|(i, rs)| {
                (
                    i,
                    Set {
                        name: rs.metadata.name.clone().unwrap_or_default(),
                        replicas: spec_replicas(rs),
                        available: available(rs),
                    },
                )
            })
            .collect();
        let (new_target, old_targets) = if recreate {
            let old_pods: i32 = old
                .iter()
                .map(|(i, s)| s.replicas + sets[*i].status.as_ref().map_or(0, |st| st.replicas))
                .sum();
            // Everything old goes first; the new set starts once no old pod is left.
            (if old_pods == 0 { replicas } else { 0 }, vec![0; old.len()])
        } else {
            let rolling = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let (surge, unavailable) = resolve(
                rolling.and_then(|r| r.max_surge.as_ref()),
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
            );
            let olds: Vec<Set> = old.iter().map(|(_, s)| s.clone()).collect();
            rolling_step(replicas, surge, unavailable, &new, &olds)
        };
        scale(&ctx, &rs_api, &object, &new, new_target).await?;
        for ((_, s), target) in old.iter().zip(old_targets) {
            scale(&ctx, &rs_api, &object, s, target).await?;
        }
        // Old, empty sets beyond revisionHistoryLimit go (oldest first).
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&ReplicaSet> = old
            .iter()
            .map(|(i, _)| &sets[*i])
            .filter(|rs| {
                spec_replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .collect();
        if empty.len() > limit {
            for rs in &empty[..empty.len() - limit] {
                let n = rs.metadata.name.clone().unwrap_or_default();
                super::ignore_missing(rs_api.delete(&n, &DeleteParams::default()).await)?;
            }
        }
        // The deployment carries the current revision.
        let current = revision(&sets[ni].metadata);
        if revision(&d.metadata) != current {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"metadata": {"annotations": {REVISION: current.to_string()}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }
    write_status(&ctx, &d, &sets, new_index).await
}

/// Set a ReplicaSet's `spec.replicas` (with a `ScalingReplicaSet` event) if it differs.
async fn scale(
    ctx: &Ctx,
    api: &Api<ReplicaSet>,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    set: &Set,
    target: i32,
) -> Result<(), ControllerError> {
    if set.replicas == target {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": target}});
    api.patch(&set.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let verb = if target > set.replicas { "up" } else { "down" };
    ctx.recorder
        .record(
            object,
            EventType::Normal,
            "ScalingReplicaSet",
            &format!(
                "Scaled {verb} replica set {} from {} to {target}",
                set.name, set.replicas
            ),
        )
        .await;
    Ok(())
}

/// Create the ReplicaSet of `template` (hash label on its selector, labels and template).
async fn create_set(
    ctx: &Ctx,
    d: &Deployment,
    template: &PodTemplateSpec,
    replicas: i32,
    revision: i64,
) -> Result<ReplicaSet, ControllerError> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let spec = d.spec.as_ref();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&without_hash(&Some(template.clone())), collisions);
    let mut tmpl = serde_json::to_value(template)?;
    tmpl["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = serde_json::to_value(spec.map(|s| &s.selector))?;
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut annotations = json!({REVISION: revision.to_string()});
    if let Some(cause) = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE))
    {
        annotations[CHANGE_CAUSE] = json!(cause);
    }
    let body = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{name}-{hash}"), "namespace": ns,
            "labels": tmpl["metadata"]["labels"], "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": replicas, "minReadySeconds": spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
            "selector": selector, "template": tmpl},
    });
    let rs: ReplicaSet = serde_json::from_value(body)?;
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &rs).await {
        Ok(rs) => Ok(rs),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A set of that name with another template: count a collision, retry with a new
            // hash on the next reconcile.
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
            deployments
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Err(ControllerError::Invalid(format!(
                "replica set {name}-{hash} exists with another template; retrying with a new hash"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Status and conditions from the sets; requeue while a progress deadline is running.
async fn write_status(
    ctx: &Ctx,
    d: &Deployment,
    sets: &[ReplicaSet],
    new_index: Option<usize>,
) -> Result<Action, ControllerError> {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
    let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let total: i32 = sets.iter().map(|rs| st(rs).replicas).sum();
    let ready: i32 = sets
        .iter()
        .map(|rs| st(rs).ready_replicas.unwrap_or(0))
        .sum();
    let avail: i32 = sets
        .iter()
        .map(|rs| st(rs).available_replicas.unwrap_or(0))
        .sum();
    let new = new_index.and_then(|i| sets.get(i));
    let updated = new.map_or(0, |rs| st(rs).replicas);
    let new_available = new.map_or(0, |rs| st(rs).available_replicas.unwrap_or(0));
    let rolling = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let (_, max_unavailable) = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
    );
    let now = skiff_common::now();
    let old = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let find = |t: &str| old.iter().find(|c| c.type_ == t).cloned();
    let condition = |t: &str, ok: bool, reason: &str, message: String, progress: bool| {
        let prev = find(t);
        let same = prev.as_ref().is_some_and(|p| {
            p.status == if ok { "True" } else { "False" } && p.reason.as_deref() == Some(reason)
        });
        json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message,
            "lastUpdateTime": if same && !progress { prev.as_ref().and_then(|p| p.last_update_time.clone()).map_or(json!(now), |t| json!(t)) } else { json!(now) },
            "lastTransitionTime": if prev.as_ref().is_some_and(|p| p.status == if ok { "True" } else { "False" }) { prev.as_ref().and_then(|p| p.last_transition_time.clone()).map_or(json!(now), |t| json!(t)) } else { json!(now) }})
    };
    let name = d.metadata.name.clone().unwrap_or_default();
    let available_ok = avail >= replicas - max_unavailable;
    let available_cond = condition(
        "Available",
        available_ok,
        if available_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if available_ok {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        },
        false,
    );
    let new_name = new
        .and_then(|rs| rs.metadata.name.clone())
        .unwrap_or_default();
    let complete = updated == replicas && total == replicas && new_available == replicas;
    let previous_status = d.status.clone().unwrap_or_default();
    let progressed = previous_status.updated_replicas.unwrap_or(0) != updated
        || previous_status.available_replicas.unwrap_or(0) != avail
        || previous_status.replicas.unwrap_or(0) != total;
    let deadline = spec
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    let last_progress = find("Progressing")
        .and_then(|c| c.last_update_time.map(|t| t.0))
        .unwrap_or_else(jiff::Timestamp::now);
    let stalled = !complete
        && !progressed
        && spec.and_then(|s| s.paused) != Some(true)
        && jiff::Timestamp::now()
            .duration_since(last_progress)
            .as_secs()
            > i64::from(deadline);
    let progressing = if stalled {
        condition(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
            false,
        )
    } else if spec.and_then(|s| s.paused) == Some(true) {
        condition(
            "Progressing",
            true,
            "DeploymentPaused",
            "Deployment is paused".into(),
            false,
        )
    } else if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            false,
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
            progressed,
        )
    };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "unavailableReplicas": (replicas - avail).max(0),
        "conditions": [available_cond, progressing],
        "collisionCount": previous_status.collision_count,
    });
    let mut current = serde_json::to_value(&previous_status)?;
    // Compare without the times, which change on every write.
    let strip = |v: &mut Value| {
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastUpdateTime");
                    o.remove("lastTransitionTime");
                }
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
    };
    let mut wanted = status.clone();
    strip(&mut current);
    strip(&mut wanted);
    if current != wanted {
        let api: Api<Deployment> = Api::namespaced(
            ctx.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or_default(),
        );
        super::ignore_missing(
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await,
        )?;
    }
    Ok(if complete || stalled {
        Action::requeue(Duration::from_secs(300))
    } else {
        // Re-check the progress deadline while a rollout runs.
        Action::requeue(Duration::from_secs(
            u64::from(deadline.max(1) as u32).min(30),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_table() {
        let i = |n| Some(IntOrString::Int(n));
        let p = |s: &str| Some(IntOrString::String(s.into()));
        let cases = vec![
            (None, None, 10, (3, 2)),
            (i(1), i(0), 3, (1, 0)),
            (i(0), i(0), 3, (0, 1)),
            (p("50%"), p("50%"), 3, (2, 1)),
            (p("100%"), p("0%"), 1, (1, 0)),
            (None, None, 1, (1, 0)),
        ];
        for (surge, unavailable, replicas, want) in cases {
            assert_eq!(
                resolve(surge.as_ref(), unavailable.as_ref(), replicas),
                want,
                "{surge:?} {unavailable:?} {replicas}"
            );
        }
    }

    #[test]
    fn rolling_step_table() {
        let set = |name: &str, replicas, available| Set {
            name: name.into(),
            replicas,
            available,
        };
        type Case = (&'static str, i32, i32, i32, Set, Vec<Set>, (i32, Vec<i32>));
        let cases: Vec<Case> = vec![
            (
                "fresh: all new",
                3,
                1,
                0,
                set("new", 0, 0),
                vec![],
                (3, vec![]),
            ),
            (
                "surge 1, unavailable 0: one new first",
                3,
                1,
                0,
                set("new", 0, 0),
                vec![set("old", 3, 3)],
                (1, vec![3]),
            ),
            (
                "the new one is available: one old goes",
                3,
                1,
                0,
                set("new", 1, 1),
                vec![set("old", 3, 3)],
                (1, vec![2]),
            ),
            (
                "then the next new one",
                3,
                1,
                0,
                set("new", 1, 1),
                vec![set("old", 2, 2)],
                (2, vec![2]),
            ),
            (
                "new not yet available: old stays",
                3,
                1,
                0,
                set("new", 1, 0),
                vec![set("old", 3, 3)],
                (1, vec![3]),
            ),
            (
                "surge 0, unavailable 1: old goes first",
                3,
                0,
                1,
                set("new", 0, 0),
                vec![set("old", 3, 3)],
                (0, vec![2]),
            ),
            (
                "unavailable old pods go first, within the budget",
                3,
                1,
                0,
                set("new", 1, 1),
                vec![set("old", 3, 1)],
                (1, vec![2]),
            ),
            (
                "done: old at zero",
                3,
                1,
                0,
                set("new", 3, 3),
                vec![set("old", 0, 0)],
                (3, vec![0]),
            ),
            (
                "scale down in place",
                2,
                1,
                0,
                set("new", 3, 3),
                vec![],
                (2, vec![]),
            ),
            (
                "oldest set goes first",
                4,
                0,
                2,
                set("new", 0, 0),
                vec![set("a", 2, 2), set("b", 2, 2)],
                (0, vec![0, 2]),
            ),
        ];
        for (what, replicas, surge, unavailable, new, old, want) in cases {
            assert_eq!(
                rolling_step(replicas, surge, unavailable, &new, &old),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn template_hash_is_stable_and_label_safe() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}});
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2["spec"]["containers"][0]["image"] = json!("hello:v2");
        assert_ne!(h, template_hash(&t2, None));
        assert!(
            h.chars().all(|c| c.is_ascii_alphanumeric()) && h.len() <= 10,
            "{h}"
        );
    }
}
