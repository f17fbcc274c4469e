//! Namespaces: names are DNS labels; a new namespace is `Active` with the `kubernetes`
//! finalizer; a deletion marks it `Terminating` and the server empties and then removes it.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{str_at, NameRule, Row, Strategy};

/// The Namespace strategy.
pub(crate) struct Namespace;

impl Strategy for Namespace {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    }

    fn finalized_by_server(&self) -> bool {
        true
    }

    fn mark_deleted(&self, obj: &mut Value) {
        obj["status"]["phase"] = json!("Terminating");
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Status", "string", 0, "The status of the namespace"),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        vec![
            json!(row.name),
            json!(str_at(obj, "/status/phase")),
            json!(row.age),
        ]
    }
}
