//! ReplicationControllers (core/v1): ReplicaSets' predecessor, run by the same controller.
//! Defaults (one replica, the selector and labels from the template's labels), validation (a
//! non-empty selector that matches the template, `Always` restarts), the `kubectl get rc`
//! columns; `scale` as for the apps workloads.

use serde_json::{json, Value};

use super::print::{age_col, col, int_at, map_text, name_col, template_cols, template_columns};
use super::workloads::{default_template, validate_template};
use super::{ensure_object, entry, non_negative, Row, Strategy};
use crate::api::error::FieldCause;

/// The ReplicationController strategy.
pub(crate) struct ReplicationController;

impl Strategy for ReplicationController {
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            .cloned();
        let spec = ensure_object(obj, "spec");
        entry(spec, "replicas", json!(1));
        if let Some(l) = &labels {
            if spec
                .get("selector")
                .is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
            {
                spec.insert("selector".into(), l.clone());
            }
        }
        default_template(entry(spec, "template", json!({})));
        if let Some(l) = labels {
            let meta = ensure_object(obj, "metadata");
            if meta
                .get("labels")
                .is_none_or(|m| m.as_object().is_none_or(|m| m.is_empty()))
            {
                meta.insert("labels".into(), l);
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        // The selector is a plain map: checked as the `matchLabels` of a label selector.
        let mut as_label_selector = spec.clone();
        if let Some(m) = as_label_selector.as_object_mut() {
            match spec.get("selector").and_then(Value::as_object) {
                Some(sel) if !sel.is_empty() => {
                    m.insert("selector".into(), json!({"matchLabels": sel}));
                }
                _ => {
                    m.remove("selector");
                }
            }
        }
        validate_template(
            &as_label_selector,
            "spec",
            "ReplicationController",
            &["Always"],
            true,
            causes,
        );
        non_negative(spec, "spec", &["replicas", "minReadySeconds"], causes);
    }

    fn columns(&self) -> Vec<Value> {
        [
            vec![
                name_col(),
                col(
                    "Desired",
                    "integer",
                    0,
                    "Replicas is the number of desired replicas.",
                ),
                col(
                    "Current",
                    "integer",
                    0,
                    "Replicas is the most recently observed number of replicas.",
                ),
                col(
                    "Ready",
                    "integer",
                    0,
                    "The number of ready replicas for this replication controller.",
                ),
                age_col(),
            ],
            template_cols(Some(
                "Selector is a label query over pods that should match the Replicas count.",
            )),
        ]
        .concat()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let (containers, images) = template_columns(obj.pointer("/spec/template"));
        vec![
            json!(row.name),
            json!(int_at(obj, "/spec/replicas")),
            json!(int_at(obj, "/status/replicas")),
            json!(int_at(obj, "/status/readyReplicas")),
            json!(row.age),
            json!(containers),
            json!(images),
            json!(map_text(obj.pointer("/spec/selector"))),
        ]
    }
}
