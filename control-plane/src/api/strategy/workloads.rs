//! The apps/v1 workloads: Deployment, ReplicaSet, StatefulSet and DaemonSet. Their defaults,
//! the validation of a pod template and the selector that must match it, the immutable
//! selector (and a StatefulSet's fixed spec fields), the `kubectl get` columns, and the
//! `autoscaling/v1` `Scale` view of those with a `scale` subresource.

use serde_json::{json, Value};

use super::pod::{default_pod_spec, validate_pod_spec};
use super::print::{
    age_col, col, int_at, map_text, name_col, selector_text, template_cols, template_columns,
};
use super::{ensure_object, entry, immutable, non_negative, not_supported, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::selectors::LabelSelector;

/// Which apps/v1 workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// The strategy of one apps/v1 workload kind.
pub(crate) struct Workload(pub Kind);

impl Strategy for Workload {
    /// The counts Kubernetes always shows (non-`omitempty` fields), all zero.
    fn initial_status(&self) -> Option<Value> {
        Some(match self.0 {
            Kind::Deployment => json!({}),
            Kind::ReplicaSet => json!({"replicas": 0}),
            Kind::StatefulSet => json!({"replicas": 0, "availableReplicas": 0}),
            Kind::DaemonSet => json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0}),
        })
    }

    fn default(&self, obj: &mut Value) {
        match self.0 {
            Kind::Deployment => {
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
            Kind::ReplicaSet => {
                let spec = ensure_object(obj, "spec");
                entry(spec, "replicas", json!(1));
                default_template(entry(spec, "template", json!({})));
            }
            Kind::StatefulSet => {
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
            Kind::DaemonSet => {
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
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let kind = format!("{:?}", self.0);
        validate_template(spec, "spec", &kind, &["Always"], true, causes);
        non_negative(
            spec,
            "spec",
            &["replicas", "minReadySeconds", "revisionHistoryLimit"],
            causes,
        );
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable(old, new, "/spec/selector", "spec.selector", causes);
        if self.0 == Kind::StatefulSet {
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

    fn columns(&self) -> Vec<Value> {
        match self.0 {
            Kind::Deployment => [
            vec![
                name_col(),
                col("Ready", "string", 0, "Number of the pod with ready state"),
                col("Up-to-date", "integer", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
                col("Available", "integer", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
                age_col(),
            ],
            template_cols(Some("Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.")),
        ].concat(),
            Kind::ReplicaSet => [
            vec![
                name_col(),
                col("Desired", "integer", 0, "Replicas is the number of desired replicas."),
                col("Current", "integer", 0, "Replicas is the most recently observed number of replicas."),
                col("Ready", "integer", 0, "The number of ready replicas for this replica set."),
                age_col(),
            ],
            template_cols(Some("Selector is a label query over pods that should match the replica count.")),
        ].concat(),
            Kind::StatefulSet => [
            vec![
                name_col(),
                col("Ready", "string", 0, "Number of the pod with ready state"),
                age_col(),
            ],
            template_cols(None),
        ].concat(),
            Kind::DaemonSet => [
            vec![
                name_col(),
                col("Desired", "integer", 0, "The total number of nodes that should be running the daemon pod."),
                col("Current", "integer", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
                col("Ready", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
                col("Up-to-date", "integer", 0, "The total number of nodes that are running updated daemon pod"),
                col("Available", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
                col("Node Selector", "string", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."),
                age_col(),
            ],
            template_cols(Some("A label query over pods that are managed by the daemon set.")),
        ].concat(),
        }
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let (name, age) = (row.name.clone(), row.age.clone());
        let (containers, images) = template_columns(obj.pointer("/spec/template"));
        let selector = selector_text(obj.pointer("/spec/selector"));
        match self.0 {
            Kind::Deployment => vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    int_at(obj, "/status/readyReplicas"),
                    int_at(obj, "/spec/replicas")
                )),
                json!(int_at(obj, "/status/updatedReplicas")),
                json!(int_at(obj, "/status/availableReplicas")),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector),
            ],
            Kind::ReplicaSet => vec![
                json!(name),
                json!(int_at(obj, "/spec/replicas")),
                json!(int_at(obj, "/status/replicas")),
                json!(int_at(obj, "/status/readyReplicas")),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector),
            ],
            Kind::StatefulSet => vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    int_at(obj, "/status/readyReplicas"),
                    int_at(obj, "/spec/replicas")
                )),
                json!(age),
                json!(containers),
                json!(images),
            ],
            Kind::DaemonSet => vec![
                json!(name),
                json!(int_at(obj, "/status/desiredNumberScheduled")),
                json!(int_at(obj, "/status/currentNumberScheduled")),
                json!(int_at(obj, "/status/numberReady")),
                json!(int_at(obj, "/status/updatedNumberScheduled")),
                json!(int_at(obj, "/status/numberAvailable")),
                json!(map_text(obj.pointer("/spec/template/spec/nodeSelector"))),
                json!(age),
                json!(containers),
                json!(images),
                json!(selector),
            ],
        }
    }
}

pub(crate) fn default_template(template: &mut Value) {
    if !template.is_object() {
        *template = json!({});
    }
    let meta = ensure_object(template, "metadata");
    meta.entry("creationTimestamp").or_insert(Value::Null);
    default_pod_spec(ensure_object(template, "spec"));
}

/// Validate a pod template at `prefix` and (when given) that `selector` selects its labels.
pub(crate) fn validate_template(
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
    crate::api::validation::validate_labels(
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

/// The `autoscaling/v1` `Scale` view of a workload.
pub(crate) fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    // A ReplicationController's selector is a plain map: its `matchLabels`.
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            if s.get("matchLabels").is_some() || s.get("matchExpressions").is_some() {
                s.clone()
            } else {
                json!({ "matchLabels": s })
            }
        })
        .and_then(|s| LabelSelector::from_object(&s).ok())
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
