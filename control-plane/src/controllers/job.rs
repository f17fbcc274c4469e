//! The Job controller: runs pods until `completions` succeed (`parallelism` at a time; with
//! `completionMode: Indexed` one per index, which the pod sees as `JOB_COMPLETION_INDEX`),
//! fails the Job after `backoffLimit` failures (re-creating failed pods with Kubernetes'
//! exponential back-off) or after `activeDeadlineSeconds`, honours `suspend`, reports
//! `active`/`ready`/`succeeded`/`failed`/`completedIndexes` and the `Complete`/`Failed`
//! conditions, and deletes a finished Job after `ttlSecondsAfterFinished`. [`decide`] is pure
//! and table-tested.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use skiff_common::events::{EventType, Recorder};

use super::{ready_since, ControllerError, Expectations, PodInformer};

/// The annotation (and label) that carries an Indexed Job pod's index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// How a Job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// `Complete` or `Failed`.
    pub condition: &'static str,
    /// `BackoffLimitExceeded`, `DeadlineExceeded`, or `CompletionsReached`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// What the Job controller does next.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Pods to create: `Some(index)` for Indexed Jobs.
    pub create: Vec<Option<i32>>,
    /// Active pods to delete (names).
    pub delete: Vec<String>,
    /// Succeeded and failed pods, and the indexes done (Indexed).
    pub succeeded: i32,
    /// Failed pods (and container restarts with `restartPolicy: OnFailure`).
    pub failed: i32,
    /// Pods running or pending.
    pub active: i32,
    /// Active pods that are Ready.
    pub ready: i32,
    /// Indexes that succeeded, as `1,3-5`.
    pub completed_indexes: String,
    /// The Job is over.
    pub finished: Option<Finished>,
    /// Look again after this long (back-off, deadline).
    pub recheck: Option<Duration>,
}

/// Kubernetes' re-creation back-off after `failures` failed pods: 10 s doubling to 6 min.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1 << (failures - 1).min(16) as u64);
    Duration::from_secs(secs.min(360))
}

/// `1,3-5` from a set of indexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX))
        .and_then(|i| i.parse().ok())
}

