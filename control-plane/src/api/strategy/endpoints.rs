//! Endpoints and EndpointSlices: written by the endpoints controller; their `kubectl get`
//! columns.

use serde_json::{json, Value};

use super::print::{age_col, col, list_text, name_col};
use super::{str_at, Row, Strategy};

/// The core/v1 Endpoints strategy.
pub(crate) struct Endpoints;

impl Strategy for Endpoints {
    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Endpoints",
                "string",
                0,
                "Endpoints is the list of endpoints in the service.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![json!(row.name), json!(endpoints_text(obj)), json!(row.age)]
    }
}

/// The discovery.k8s.io/v1 EndpointSlice strategy.
pub(crate) struct EndpointSlice;

impl Strategy for EndpointSlice {
    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            col(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            col(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        let ports: Vec<String> = obj
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .map(|p| p.to_string())
            .collect();
        let addrs: Vec<String> = obj
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|e| {
                e.get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        vec![
            json!(row.name),
            json!(s("/addressType")),
            json!(if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            }),
            json!(list_text(addrs)),
            json!(row.age),
        ]
    }
}

/// `ENDPOINTS` of an Endpoints object: up to three `ip:port`, then `+ N more...`.
fn endpoints_text(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in ep
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for a in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    list_text(all)
}
