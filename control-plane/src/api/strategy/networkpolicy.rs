//! NetworkPolicies (networking.k8s.io/v1): a pod selector, policy types defaulted from the
//! rules given, valid peers and ports, and the `kubectl get networkpolicies` columns. The node
//! gateways enforce them (`skiff_node::netpolicy`).

use serde_json::{json, Value};

use super::print::{age_col, col, name_col, selector_text};
use super::{not_supported, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::selectors::LabelSelector;
use crate::api::validation::elements;

/// The NetworkPolicy strategy.
pub(crate) struct NetworkPolicy;

impl Strategy for NetworkPolicy {
    /// `policyTypes` defaults to Ingress, plus Egress when egress rules are given.
    fn default(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if spec
            .get("policyTypes")
            .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty))
        {
            let mut types = vec![json!("Ingress")];
            if spec
                .get("egress")
                .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()))
            {
                types.push(json!("Egress"));
            }
            spec.insert("policyTypes".into(), Value::Array(types));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let selector = |v: Option<&Value>, at: &str, causes: &mut Vec<FieldCause>| {
            if let Some(s) = v.filter(|s| !s.is_null()) {
                if let Err(e) = LabelSelector::from_object(s) {
                    causes.push(FieldCause::invalid(at, &s.to_string(), &e));
                }
            }
        };
        selector(spec.get("podSelector"), "spec.podSelector", causes);
        const TYPES: &[&str] = &["Egress", "Ingress"];
        for (i, t) in elements(spec.get("policyTypes")) {
            let t = t.as_str().unwrap_or("");
            if !TYPES.contains(&t) {
                causes.push(not_supported(format!("spec.policyTypes[{i}]"), t, TYPES));
            }
        }
        for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
            for (i, rule) in elements(spec.get(dir)) {
                for (j, p) in elements(rule.get(peers)) {
                    let at = format!("spec.{dir}[{i}].{peers}[{j}]");
                    selector(p.get("podSelector"), &format!("{at}.podSelector"), causes);
                    selector(
                        p.get("namespaceSelector"),
                        &format!("{at}.namespaceSelector"),
                        causes,
                    );
                    if let Some(cidr) = p.pointer("/ipBlock/cidr").and_then(Value::as_str) {
                        if !valid_cidr(cidr) {
                            causes.push(FieldCause::invalid(
                                format!("{at}.ipBlock.cidr"),
                                cidr,
                                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                            ));
                        }
                    }
                }
                for (j, port) in elements(rule.get("ports")) {
                    const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
                    if let Some(p) = port.get("protocol").and_then(Value::as_str) {
                        if !PROTOCOLS.contains(&p) {
                            causes.push(not_supported(
                                format!("spec.{dir}[{i}].ports[{j}].protocol"),
                                p,
                                PROTOCOLS,
                            ));
                        }
                    }
                }
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Pod-Selector",
                "string",
                0,
                "podSelector selects the pods to which this NetworkPolicy object applies.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![
            json!(row.name),
            json!(selector_text(obj.pointer("/spec/podSelector"))),
            json!(row.age),
        ]
    }
}

fn valid_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}
