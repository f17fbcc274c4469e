//! Custom resources: the strategy and typed form of a kind a CustomResourceDefinition defines,
//! made from the CRD's version (its structural schema, printer columns, subresources).
//! Validation by the schema (types, required, enum, pattern, bounds, lengths, sizes,
//! `nullable`, `x-kubernetes-int-or-string`), defaulting (`default`), pruning of unknown fields
//! (unless `x-kubernetes-preserve-unknown-fields`), the status subresource, and the
//! `additionalPrinterColumns` in `kubectl get`. Pure code.

use serde_json::{json, Value};

use super::print::{age_col, col, name_col};
use super::{Row, Strategy};
use crate::api::error::FieldCause;
use crate::api::schema::{FieldPath, Schema, Seg};

/// One of `additionalPrinterColumns`.
#[derive(Clone, Debug)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: u8,
    pub json_path: String,
}

/// The strategy of one version of a custom resource.
pub(crate) struct Custom {
    /// `openAPIV3Schema`.
    pub schema: Value,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
    /// The `status` subresource is enabled.
    pub status: bool,
}

impl Strategy for Custom {
    /// With a status subresource, a new object's status is the server's (none).
    fn initial_status(&self) -> Option<Value> {
        self.status.then_some(Value::Null)
    }

    fn default(&self, obj: &mut Value) {
        apply_defaults(&self.schema, obj, 0);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let mut body = obj.clone();
        if let Some(m) = body.as_object_mut() {
            // Checked by the generic rules.
            for k in ["apiVersion", "kind", "metadata"] {
                m.remove(k);
            }
        }
        let mut schema = self.schema.clone();
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            for k in ["apiVersion", "kind", "metadata"] {
                props.remove(k);
            }
        }
        check(&schema, &body, "", causes, 0);
    }

    fn columns(&self) -> Vec<Value> {
        let mut out = vec![name_col()];
        let mut age_added = false;
        for c in &self.columns {
            if c.json_path == ".metadata.creationTimestamp" {
                out.push(age_col());
                age_added = true;
                continue;
            }
            let mut v = col(&c.name, &c.ty, c.priority, &c.description);
            v["format"] = json!(c.format);
            out.push(v);
        }
        if !age_added {
            out.push(age_col());
        }
        out
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let mut out = vec![json!(row.name)];
        let mut age_added = false;
        for c in &self.columns {
            if c.json_path == ".metadata.creationTimestamp" {
                out.push(json!(row.age));
                age_added = true;
                continue;
            }
            let found = json_path(obj, &c.json_path);
            out.push(match (found, c.ty.as_str()) {
                (Some(v), "date") => json!(super::print::age_of(Some(&v), row.now)),
                (Some(Value::String(s)), _) => json!(s),
                (Some(v @ (Value::Number(_) | Value::Bool(_))), _) => v,
                (Some(v), _) if !v.is_null() => json!(v.to_string()),
                _ => json!("<none>"),
            });
        }
        if !age_added {
            out.push(json!(row.age));
        }
        out
    }
}

/// The value at a printer column's JSONPath: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
pub(crate) fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let mut cur = obj.clone();
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?.clone();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (key, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|e| e.get(key.trim()).and_then(Value::as_str) == Some(want))?
                    .clone();
            } else {
                cur = cur.get(inner.parse::<usize>().ok()?)?.clone();
            }
        } else {
            return None;
        }
    }
    Some(cur)
}

/// How a custom kind's schema merges the list `field` at `path`: `x-kubernetes-list-type`
/// `map` by its (first) `x-kubernetes-list-map-keys`, `set` as a set, otherwise replaced;
/// None when the path is not in the schema.
pub(crate) fn list_rule(
    schema: &Value,
    path: &[String],
    field: &str,
) -> Option<crate::api::protobuf::Merge> {
    use crate::api::protobuf::Merge;
    let mut s = schema;
    for step in path
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(field))
    {
        // A list's element schema is where its items' fields are.
        if s.get("type").and_then(Value::as_str) == Some("array") {
            s = s.get("items")?;
        }
        s = s.get("properties")?.get(step)?;
    }
    Some(
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => Merge::Key(
                s.pointer("/x-kubernetes-list-map-keys/0")
                    .and_then(Value::as_str)?
                    .to_string(),
            ),
            Some("set") => Merge::Set,
            _ => Merge::Replace,
        },
    )
}

