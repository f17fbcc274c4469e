//! ServiceAccounts: the `kubectl get serviceaccounts` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{Row, Strategy};

/// The core/v1 ServiceAccount strategy.
pub(crate) struct ServiceAccount;

impl Strategy for ServiceAccount {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn columns(&self) -> Vec<Value> {
        vec![name_col(), col("Secrets", "string", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), age_col()]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![
            json!(row.name),
            json!(obj
                .get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                .to_string()),
            json!(row.age),
        ]
    }
}
