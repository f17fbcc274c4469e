//! ControllerRevisions (apps/v1): the recorded templates of DaemonSets and StatefulSets
//! (`kubectl rollout history|undo ds|sts`): a revision number, data that never changes, and
//! the `kubectl get controllerrevisions` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{Row, Strategy};
use crate::api::error::FieldCause;

/// The ControllerRevision strategy.
pub(crate) struct ControllerRevision;

impl Strategy for ControllerRevision {
    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        match obj.get("revision").and_then(Value::as_i64) {
            None => causes.push(FieldCause::required("revision")),
            Some(r) if r < 0 => causes.push(FieldCause::invalid(
                "revision",
                &r.to_string(),
                "must be greater than or equal to 0",
            )),
            _ => {}
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old.get("data") != new.get("data") {
            causes.push(FieldCause::invalid("data", "", "field is immutable"));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Controller", "string", 0, "Controller of the object."),
            col(
                "Revision",
                "integer",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let controller = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|o| {
                o.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .map(|r| {
                let kind = r
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_lowercase();
                let group = r
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.split_once('/'))
                    .map(|(g, _)| format!(".{g}"))
                    .unwrap_or_default();
                format!(
                    "{kind}{group}/{}",
                    r.get("name").and_then(Value::as_str).unwrap_or("")
                )
            })
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(row.name),
            json!(controller),
            json!(obj.get("revision").and_then(Value::as_i64).unwrap_or(0)),
            json!(row.age),
        ]
    }
}
