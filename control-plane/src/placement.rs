//! Placement rules shared by the scheduler, the DaemonSet controller and node lifecycle: node
//! selectors, node affinity terms, and taints against tolerations, as Kubernetes defines them.
//! Pure code: no IO, no clock.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};

/// Does a node (name, labels) satisfy a pod's `nodeSelector` and its required node affinity?
pub fn selects(
    node_selector: &BTreeMap<String, String>,
    required: Option<&NodeSelector>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        && required.is_none_or(|a| node_matches(a, name, labels))
}

/// The first of `taints` with a scheduling effect (`NoSchedule`, `NoExecute`) that
/// `tolerations` do not tolerate.
pub fn untolerated<'a>(tolerations: &[Toleration], taints: &'a [Taint]) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(tolerations, t)
    })
}

/// Does `node` (its name and labels) satisfy a node selector (terms ORed, requirements ANDed)?
pub fn node_matches(
    selector: &NodeSelector,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, name, labels))
}

/// Does `node` (name, labels) satisfy one node selector term (requirements ANDed; an empty
/// term matches nothing)?
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let req = |r: &NodeSelectorRequirement, value: Option<&str>| {
        let values = r.values.as_deref().unwrap_or(&[]);
        let num = |v: &str| v.parse::<i64>().ok();
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => {
                matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b)
            }
            "Lt" => {
                matches!((value.and_then(num), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        }
    };
    exprs
        .iter()
        .all(|r| req(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && req(r, Some(name)))
}

/// Does one of `tolerations` tolerate `taint` (Kubernetes' matching: an empty key with `Exists`
/// matches every key; an empty effect matches every effect; `Equal` compares the value)?
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| toleration_matches(t, taint))
}

/// Does toleration `t` tolerate `taint`?
pub fn toleration_matches(t: &Toleration, taint: &Taint) -> bool {
    let key = t.key.as_deref().unwrap_or("");
    let exists = t.operator.as_deref() == Some("Exists");
    let key_ok = (key.is_empty() && exists) || key == taint.key;
    let value_ok =
        exists || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    key_ok && value_ok && effect_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerates_table() {
        let gpu = taint("gpu", "yes", "NoSchedule");
        let cases = vec![
            (vec![], false),
            (vec![tol("gpu", "Equal", "yes", "NoSchedule")], true),
            (vec![tol("gpu", "", "yes", "")], true),
            (vec![tol("gpu", "Equal", "no", "NoSchedule")], false),
            (vec![tol("gpu", "Exists", "", "")], true),
            (vec![tol("", "Exists", "", "")], true),
            (vec![tol("gpu", "Exists", "", "NoExecute")], false),
            (vec![tol("other", "Exists", "", "")], false),
        ];
        for (tolerations, want) in cases {
            assert_eq!(tolerates(&tolerations, &gpu), want, "{tolerations:?}");
        }
    }

    #[test]
    fn selects_table() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        let affinity = |op: &str, values: &[&str]| NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "zone".into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                match_fields: None,
            }],
        };
        let sel = |k: &str, v: &str| -> BTreeMap<String, String> {
            [(k.to_string(), v.to_string())].into_iter().collect()
        };
        let cases = vec![
            (BTreeMap::new(), None, true),
            (sel("zone", "a"), None, true),
            (sel("zone", "b"), None, false),
            (BTreeMap::new(), Some(affinity("In", &["a", "c"])), true),
            (BTreeMap::new(), Some(affinity("In", &["b"])), false),
            (BTreeMap::new(), Some(affinity("NotIn", &["a"])), false),
            (sel("zone", "a"), Some(affinity("Exists", &[])), true),
        ];
        for (node_selector, required, want) in cases {
            assert_eq!(
                selects(&node_selector, required.as_ref(), "n1", &labels),
                want,
                "{node_selector:?} {required:?}"
            );
        }
    }
}
