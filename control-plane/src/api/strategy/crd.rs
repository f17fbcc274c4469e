//! CustomResourceDefinitions (apiextensions.k8s.io/v1): names (`<plural>.<group>`, a group with
//! a dot, no built-in resource shadowed), versions (at least one, exactly one stored, each with
//! a structural schema whose root is an object), defaults (`singular`, `listKind`, conversion
//! `None`), the status the server gives it (`NamesAccepted`, `Established`, accepted names,
//! stored versions), the cleanup finalizer, and the `kubectl get crd` columns. The kinds a
//! CRD defines are made from it by [`crate::api::crd`].

use serde_json::{json, Value};
use skiff_common::names::is_dns1123_label;

use super::{ensure_object, entry, not_supported, str_at, Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::validation::elements;

/// The finalizer that deletes a CRD's objects before the CRD goes.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The CustomResourceDefinition strategy.
pub(crate) struct CustomResourceDefinition;

impl Strategy for CustomResourceDefinition {
    fn default(&self, obj: &mut Value) {
        let spec = ensure_object(obj, "spec");
        if let Some(names) = entry(spec, "names", json!({})).as_object_mut() {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if names
                .get("singular")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                names.insert("singular".into(), json!(kind.to_lowercase()));
            }
            if names
                .get("listKind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                names.insert("listKind".into(), json!(format!("{kind}List")));
            }
        }
        entry(spec, "conversion", json!({"strategy": "None"}));
    }

    fn prepare_create(&self, obj: &mut Value) {
        let meta = ensure_object(obj, "metadata");
        let fins = entry(meta, "finalizers", json!([]));
        if let Some(f) = fins.as_array_mut() {
            if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
                f.push(json!(CLEANUP_FINALIZER));
            }
        }
        obj["status"] = status(obj);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let group = str_at(spec, "/group");
        let plural = str_at(spec, "/names/plural");
        let name = str_at(obj, "/metadata/name");
        if group.is_empty() {
            causes.push(FieldCause::required("spec.group"));
        } else if !group.contains('.') {
            causes.push(FieldCause::invalid(
                "spec.group",
                group,
                "should be a domain with at least one dot",
            ));
        }
        for (f, v) in [
            ("plural", plural),
            ("singular", str_at(spec, "/names/singular")),
        ] {
            if v.is_empty() {
                causes.push(FieldCause::required(format!("spec.names.{f}")));
            } else if !is_dns1123_label(v) {
                causes.push(FieldCause::invalid(
                    format!("spec.names.{f}"),
                    v,
                    skiff_common::names::LABEL_MSG,
                ));
            }
        }
        for f in ["kind", "listKind"] {
            if str_at(spec, &format!("/names/{f}")).is_empty() {
                causes.push(FieldCause::required(format!("spec.names.{f}")));
            }
        }
        if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
            causes.push(FieldCause::invalid(
                "metadata.name",
                name,
                "must be spec.names.plural+\".\"+spec.group",
            ));
        }
        if crate::resources::RESOURCES
            .iter()
            .any(|r| r.group == group && r.plural == plural)
        {
            causes.push(FieldCause::invalid(
                "spec.names.plural",
                plural,
                "is a resource the server already serves",
            ));
        }
        const SCOPES: &[&str] = &["Cluster", "Namespaced"];
        let scope = str_at(spec, "/scope");
        if !SCOPES.contains(&scope) {
            causes.push(not_supported("spec.scope".into(), scope, SCOPES));
        }
        let versions: Vec<(usize, &Value)> = elements(spec.get("versions")).collect();
        if versions.is_empty() {
            causes.push(FieldCause::required_because(
                "spec.versions",
                "must have exactly one version marked as storage version",
            ));
        }
        let stored = versions
            .iter()
            .filter(|(_, v)| v.get("storage").and_then(Value::as_bool) == Some(true))
            .count();
        if !versions.is_empty() && stored != 1 {
            causes.push(FieldCause::invalid(
                "spec.versions",
                "",
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions {
            let at = format!("spec.versions[{i}]");
            let vname = str_at(v, "/name");
            if !is_dns1123_label(vname) {
                causes.push(FieldCause::invalid(
                    format!("{at}.name"),
                    vname,
                    skiff_common::names::LABEL_MSG,
                ));
            }
            let mut bad = Vec::new();
            if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                super::custom::bad_patterns(
                    s,
                    &format!("{at}.schema.openAPIV3Schema"),
                    &mut bad,
                    0,
                );
            }
            for (field, why) in bad {
                causes.push(FieldCause::invalid(
                    field,
                    "",
                    &format!("must be a valid regular expression: {why}"),
                ));
            }
            match v.pointer("/schema/openAPIV3Schema") {
                None => causes.push(FieldCause::required(format!("{at}.schema.openAPIV3Schema"))),
                Some(s) if str_at(s, "/type") != "object" => {
                    causes.push(FieldCause::required_because(
                        format!("{at}.schema.openAPIV3Schema.type"),
                        "must not be empty at the root",
                    ))
                }
                Some(_) => {}
            }
            for (j, c) in elements(v.get("additionalPrinterColumns")) {
                for f in ["name", "type", "jsonPath"] {
                    if c.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                        causes.push(FieldCause::required(format!(
                            "{at}.additionalPrinterColumns[{j}].{f}"
                        )));
                    }
                }
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        for (p, f) in [
            ("/spec/group", "spec.group"),
            ("/spec/scope", "spec.scope"),
            ("/spec/names/plural", "spec.names.plural"),
        ] {
            super::immutable(old, new, p, f, causes);
        }
    }

    fn columns(&self) -> Vec<Value> {
        super::print::created_at_columns()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        super::print::created_at_cells(obj, &row.name)
    }

    fn defines_types(&self) -> bool {
        true
    }
}

/// The status the server gives a CRD it accepted: its names, established, the stored version.
fn status(obj: &Value) -> Value {
    let now = crate::api::registry::rules::now_rfc3339();
    let stored: Vec<Value> = elements(obj.pointer("/spec/versions"))
        .filter(|(_, v)| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|(_, v)| json!(str_at(v, "/name")))
        .collect();
    json!({
        "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}
