//! The batch/v1 kinds: Job (defaults, the selector and labels a Job's pods get, completion
//! modes, what an update may not change) and CronJob (schedules checked field by field,
//! concurrency policies, its job template), with their `kubectl get` columns.

use serde_json::{json, Map, Value};

use super::print::{
    age_col, age_of, col, human_duration, int_at, name_col, selector_text, template_cols,
    template_columns,
};
use super::workloads::{default_template, validate_template};
use super::{ensure_object, entry, immutable, non_negative, not_supported, str_at, Row, Strategy};
use crate::api::error::FieldCause;

/// The Job strategy.
pub(crate) struct Job;

impl Strategy for Job {
    fn default(&self, obj: &mut Value) {
        let uid = str_at(obj, "/metadata/uid").to_string();
        {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            default_job_spec(ensure_object(obj, "spec"), Some((&uid, &name)));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_job_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable(old, new, "/spec/selector", "spec.selector", causes);
        immutable(old, new, "/spec/template", "spec.template", causes);
        immutable(
            old,
            new,
            "/spec/completionMode",
            "spec.completionMode",
            causes,
        );
    }

    fn columns(&self) -> Vec<Value> {
        [
            vec![
                name_col(),
                col("Status", "string", 0, "Status of the job."),
                col(
                    "Completions",
                    "string",
                    0,
                    "The desired number of successfully finished pods the job should be run with.",
                ),
                col(
                    "Duration",
                    "string",
                    0,
                    "Time required to complete the job.",
                ),
                age_col(),
            ],
            template_cols(Some(
                "A label query over pods that should match the pod count.",
            )),
        ]
        .concat()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let (name, age, now) = (row.name.clone(), row.age.clone(), row.now);
        let (containers, images) = template_columns(obj.pointer("/spec/template"));
        let selector = selector_text(obj.pointer("/spec/selector"));
        {
            let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!("{}/{c}", int_at(obj, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    int_at(obj, "/status/succeeded"),
                    int_at(obj, "/spec/parallelism").max(1)
                ),
            };
            let start = obj
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let end = obj
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .unwrap_or(now);
            let duration = start
                .map(|st| human_duration(end.duration_since(st).as_secs()))
                .unwrap_or_default();
            vec![
                json!(name),
                json!(job_status(obj)),
                json!(completions),
                json!(duration),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector),
            ]
        }
    }
}

/// The CronJob strategy.
pub(crate) struct CronJob;

