//! ClusterRole aggregation, as kube-controller-manager's clusterrole-aggregation controller: a
//! ClusterRole with an `aggregationRule` gets, as its rules, the rules of every ClusterRole its
//! `clusterRoleSelectors` select (in name order, each rule once). The default `admin`, `edit`
//! and `view` are built so, and a ClusterRole labelled `aggregate-to-view: "true"` (as operators
//! ship for their custom resources) joins them. [`aggregate`] is pure and table-tested; the rules
//! are written only when they differ.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{AggregationRule, ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerError;
use crate::api::selectors::LabelSelector;

struct Ctx {
    client: kube::Client,
    roles: Store<ClusterRole>,
}

/// The rules the ClusterRole `name` aggregates by `rule` from `roles`: those of the other roles
/// any selector selects, by role name, each rule once. A role never aggregates itself (its
/// rules would keep what the roles it selected once gave it). A selector that does not parse
/// selects nothing.
pub fn aggregate(
    name: &str,
    rule: &AggregationRule,
    roles: &[Arc<ClusterRole>],
) -> Vec<PolicyRule> {
    let selectors: Vec<LabelSelector> = rule
        .cluster_role_selectors
        .iter()
        .flatten()
        .filter_map(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| LabelSelector::from_object(&v).ok())
        })
        .collect();
    let mut selected: Vec<&Arc<ClusterRole>> = roles
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(name))
        .filter(|r| {
            selectors
                .iter()
                .any(|s| s.matches_map(r.metadata.labels.as_ref()))
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: Vec<PolicyRule> = Vec::new();
    for role in selected {
        for r in role.rules.iter().flatten() {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
    }
    out
}

/// Run the controller until its streams end.
pub async fn run(client: kube::Client) {
    let api = Api::<ClusterRole>::all(client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let roles = controller.store();
    let ctx = Arc::new(Ctx {
        client,
        roles: roles.clone(),
    });
    // Any change to any ClusterRole may change what an aggregating one selects.
    controller
        .watches(api, watcher::Config::default(), move |_: ClusterRole| {
            roles
                .state()
                .iter()
                .filter(|r| r.aggregation_rule.is_some())
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let (Some(rule), Some(name)) = (&role.aggregation_rule, &role.metadata.name) else {
        return Ok(Action::await_change());
    };
    let want = aggregate(name, rule, &ctx.roles.state());
    if role.rules.as_ref().unwrap_or(&Vec::new()) != &want {
        let api = Api::<ClusterRole>::all(ctx.client.clone());
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": want})),
        )
        .await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as Selector, LabelSelectorRequirement, ObjectMeta,
    };
    use std::collections::BTreeMap;

    fn role(name: &str, labels: &[(&str, &str)], resources: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            rules: Some(
                resources
                    .iter()
                    .map(|r| PolicyRule {
                        verbs: vec!["get".into()],
                        api_groups: Some(vec!["".into()]),
                        resources: Some(vec![r.to_string()]),
                        ..Default::default()
                    })
                    .collect(),
            ),
            aggregation_rule: None,
        })
    }

    fn by_labels(labels: &[(&str, &str)]) -> Selector {
        Selector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }

    fn resources(rules: &[PolicyRule]) -> Vec<String> {
        rules
            .iter()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn aggregation_table() {
        const VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
        let roles = vec![
            role("z-crd-viewer", &[(VIEW, "true")], &["widgets"]),
            role("a-pods", &[(VIEW, "true")], &["pods", "configmaps"]),
            role("b-dup", &[(VIEW, "true")], &["pods"]),
            role("not-labelled", &[], &["secrets"]),
            role("labelled-false", &[(VIEW, "false")], &["nodes"]),
            role("team", &[("team", "a")], &["services"]),
        ];
        let cases: Vec<(Vec<Selector>, Vec<&str>)> = vec![
            // by name order, each rule once
            (
                vec![by_labels(&[(VIEW, "true")])],
                vec!["pods", "configmaps", "widgets"],
            ),
            // several selectors: a union
            (
                vec![by_labels(&[(VIEW, "true")]), by_labels(&[("team", "a")])],
                vec!["pods", "configmaps", "services", "widgets"],
            ),
            (vec![by_labels(&[("team", "b")])], vec![]),
            (vec![], vec![]),
            (
                vec![Selector {
                    match_labels: None,
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "Exists".into(),
                        values: None,
                    }]),
                }],
                vec!["services"],
            ),
            // a selector that does not parse selects nothing
            (
                vec![Selector {
                    match_labels: None,
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "Sometimes".into(),
                        values: None,
                    }]),
                }],
                vec![],
            ),
        ];
        for (selectors, want) in cases {
            let rule = AggregationRule {
                cluster_role_selectors: Some(selectors.clone()),
            };
            assert_eq!(
                resources(&aggregate("aggregating", &rule, &roles)),
                want,
                "{selectors:?}"
            );
        }
        // A role that its own selector matches does not take its own rules.
        let rule = AggregationRule {
            cluster_role_selectors: Some(vec![by_labels(&[("team", "a")])]),
        };
        assert_eq!(
            resources(&aggregate("team", &rule, &roles)),
            Vec::<String>::new()
        );
    }
}
