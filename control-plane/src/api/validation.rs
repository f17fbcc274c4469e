//! Validation that every kind shares, with Kubernetes' field paths and messages: metadata
//! (label keys and values, annotation keys and their total size), a pod spec's volumes and
//! mounts (volume names are DNS-1123 labels, item paths and `subPath`s relative without `..`,
//! keys valid config keys) and container resources (quantities that parse, non-negative,
//! requests within limits). Pure functions; the names and quantity rules themselves live in
//! `skiff_common` so the node applies the same ones.

use serde_json::Value;
use skiff_common::names;
use skiff_common::quantity;

use super::error::FieldCause;

/// `metadata.labels` and `metadata.annotations`.
pub(super) fn validate_metadata(obj: &Value, causes: &mut Vec<FieldCause>) {
    validate_labels(obj.pointer("/metadata/labels"), "metadata.labels", causes);
    if let Some(a) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0usize;
        for (k, v) in a {
            for e in names::qualified_name_errors(&k.to_ascii_lowercase()) {
                causes.push(FieldCause::invalid("metadata.annotations", k, &e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > names::TOTAL_ANNOTATION_SIZE {
            causes.push(FieldCause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: format!(
                    "Too long: must have at most {} bytes",
                    names::TOTAL_ANNOTATION_SIZE
                ),
            });
        }
    }
}

/// A label map at `field` (`metadata.labels`, a pod template's labels).
pub(super) fn validate_labels(labels: Option<&Value>, field: &str, causes: &mut Vec<FieldCause>) {
    for (k, v) in labels.and_then(Value::as_object).into_iter().flatten() {
        for e in names::qualified_name_errors(k) {
            causes.push(FieldCause::invalid(field, k, &e));
        }
        let v = v.as_str().unwrap_or_default();
        for e in names::label_value_errors(v) {
            causes.push(FieldCause::invalid(field, v, &e));
        }
    }
}

/// The keys of a ConfigMap's or Secret's `data`/`binaryData` (they become file names).
pub(super) fn validate_config_key(field: &str, key: &str, causes: &mut Vec<FieldCause>) {
    for e in names::config_key_errors(key) {
        causes.push(FieldCause::invalid(format!("{field}[{key}]"), key, &e));
    }
}

/// The elements of a JSON array field, numbered (none when it is absent or not an array).
pub(crate) fn elements(v: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

fn local_path(field: String, p: &str, causes: &mut Vec<FieldCause>) {
    for e in names::local_descending_path_errors(p) {
        causes.push(FieldCause::invalid(field.clone(), p, &e));
    }
}

fn key_to_paths(items: Option<&Value>, at: &str, causes: &mut Vec<FieldCause>) {
    for (j, it) in elements(items) {
        let item_at = format!("{at}.items[{j}]");
        match it.get("path").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{item_at}.path"))),
            Some(p) => local_path(format!("{item_at}.path"), p, causes),
        }
        if let Some(k) = it.get("key").and_then(Value::as_str) {
            for e in names::config_key_errors(k) {
                causes.push(FieldCause::invalid(format!("{item_at}.key"), k, &e));
            }
        }
    }
}

pub(crate) fn quantity_field(
    field: String,
    v: &Value,
    causes: &mut Vec<FieldCause>,
) -> Option<i64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    match quantity::Quantity::parse(&s) {
        Err(e) => {
            causes.push(FieldCause::invalid(field, &s, &e.to_string()));
            None
        }
        Ok(q) if q.is_negative() => {
            causes.push(FieldCause::invalid(
                field,
                &s,
                "must be greater than or equal to 0",
            ));
            None
        }
        Ok(q) => match q.scaled(3) {
            Some(milli) => Some(milli),
            None => {
                let e = quantity::QuantityError::TooLarge(s.clone());
                causes.push(FieldCause::invalid(field, &s, &e.to_string()));
                None
            }
        },
    }
}

/// Each quantity of a resource list (`{"storage": "1Gi", "cpu": "500m"}`) at `field` parses
/// and is not negative.
pub(crate) fn quantities(list: Option<&Value>, field: &str, causes: &mut Vec<FieldCause>) {
    for (name, q) in list.and_then(Value::as_object).into_iter().flatten() {
        quantity_field(format!("{field}[{name}]"), q, causes);
    }
}

/// The names of a pod spec's volumes, after checking them (`{prefix}.volumes`).
pub(super) fn validate_volumes<'a>(
    spec: &'a Value,
    prefix: &str,
    causes: &mut Vec<FieldCause>,
) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for (i, v) in elements(spec.get("volumes")) {
        let at = format!("{prefix}.volumes[{i}]");
        match v.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{at}.name"))),
            Some(n) if !names::is_dns1123_label(n) => causes.push(FieldCause::invalid(
                format!("{at}.name"),
                n,
                names::LABEL_MSG,
            )),
            Some(n) if seen.contains(&n) => {
                causes.push(FieldCause::duplicate(format!("{at}.name"), n))
            }
            Some(n) => seen.push(n),
        }
        for source in ["configMap", "secret", "downwardAPI"] {
            if let Some(s) = v.get(source) {
                key_to_paths(s.get("items"), &format!("{at}.{source}"), causes);
            }
        }
        for (j, src) in elements(v.pointer("/projected/sources")) {
            for source in ["configMap", "secret", "downwardAPI"] {
                if let Some(s) = src.get(source) {
                    key_to_paths(
                        s.get("items"),
                        &format!("{at}.projected.sources[{j}].{source}"),
                        causes,
                    );
                }
            }
        }
        if let Some(p) = v.pointer("/hostPath/path").and_then(Value::as_str) {
            if p.split('/').any(|part| part == "..") {
                causes.push(FieldCause::invalid(
                    format!("{at}.hostPath.path"),
                    p,
                    "must not contain '..'",
                ));
            }
        }
        if let Some(q) = v.pointer("/emptyDir/sizeLimit") {
            quantity_field(format!("{at}.emptyDir.sizeLimit"), q, causes);
        }
        if let Some(c) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Value::as_str)
        {
            if !names::is_dns1123_subdomain(c) {
                causes.push(FieldCause::invalid(
                    format!("{at}.persistentVolumeClaim.claimName"),
                    c,
                    names::SUBDOMAIN_MSG,
                ));
            }
        }
    }
    seen
}

