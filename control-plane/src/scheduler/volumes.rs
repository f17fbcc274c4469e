//! The volume part of scheduling, as kube-scheduler's VolumeBinding plugin: a pod waits for
//! its PersistentVolumeClaims, and the volumes they are bound to pin it to their nodes.
//!
//! Invariants: pure (no IO); reads claims and volumes only from the caches it is given.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod};

/// What a pod's PersistentVolumeClaims allow, as kube-scheduler's VolumeBinding plugin: Err
/// with the reason when the pod must wait (a claim that does not exist; an unbound claim
/// whose class binds at once, or that has no class), else the node affinity its bound
/// volumes add (None: any node). Unbound `WaitForFirstConsumer` claims bind after scheduling.
pub(crate) fn volume_check(
    pod: &Pod,
    claims: &BTreeMap<(String, String), PersistentVolumeClaim>,
    volumes: &BTreeMap<String, PersistentVolume>,
    wait_for_consumer: &dyn Fn(&str) -> bool,
) -> Result<Option<NodeSelector>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut required: Option<NodeSelector> = None;
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(claim_ref) = &v.persistent_volume_claim else {
            continue;
        };
        let name = &claim_ref.claim_name;
        let Some(claim) = claims.get(&(ns.clone(), name.clone())) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        let spec = claim.spec.clone().unwrap_or_default();
        match spec.volume_name.filter(|n| !n.is_empty()) {
            Some(pv) => {
                let affinity = volumes
                    .get(&pv)
                    .and_then(|v| v.spec.as_ref())
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.clone());
                if let Some(a) = affinity {
                    required = Some(match required {
                        None => a,
                        Some(r) => and_selectors(&r, &a),
                    });
                }
            }
            None => {
                let class = spec.storage_class_name.unwrap_or_default();
                if class.is_empty() || !wait_for_consumer(&class) {
                    return Err("pod has unbound immediate PersistentVolumeClaims".into());
                }
            }
        }
    }
    Ok(required)
}

/// Both selectors (each a disjunction of terms): every pair of terms, conjoined.
pub(crate) fn and_selectors(a: &NodeSelector, b: &NodeSelector) -> NodeSelector {
    let mut terms = Vec::new();
    for x in &a.node_selector_terms {
        for y in &b.node_selector_terms {
            let mut t = x.clone();
            let mut exprs = t.match_expressions.take().unwrap_or_default();
            exprs.extend(y.match_expressions.clone().unwrap_or_default());
            t.match_expressions = Some(exprs);
            let mut fields = t.match_fields.take().unwrap_or_default();
            fields.extend(y.match_fields.clone().unwrap_or_default());
            t.match_fields = (!fields.is_empty()).then_some(fields);
            terms.push(t);
        }
    }
    NodeSelector {
        node_selector_terms: terms,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::placement;

    /// A pod's claims: missing or unbound-immediate ones hold it; a bound volume's node
    /// affinity pins it; an unbound WaitForFirstConsumer claim lets it through.
    #[test]
    fn volume_check_table() {
        let pod = |claims: &[&str]| -> Pod {
            let vols: Vec<serde_json::Value> = claims
                .iter()
                .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
                .collect();
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [], "volumes": vols}})).unwrap()
        };
        let claim =
            |name: &str, class: Option<&str>, volume: Option<&str>| -> PersistentVolumeClaim {
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
                "spec": {"storageClassName": class, "volumeName": volume}}))
                .unwrap()
            };
        let claims: BTreeMap<(String, String), PersistentVolumeClaim> = [
            claim("bound", None, Some("pv1")),
            claim("later", Some("local-path"), None),
            claim("now", Some("fast"), None),
            claim("none", None, None),
        ]
        .into_iter()
        .map(|c| (("ns".to_string(), c.metadata.name.clone().unwrap()), c))
        .collect();
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}})).unwrap();
        let volumes = BTreeMap::from([("pv1".to_string(), pv)]);
        let wffc = |c: &str| c == "local-path";
        let check = |names: &[&str]| volume_check(&pod(names), &claims, &volumes, &wffc);
        assert_eq!(check(&[]), Ok(None));
        assert_eq!(check(&["later"]), Ok(None));
        assert_eq!(
            check(&["gone"]),
            Err("persistentvolumeclaim \"gone\" not found".into())
        );
        assert_eq!(
            check(&["now"]),
            Err("pod has unbound immediate PersistentVolumeClaims".into())
        );
        assert_eq!(
            check(&["none"]),
            Err("pod has unbound immediate PersistentVolumeClaims".into())
        );
        let pinned = check(&["bound", "later"]).unwrap().unwrap();
        let labels =
            |n: &str| BTreeMap::from([("kubernetes.io/hostname".to_string(), n.to_string())]);
        assert!(placement::node_matches(&pinned, "n2", &labels("n2")));
        assert!(!placement::node_matches(&pinned, "n1", &labels("n1")));
    }
}
