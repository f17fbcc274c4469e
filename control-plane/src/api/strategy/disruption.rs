//! PodDisruptionBudgets (policy/v1): `minAvailable` or `maxUnavailable` (not both, each a
//! count or a percentage), a valid selector, the unhealthy pod eviction policy, and the
//! `kubectl get pdb` columns. The eviction API honours them
//! ([`crate::api::registry`]'s eviction).

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{not_supported, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::selectors::LabelSelector;

/// The PodDisruptionBudget strategy.
pub(crate) struct PodDisruptionBudget;

/// An int-or-percent field: a non-negative count, or `N%` with N in 0..=100.
fn int_or_percent(v: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => {}
        Value::String(s)
            if s.strip_suffix('%')
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p <= 100) => {}
        Value::Null => {}
        other => causes.push(FieldCause::invalid(
            field,
            &other.to_string(),
            "must be a non-negative integer or a percentage between 0% and 100%",
        )),
    }
}

impl Strategy for PodDisruptionBudget {
    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minAvailable").filter(|v| !v.is_null());
        let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
        if min.is_some() && max.is_some() {
            causes.push(FieldCause::invalid(
                "spec",
                &spec.to_string(),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = min {
            int_or_percent(v, "spec.minAvailable", causes);
        }
        if let Some(v) = max {
            int_or_percent(v, "spec.maxUnavailable", causes);
        }
        if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
            if let Err(e) = LabelSelector::from_object(sel) {
                causes.push(FieldCause::invalid("spec.selector", &sel.to_string(), &e));
            }
        }
        const POLICIES: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];
        if let Some(p) = spec
            .get("unhealthyPodEvictionPolicy")
            .and_then(Value::as_str)
        {
            if !POLICIES.contains(&p) {
                causes.push(not_supported(
                    "spec.unhealthyPodEvictionPolicy".into(),
                    p,
                    POLICIES,
                ));
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
            ),
            col(
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
            ),
            col(
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let shown = |p: &str| match obj.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "N/A".into(),
        };
        vec![
            json!(row.name),
            json!(shown("/spec/minAvailable")),
            json!(shown("/spec/maxUnavailable")),
            json!(obj
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)),
            json!(row.age),
        ]
    }
}
