//! Ingresses and IngressClasses: an Ingress's rules, paths and backends validated as
//! networking.k8s.io/v1 does; their `kubectl get` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use skiff_common::names::is_dns1123_label;

use super::{not_supported, Row, Strategy};
use crate::api::error::FieldCause;

/// The annotation that makes an IngressClass the default.
pub(crate) const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The networking.k8s.io/v1 Ingress strategy.
pub(crate) struct Ingress;

impl Strategy for Ingress {
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_ingress(obj.get("spec").unwrap_or(&Value::Null), causes);
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Class",
                "string",
                0,
                "ingressClassName is the name of the IngressClass cluster resource.",
            ),
            col(
                "Hosts",
                "string",
                0,
                "Hosts that incoming requests are matched against.",
            ),
            col(
                "Address",
                "string",
                0,
                "Address is a list containing ingress points for the load-balancer.",
            ),
            col("Ports", "string", 0, "Ports of the ingress points."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let mut hosts: Vec<String> = obj
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| {
                r.get("host")
                    .and_then(Value::as_str)
                    .unwrap_or("*")
                    .to_string()
            })
            .collect();
        hosts.dedup();
        let addrs: Vec<String> = obj
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let tls = obj
            .pointer("/spec/tls")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        vec![
            json!(row.name),
            json!(obj
                .pointer("/spec/ingressClassName")
                .and_then(Value::as_str)
                .unwrap_or("<none>")),
            json!(if hosts.is_empty() {
                "*".to_string()
            } else {
                hosts.join(",")
            }),
            json!(addrs.join(",")),
            json!(if tls { "80, 443" } else { "80" }),
            json!(row.age),
        ]
    }
}

/// The networking.k8s.io/v1 IngressClass strategy.
pub(crate) struct IngressClass;

impl Strategy for IngressClass {
    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Controller", "string", 0, "controller refers to the name of the controller that should handle this class."),
            col("Parameters", "string", 0, "parameters is a link to a custom resource containing additional configuration for the controller."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![
            json!(row.name),
            json!(obj
                .pointer("/spec/controller")
                .and_then(Value::as_str)
                .unwrap_or("")),
            json!("<none>"),
            json!(row.age),
        ]
    }
}

/// An Ingress as networking.k8s.io/v1 validates it: rules or a default backend, absolute paths,
/// a known `pathType`, and each backend a Service with a port number or name.
fn validate_ingress(spec: &Value, causes: &mut Vec<FieldCause>) {
    let backend = |b: &Value, at: &str, causes: &mut Vec<FieldCause>| {
        let Some(svc) = b.get("service") else {
            if b.get("resource").is_none() {
                causes.push(FieldCause::invalid(
                    at,
                    "",
                    "at least one backend must be specified",
                ));
            }
            return;
        };
        match svc.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{at}.service.name"))),
            Some(n) if !is_dns1123_label(n) => causes.push(FieldCause::invalid(
                format!("{at}.service.name"),
                n,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-'",
            )),
            _ => {}
        }
        let port = svc.get("port");
        let number = port.and_then(|p| p.get("number")).and_then(Value::as_i64);
        let name = port
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        match (number, name) {
            (None, None) => causes.push(FieldCause::required(format!("{at}.service.port"))),
            (Some(_), Some(_)) => causes.push(FieldCause::invalid(
                format!("{at}.service.port"),
                "",
                "cannot set both port name & port number",
            )),
            (Some(n), None) if !(1..=65535).contains(&n) => causes.push(FieldCause::invalid(
                format!("{at}.service.port.number"),
                &n.to_string(),
                "must be between 1 and 65535, inclusive",
            )),
            _ => {}
        }
    };
    let rules = spec.get("rules").and_then(Value::as_array);
    let default = spec.get("defaultBackend");
    if rules.is_none_or(|r| r.is_empty()) && default.is_none() {
        causes.push(FieldCause::invalid(
            "spec",
            "",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default {
        backend(b, "spec.defaultBackend", causes);
    }
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        if let Some(h) = rule.get("host").and_then(Value::as_str) {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if h.contains(':')
                || bare.is_empty()
                || bare.contains('*')
                || !bare.split('.').all(is_dns1123_label)
            {
                causes.push(FieldCause::invalid(
                    format!("{at}.host"),
                    h,
                    "a lowercase RFC 1123 subdomain (a wildcard only as the whole first label)",
                ));
            }
        }
        for (j, p) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.http.paths[{j}]");
            match p.get("pathType").and_then(Value::as_str) {
                None => causes.push(FieldCause::required(format!("{at}.pathType"))),
                Some(t) if !["Exact", "Prefix", "ImplementationSpecific"].contains(&t) => causes
                    .push(not_supported(
                        format!("{at}.pathType"),
                        t,
                        &["Exact", "ImplementationSpecific", "Prefix"],
                    )),
                _ => {}
            }
            if let Some(path) = p.get("path").and_then(Value::as_str) {
                if !path.starts_with('/') {
                    causes.push(FieldCause::invalid(
                        format!("{at}.path"),
                        path,
                        "must be an absolute path",
                    ));
                }
            }
            backend(
                p.get("backend").unwrap_or(&Value::Null),
                &format!("{at}.backend"),
                causes,
            );
        }
    }
}
