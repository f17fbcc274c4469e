//! PriorityClasses (scheduling.k8s.io/v1): a value (at most 1,000,000,000 for user classes),
//! the `system-` prefix reserved for the built-in classes, an immutable value, the preemption
//! policy, and the `kubectl get priorityclasses` columns. The built-in classes are created at
//! start-up; pods resolve `priorityClassName` at admission
//! ([`crate::api::registry`]'s admission).

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{entry, not_supported, str_at, Row, Strategy};
use crate::api::error::FieldCause;

/// The largest value a user-defined class may have.
pub(crate) const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The classes every cluster has: name and value.
pub(crate) const SYSTEM_CLASSES: &[(&str, i64)] = &[
    ("system-cluster-critical", 2_000_000_000),
    ("system-node-critical", 2_000_001_000),
];

/// The PriorityClass strategy.
pub(crate) struct PriorityClass;

impl Strategy for PriorityClass {
    fn default(&self, obj: &mut Value) {
        if let Some(m) = obj.as_object_mut() {
            entry(m, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let name = str_at(obj, "/metadata/name");
        let value = obj.get("value").and_then(Value::as_i64);
        let system = SYSTEM_CLASSES.iter().find(|(n, _)| *n == name);
        match (value, system) {
            (None, _) => causes.push(FieldCause::required("value")),
            (Some(v), Some((_, want))) if v != *want => causes.push(FieldCause::forbidden(
                "metadata.name",
                &format!("{name} is a system priority class with value {want}"),
            )),
            (Some(v), None) if v > HIGHEST_USER_PRIORITY => causes.push(FieldCause::forbidden(
                "value",
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
                ),
            )),
            _ => {}
        }
        if system.is_none() && name.starts_with("system-") {
            causes.push(FieldCause::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved for system use only",
            ));
        }
        const POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];
        let p = str_at(obj, "/preemptionPolicy");
        if !p.is_empty() && !POLICIES.contains(&p) {
            causes.push(not_supported("preemptionPolicy".into(), p, POLICIES));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old.get("value") != new.get("value") {
            causes.push(FieldCause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if old.get("preemptionPolicy") != new.get("preemptionPolicy") {
            causes.push(FieldCause::invalid(
                "preemptionPolicy",
                str_at(new, "/preemptionPolicy"),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Value", "integer", 0, "value represents the integer value of this priority class."),
            col("Global-Default", "boolean", 0, "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
            age_col(),
            col("PreemptionPolicy", "string", 0, "preemptionPolicy is the Policy for preempting pods with lower priority."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![
            json!(row.name),
            json!(obj.get("value").and_then(Value::as_i64).unwrap_or(0)),
            json!(obj
                .get("globalDefault")
                .and_then(Value::as_bool)
                .unwrap_or(false)),
            json!(row.age),
            json!(str_at(obj, "/preemptionPolicy")),
        ]
    }
}
