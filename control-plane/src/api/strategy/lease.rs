//! Leases (node heartbeats, leader election): the `kubectl get leases` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{str_at, Row, Strategy};

/// The coordination.k8s.io/v1 Lease strategy.
pub(crate) struct Lease;

impl Strategy for Lease {
    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Holder", "string", 0, "The holder of the lease."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        vec![
            json!(row.name),
            json!(s("/spec/holderIdentity")),
            json!(row.age),
        ]
    }
}
