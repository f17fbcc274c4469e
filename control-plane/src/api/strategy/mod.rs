//! What gives each kind its behaviour, one file per kind or small family of kinds, as
//! kube-apiserver's `pkg/registry/<group>/<kind>/strategy.go`: defaults, server-owned fields on
//! create, validation (whole object and update), fields an update keeps, graceful deletion,
//! table columns and the conversion of a resource that is a view of another. The generic
//! registry ([`super::registry`]) calls these at fixed points; every method's default is the
//! answer of a kind with no rules of its own.
//!
//! Invariants: strategies are pure (no IO, no store, no clock beyond the `now` they are given);
//! they never see HTTP; each kind is named in exactly one file here and one entry of
//! [`crate::resources::RESOURCES`].

pub(crate) mod batch;
pub(crate) mod certificates;
pub(crate) mod config;
pub(crate) mod crd;
pub(crate) mod custom;
pub(crate) mod disruption;
pub(crate) mod endpoints;
pub(crate) mod event;
pub(crate) mod hpa;
pub(crate) mod ingress;
pub(crate) mod lease;
pub(crate) mod namespace;
pub(crate) mod networkpolicy;
pub(crate) mod node;
pub(crate) mod pod;
pub(crate) mod print;
pub(crate) mod priority;
pub(crate) mod quota;
pub(crate) mod rbac;
pub(crate) mod replicationcontroller;
pub(crate) mod revision;
pub(crate) mod service;
pub(crate) mod serviceaccount;
pub(crate) mod storage;
pub(crate) mod workloads;

#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use super::error::FieldCause;

/// The row a table is being printed for: the name and age cells every kind shows, and `now`.
pub(crate) struct Row {
    /// `metadata.name`.
    pub name: String,
    /// The object's age, as kubectl prints it.
    pub age: String,
    /// The time the table is printed at.
    pub now: jiff::Timestamp,
}

/// A value an object holds alone (a Service's cluster IP or node port), kept in the store as
/// an object of its own under `resource`/`name`, written in the same transaction as its
/// holder: the store's existence check makes two holders impossible.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Claim {
    /// The store resource of this kind of claim.
    pub resource: &'static str,
    /// The value claimed.
    pub name: String,
}

/// Is a claim already held by another object?
pub(crate) type Taken<'a> = &'a dyn Fn(&Claim) -> bool;

/// How the name of an object is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (namespaces).
    Label,
    /// Any path segment: not `.` or `..`, no `/` or `%` (RBAC objects: `system:aggregate-to-view`).
    PathSegment,
}

/// The behaviour of one kind. Every method has the answer of a kind with no special rules.
pub(crate) trait Strategy: Send + Sync {
    /// How `metadata.name` is checked.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Kubernetes' defaults, applied to a new object and to every update of the main resource
    /// (idempotent).
    fn default(&self, _obj: &mut Value) {}

    /// The status a new object starts with, whatever its body says (kinds with a `status`
    /// subresource; None keeps the client's, as a Node's registration).
    fn initial_status(&self) -> Option<Value> {
        Some(json!({}))
    }

    /// The server-owned state of a new object, after the generic metadata and [`Self::default`]
    /// (an initial status, admission defaults).
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Fields an update of the main resource keeps from the stored object when the body leaves
    /// them out (allocated addresses).
    fn carry_over(&self, _old: &Value, _new: &mut Value) {}

    /// The store resources of the claims objects of this kind hold (empty: none).
    fn claim_resources(&self) -> &'static [&'static str] {
        &[]
    }

    /// The claims `obj` holds.
    fn claims(&self, _obj: &Value) -> Vec<Claim> {
        Vec::new()
    }

    /// Fill in the claimed values `obj` asks the server to choose, avoiding those `taken`;
    /// a value it names itself that is taken is an error.
    fn allocate(&self, _obj: &mut Value, _taken: Taken<'_>) -> Result<(), FieldCause> {
        Ok(())
    }

    /// Validation of a whole object, after the generic metadata checks.
    fn validate(&self, _obj: &Value, _causes: &mut Vec<FieldCause>) {}

    /// What an update of the main resource may not change.
    fn validate_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<FieldCause>) {}

    /// Seconds a deletion of `obj` waits for its holder (a node stopping a pod); None deletes
    /// at once.
    fn grace_period(&self, _obj: &Value, _opts: &Value) -> Option<i64> {
        None
    }

    /// A deletion marks the object and the server finishes it (a namespace is emptied first).
    fn finalized_by_server(&self) -> bool {
        false
    }

    /// A deletion that removes the object at once answers with the object (as kube-apiserver's
    /// `ReturnDeletedObject`), rather than a `Status`.
    fn returns_deleted_object(&self) -> bool {
        false
    }

    /// Writes of this kind change the served resource types (CustomResourceDefinitions).
    fn defines_types(&self) -> bool {
        false
    }

    /// The object marked for deletion, beyond `deletionTimestamp` (a namespace's phase).
    fn mark_deleted(&self, _obj: &mut Value) {}

    /// The columns of `kubectl get`.
    fn columns(&self) -> Vec<Value> {
        vec![print::name_col(), print::age_col()]
    }

    /// One row's cells, one per column.
    fn cells(&self, _obj: &Value, row: &Row) -> Vec<Value> {
        vec![json!(row.name), json!(row.age)]
    }

    /// The object in the form of the resource it is stored as (a view's conversion).
    fn storage_form(&self, obj: Value) -> Value {
        obj
    }

    /// A stored object in this resource's form.
    fn served_form(&self, obj: Value) -> Value {
        obj
    }
}

/// The value at `k` of `m`, inserted as `default` when absent.
pub(crate) fn entry<'a>(m: &'a mut Map<String, Value>, k: &str, default: Value) -> &'a mut Value {
    m.entry(k.to_string()).or_insert(default)
}

/// The object at `key` of `obj`, made an empty object when it is absent or not an object.
pub(crate) fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj[key] = json!({});
    }
    match obj.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just made an object"),
    }
}

/// `FieldValueNotSupported` with Kubernetes' message.
pub(crate) fn not_supported(field: String, value: &str, allowed: &[&str]) -> FieldCause {
    FieldCause {
        reason: "FieldValueNotSupported",
        field,
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Each of `fields` of `spec` (at `prefix`) that is a negative integer is invalid.
pub(crate) fn non_negative(
    spec: &Value,
    prefix: &str,
    fields: &[&str],
    causes: &mut Vec<FieldCause>,
) {
    for f in fields {
        if let Some(n) = spec.get(*f).and_then(Value::as_i64) {
            if n < 0 {
                causes.push(FieldCause::invalid(
                    format!("{prefix}.{f}"),
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
}

/// A field whose value may not change: a cause when `old` and `new` differ at `path`.
pub(crate) fn immutable(
    old: &Value,
    new: &Value,
    path: &str,
    field: &str,
    causes: &mut Vec<FieldCause>,
) {
    let (a, b) = (old.pointer(path), new.pointer(path));
    if a != b {
        causes.push(FieldCause::invalid(
            field,
            &b.map(Value::to_string).unwrap_or_else(|| "null".into()),
            "field is immutable",
        ));
    }
}

/// The string at pointer `p` of `obj`, or "".
pub(crate) fn str_at<'a>(obj: &'a Value, p: &str) -> &'a str {
    obj.pointer(p).and_then(Value::as_str).unwrap_or("")
}
