//! ResourceQuotas and LimitRanges: quantities that parse and are not negative, known scopes and
//! scope selectors (kube-apiserver's rules), known limit types, and their `kubectl get` columns. (Enforcement is the admission of issue 24.)

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{not_supported, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::validation::{elements, quantities};

/// The ResourceQuota strategy.
pub(crate) struct ResourceQuota;

impl Strategy for ResourceQuota {
    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        quantities(obj.pointer("/spec/hard"), "spec.hard", causes);
        const SCOPES: &[&str] = &[
            "BestEffort",
            "CrossNamespacePodAffinity",
            "NotBestEffort",
            "NotTerminating",
            "PriorityClass",
            "Terminating",
        ];
        for (i, s) in elements(obj.pointer("/spec/scopes")) {
            let s = s.as_str().unwrap_or("");
            if !SCOPES.contains(&s) {
                causes.push(not_supported(format!("spec.scopes[{i}]"), s, SCOPES));
            }
        }
        // kube-apiserver's rules for a scope selector's requirements.
        const OPERATORS: &[&str] = &["DoesNotExist", "Exists", "In", "NotIn"];
        for (i, e) in elements(obj.pointer("/spec/scopeSelector/matchExpressions")) {
            let field = format!("spec.scopeSelector.matchExpressions[{i}]");
            let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
            let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if !SCOPES.contains(&scope) {
                causes.push(not_supported(format!("{field}.scopeName"), scope, SCOPES));
            }
            if !OPERATORS.contains(&op) {
                causes.push(not_supported(format!("{field}.operator"), op, OPERATORS));
                continue;
            }
            if scope != "PriorityClass" && SCOPES.contains(&scope) && op != "Exists" {
                causes.push(FieldCause::invalid(
                    format!("{field}.operator"),
                    op,
                    "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
                ));
            }
            match (op, values) {
                ("In" | "NotIn", 0) => causes.push(FieldCause::required_because(
                    format!("{field}.values"),
                    "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                )),
                ("Exists" | "DoesNotExist", n) if n > 0 => causes.push(FieldCause::invalid(
                    format!("{field}.values"),
                    "",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist' for scope selector",
                )),
                _ => {}
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            age_col(),
            col("Request", "string", 0, "Request represents a minimum amount of cpu/memory that a container may consume."),
            col("Limit", "string", 0, "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        // `used/hard` per resource, limits apart from the rest, as kubectl prints them.
        let hard = obj.pointer("/spec/hard").and_then(Value::as_object);
        let used = obj.pointer("/status/used");
        let (mut requests, mut limits) = (Vec::new(), Vec::new());
        for (k, v) in hard.into_iter().flatten() {
            let shown = |q: Option<&Value>| match q {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "0".into(),
            };
            let text = format!(
                "{k}: {}/{}",
                shown(used.and_then(|u| u.get(k))),
                shown(Some(v))
            );
            if k.starts_with("limits.") {
                limits.push(text);
            } else {
                requests.push(text);
            }
        }
        vec![
            json!(row.name),
            json!(row.age),
            json!(requests.join(", ")),
            json!(limits.join(", ")),
        ]
    }
}

/// The LimitRange strategy.
pub(crate) struct LimitRange;

impl Strategy for LimitRange {
    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        const TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];
        for (i, l) in elements(obj.pointer("/spec/limits")) {
            let at = format!("spec.limits[{i}]");
            match l.get("type").and_then(Value::as_str) {
                None | Some("") => causes.push(FieldCause::required(format!("{at}.type"))),
                Some(t) if !TYPES.contains(&t) => {
                    causes.push(not_supported(format!("{at}.type"), t, TYPES))
                }
                Some(_) => {}
            }
            for f in [
                "max",
                "min",
                "default",
                "defaultRequest",
                "maxLimitRequestRatio",
            ] {
                quantities(l.get(f), &format!("{at}.{f}"), causes);
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        super::print::created_at_columns()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        super::print::created_at_cells(obj, &row.name)
    }
}