/// Deeper than this, a schema or an object is not walked (a hostile CRD cannot recurse
/// without bound).
const MAX_DEPTH: usize = 64;

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Fill in `default`s of properties that are absent, through objects and arrays.
fn apply_defaults(schema: &Value, v: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    if let (Some(props), Some(m)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object_mut(),
    ) {
        for (k, s) in props {
            if !m.contains_key(k) {
                if let Some(d) = s.get("default") {
                    m.insert(k.clone(), d.clone());
                }
            }
            if let Some(child) = m.get_mut(k) {
                apply_defaults(s, child, depth + 1);
            }
        }
    }
    if let (Some(extra), Some(m)) = (
        schema.get("additionalProperties").filter(|a| a.is_object()),
        v.as_object_mut(),
    ) {
        for child in m.values_mut() {
            apply_defaults(extra, child, depth + 1);
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array_mut()) {
        for child in a {
            apply_defaults(items, child, depth + 1);
        }
    }
}

fn field(at: &str, k: &str) -> String {
    if at.is_empty() {
        k.to_string()
    } else {
        format!("{at}.{k}")
    }
}

/// Why `pattern` cannot be used (not a regular expression, or one larger than the bound), if
/// it cannot.
pub(crate) fn bad_pattern(pattern: &str) -> Option<String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .err()
        .map(|e| e.to_string())
}

