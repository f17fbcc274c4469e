//! HorizontalPodAutoscalers (autoscaling/v2): `minReplicas` defaults to 1, `maxReplicas` is
//! required and not below it, a target is named; the `kubectl get hpa` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, int_at, name_col};
use super::{ensure_object, entry, str_at, Row, Strategy};
use crate::api::error::FieldCause;

/// The HorizontalPodAutoscaler strategy.
pub(crate) struct HorizontalPodAutoscaler;

impl Strategy for HorizontalPodAutoscaler {
    fn default(&self, obj: &mut Value) {
        {
            entry(ensure_object(obj, "spec"), "minReplicas", json!(1));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        {
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
    }

    fn columns(&self) -> Vec<Value> {
        let name = name_col();
        let age = age_col();
        vec![
            name,
            col("Reference", "string", 0, "reference to scaled resource"),
            col("Targets", "string", 0, "the current and the target metrics"),
            col("MinPods", "string", 0, "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            col("MaxPods", "integer", 0, "maxReplicas is the upper limit for the number of pods that can be set by the autoscaler."),
            col("Replicas", "integer", 0, "current number of replicas of pods managed by this autoscaler."),
            age,
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        let name = row.name.clone();
        let age = row.age.clone();
        {
            let reference = format!(
                "{}/{}",
                s("/spec/scaleTargetRef/kind"),
                s("/spec/scaleTargetRef/name")
            );
            let min = obj
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                json!(name),
                json!(reference),
                json!("<unknown>"),
                json!(min.to_string()),
                json!(int_at(obj, "/spec/maxReplicas")),
                json!(int_at(obj, "/status/currentReplicas")),
                json!(age),
            ]
        }
    }
}
