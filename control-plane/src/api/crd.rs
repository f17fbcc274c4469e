//! The kinds CustomResourceDefinitions define: made from the stored CRDs (each served version a
//! resource type with a [`Custom`] strategy and a [`CustomSchema`]) and put in the resource
//! table ([`crate::resources::set_custom`]) after every CRD write and at start-up, so a new
//! CRD's resources are served as soon as the write is answered. Every version shares the
//! storage of the stored version (conversion `None`: only `apiVersion` differs).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::registry::{list_matching, Filter, Query};
use super::strategy::custom::{Custom, CustomSchema, PrinterColumn};
use super::strategy::str_at;
use super::validation::elements;
use super::AppState;
use crate::resources::{self, ResourceType};

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(v: Option<&Value>) -> &'static [&'static str] {
    let items: Vec<&'static str> = elements(v)
        .filter_map(|(_, x)| x.as_str())
        .map(leak)
        .collect();
    Box::leak(items.into_boxed_slice())
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, other
/// names last by name.
fn priority(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (stage, rank) in [("beta", 1u8), ("alpha", 2u8)] {
            if let Some(n) = tail.strip_prefix(stage) {
                return Some((rank, -major, -n.parse::<i64>().ok()?));
            }
        }
        None
    };
    match parse() {
        Some((r, a, b)) => (r, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// Interned types: an unchanged CRD version keeps its type.
fn intern(key: String, make: impl FnOnce() -> ResourceType) -> &'static ResourceType {
    static TYPES: OnceLock<Mutex<HashMap<String, &'static ResourceType>>> = OnceLock::new();
    let types = TYPES.get_or_init(Default::default);
    let Ok(mut t) = types.lock() else {
        return Box::leak(Box::new(make()));
    };
    t.entry(key).or_insert_with(|| Box::leak(Box::new(make())))
}

/// The resource types one CRD defines, preferred version first.
fn types_of(crd: &Value) -> Vec<&'static ResourceType> {
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = str_at(&spec, "/group");
    let kind = str_at(&spec, "/names/kind");
    let plural = str_at(&spec, "/names/plural");
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return Vec::new();
    }
    let storage_key = format!("{group}/{plural}");
    let mut versions: Vec<&Value> = elements(spec.get("versions"))
        .map(|(_, v)| v)
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .collect();
    versions.sort_by_key(|v| priority(str_at(v, "/name")));
    let mut out = Vec::new();
    for v in versions {
        let version = str_at(v, "/name");
        let key = json!([spec.get("group"), spec.get("names"), spec.get("scope"), v]).to_string();
        let stored = v.get("storage").and_then(Value::as_bool) == Some(true);
        let rt = intern(key, || {
            let mut schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            let reversed: Vec<&str> = group.split('.').rev().collect();
            let name = format!("{}.{version}.{kind}", reversed.join("."));
            if let Some(m) = schema.as_object_mut() {
                m.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{"group": group, "version": version, "kind": kind}]),
                );
            }
            let status = v.pointer("/subresources/status").is_some();
            let scale = v.pointer("/subresources/scale").is_some();
            let mut subs = Vec::new();
            if status {
                subs.push("status");
            }
            if scale {
                subs.push("scale");
            }
            let columns = elements(v.get("additionalPrinterColumns"))
                .map(|(_, c)| PrinterColumn {
                    name: str_at(c, "/name").to_string(),
                    ty: str_at(c, "/type").to_string(),
                    format: str_at(c, "/format").to_string(),
                    description: str_at(c, "/description").to_string(),
                    priority: c
                        .get("priority")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .min(255) as u8,
                    json_path: str_at(c, "/jsonPath").to_string(),
                })
                .collect();
            ResourceType {
                group: leak(group),
                version: leak(version),
                kind: leak(kind),
                plural: leak(plural),
                singular: leak(str_at(&spec, "/names/singular")),
                namespaced: str_at(&spec, "/scope") == "Namespaced",
                short_names: leak_list(spec.pointer("/names/shortNames")),
                categories: leak_list(spec.pointer("/names/categories")),
                subresources: Box::leak(subs.into_boxed_slice()),
                field_labels: &[],
                storage: (!stored).then(|| leak(&storage_key)),
                strategy: Box::leak(Box::new(Custom {
                    schema: schema.clone(),
                    columns,
                    status,
                })),
                schema: Box::leak(Box::new(CustomSchema { name, schema })),
            }
        });
        out.push(rt);
    }
    out
}

/// Serve exactly the kinds the stored CRDs define (those being deleted too, until their
/// objects are gone).
pub(crate) async fn sync(state: &AppState) -> ApiResult<()> {
    let rt = resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .ok_or_else(|| ApiError::Internal("customresourcedefinitions not registered".into()))?;
    let all = Filter::from_query(rt, &Query::new())?;
    let (crds, _) = list_matching(state, rt, None, &all).await?;
    let types: Vec<&'static ResourceType> = crds.iter().flat_map(types_of).collect();
    resources::set_custom(types);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_as_kubernetes_orders_them() {
        let mut v = vec!["v1beta1", "v1", "v2alpha1", "v2", "foo", "v1alpha1", "v10"];
        v.sort_by_key(|x| priority(x));
        assert_eq!(
            v,
            vec!["v10", "v2", "v1", "v1beta1", "v2alpha1", "v1alpha1", "foo"]
        );
    }
}
