//! Defaulting and validation of the kinds beyond Pod, Namespace and Node, as Kubernetes
//! defines them: workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob),
//! Service, ConfigMap, Secret, HorizontalPodAutoscaler; immutable fields on update; the
//! `scale` subresource view. Pure code.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::error::FieldCause;
use super::objects::{default_pod_spec, ensure_object, is_dns1123_label, validate_pod_spec};
use super::selectors::LabelSelector;
use crate::resources::ResourceType;

/// Kinds whose spec holds a pod `template` and a `selector` that must match it.
const APPS_WORKLOADS: &[&str] = &["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"];

fn entry<'a>(m: &'a mut Map<String, Value>, k: &str, default: Value) -> &'a mut Value {
    m.entry(k.to_string()).or_insert(default)
}

fn default_template(template: &mut Value) {
    if !template.is_object() {
        *template = json!({});
    }
    let meta = ensure_object(template, "metadata");
    meta.entry("creationTimestamp").or_insert(Value::Null);
    default_pod_spec(ensure_object(template, "spec"));
}

/// Fill in Kubernetes' defaults for a new or updated object (idempotent).
pub fn default(rt: &ResourceType, obj: &mut Value) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match rt.kind {
        "Deployment" => {
            let spec = ensure_object(obj, "spec");
            entry(spec, "replicas", json!(1));
            entry(spec, "revisionHistoryLimit", json!(10));
            entry(spec, "progressDeadlineSeconds", json!(600));
            let strategy = entry(spec, "strategy", json!({}));
            if let Some(s) = strategy.as_object_mut() {
                let kind = entry(s, "type", json!("RollingUpdate")).clone();
                if kind == "RollingUpdate" {
                    if let Some(ru) = entry(s, "rollingUpdate", json!({})).as_object_mut() {
                        entry(ru, "maxUnavailable", json!("25%"));
                        entry(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template(entry(spec, "template", json!({})));
        }
        "ReplicaSet" => {
            let spec = ensure_object(obj, "spec");
            entry(spec, "replicas", json!(1));
            default_template(entry(spec, "template", json!({})));
        }
        "StatefulSet" => {
            let spec = ensure_object(obj, "spec");
            entry(spec, "replicas", json!(1));
            entry(spec, "podManagementPolicy", json!("OrderedReady"));
            entry(spec, "revisionHistoryLimit", json!(10));
            entry(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            let strategy = entry(spec, "updateStrategy", json!({}));
            if let Some(s) = strategy.as_object_mut() {
                if entry(s, "type", json!("RollingUpdate")) == "RollingUpdate" {
                    if let Some(ru) = entry(s, "rollingUpdate", json!({})).as_object_mut() {
                        entry(ru, "partition", json!(0));
                    }
                }
            }
            default_template(entry(spec, "template", json!({})));
        }
        "DaemonSet" => {
            let spec = ensure_object(obj, "spec");
            entry(spec, "revisionHistoryLimit", json!(10));
            let strategy = entry(spec, "updateStrategy", json!({}));
            if let Some(s) = strategy.as_object_mut() {
                if entry(s, "type", json!("RollingUpdate")) == "RollingUpdate" {
                    if let Some(ru) = entry(s, "rollingUpdate", json!({})).as_object_mut() {
                        entry(ru, "maxUnavailable", json!(1));
                        entry(ru, "maxSurge", json!(0));
                    }
                }
            }
            default_template(entry(spec, "template", json!({})));
        }
        "Job" => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            default_job_spec(ensure_object(obj, "spec"), Some((&uid, &name)));
        }
        "CronJob" => {
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
        "Service" => default_service(ensure_object(obj, "spec")),
        "Secret" => {
            let m = obj.as_object_mut().map(|m| {
                entry(m, "type", json!("Opaque"));
                m.remove("stringData")
            });
            if let Some(Some(Value::Object(plain))) = m {
                let data = ensure_object(obj, "data");
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
        "HorizontalPodAutoscaler" => {
            entry(ensure_object(obj, "spec"), "minReplicas", json!(1));
        }
        _ => {}
    }
}

/// An Ingress as networking.k8s.io/v1 validates it: rules or a default backend, absolute paths,
/// a known `pathType`, and each backend a Service with a port number or name.
fn validate_ingress(spec: &Value, causes: &mut Vec<FieldCause>) {
    let backend = |b: &Value, at: &str, causes: &mut Vec<FieldCause>| {
        let Some(svc) = b.get("service") else {
            if b.get("resource").is_none() {
                causes.push(FieldCause::invalid(
                    at,
                    "",
                    "at least one backend must be specified",
                ));
            }
            return;
        };
        match svc.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{at}.service.name"))),
            Some(n) if !is_dns1123_label(n) => causes.push(FieldCause::invalid(
                format!("{at}.service.name"),
                n,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-'",
            )),
            _ => {}
        }
        let port = svc.get("port");
        let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64);
        let name = port
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        match (number, name) {
            (None, None) => causes.push(FieldCause::required(format!("{at}.service.port"))),
            (Some(_), Some(_)) => causes.push(FieldCause::invalid(
                format!("{at}.service.port"),
                "",
                "cannot set both port name & port number",
            )),
            (Some(n), None) if !(1..=65535).contains(&n) => causes.push(FieldCause::invalid(
                format!("{at}.service.port.number"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
    };
    let rules = spec.get("rules").and_then(Value::as_array);
    let default = spec.get("defaultBackend");
    if rules.is_none_or(|r| r.is_empty()) && default.is_none() {
        causes.push(FieldCause::invalid(
            "spec",
            "",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default {
        backend(b, "spec.defaultBackend", causes);
    }
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(h) = rule.get("host").and_then(Value::as_str) {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if h.contains(':')
                || bare.is_empty()
                || bare.contains('*')
                || !bare.split('.').all(is_dns1123_label)
            {
                causes.push(FieldCause::invalid(
                    format!("{at}.host"),
                    h,
                    "a lowercase RFC 1123 subdomain (a wildcard only as the whole first label)",
                ));
            }
        }
        for (j, p) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.http.paths[{j}]");
            match p.get("pathType").and_then(Value::as_str) {
                None => causes.push(FieldCause::required(format!("{at}.pathType"))),
                Some(t) if !["Exact", "Prefix", "ImplementationSpecific"].contains(&t) => causes
                    .push(not_supported(
                        format!("{at}.pathType"),
                        t,
                        &["Exact", "ImplementationSpecific", "Prefix"],
                    )),
                _ => {}
            }
            if let Some(path) = p.get("path").and_then(Value::as_str) {
                if !path.starts_with('/') {
                    causes.push(FieldCause::invalid(
                        format!("{at}.path"),
                        path,
                        "must be an absolute path",
                    ));
                }
            }
            backend(
                p.get("backend").unwrap_or(&Value::Null),
                &format!("{at}.backend"),
                causes,
            );
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

fn default_service(spec: &mut Map<String, Value>) {
    let kind = entry(spec, "type", json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    entry(spec, "sessionAffinity", json!("None"));
    if kind != "ExternalName" {
        entry(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        entry(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            entry(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                entry(p, "targetPort", port);
            }
        }
    }
}

use skiff_common::names::LABEL_MSG;
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn not_supported(field: String, value: &str, allowed: &[&str]) -> FieldCause {
    FieldCause {
        reason: "FieldValueNotSupported",
        field,
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn non_negative(spec: &Value, prefix: &str, fields: &[&str], causes: &mut Vec<FieldCause>) {
    for f in fields {
        if let Some(n) = spec.get(*f).and_then(Value::as_i64) {
            if n < 0 {
                causes.push(FieldCause::invalid(
                    format!("{prefix}.{f}"),
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
}

/// Validate a pod template at `prefix` and (when given) that `selector` selects its labels.
fn validate_template(
    spec: &Value,
    prefix: &str,
    kind: &str,
    restart_policies: &[&str],
    selector_required: bool,
    causes: &mut Vec<FieldCause>,
) {
    let template = spec.get("template").unwrap_or(&Value::Null);
    let labels = template.pointer("/metadata/labels").unwrap_or(&Value::Null);
    // The pods will carry these labels: the same rules as any object's.
    super::validation::validate_labels(
        Some(labels),
        &format!("{prefix}.template.metadata.labels"),
        causes,
    );
    match spec.get("selector").filter(|s| !s.is_null()) {
        None if selector_required => {
            causes.push(FieldCause::required(format!("{prefix}.selector")))
        }
        None => {}
        Some(sel) => match LabelSelector::from_object(sel) {
            Err(e) => causes.push(FieldCause::invalid(
                format!("{prefix}.selector"),
                &sel.to_string(),
                &e,
            )),
            Ok(s) if s.0.is_empty() && selector_required => causes.push(FieldCause::invalid(
                format!("{prefix}.selector"),
                &sel.to_string(),
                &format!("empty selector is invalid for {}", kind.to_lowercase()),
            )),
            Ok(s) => {
                if !s.matches(labels) {
                    causes.push(FieldCause::invalid(
                        format!("{prefix}.template.metadata.labels"),
                        &labels.to_string(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    let pod_spec = template.get("spec").unwrap_or(&Value::Null);
    // A StatefulSet's containers mount its volumeClaimTemplates by name: validate the template
    // as the pods will be, with a claim volume for each.
    let claims: Vec<Value> = spec
        .get("volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(|n| json!({"name": n, "persistentVolumeClaim": {"claimName": n}}))
        .collect();
    let with_claims;
    let pod_spec = if claims.is_empty() || !pod_spec.is_object() {
        pod_spec
    } else {
        let mut s = pod_spec.clone();
        if let Some(m) = s.as_object_mut() {
            let vols = m.entry("volumes").or_insert_with(|| json!([]));
            if let Some(a) = vols.as_array_mut() {
                a.extend(claims);
            }
        }
        with_claims = s;
        &with_claims
    };
    validate_pod_spec(pod_spec, &format!("{prefix}.template.spec"), causes);
    if let Some(p) = pod_spec.get("restartPolicy").and_then(Value::as_str) {
        if !restart_policies.contains(&p) {
            causes.retain(|c| c.field != format!("{prefix}.template.spec.restartPolicy"));
            causes.push(not_supported(
                format!("{prefix}.template.spec.restartPolicy"),
                p,
                restart_policies,
            ));
        }
    }
}

/// Kind-specific validation of a whole object.
pub fn validate(rt: &ResourceType, obj: &Value, causes: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let kind = rt.kind;
    if APPS_WORKLOADS.contains(&kind) {
        validate_template(spec, "spec", kind, &["Always"], true, causes);
        non_negative(
            spec,
            "spec",
            &["replicas", "minReadySeconds", "revisionHistoryLimit"],
            causes,
        );
        return;
    }
    match kind {
        "Job" => validate_job_spec(spec, "spec", causes),
        "CronJob" => {
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
        "Service" => validate_service(obj, spec, causes),
        "Ingress" => validate_ingress(spec, causes),
        "ConfigMap" | "Secret" => {
            let mut size = 0usize;
            for field in ["data", "binaryData"] {
                for (k, v) in obj
                    .get(field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    super::validation::validate_config_key(field, k, causes);
                    size += k.len() + v.as_str().map(str::len).unwrap_or(0);
                }
            }
            if size > 1024 * 1024 {
                causes.push(FieldCause {
                    reason: "FieldValueTooLong",
                    field: "data".into(),
                    message: "Too long: must have at most 1048576 bytes".into(),
                });
            }
        }
        "HorizontalPodAutoscaler" => {
            let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
            match spec.get("maxReplicas").and_then(Value::as_i64) {
                None => causes.push(FieldCause::required("spec.maxReplicas")),
                Some(max) if max < min => causes.push(FieldCause::invalid(
                    "spec.maxReplicas",
                    &max.to_string(),
                    "must be greater than or equal to `minReplicas`",
                )),
                _ => {}
            }
            if spec
                .pointer("/scaleTargetRef/name")
                .and_then(Value::as_str)
                .is_none()
            {
                causes.push(FieldCause::required("spec.scaleTargetRef.name"));
            }
        }
        _ => {}
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
pub fn check_schedule(s: &str) -> Result<(), String> {
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

fn validate_service(obj: &Value, spec: &Value, causes: &mut Vec<FieldCause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !name.is_empty()
        && (!is_dns1123_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()))
    {
        causes.retain(|c| c.field != "metadata.name");
        causes.push(FieldCause::invalid("metadata.name", name, DNS1035_MSG));
    }
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !TYPES.contains(&kind) {
        causes.push(not_supported("spec.type".into(), kind, TYPES));
    }
    if kind == "ExternalName" {
        if spec
            .get("externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(FieldCause::required("spec.externalName"));
        }
        return;
    }
    let ports = spec.get("ports").and_then(Value::as_array);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_none_or(Vec::is_empty) && !headless {
        causes.push(FieldCause::required("spec.ports"));
    }
    let ports = ports.cloned().unwrap_or_default();
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && pname.is_empty() {
            causes.push(FieldCause::required(format!("{at}.name")));
        } else if !pname.is_empty() {
            if !is_dns1123_label(pname) {
                causes.push(FieldCause::invalid(format!("{at}.name"), pname, LABEL_MSG));
            } else if names.contains(&pname) {
                causes.push(FieldCause::duplicate(format!("{at}.name"), pname));
            }
            names.push(pname);
        }
        match p.get("port").and_then(Value::as_i64) {
            None => causes.push(FieldCause::required(format!("{at}.port"))),
            Some(n) if !(1..=65535).contains(&n) => causes.push(FieldCause::invalid(
                format!("{at}.port"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
        if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&proto) {
                causes.push(not_supported(
                    format!("{at}.protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => causes
                .push(FieldCause::invalid(
                    format!("{at}.targetPort"),
                    &n.to_string(),
                    "must be between 1 and 65535, inclusive",
                )),
            Some(Value::String(s)) if s.is_empty() || s.len() > 15 => {
                causes.push(FieldCause::invalid(
                    format!("{at}.targetPort"),
                    s,
                    "must be no more than 15 characters",
                ))
            }
            _ => {}
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if kind == "ClusterIP" && np != 0 {
                causes.push(FieldCause::forbidden(
                    format!("{at}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if np != 0 && !(30000..=32767).contains(&np) {
                causes.push(FieldCause::invalid(
                    format!("{at}.nodePort"),
                    &np.to_string(),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
    if let Some(a) = spec.get("sessionAffinity").and_then(Value::as_str) {
        if !["None", "ClientIP"].contains(&a) {
            causes.push(not_supported(
                "spec.sessionAffinity".into(),
                a,
                &["ClientIP", "None"],
            ));
        }
    }
}

/// Fields that may not change on update, per kind (the spec for the main resource).
pub fn validate_update(rt: &ResourceType, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let immutable = |path: &str, field: &str, causes: &mut Vec<FieldCause>| {
        let (a, b) = (old.pointer(path), new.pointer(path));
        if a != b {
            causes.push(FieldCause::invalid(
                field,
                &b.map(Value::to_string).unwrap_or_else(|| "null".into()),
                "field is immutable",
            ));
        }
    };
    match rt.kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            immutable("/spec/selector", "spec.selector", causes);
        }
        "Job" => {
            immutable("/spec/selector", "spec.selector", causes);
            immutable("/spec/template", "spec.template", causes);
            immutable("/spec/completionMode", "spec.completionMode", causes);
        }
        "Service" => {
            let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str);
            let new_ip = new.pointer("/spec/clusterIP").and_then(Value::as_str);
            if old_ip.is_some_and(|o| !o.is_empty())
                && new_ip != old_ip
                && old.pointer("/spec/type") == new.pointer("/spec/type")
            {
                causes.push(FieldCause::invalid(
                    "spec.clusterIPs[0]",
                    new_ip.unwrap_or(""),
                    "may not change once set",
                ));
            }
        }
        "ConfigMap" | "Secret" if old.get("immutable").and_then(Value::as_bool) == Some(true) => {
            for f in ["data", "binaryData"] {
                if old.get(f) != new.get(f) {
                    causes.push(FieldCause::forbidden(
                        f,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if new.get("immutable").and_then(Value::as_bool) != Some(true) {
                causes.push(FieldCause::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        _ => {}
    }
    if rt.kind == "StatefulSet" {
        let strip = |v: &Value| {
            let mut v = v.get("spec").cloned().unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                    "revisionHistoryLimit",
                    "selector",
                ] {
                    m.remove(k);
                }
            }
            v
        };
        if strip(old) != strip(new) {
            causes.push(FieldCause::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
}

/// The `autoscaling/v1` `Scale` view of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Fields of a core/v1 Event and their events.k8s.io/v1 names.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(mut v: Value, forward: bool) -> Value {
    if let Some(m) = v.as_object_mut() {
        for (core, new) in EVENT_RENAMES {
            let (from, to) = if forward { (core, new) } else { (new, core) };
            if let Some(x) = m.remove(*from) {
                m.insert(to.to_string(), x);
            }
        }
    }
    v
}

/// A stored core/v1 Event as events.k8s.io/v1 shows it.
pub fn event_from_core(v: Value) -> Value {
    rename(v, true)
}

/// An events.k8s.io/v1 Event in the core/v1 form it is stored as.
pub fn event_to_core(v: Value) -> Value {
    rename(v, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn rt(group: &str, plural: &str) -> &'static ResourceType {
        let version = if group == "autoscaling" { "v2" } else { "v1" };
        resources::find(group, version, plural).unwrap()
    }

    fn fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
        super::super::objects::validate(rt, obj)
            .into_iter()
            .map(|c| c.field)
            .collect()
    }

    fn deployment(selector: Value, labels: Value, restart: &str) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector, "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "hello"}]}}}})
    }

    #[test]
    fn workload_validation_table() {
        let d = rt("apps", "deployments");
        let cases: Vec<(&ResourceType, Value, Vec<&str>)> = vec![
            (
                d,
                deployment(
                    json!({"matchLabels": {"app": "web"}}),
                    json!({"app": "web"}),
                    "Always",
                ),
                vec![],
            ),
            (
                d,
                deployment(
                    json!({"matchLabels": {"app": "db"}}),
                    json!({"app": "web"}),
                    "Always",
                ),
                vec!["spec.template.metadata.labels"],
            ),
            (
                d,
                deployment(Value::Null, json!({"app": "web"}), "Always"),
                vec!["spec.selector"],
            ),
            (
                d,
                deployment(json!({}), json!({"app": "web"}), "Always"),
                vec!["spec.selector"],
            ),
            (
                d,
                deployment(
                    json!({"matchLabels": {"app": "web"}}),
                    json!({"app": "web"}),
                    "Never",
                ),
                vec!["spec.template.spec.restartPolicy"],
            ),
            (
                rt("batch", "jobs"),
                json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]}}}}),
                vec!["spec.template.spec.restartPolicy"],
            ),
            (
                rt("batch", "jobs"),
                json!({"metadata": {"name": "j"}, "spec": {"backoffLimit": -1, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}),
                vec!["spec.backoffLimit"],
            ),
            (
                rt("batch", "cronjobs"),
                json!({"metadata": {"name": "c"}, "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}}),
                vec!["spec.schedule"],
            ),
            (
                rt("", "services"),
                json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}, {"port": 70000, "name": "b"}]}}),
                vec![
                    "metadata.name",
                    "spec.ports[0].name",
                    "spec.ports[1].port",
                    "spec.ports[1].targetPort",
                ],
            ),
            (
                rt("", "services"),
                json!({"metadata": {"name": "svc"}, "spec": {}}),
                vec!["spec.ports"],
            ),
            (
                rt("", "configmaps"),
                json!({"metadata": {"name": "c"}, "data": {"ok.key": "1", "bad key": "2"}}),
                vec!["data[bad key]"],
            ),
            (
                rt("autoscaling", "horizontalpodautoscalers"),
                json!({"metadata": {"name": "h"}, "spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}}),
                vec!["spec.maxReplicas"],
            ),
            (
                rt("networking.k8s.io", "ingresses"),
                json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "*.shop.example", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"path": "/api", "pathType": "Exact", "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}],
                    "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}),
                vec![],
            ),
            (
                rt("networking.k8s.io", "ingresses"),
                json!({"metadata": {"name": "i"}, "spec": {}}),
                vec!["spec"],
            ),
            (
                rt("networking.k8s.io", "ingresses"),
                json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a*.b:80", "http": {"paths": [
                    {"path": "api", "backend": {"service": {"name": "Web", "port": {}}}},
                    {"path": "/x", "pathType": "Regex", "backend": {"service": {"name": "w", "port": {"number": 0}}}},
                    {"path": "/y", "pathType": "Exact", "backend": {"service": {"name": "w", "port": {"number": 80, "name": "http"}}}}]}}]}}),
                vec![
                    "spec.rules[0].host",
                    "spec.rules[0].http.paths[0].pathType",
                    "spec.rules[0].http.paths[0].path",
                    "spec.rules[0].http.paths[0].backend.service.name",
                    "spec.rules[0].http.paths[0].backend.service.port",
                    "spec.rules[0].http.paths[1].pathType",
                    "spec.rules[0].http.paths[1].backend.service.port.number",
                    "spec.rules[0].http.paths[2].backend.service.port",
                ],
            ),
        ];
        for (rt, mut obj, want) in cases {
            default(rt, &mut obj);
            let mut got = fields(rt, &obj);
            got.sort();
            let mut want: Vec<String> = want.into_iter().map(String::from).collect();
            want.sort();
            assert_eq!(got, want, "{} {obj}", rt.kind);
        }
    }

    #[test]
    fn defaults_table() {
        let mut d = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            "Always",
        );
        default(rt("apps", "deployments"), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            30
        );
        let mut j = json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}});
        default(rt("batch", "jobs"), &mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["controller-uid"],
            "u1"
        );
        assert!(fields(rt("batch", "jobs"), &j).is_empty());
        let mut s =
            json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}, "data": {"a": "YQ=="}});
        default(rt("", "secrets"), &mut s);
        assert_eq!(s["data"], json!({"a": "YQ==", "k": "dg=="}));
        assert_eq!(s["type"], "Opaque");
        assert!(s.get("stringData").is_none());
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        default(rt("", "services"), &mut svc);
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn immutable_fields_table() {
        let d = rt("apps", "deployments");
        let old = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            "Always",
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        let mut causes = Vec::new();
        validate_update(d, &old, &new, &mut causes);
        assert!(causes.is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        validate_update(d, &old, &new, &mut causes);
        assert_eq!(causes[0].field, "spec.selector");
        let cm = rt("", "configmaps");
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let mut causes = Vec::new();
        validate_update(
            cm,
            &old,
            &json!({"immutable": true, "data": {"a": "2"}}),
            &mut causes,
        );
        assert_eq!(causes[0].field, "data");
    }

    #[test]
    fn schedules_table() {
        for (s, ok) in [
            ("*/5 * * * *", true),
            ("0 0 * * sun", true),
            ("@hourly", true),
            ("0 0 1 jan-mar *", true),
            ("60 * * * *", false),
            ("* * * *", false),
            ("*/0 * * * *", false),
            ("@sometimes", false),
        ] {
            assert_eq!(check_schedule(s).is_ok(), ok, "{s}");
        }
    }

    #[test]
    fn events_convert_both_ways() {
        let core = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "count": 2, "reason": "Started"});
        let new = event_from_core(core.clone());
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["note"], "m");
        assert_eq!(new["deprecatedCount"], 2);
        assert_eq!(new["reason"], "Started");
        assert_eq!(event_to_core(new), core);
    }

    #[test]
    fn scale_view() {
        let mut d = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
            "Always",
        );
        d["spec"]["replicas"] = json!(3);
        d["status"] = json!({"replicas": 2});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web");
    }
}
