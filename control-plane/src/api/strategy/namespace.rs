//! Namespaces: names are DNS labels; a new namespace is `Active` with the `kubernetes`
//! finalizer; a deletion marks it `Terminating` and the server empties and then removes it.
//! Every namespace carries the immutable label `kubernetes.io/metadata.name` with its name, as
//! in Kubernetes, so NetworkPolicy namespace selectors can name it.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{str_at, NameRule, Row, Strategy};

/// The label every namespace carries with its own name.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Set [`NAME_LABEL`] to the namespace's name (whatever the client sent).
fn name_label(obj: &mut Value) {
    let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
        return;
    };
    let name = Value::String(name.to_string());
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match meta.get_mut("labels").and_then(Value::as_object_mut) {
        Some(labels) => {
            labels.insert(NAME_LABEL.into(), name);
        }
        None => {
            meta.insert("labels".into(), json!({ NAME_LABEL: name }));
        }
    }
}

/// The Namespace strategy.
pub(crate) struct Namespace;

impl Strategy for Namespace {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Label
    }

    fn default(&self, obj: &mut Value) {
        name_label(obj);
    }

    fn prepare_create(&self, obj: &mut Value) {
        name_label(obj);
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