/// Decide the Job's next step from its pods (those it controls) at `now`. `previous` counts
/// (from its status) never go down, so pods removed by someone else are not run again.
pub fn decide(job: &Job, pods: &[Arc<Pod>], now: jiff::Timestamp, manage: bool) -> Decision {
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let active: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !matches!(phase(p).as_str(), "Succeeded" | "Failed")
        })
        .collect();
    let succeeded_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let restarts: i32 = if on_failure {
        active
            .iter()
            .flat_map(|p| {
                p.status
                    .iter()
                    .flat_map(|s| s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let failed_pods = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let mut d = Decision {
        active: active.len() as i32,
        ready: active.iter().filter(|p| ready_since(p).is_some()).count() as i32,
        failed: (failed_pods + restarts).max(status.failed.unwrap_or(0)),
        ..Default::default()
    };
    let mut done_indexes: BTreeSet<i32> = BTreeSet::new();
    if indexed {
        done_indexes.extend(succeeded_pods.iter().filter_map(|p| index_of(p)));
        // Indexes already recorded in the status stay done.
        for part in status.completed_indexes.as_deref().unwrap_or("").split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                        done_indexes.extend(a..=b);
                    }
                }
                None => done_indexes.extend(part.parse::<i32>().ok()),
            }
        }
        d.succeeded = done_indexes.len() as i32;
        d.completed_indexes = format_indexes(&done_indexes);
    } else {
        d.succeeded = (succeeded_pods.len() as i32).max(status.succeeded.unwrap_or(0));
    }
    let already = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    if let Some(c) = already {
        d.finished = Some(Finished {
            condition: if c.type_ == "Complete" {
                "Complete"
            } else {
                "Failed"
            },
            reason: "",
            message: c.message.clone().unwrap_or_default(),
        });
        d.delete = active
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        return d;
    }
    // Finished now?
    let complete = match completions {
        Some(c) => d.succeeded >= c,
        // No completions: done once one pod succeeded and none is left running.
        None => d.succeeded > 0 && active.is_empty(),
    };
    let started = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let deadline = spec
        .active_deadline_seconds
        .filter(|s| *s > 0)
        .map(|s| s - now.duration_since(started).as_secs());
    if complete {
        d.finished = Some(Finished {
            condition: "Complete",
            reason: "CompletionsReached",
            message: "Reached expected number of succeeded pods".into(),
        });
    } else if d.failed > backoff_limit {
        d.finished = Some(Finished {
            condition: "Failed",
            reason: "BackoffLimitExceeded",
            message: "Job has reached the specified backoff limit".into(),
        });
    } else if deadline.is_some_and(|left| left <= 0) {
        d.finished = Some(Finished {
            condition: "Failed",
            reason: "DeadlineExceeded",
            message: "Job was active longer than specified deadline".into(),
        });
    }
    if d.finished.is_some() || spec.suspend == Some(true) {
        d.delete = active
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        return d;
    }
    d.recheck = deadline.map(|left| Duration::from_secs(left.max(1) as u64));
    if !manage {
        return d;
    }
    // Failed pods are re-created after a back-off counted from the last failure.
    if failed_pods > 0 {
        let last = pods
            .iter()
            .filter(|p| phase(p) == "Failed")
            .filter_map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| {
                        cs.iter()
                            .filter_map(|c| {
                                c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()
                            })
                            .map(|t| t.0)
                            .max()
                    })
                    .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .max();
        if let Some(last) = last {
            let waited = now.duration_since(last).as_secs().max(0) as u64;
            let wait = backoff(failed_pods).as_secs();
            if waited < wait {
                let left = Duration::from_secs(wait - waited);
                d.recheck = Some(d.recheck.map_or(left, |r| r.min(left)));
                return d;
            }
        }
    }
    let room = (parallelism - d.active).max(0);
    if indexed {
        let total = completions.unwrap_or(parallelism);
        let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
        d.create = (0..total)
            .filter(|i| !done_indexes.contains(i) && !running.contains(i))
            .take(room as usize)
            .map(Some)
            .collect();
    } else {
        let wanted = match completions {
            Some(c) => (c - d.succeeded - d.active).max(0).min(room),
            None if d.succeeded > 0 => 0,
            None => room,
        };
        d.create = vec![None; wanted as usize];
    }
    d
}

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
    expectations: Expectations,
    recorder: Recorder,
}

