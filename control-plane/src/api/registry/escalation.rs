//! Privilege-escalation prevention for RBAC writes, as kube-apiserver's RBAC storage does it:
//! - a Role or ClusterRole may be created or updated only by a user who holds every permission
//!   it grants (in its namespace; cluster-wide for a ClusterRole) or may `escalate` it;
//! - a RoleBinding or ClusterRoleBinding only by a user who holds every permission of the role it
//!   references (where the binding grants it) or may `bind` that role.
//!
//! Members of `system:masters` and writes made by the server itself (no request user: start-up
//! bootstrap) pass. An update that leaves rules, role reference and subjects as they were
//! (labels, finalizers) passes too.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleRef};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::{AppState, REQUEST_USER};
use crate::auth::rbac::{self, Attributes, UserInfo};
use crate::resources::ResourceType;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Check a write of `new` (replacing `old`, if an update) of `rt` in `ns`.
pub(super) async fn check(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if rt.group != GROUP {
        return Ok(());
    }
    let Ok(user) = REQUEST_USER.try_with(UserInfo::clone) else {
        return Ok(());
    };
    if user.is_master() {
        return Ok(());
    }
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let unchanged =
        |fields: &[&str]| old.is_some_and(|o| fields.iter().all(|f| o.get(f) == new.get(f)));
    let policy = state.authorizer.policy_at(state.store.revision()).await;
    let may = |verb: &str, resource: &str, name: &str, namespace: &str| {
        policy
            .allows(
                &user,
                &Attributes::Resource {
                    verb: verb.into(),
                    group: GROUP.into(),
                    resource: resource.into(),
                    subresource: String::new(),
                    name: name.into(),
                    namespace: namespace.into(),
                },
            )
            .is_some()
    };
    let rules = match rt.plural {
        "roles" | "clusterroles" => {
            if unchanged(&["rules", "aggregationRule"]) || may("escalate", rt.plural, name, ns) {
                return Ok(());
            }
            decode::<Role>(new)?.rules.unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            if unchanged(&["roleRef", "subjects"]) {
                return Ok(());
            }
            let role_ref: RoleRef =
                serde_json::from_value(new.get("roleRef").cloned().unwrap_or(Value::Null))
                    .map_err(|e| ApiError::BadRequest(format!("roleRef: {e}")))?;
            let plural = if role_ref.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let role_ns = if role_ref.kind == "Role" { ns } else { "" };
            // `bind` on the role, checked in the binding's namespace (kube-apiserver's
            // BindingAuthorized).
            if may("bind", plural, &role_ref.name, ns) {
                return Ok(());
            }
            referenced_rules(state, &role_ref, role_ns).await?
        }
        _ => return Ok(()),
    };
    let held = policy.rules_for(&user, ns);
    let missing: Vec<PolicyRule> = rules
        .iter()
        .flat_map(|r| rbac::uncovered(&held, r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = missing.iter().map(rbac::describe_rule).collect();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    Err(ApiError::Denied {
        group: GROUP.into(),
        resource: rt.plural.into(),
        name: name.into(),
        message: format!(
            "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
            user.name,
            groups.join(" "),
            described.join("\n")
        ),
    })
}

/// The rules of the role a binding references (404 when it does not exist, as Kubernetes).
async fn referenced_rules(
    state: &AppState,
    role_ref: &RoleRef,
    ns: &str,
) -> ApiResult<Vec<PolicyRule>> {
    let (plural, ns) = match role_ref.kind.as_str() {
        "Role" => ("roles", ns),
        _ => ("clusterroles", ""),
    };
    let rt = crate::resources::find(GROUP, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("{plural} are not registered")))?;
    let obj = super::get_object(state, rt, ns, &role_ref.name).await?;
    Ok(match plural {
        "roles" => decode::<Role>(&obj)?.rules,
        _ => decode::<ClusterRole>(&obj)?.rules,
    }
    .unwrap_or_default())
}

fn decode<T: DeserializeOwned>(v: &Value) -> ApiResult<T> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))
}
