//! ConfigMaps and Secrets: keys that are valid file names, a total size of at most 1 MiB,
//! `immutable` data, a Secret's `type` and `stringData` (encoded into `data`), and their
//! `kubectl get` columns.

use base64::Engine as _;
use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{ensure_object, entry, str_at, Row, Strategy};
use crate::api::error::FieldCause;

/// The ConfigMap strategy.
pub(crate) struct ConfigMap;

impl Strategy for ConfigMap {
    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_data(obj, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable_data(old, new, causes);
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Data",
                "integer",
                0,
                "Data contains the configuration data.",
            ),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let n = ["data", "binaryData"]
            .iter()
            .map(|f| {
                obj.get(*f)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            })
            .sum::<usize>();
        vec![json!(row.name), json!(n), json!(row.age)]
    }
}

/// The Secret strategy.
pub(crate) struct Secret;

impl Strategy for Secret {
    fn default(&self, obj: &mut Value) {
        {
            let m = obj.as_object_mut().map(|m| {
                entry(m, "type", json!("Opaque"));
                m.remove("stringData")
            });
            if let Some(Some(Value::Object(plain))) = m {
                let data = ensure_object(obj, "data");
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_data(obj, causes);
        validate_type(obj, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable_data(old, new, causes);
        validate_type(new, causes);
        if old.get("type") != new.get("type") {
            causes.push(FieldCause::invalid(
                "type",
                str_at(new, "/type"),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col(
                "Type",
                "string",
                0,
                "Used to facilitate programmatic handling of secret data.",
            ),
            col("Data", "integer", 0, "Data contains the secret data."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        vec![
            json!(row.name),
            json!(s("/type")),
            json!(obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())),
            json!(row.age),
        ]
    }
}

/// A registry credential Secret holds its key, and the key is JSON (as kube-apiserver checks;
/// the value is never quoted back).
fn validate_type(obj: &Value, causes: &mut Vec<FieldCause>) {
    let key = match str_at(obj, "/type") {
        "kubernetes.io/dockerconfigjson" => ".dockerconfigjson",
        "kubernetes.io/dockercfg" => ".dockercfg",
        _ => return,
    };
    let field = format!("data[{key}]");
    let Some(encoded) = obj.pointer(&format!("/data/{key}")).and_then(Value::as_str) else {
        causes.push(FieldCause::required(field));
        return;
    };
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    if !json.as_ref().is_some_and(Value::is_object) {
        causes.push(FieldCause::invalid(
            field,
            "<secret contents redacted>",
            "not a JSON object",
        ));
    }
}

/// Keys that are valid file names; at most 1 MiB of keys and values.
fn validate_data(obj: &Value, causes: &mut Vec<FieldCause>) {
    {
        let mut size = 0usize;
        for field in ["data", "binaryData"] {
            for (k, v) in obj
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                crate::api::validation::validate_config_key(field, k, causes);
                size += k.len() + v.as_str().map(str::len).unwrap_or(0);
            }
        }
        if size > 1024 * 1024 {
            causes.push(FieldCause {
                reason: "FieldValueTooLong",
                field: "data".into(),
                message: "Too long: must have at most 1048576 bytes".into(),
            });
        }
    }
}

/// `immutable: true` data never changes, and `immutable` is never unset.
fn immutable_data(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    {
        for f in ["data", "binaryData"] {
            if old.get(f) != new.get(f) {
                causes.push(FieldCause::forbidden(
                    f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            causes.push(FieldCause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
}