/// Run the Job controller.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
        expectations: Expectations::default(),
        recorder: Recorder::new(client.clone(), "job-controller", None),
    });
    let api: Api<Job> = Api::all(client);
    Controller::new(api, watcher::Config::default())
        .owns_shared_stream(pods.subscribe())
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let all = ctx.pods.in_namespace(&ns);
    let mine = super::owned_by(&all, &uid);
    let manage = ctx.expectations.satisfied(&key, &all);
    let now = jiff::Timestamp::now();
    let d = decide(&job, &mine, now, manage);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let object = skiff_common::events::object_ref(&job.metadata, "Job", "batch/v1");

    // Delete what must stop (finished, failed or suspended Jobs).
    if !d.delete.is_empty() {
        let uids = mine
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| d.delete.contains(n))
            })
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        ctx.expectations.expect(&key, vec![], uids);
        for p in &d.delete {
            super::ignore_missing(pods.delete(p, &DeleteParams::default()).await)?;
        }
    }
    // Create.
    if !d.create.is_empty() {
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut created = Vec::new();
        let mut failure = None;
        for index in &d.create {
            let pod = job_pod(&job, &template, *index)?;
            match pods.create(&PostParams::default(), &pod).await {
                Ok(p) => created.push(p.metadata.name.unwrap_or_default()),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        for c in &created {
            ctx.recorder
                .record(
                    &object,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {c}"),
                )
                .await;
        }
        ctx.expectations.expect(&key, created, vec![]);
        if let Some(e) = failure {
            ctx.recorder
                .record(
                    &object,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
            return Err(e.into());
        }
    }

    // Status.
    let status = job.status.clone().unwrap_or_default();
    let now_s = skiff_common::now();
    let mut conditions = serde_json::to_value(status.conditions.clone().unwrap_or_default())?;
    let mut completion_time = status.completion_time.as_ref().map(|t| json!(t));
    let newly_finished = d.finished.as_ref().filter(|f| !f.reason.is_empty());
    if let Some(f) = newly_finished {
        if let Some(list) = conditions.as_array_mut() {
            list.push(json!({"type": f.condition, "status": "True", "reason": f.reason, "message": f.message,
                "lastProbeTime": now_s, "lastTransitionTime": now_s}));
        }
        if f.condition == "Complete" {
            completion_time = Some(json!(now_s));
        }
        let kind = if f.condition == "Complete" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = if f.condition == "Complete" {
            "Completed"
        } else {
            f.reason
        };
        let message = if f.condition == "Complete" {
            "Job completed".to_string()
        } else {
            f.message.clone()
        };
        ctx.recorder.record(&object, kind, reason, &message).await;
    }
    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    let wanted = json!({
        "startTime": status.start_time.as_ref().map_or(json!(now_s), |t| json!(t)),
        "active": d.active, "ready": d.ready, "succeeded": d.succeeded, "failed": d.failed,
        "completedIndexes": (!d.completed_indexes.is_empty()).then_some(&d.completed_indexes),
        "completionTime": completion_time,
        "conditions": conditions,
        "terminating": 0,
    });
    let mut current = serde_json::to_value(&status)?;
    if let (Some(c), Some(w)) = (current.as_object_mut(), wanted.as_object()) {
        c.retain(|k, _| w.contains_key(k));
    }
    let mut cmp = wanted.clone();
    if let Some(o) = cmp.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    if let Some(o) = current.as_object_mut() {
        o.retain(|_, v| !v.is_null());
        for k in ["active", "ready", "succeeded", "failed", "terminating"] {
            o.entry(k).or_insert(json!(0));
        }
    }
    if current != cmp && !suspended || newly_finished.is_some() {
        super::ignore_missing(
            jobs.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": wanted})),
            )
            .await,
        )?;
    }

    // A finished Job with a TTL goes when it runs out.
    if let (Some(_), Some(ttl)) = (
        &d.finished,
        job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished),
    ) {
        let finished_at = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Complete" || c.type_ == "Failed")
            })
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let age = now.duration_since(finished_at).as_secs();
        if age >= i64::from(ttl) {
            let dp = DeleteParams::background();
            super::ignore_missing(jobs.delete(&name, &dp).await)?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_secs(
            (i64::from(ttl) - age).max(1) as u64,
        )));
    }
    Ok(match d.recheck {
        Some(r) => Action::requeue(r),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// A pod of the Job: the template with the Job's labels, an owner reference, and for Indexed
/// Jobs the index (annotation, label, hostname `<job>-<index>`, `JOB_COMPLETION_INDEX`).
fn job_pod(
    job: &Job,
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    index: Option<i32>,
) -> Result<Pod, ControllerError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = serde_json::to_value(meta.labels.unwrap_or_default())?;
    let mut annotations = serde_json::to_value(meta.annotations.unwrap_or_default())?;
    let mut spec = serde_json::to_value(&template.spec)?;
    let generate = match index {
        Some(i) => {
            labels[INDEX] = json!(i.to_string());
            annotations[INDEX] = json!(i.to_string());
            spec["hostname"] = json!(format!("{name}-{i}"));
            if let Some(cs) = spec.get_mut("containers").and_then(|c| c.as_array_mut()) {
                for c in cs {
                    let env = c
                        .as_object_mut()
                        .map(|o| o.entry("env").or_insert(json!([])));
                    if let Some(list) = env.and_then(|e| e.as_array_mut()) {
                        list.push(json!({"name": "JOB_COMPLETION_INDEX",
                            "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{INDEX}']")}}}));
                    }
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    let body = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": generate, "namespace": job.metadata.namespace, "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": job.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
    });
    Ok(serde_json::from_value(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: serde_json::Value, status: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}});
        serde_json::from_value(json!({"metadata": {"name": "j", "namespace": "ns", "uid": "u"}, "spec": spec, "status": status})).unwrap()
    }

    fn pod(name: &str, phase: &str, index: Option<i32>) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": phase}});
        if let Some(i) = index {
            v["metadata"]["annotations"] = json!({INDEX: i.to_string()});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn decide_table() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        type Case = (
            &'static str,
            Job,
            Vec<Arc<Pod>>,
            usize,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "new job: one pod",
                job(json!({}), json!({})),
                vec![],
                1,
                None,
            ),
            (
                "parallelism 3 of 5",
                job(json!({"completions": 5, "parallelism": 3}), json!({})),
                vec![],
                3,
                None,
            ),
            (
                "two left, one running",
                job(json!({"completions": 3, "parallelism": 3}), json!({})),
                vec![pod("a", "Succeeded", None), pod("b", "Running", None)],
                1,
                None,
            ),
            (
                "complete",
                job(json!({"completions": 2}), json!({})),
                vec![pod("a", "Succeeded", None), pod("b", "Succeeded", None)],
                0,
                Some("CompletionsReached"),
            ),
            (
                "backoff limit",
                job(json!({"backoffLimit": 1}), json!({})),
                vec![pod("a", "Failed", None), pod("b", "Failed", None)],
                0,
                Some("BackoffLimitExceeded"),
            ),
            (
                "deadline",
                job(
                    json!({"activeDeadlineSeconds": 60}),
                    json!({"startTime": "2026-01-01T00:00:00Z"}),
                ),
                vec![pod("a", "Running", None)],
                0,
                Some("DeadlineExceeded"),
            ),
            (
                "work queue: one success, none running",
                job(json!({"parallelism": 2}), json!({})),
                vec![pod("a", "Succeeded", None)],
                0,
                Some("CompletionsReached"),
            ),
            (
                "indexed: the missing index",
                job(
                    json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
                    json!({}),
                ),
                vec![pod("a", "Succeeded", Some(0)), pod("b", "Running", Some(2))],
                1,
                None,
            ),
            (
                "suspended: nothing runs",
                job(json!({"suspend": true}), json!({})),
                vec![],
                0,
                None,
            ),
        ];
        for (what, job, pods, creates, finished) in cases {
            let d = decide(&job, &pods, now, true);
            assert_eq!(d.create.len(), creates, "{what}: {d:?}");
            assert_eq!(d.finished.as_ref().map(|f| f.reason), finished, "{what}");
        }
        // The indexed case creates index 1.
        let j = job(
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            json!({}),
        );
        let d = decide(
            &j,
            &[pod("a", "Succeeded", Some(0)), pod("b", "Running", Some(2))],
            now,
            true,
        );
        assert_eq!(
            (d.create, d.completed_indexes.as_str()),
            (vec![Some(1)], "0")
        );
    }

    #[test]
    fn failed_pods_are_recreated_after_a_backoff() {
        let j = job(json!({"backoffLimit": 6}), json!({}));
        let failed = pod("a", "Failed", None); // created at 00:00:00
        let early = decide(
            &j,
            std::slice::from_ref(&failed),
            "2026-01-01T00:00:04Z".parse().unwrap(),
            true,
        );
        assert_eq!(
            (early.create.len(), early.recheck),
            (0, Some(Duration::from_secs(6)))
        );
        let later = decide(&j, &[failed], "2026-01-01T00:00:11Z".parse().unwrap(), true);
        assert_eq!(later.create.len(), 1);
        assert_eq!(
            (backoff(1), backoff(2), backoff(10)),
            (
                Duration::from_secs(10),
                Duration::from_secs(20),
                Duration::from_secs(360)
            )
        );
    }

    #[test]
    fn indexes_format_as_ranges() {
        let cases = vec![
            (vec![], ""),
            (vec![0], "0"),
            (vec![0, 1, 2, 4, 6, 7], "0-2,4,6-7"),
        ];
        for (set, want) in cases {
            assert_eq!(format_indexes(&set.into_iter().collect()), want);
        }
    }
}