impl Strategy for CronJob {
    fn default(&self, obj: &mut Value) {
        {
            let spec = ensure_object(obj, "spec");
            entry(spec, "concurrencyPolicy", json!("Allow"));
            entry(spec, "suspend", json!(false));
            entry(spec, "successfulJobsHistoryLimit", json!(3));
            entry(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(jt) = entry(spec, "jobTemplate", json!({})).as_object_mut() {
                if let Some(js) = entry(jt, "spec", json!({})).as_object_mut() {
                    default_job_spec(js, None);
                }
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        {
            match spec.get("schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(FieldCause::required("spec.schedule")),
                Some(s) => {
                    if let Err(e) = check_schedule(s) {
                        causes.push(FieldCause::invalid("spec.schedule", s, &e));
                    }
                }
            }
            if let Some(p) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
                if !["Allow", "Forbid", "Replace"].contains(&p) {
                    causes.push(not_supported(
                        "spec.concurrencyPolicy".into(),
                        p,
                        &["Allow", "Forbid", "Replace"],
                    ));
                }
            }
            validate_job_spec(
                spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null),
                "spec.jobTemplate.spec",
                causes,
            );
        }
    }

    fn columns(&self) -> Vec<Value> {
        [
            vec![
                name_col(),
                col("Schedule", "string", 0, "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
                col("Timezone", "string", 0, "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
                col("Suspend", "boolean", 0, "This flag tells the controller to suspend subsequent executions."),
                col("Active", "integer", 0, "A list of pointers to currently running jobs."),
                col("Last Schedule", "string", 0, "Information when was the last time the job was successfully scheduled."),
                age_col(),
            ],
            template_cols(Some("A label query over pods that should match the pod count.")),
        ].concat()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let (name, age, now) = (row.name.clone(), row.age.clone(), row.now);
        let s = |p: &str| str_at(obj, p).to_string();
        {
            let (containers, images) =
                template_columns(obj.pointer("/spec/jobTemplate/spec/template"));
            let last = obj.pointer("/status/lastScheduleTime");
            vec![
                json!(name),
                json!(s("/spec/schedule")),
                json!(obj
                    .pointer("/spec/timeZone")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")),
                json!(obj
                    .pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)),
                json!(obj
                    .pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)),
                json!(if last.is_some_and(|v| !v.is_null()) {
                    age_of(last, now)
                } else {
                    "<none>".into()
                }),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector_text(
                    obj.pointer("/spec/jobTemplate/spec/selector")
                )),
            ]
        }
    }
}

/// Job defaults; `owner` (uid, name) of a stored Job adds its selector and pod labels.
fn default_job_spec(spec: &mut Map<String, Value>, owner: Option<(&str, &str)>) {
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    entry(spec, "parallelism", json!(1));
    entry(spec, "backoffLimit", json!(6));
    entry(spec, "completionMode", json!("NonIndexed"));
    entry(spec, "suspend", json!(false));
    entry(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    let template = entry(spec, "template", json!({}));
    default_template(template);
    if let Some((uid, name)) = owner.filter(|(uid, _)| !manual && !uid.is_empty()) {
        let meta = ensure_object(template, "metadata");
        let labels = meta.entry("labels").or_insert(json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Some(l) = labels.as_object_mut() {
            for k in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
                l.insert(k.into(), json!(uid));
            }
            for k in ["batch.kubernetes.io/job-name", "job-name"] {
                l.insert(k.into(), json!(name));
            }
        }
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
}

fn validate_job_spec(spec: &Value, prefix: &str, causes: &mut Vec<FieldCause>) {
    validate_template(spec, prefix, "Job", &["OnFailure", "Never"], false, causes);
    non_negative(
        spec,
        prefix,
        &[
            "parallelism",
            "completions",
            "backoffLimit",
            "ttlSecondsAfterFinished",
        ],
        causes,
    );
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if d <= 0 {
            causes.push(FieldCause::invalid(
                format!("{prefix}.activeDeadlineSeconds"),
                &d.to_string(),
                "must be greater than 0",
            ));
        }
    }
    if let Some(m) = spec.get("completionMode").and_then(Value::as_str) {
        if !["NonIndexed", "Indexed"].contains(&m) {
            causes.push(not_supported(
                format!("{prefix}.completionMode"),
                m,
                &["NonIndexed", "Indexed"],
            ));
        } else if m == "Indexed" && spec.get("completions").is_none_or(Value::is_null) {
            causes.push(FieldCause::required(format!("{prefix}.completions")));
        }
    }
}

/// A five-field cron expression (or a `@hourly`-style macro), checked field by field.
pub(crate) fn check_schedule(s: &str) -> Result<(), String> {
    let s = s.trim();
    let s = s
        .strip_prefix("TZ=")
        .or_else(|| s.strip_prefix("CRON_TZ="))
        .map(|rest| rest.split_once(' ').map(|(_, r)| r).unwrap_or(""))
        .unwrap_or(s);
    if s.starts_with('@') {
        return match s {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight"
            | "@hourly" => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            fields.len()
        ));
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (f, (lo, hi)) in fields.iter().zip(ranges) {
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step {
                if st.parse::<u32>().map_or(true, |n| n == 0) {
                    return Err(format!("invalid step in {part:?}"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            let named = |v: &str| -> Option<u32> {
                v.parse().ok().or_else(|| {
                    const NAMES: [&str; 19] = [
                        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                        "nov", "dec", "sun", "mon", "tue", "wed", "thu", "fri", "sat",
                    ];
                    let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(v))? as u32;
                    Some(if i < 12 { i + 1 } else { i - 12 })
                })
            };
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (named(a), named(b)),
                None => (named(range), named(range)),
            };
            match (a, b) {
                (Some(a), Some(b)) if a >= lo && b <= hi && a <= b => {}
                _ => return Err(format!("value {part:?} out of range [{lo}-{hi}]")),
            }
        }
    }
    Ok(())
}

fn job_status(job: &Value) -> &'static str {
    let conds = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}