/// Each `pattern` of a schema that cannot be used, with its place (`properties.spec...`).
pub(crate) fn bad_patterns(
    schema: &Value,
    at: &str,
    out: &mut Vec<(String, String)>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        out.push((at.to_string(), "the schema is nested too deeply".into()));
        return;
    }
    let Some(m) = schema.as_object() else {
        return;
    };
    if let Some(why) = m
        .get("pattern")
        .and_then(Value::as_str)
        .and_then(bad_pattern)
    {
        out.push((format!("{at}.pattern"), why));
    }
    for (k, child) in m {
        match k.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                for (name, s) in child.as_object().into_iter().flatten() {
                    bad_patterns(s, &format!("{at}.{k}[{name}]"), out, depth + 1);
                }
            }
            "items" | "additionalProperties" | "not" => {
                bad_patterns(child, &format!("{at}.{k}"), out, depth + 1)
            }
            "allOf" | "anyOf" | "oneOf" => {
                for (i, s) in child.as_array().into_iter().flatten().enumerate() {
                    bad_patterns(s, &format!("{at}.{k}[{i}]"), out, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Does `text` match `pattern`? None when the pattern does not compile within bounds (a CRD
/// with such a pattern is refused, so only a CRD stored before that check has one). Compiled
/// patterns are kept (a bounded number), so a pattern is compiled once, not per request.
fn matches(pattern: &str, text: &str) -> Option<bool> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().ok()?;
    if !c.contains_key(pattern) {
        if c.len() >= 1024 {
            c.clear();
        }
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .ok();
        c.insert(pattern.to_string(), re);
    }
    c.get(pattern)?.as_ref().map(|re| re.is_match(text))
}

/// Validate `v` at `at` against `schema`.
fn check(schema: &Value, v: &Value, at: &str, causes: &mut Vec<FieldCause>, depth: usize) {
    if depth > MAX_DEPTH {
        causes.push(FieldCause::invalid(at, "", "nested too deeply"));
        return;
    }
    let shown = || match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = |k: &str| schema.get(k);
    if v.is_null() {
        if s("nullable").and_then(Value::as_bool) != Some(true) && s("type").is_some() {
            causes.push(FieldCause::invalid(
                at,
                "null",
                &format!(
                    "must be of type {}",
                    s("type").and_then(Value::as_str).unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let int_or_string = s("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(want) = s("type").and_then(Value::as_str) {
        let have = type_of(v);
        let ok = have == want
            || (want == "number" && have == "integer")
            || (int_or_string && matches!(have, "integer" | "string"));
        if !ok {
            causes.push(FieldCause {
                reason: "FieldValueTypeInvalid",
                field: at.to_string(),
                message: format!(
                    "Invalid value: \"{have}\": {at} in body must be of type {want}: \"{have}\""
                ),
            });
            return;
        }
    }
    if let Some(options) = s("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            causes.push(FieldCause {
                reason: "FieldValueNotSupported",
                field: at.to_string(),
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    v,
                    list.join(", ")
                ),
            });
        }
    }
    match v {
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(max) = s("maxLength").and_then(Value::as_u64).filter(|m| len > *m) {
                causes.push(FieldCause {
                    reason: "FieldValueTooLong",
                    field: at.to_string(),
                    message: format!("Too long: may not be more than {max} bytes"),
                });
            }
            if let Some(min) = s("minLength").and_then(Value::as_u64).filter(|m| len < *m) {
                causes.push(FieldCause::invalid(
                    at,
                    text,
                    &format!("{at} in body should be at least {min} chars long"),
                ));
            }
            if let Some(p) = s("pattern").and_then(Value::as_str) {
                if matches(p, text) == Some(false) {
                    causes.push(FieldCause::invalid(
                        at,
                        text,
                        &format!("{at} in body should match '{p}'"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl = |k: &str| s(k).and_then(Value::as_bool) == Some(true);
            if let Some(min) = s("minimum").and_then(Value::as_f64) {
                if x < min || (excl("exclusiveMinimum") && x == min) {
                    let rel = if excl("exclusiveMinimum") {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    causes.push(FieldCause::invalid(
                        at,
                        &shown(),
                        &format!("{at} in body should be {rel} {min}"),
                    ));
                }
            }
            if let Some(max) = s("maximum").and_then(Value::as_f64) {
                if x > max || (excl("exclusiveMaximum") && x == max) {
                    let rel = if excl("exclusiveMaximum") {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    causes.push(FieldCause::invalid(
                        at,
                        &shown(),
                        &format!("{at} in body should be {rel} {max}"),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = s("maxItems")
                .and_then(Value::as_u64)
                .filter(|m| items.len() as u64 > *m)
            {
                causes.push(FieldCause {
                    reason: "FieldValueTooMany",
                    field: at.to_string(),
                    message: format!("Too many: {}: must have at most {max} items", items.len()),
                });
            }
            if let Some(min) = s("minItems")
                .and_then(Value::as_u64)
                .filter(|m| (items.len() as u64) < *m)
            {
                causes.push(FieldCause::invalid(
                    at,
                    &shown(),
                    &format!("{at} in body should have at least {min} items"),
                ));
            }
            if let Some(item_schema) = s("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{at}[{i}]"), causes, depth + 1);
                }
            }
        }
        Value::Object(m) => {
            for r in s("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(k) = r.as_str() {
                    if !m.contains_key(k) {
                        causes.push(FieldCause::required(field(at, k)));
                    }
                }
            }
            if let Some(max) = s("maxProperties")
                .and_then(Value::as_u64)
                .filter(|x| m.len() as u64 > *x)
            {
                causes.push(FieldCause::invalid(
                    at,
                    "",
                    &format!("{at} in body should have at most {max} properties"),
                ));
            }
            let props = s("properties").and_then(Value::as_object);
            let extra = s("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(cs), _) => check(cs, child, &field(at, k), causes, depth + 1),
                    (None, Some(es)) => check(es, child, &field(at, k), causes, depth + 1),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The typed form of a custom resource: its schema, for pruning and OpenAPI.
pub(crate) struct CustomSchema {
    /// The definition name (`com.example.stable.v1.CronTab`).
    pub name: String,
    /// `openAPIV3Schema`, with the group/version/kind tag.
    pub schema: Value,
}

impl Schema for CustomSchema {
    fn ignored(&self, v: &Value) -> Result<Vec<FieldPath>, String> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        unknown(&self.schema, v, &mut path, &mut out, 0, true);
        Ok(out)
    }

    fn register(&self, _generator: &mut schemars::SchemaGenerator) -> String {
        self.name.clone()
    }

    fn raw(&self) -> Option<(String, Value)> {
        Some((self.name.clone(), self.schema.clone()))
    }
}

/// The fields of `v` that `schema` does not know (pruning), as paths.
fn unknown(
    schema: &Value,
    v: &Value,
    path: &mut Vec<Seg<'static>>,
    out: &mut Vec<FieldPath>,
    depth: usize,
    root: bool,
) {
    if depth > MAX_DEPTH
        || schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true)
    {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties");
            for (k, child) in m {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                path.push(Seg::Key(k.clone().into()));
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(cs), _) => unknown(cs, child, path, out, depth + 1, false),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(es)) if es.is_object() => {
                        unknown(es, child, path, out, depth + 1, false)
                    }
                    _ => out.push(FieldPath::new(path.clone())),
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    unknown(is, item, path, out, depth + 1, false);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontab() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "image": {"type": "string"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn schema_validation_table() {
        let strategy = Custom {
            schema: crontab(),
            columns: vec![],
            status: true,
        };
        let cases = vec![
            (
                json!({"spec": {"cronSpec": "* * * * */5", "image": "x"}}),
                vec![],
            ),
            (json!({"spec": {"image": "x"}}), vec!["spec.cronSpec"]),
            (json!({"spec": {"cronSpec": "nope"}}), vec!["spec.cronSpec"]),
            (
                json!({"spec": {"cronSpec": "* * * * *", "replicas": 11, "mode": "c"}}),
                vec!["spec.mode", "spec.replicas"],
            ),
            (
                json!({"spec": {"cronSpec": "* * * * *", "replicas": "3"}}),
                vec!["spec.replicas"],
            ),
            (
                json!({"spec": {"cronSpec": "* * * * *", "tags": ["a", "b", "c"], "labels": {"k": 1}}}),
                vec!["spec.labels.k", "spec.tags"],
            ),
        ];
        for (obj, want) in cases {
            let mut causes = Vec::new();
            strategy.validate(&obj, &mut causes);
            let got: Vec<String> = causes.into_iter().map(|c| c.field).collect();
            assert_eq!(got, want, "{obj}");
        }
    }

    #[test]
    fn defaults_and_pruning() {
        let strategy = Custom {
            schema: crontab(),
            columns: vec![],
            status: false,
        };
        let mut obj = json!({"spec": {"cronSpec": "* * * * *"}});
        strategy.default(&mut obj);
        assert_eq!(obj["spec"]["replicas"], 1);
        let schema = CustomSchema {
            name: "x".into(),
            schema: crontab(),
        };
        let body = json!({"apiVersion": "v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"cronSpec": "x", "colour": "red", "free": {"anything": 1}, "labels": {"a": "b"}}, "extra": 1});
        let unknown: Vec<String> = schema
            .ignored(&body)
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(unknown, vec!["extra", "spec.colour"]);
    }

    #[test]
    fn list_rules_come_from_the_schema() {
        use crate::api::protobuf::Merge;
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "endpoints": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port"],
                "items": {"type": "object", "properties": {"tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}},
            "hosts": {"type": "array", "items": {"type": "string"}}}}}});
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list_rule(&schema, &path(&["spec"]), "endpoints"),
            Some(Merge::Key("port".into()))
        );
        assert_eq!(
            list_rule(&schema, &path(&["spec", "endpoints"]), "tags"),
            Some(Merge::Set)
        );
        assert_eq!(
            list_rule(&schema, &path(&["spec"]), "hosts"),
            Some(Merge::Replace)
        );
        assert_eq!(list_rule(&schema, &path(&["spec"]), "missing"), None);
    }

    #[test]
    fn printer_column_paths() {
        let obj = json!({"spec": {"replicas": 3, "list": [{"a": 1}]},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&obj, ".spec.replicas"), Some(json!(3)));
        assert_eq!(json_path(&obj, ".spec.list[0].a"), Some(json!(1)));
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(json_path(&obj, ".spec.missing"), None);
    }
}
