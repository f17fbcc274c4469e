//! RBAC objects (rbac.authorization.k8s.io/v1): Roles and ClusterRoles (rules with verbs, API
//! groups for resource rules, non-resource URLs only in cluster roles, aggregation rules),
//! RoleBindings and ClusterRoleBindings (a role reference that never changes, known subject
//! kinds), and their `kubectl get` columns. Stored and validated here; authorization is
//! issue 24's.

use serde_json::{json, Value};

use super::print::{col, name_col};
use super::{not_supported, str_at, NameRule, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::selectors::LabelSelector;
use crate::api::validation::elements;

/// A Role (`cluster` false) or ClusterRole.
pub(crate) struct Role {
    /// A ClusterRole.
    pub cluster: bool,
}

/// A RoleBinding (`cluster` false) or ClusterRoleBinding.
pub(crate) struct Binding {
    /// A ClusterRoleBinding.
    pub cluster: bool,
}

impl Strategy for Role {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        for (i, rule) in elements(obj.get("rules")) {
            let at = format!("rules[{i}]");
            let has = |k: &str| {
                rule.get(k)
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
            };
            if !has("verbs") {
                causes.push(FieldCause::required_because(
                    format!("{at}.verbs"),
                    "verbs must contain at least one value",
                ));
            }
            let urls = has("nonResourceURLs");
            if urls {
                if !self.cluster {
                    causes.push(FieldCause::invalid(
                        format!("{at}.nonResourceURLs"),
                        &rule["nonResourceURLs"].to_string(),
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if has("apiGroups") || has("resources") || has("resourceNames") {
                    causes.push(FieldCause::invalid(
                        format!("{at}.nonResourceURLs"),
                        &rule["nonResourceURLs"].to_string(),
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
            } else {
                if !has("apiGroups") {
                    causes.push(FieldCause::required_because(
                        format!("{at}.apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if !has("resources") {
                    causes.push(FieldCause::required_because(
                        format!("{at}.resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        if let Some(agg) = obj.get("aggregationRule").filter(|a| !a.is_null()) {
            for (i, s) in elements(agg.get("clusterRoleSelectors")) {
                if let Err(e) = LabelSelector::from_object(s) {
                    causes.push(FieldCause::invalid(
                        format!("aggregationRule.clusterRoleSelectors[{i}]"),
                        &s.to_string(),
                        &e,
                    ));
                }
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

impl Strategy for Binding {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        const GROUP: &str = "rbac.authorization.k8s.io";
        let kinds: &[&str] = if self.cluster {
            &["ClusterRole"]
        } else {
            &["ClusterRole", "Role"]
        };
        if str_at(obj, "/roleRef/name").is_empty() {
            causes.push(FieldCause::required("roleRef.name"));
        }
        let kind = str_at(obj, "/roleRef/kind");
        if !kinds.contains(&kind) {
            causes.push(not_supported("roleRef.kind".into(), kind, kinds));
        }
        let group = str_at(obj, "/roleRef/apiGroup");
        if group != GROUP {
            causes.push(not_supported("roleRef.apiGroup".into(), group, &[GROUP]));
        }
        const SUBJECTS: &[&str] = &["Group", "ServiceAccount", "User"];
        for (i, s) in elements(obj.get("subjects")) {
            let at = format!("subjects[{i}]");
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            if !SUBJECTS.contains(&kind) {
                causes.push(not_supported(format!("{at}.kind"), kind, SUBJECTS));
            }
            if s.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(FieldCause::required(format!("{at}.name")));
            }
            if kind == "ServiceAccount"
                && self.cluster
                && s.get("namespace")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                causes.push(FieldCause::required(format!("{at}.namespace")));
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old.get("roleRef") != new.get("roleRef") {
            causes.push(FieldCause::invalid(
                "roleRef",
                &new.get("roleRef").map(Value::to_string).unwrap_or_default(),
                "cannot change roleRef",
            ));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Role", "string", 0, "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
            col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
            col("Users", "string", 1, "Users in the roleBinding"),
            col("Groups", "string", 1, "Groups in the roleBinding"),
            col("ServiceAccounts", "string", 1, "ServiceAccounts in the roleBinding"),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let of = |kind: &str| {
            elements(obj.get("subjects"))
                .filter(|(_, s)| s.get("kind").and_then(Value::as_str) == Some(kind))
                .map(|(_, s)| match kind {
                    "ServiceAccount" => format!(
                        "{}/{}",
                        s.get("namespace").and_then(Value::as_str).unwrap_or(""),
                        s.get("name").and_then(Value::as_str).unwrap_or("")
                    ),
                    _ => s
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        vec![
            json!(row.name),
            json!(format!(
                "{}/{}",
                str_at(obj, "/roleRef/kind"),
                str_at(obj, "/roleRef/name")
            )),
            json!(row.age),
            json!(of("User")),
            json!(of("Group")),
            json!(of("ServiceAccount")),
        ]
    }
}