/// One container's `volumeMounts` against the pod's volumes, and its `resources`.
pub(super) fn validate_container(
    c: &Value,
    at: &str,
    volumes: &[&str],
    causes: &mut Vec<FieldCause>,
) {
    for (j, m) in elements(c.get("volumeMounts")) {
        let mat = format!("{at}.volumeMounts[{j}]");
        match m.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{mat}.name"))),
            Some(n) if !volumes.contains(&n) => causes.push(FieldCause {
                reason: "FieldValueNotFound",
                field: format!("{mat}.name"),
                message: format!("Not found: {n:?}"),
            }),
            Some(_) => {}
        }
        match m.get("mountPath").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{mat}.mountPath"))),
            Some(_) => {}
        }
        let sub = m.get("subPath").and_then(Value::as_str).unwrap_or("");
        let expr = m.get("subPathExpr").and_then(Value::as_str).unwrap_or("");
        if !sub.is_empty() && !expr.is_empty() {
            causes.push(FieldCause::invalid(
                format!("{mat}.subPathExpr"),
                expr,
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
        if !sub.is_empty() {
            local_path(format!("{mat}.subPath"), sub, causes);
        }
        if !expr.is_empty() {
            local_path(format!("{mat}.subPathExpr"), expr, causes);
        }
    }
    for (j, e) in elements(c.get("env")) {
        match e.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(FieldCause::required(format!("{at}.env[{j}].name"))),
            Some(n) => {
                for m in names::env_var_name_errors(n) {
                    causes.push(FieldCause::invalid(format!("{at}.env[{j}].name"), n, &m));
                }
            }
        }
    }
    let mut limits = std::collections::BTreeMap::new();
    for which in ["limits", "requests"] {
        for (name, q) in c
            .pointer(&format!("/resources/{which}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let field = format!("{at}.resources.{which}[{name}]");
            let Some(milli) = quantity_field(field, q, causes) else {
                continue;
            };
            if which == "limits" {
                limits.insert(name.clone(), (milli, q.clone()));
            } else if let Some((limit, shown)) = limits.get(name) {
                if milli > *limit {
                    let shown = shown
                        .as_str()
                        .map_or_else(|| shown.to_string(), str::to_string);
                    let req = q.as_str().map_or_else(|| q.to_string(), str::to_string);
                    causes.push(FieldCause::invalid(
                        format!("{at}.resources.requests"),
                        &req,
                        &format!("must be less than or equal to {name} limit of {shown}"),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(f: impl Fn(&mut Vec<FieldCause>), want: &[&str]) {
        let mut causes = Vec::new();
        f(&mut causes);
        let got: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn metadata_table() {
        let big = "x".repeat(300 * 1024);
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"metadata": {"labels": {"app": "web", "app.kubernetes.io/name": "x_y.z"}}}), vec![]),
            (json!({"metadata": {"labels": {"bad key": "v"}}}), vec!["metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]),
            (json!({"metadata": {"labels": {"k": "-v"}}}), vec!["metadata.labels: Invalid value: \"-v\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]),
            (json!({"metadata": {"annotations": {"a": big}}}), vec!["metadata.annotations: Too long: must have at most 262144 bytes"]),
            (json!({"metadata": {"annotations": {"Example.COM/Key": "any value at all"}}}), vec![]),
        ];
        for (obj, want) in cases {
            check(|c| validate_metadata(&obj, c), &want);
        }
    }

    #[test]
    fn volumes_and_containers_table() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "x/y"}],
                    "resources": {"limits": {"memory": "64Mi", "cpu": "1"}, "requests": {"cpu": "500m"}}}]}), vec![]),
            (json!({"volumes": [{"name": "/etc", "emptyDir": {}}], "containers": [{"name": "c"}]}),
                vec!["spec.volumes[0].name: Invalid value: \"/etc\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]),
            (json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}], "containers": [{"name": "c"}]}),
                vec!["spec.volumes[1].name: Duplicate value: \"a\""]),
            (json!({"volumes": [{"name": "c", "configMap": {"name": "x", "items": [{"key": "..k", "path": "../p"}]}}], "containers": [{"name": "c"}]}),
                vec!["spec.volumes[0].configMap.items[0].path: Invalid value: \"../p\": must not contain '..'",
                     "spec.volumes[0].configMap.items[0].key: Invalid value: \"..k\": must not start with '..'"]),
            (json!({"volumes": [{"name": "d", "emptyDir": {"sizeLimit": "lots"}}], "containers": [{"name": "c",
                    "volumeMounts": [{"name": "nope", "mountPath": "/x", "subPath": "/abs"}, {"name": "d", "mountPath": "/y", "subPathExpr": "$(A)/../.."}]}]}),
                vec!["spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                     "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
                     "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"/abs\": must be a relative path",
                     "spec.containers[0].volumeMounts[1].subPathExpr: Invalid value: \"$(A)/../..\": must not contain '..'"]),
            (json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "lots", "cpu": "-1"}}}]}),
                vec!["spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
                     "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"]),
            (json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "0.5.5Gi"}, "requests": {"memory": "1e400"}}}]}),
                vec!["spec.containers[0].resources.limits[memory]: Invalid value: \"0.5.5Gi\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                     "spec.containers[0].resources.requests[memory]: Invalid value: \"1e400\": quantity \"1e400\" is too large"]),
            (json!({"containers": [{"name": "c", "env": [{"name": "OK", "value": "1"}, {"name": "A=B", "value": "x"}]}]}),
                vec!["spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='"]),
            (json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}]}),
                vec!["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]),
        ];
        for (spec, want) in cases {
            check(
                |causes| {
                    let vols = validate_volumes(&spec, "spec", causes);
                    for (i, c) in spec["containers"].as_array().unwrap().iter().enumerate() {
                        validate_container(c, &format!("spec.containers[{i}]"), &vols, causes);
                    }
                },
                &want,
            );
        }
    }
}
