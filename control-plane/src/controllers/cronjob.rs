//! The CronJob controller: creates a Job from `jobTemplate` at each `schedule` time (5-field
//! cron or `@hourly`-style, in `timeZone` or UTC), named `<cronjob>-<minutes since epoch>` as
//! Kubernetes names them, honouring `suspend`, `startingDeadlineSeconds` and
//! `concurrencyPolicy` (Allow, Forbid, Replace); keeps `successfulJobsHistoryLimit` and
//! `failedJobsHistoryLimit` finished Jobs; reports `active`, `lastScheduleTime` and
//! `lastSuccessfulTime`. [`due`] is pure and table-tested.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use skiff_common::events::{EventType, Recorder};

use super::ControllerError;

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The most recent schedule time in `(after, now]` (the one to run now, if any, and whether
/// more were missed), and the next one after `now`.
pub fn due(
    schedule: &str,
    zone: &str,
    after: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<(Option<jiff::Timestamp>, jiff::Timestamp), String> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| format!("invalid schedule {schedule:?}: {e}"))?;
    let tz =
        jiff::tz::TimeZone::get(zone).map_err(|e| format!("unknown time zone {zone:?}: {e}"))?;
    let now_z = now.to_zoned(tz.clone());
    let next = cron
        .find_next_occurrence(&now_z, false)
        .map_err(|e| format!("schedule {schedule:?}: {e}"))?
        .timestamp();
    let last = cron
        .find_previous_occurrence(&now_z, true)
        .ok()
        .map(|z| z.timestamp())
        .filter(|t| *t > after);
    Ok((last, next))
}

struct Ctx {
    client: kube::Client,
    recorder: Recorder,
}

/// Run the CronJob controller.
pub async fn run(client: kube::Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "cronjob-controller", None),
    });
    Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client), watcher::Config::default())
    .run(reconcile, super::retry, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn finished(job: &Job) -> Option<&'static str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
        .map(|c| {
            if c.type_ == "Complete" {
                "Complete"
            } else {
                "Failed"
            }
        })
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.metadata.name.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = cj
        .spec
        .clone()
        .ok_or_else(|| ControllerError::Invalid(format!("cronjob {ns}/{name} has no spec")))?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| super::controller_uid(&j.metadata) == Some(uid.as_str()))
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let object = skiff_common::events::object_ref(&cj.metadata, "CronJob", "batch/v1");
    let now = jiff::Timestamp::now();
    let status = cj.status.clone().unwrap_or_default();
    let after = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    let zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
    let (run_at, next) = match due(&spec.schedule, &zone, after, now) {
        Ok(d) => d,
        Err(e) => {
            ctx.recorder
                .record(&object, EventType::Warning, "InvalidSchedule", &e)
                .await;
            return Ok(Action::await_change());
        }
    };
    let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0);
    let active: Vec<&Job> = jobs.iter().filter(|j| finished(j).is_none()).collect();
    let too_late = |t: jiff::Timestamp| {
        spec.starting_deadline_seconds
            .is_some_and(|d| now.duration_since(t).as_secs() > d)
    };
    let mut active_names: Vec<String> = active
        .iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    if let Some(t) = run_at.filter(|t| spec.suspend != Some(true) && !too_late(*t)) {
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let skip = policy == "Forbid" && !active.is_empty();
        if skip {
            tracing::debug!(cronjob = %name, "skipping a run: the previous Job is still active (Forbid)");
        } else {
            if policy == "Replace" {
                for j in &active {
                    let n = j.metadata.name.clone().unwrap_or_default();
                    super::ignore_missing(jobs_api.delete(&n, &DeleteParams::background()).await)?;
                    ctx.recorder
                        .record(
                            &object,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &format!("Deleted job {n}"),
                        )
                        .await;
                }
                active_names.clear();
            }
            let job_name = format!("{name}-{}", t.as_second() / 60);
            let template = spec.job_template.clone();
            let meta = template.metadata.unwrap_or_default();
            let mut annotations = serde_json::to_value(meta.annotations.unwrap_or_default())?;
            annotations[SCHEDULED_AT] = json!(t.to_string());
            let body = json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job_name, "labels": meta.labels, "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": name, "uid": uid,
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": template.spec});
            let job: Job = serde_json::from_value(body)?;
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    ctx.recorder
                        .record(
                            &object,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created job {job_name}"),
                        )
                        .await;
                    active_names.push(job_name);
                }
                // Created by an earlier reconcile whose status write was lost.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        last_schedule = Some(t);
    }
    // History limits: the oldest finished Jobs beyond them go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in &done[..extra] {
            let n = j.metadata.name.clone().unwrap_or_default();
            super::ignore_missing(jobs_api.delete(&n, &DeleteParams::background()).await)?;
        }
    }
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max()
        .or(status.last_successful_time.as_ref().map(|t| t.0));
    let active_refs: Vec<serde_json::Value> = active_names
        .iter()
        .map(|n| json!({"apiVersion": "batch/v1", "kind": "Job", "name": n, "namespace": ns}))
        .collect();
    let secs = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let wanted = json!({
        "active": if active_refs.is_empty() { serde_json::Value::Null } else { json!(active_refs) },
        "lastScheduleTime": last_schedule.map(secs),
        "lastSuccessfulTime": last_success.map(secs),
    });
    let current = json!({
        "active": status.active.as_ref().filter(|a| !a.is_empty()).map(|a| a.iter().map(|r| json!({"apiVersion": "batch/v1", "kind": "Job", "name": r.name, "namespace": ns})).collect::<Vec<_>>()),
        "lastScheduleTime": status.last_schedule_time.as_ref().map(|t| secs(t.0)),
        "lastSuccessfulTime": status.last_successful_time.as_ref().map(|t| secs(t.0)),
    });
    if wanted != current {
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        super::ignore_missing(
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": wanted})),
            )
            .await,
        )?;
    }
    let wait = next.duration_since(now).as_secs().clamp(1, 300) as u64;
    Ok(Action::requeue(Duration::from_secs(wait)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_table() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let cases = vec![
            // (schedule, zone, after, now) -> (run at, next)
            (
                "*/5 * * * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:07:00Z",
                (Some("2026-01-01T00:05:00Z"), "2026-01-01T00:10:00Z"),
            ),
            (
                "*/5 * * * *",
                "UTC",
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:07:00Z",
                (None, "2026-01-01T00:10:00Z"),
            ),
            (
                "@hourly",
                "UTC",
                "2026-01-01T00:00:00Z",
                "2026-01-01T02:30:00Z",
                (Some("2026-01-01T02:00:00Z"), "2026-01-01T03:00:00Z"),
            ),
            (
                "0 9 * * *",
                "Europe/Paris",
                "2026-01-01T00:00:00Z",
                "2026-01-01T08:30:00Z",
                (Some("2026-01-01T08:00:00Z"), "2026-01-02T08:00:00Z"),
            ),
        ];
        for (schedule, zone, after, now, (run, next)) in cases {
            let got = due(schedule, zone, t(after), t(now)).unwrap();
            assert_eq!(got, (run.map(t), t(next)), "{schedule} {zone} {now}");
        }
        assert!(due(
            "61 * * * *",
            "UTC",
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:00:00Z")
        )
        .is_err());
        assert!(due(
            "* * * * *",
            "Mars/Olympus",
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:00:00Z")
        )
        .is_err());
    }
}
