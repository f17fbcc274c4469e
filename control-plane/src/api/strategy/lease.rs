//! Leases (node heartbeats, leader election): the `kubectl get leases` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{str_at, Row, Strategy};

/// The coordination.k8s.io/v1 Lease strategy.
pub(crate) struct Lease;

impl Strategy for Lease {
    fn columns(&self) -> Vec<Value> {
        let name = name_col();
        let age = age_col();
        vec![
            name,
            col("Holder", "string", 0, "The holder of the lease."),
            age,
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        let name = row.name.clone();
        let age = row.age.clone();
        vec![json!(name), json!(s("/spec/holderIdentity")), json!(age)]
    }
}
