//! The k8s-openapi type behind each served kind: strict decoding (a round trip through the
//! typed form finds unknown and mistyped fields), duplicate-field detection on the raw body, and
//! the OpenAPI v2/v3 documents generated from the types' real schemas (what `kubectl explain`
//! and kubectl's validation read). Pure code.

use std::collections::BTreeSet;
use std::fmt;

use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::resources::{self, ResourceType};

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

macro_rules! typed_kinds {
    ($($group:literal $kind:literal => $ty:ty),* $(,)?) => {
        /// Decode `v` as the typed form of `group`/`kind` and encode it again; None when the
        /// kind has no typed form.
        fn typed_roundtrip(group: &str, kind: &str, v: &Value) -> Option<Result<Value, String>> {
            match (group, kind) {
                $(($group, $kind) => Some(roundtrip::<$ty>(v)),)*
                _ => None,
            }
        }

        /// Register the schema of `group`/`kind` with `generator`; returns its definition name.
        fn register(group: &str, kind: &str, generator: &mut SchemaGenerator) -> Option<String> {
            match (group, kind) {
                $(($group, $kind) => {
                    generator.subschema_for::<$ty>();
                    Some(<$ty as schemars::JsonSchema>::schema_name().into_owned())
                })*
                _ => None,
            }
        }
    };
}

typed_kinds! {
    "" "Pod" => k8s_openapi::api::core::v1::Pod,
    "" "Namespace" => k8s_openapi::api::core::v1::Namespace,
    "" "Node" => k8s_openapi::api::core::v1::Node,
    "" "Service" => k8s_openapi::api::core::v1::Service,
    "" "Endpoints" => k8s_openapi::api::core::v1::Endpoints,
    "" "ConfigMap" => k8s_openapi::api::core::v1::ConfigMap,
    "" "Secret" => k8s_openapi::api::core::v1::Secret,
    "" "Event" => k8s_openapi::api::core::v1::Event,
    "" "ServiceAccount" => k8s_openapi::api::core::v1::ServiceAccount,
    "apps" "Deployment" => k8s_openapi::api::apps::v1::Deployment,
    "apps" "ReplicaSet" => k8s_openapi::api::apps::v1::ReplicaSet,
    "apps" "StatefulSet" => k8s_openapi::api::apps::v1::StatefulSet,
    "apps" "DaemonSet" => k8s_openapi::api::apps::v1::DaemonSet,
    "batch" "Job" => k8s_openapi::api::batch::v1::Job,
    "batch" "CronJob" => k8s_openapi::api::batch::v1::CronJob,
    "autoscaling" "HorizontalPodAutoscaler" => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
    "coordination.k8s.io" "Lease" => k8s_openapi::api::coordination::v1::Lease,
    "discovery.k8s.io" "EndpointSlice" => k8s_openapi::api::discovery::v1::EndpointSlice,
    "networking.k8s.io" "Ingress" => k8s_openapi::api::networking::v1::Ingress,
    "networking.k8s.io" "IngressClass" => k8s_openapi::api::networking::v1::IngressClass,
    "events.k8s.io" "Event" => k8s_openapi::api::events::v1::Event,
    "autoscaling" "Scale" => k8s_openapi::api::autoscaling::v1::Scale,
}

/// Decode `obj` through its typed form: `Err` when a field has the wrong type, else the paths
/// of fields the type does not know (`spec.containers[0].colour`).
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Result<Vec<String>, String> {
    let Some(back) = typed_roundtrip(rt.group, rt.kind, obj) else {
        return Ok(Vec::new());
    };
    let back = back?;
    let mut out = Vec::new();
    diff_keys(obj, &back, "", &mut out);
    Ok(out)
}

fn diff_keys(input: &Value, back: &Value, prefix: &str, out: &mut Vec<String>) {
    match (input, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match b.get(k) {
                    Some(bv) => diff_keys(v, bv, &path, out),
                    None if v.is_null() => {}
                    None if v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                diff_keys(x, y, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The paths of keys that appear twice in one JSON object of `body` (`spec.replicas`), which a
/// `serde_json::Value` would silently collapse. Empty for bodies that are not JSON.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = DupSeed {
        path: String::new(),
        found: &mut found,
    };
    if seed.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found.into_iter().collect()
}

struct DupSeed<'a> {
    path: String,
    found: &'a mut BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(DupSeed {
                path: format!("{}[{i}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = BTreeSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", self.path)
            };
            if !keys.insert(k) {
                self.found.insert(path.clone());
            }
            map.next_value_seed(DupSeed {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }
}

fn gv_kinds(group: &str, version: &str) -> Vec<&'static ResourceType> {
    resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// Schemas of the kinds of one group/version (plus what they reference), each kind tagged with
/// `x-kubernetes-group-version-kind`.
fn schemas(
    settings: SchemaSettings,
    kinds: &[&'static ResourceType],
    extra: &[(&str, &str)],
) -> Map<String, Value> {
    let mut generator = settings.into_generator();
    let mut tagged = Vec::new();
    for r in kinds {
        if let Some(name) = register(r.group, r.kind, &mut generator) {
            tagged.push((name, r.group, r.version, r.kind));
        }
    }
    for (g, k) in extra {
        register(g, k, &mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for (name, group, version, kind) in tagged {
        if let Some(Value::Object(s)) = defs.get_mut(&name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    defs
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    for (g, v) in resources::group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", doc_hash())}),
        );
    }
    json!({"paths": paths})
}

/// Changes whenever the served documents may change (the binary's version).
fn doc_hash() -> &'static str {
    concat!("skiff-", env!("CARGO_PKG_VERSION"))
}

fn operations(r: &ResourceType, schema_ref: &str) -> (String, Value) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let path = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let body = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}});
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
    ]);
    // The patch body's media types are not declared: kubectl then computes strategic merge
    // patches from its compiled-in types, which carry the merge keys.
    (
        path,
        json!({
            "get": {"operationId": format!("read{}", r.kind), "responses": body.clone(),
                "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk.clone()},
            "patch": {"operationId": format!("patch{}", r.kind), "parameters": params,
                "responses": body, "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk},
        }),
    )
}

/// `/openapi/v3/{api/v1|apis/g/v}`: the kinds' real schemas and their operations.
pub fn openapi_v3_gv(path: &str) -> Option<Value> {
    let (group, version) = match path
        .trim_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let kinds = gv_kinds(group, version);
    if kinds.is_empty() {
        return None;
    }
    let extra: &[(&str, &str)] = if kinds.iter().any(|r| r.subresources.contains(&"scale")) {
        &[("autoscaling", "Scale")]
    } else {
        &[]
    };
    let defs = schemas(SchemaSettings::openapi3(), &kinds, extra);
    let mut paths = Map::new();
    for r in &kinds {
        let Some(name) = defs_name(&defs, r) else {
            continue;
        };
        let (p, ops) = operations(r, &format!("#/components/schemas/{name}"));
        paths.insert(p, ops);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (skiff)", "version": skiff_common::KUBE_GIT_VERSION},
        "paths": paths,
        "components": {"schemas": defs},
    }))
}

fn defs_name(defs: &Map<String, Value>, r: &ResourceType) -> Option<String> {
    defs.iter().find_map(|(name, s)| {
        let gvk = s.get("x-kubernetes-group-version-kind")?.get(0)?;
        (gvk["group"] == r.group && gvk["version"] == r.version && gvk["kind"] == r.kind)
            .then(|| name.clone())
    })
}

/// `/openapi/v2` (Swagger 2.0 JSON) for every served kind.
pub fn openapi_v2() -> Value {
    let kinds: Vec<&'static ResourceType> = resources::RESOURCES.iter().collect();
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/definitions".into();
    settings.meta_schema = None;
    let defs = schemas(settings, &kinds, &[("autoscaling", "Scale")]);
    let mut paths = Map::new();
    for r in &kinds {
        let Some(name) = defs_name(&defs, r) else {
            continue;
        };
        let (p, mut ops) = operations(r, &format!("#/definitions/{name}"));
        for op in ["get", "patch"] {
            ops[op]["responses"] = json!({"200": {"description": "OK", "schema": {"$ref": format!("#/definitions/{name}")}}});
        }
        paths.insert(p, ops);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes (skiff)", "version": skiff_common::KUBE_GIT_VERSION},
        "paths": paths,
        "definitions": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceType {
        resources::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn unknown_fields_are_found() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "x", "colour": "red"}], "extra": {}}});
        let mut got = unknown_fields(pods(), &pod).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                "metadata.bogus".to_string(),
                "spec.containers[0].colour".to_string()
            ]
        );
        let wrong_type = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": "nope"}});
        assert!(unknown_fields(pods(), &wrong_type).is_err());
    }

    #[test]
    fn every_served_kind_is_typed() {
        for r in resources::RESOURCES {
            let obj =
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            assert!(
                typed_roundtrip(r.group, r.kind, &obj).is_some(),
                "{} has no typed form",
                r.kind
            );
        }
    }

    #[test]
    fn duplicate_fields_table() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (r#"{"a": 1, "b": 2}"#, vec![]),
            (r#"{"a": 1, "a": 2}"#, vec!["a"]),
            (
                r#"{"spec": {"replicas": 1, "replicas": 2}}"#,
                vec!["spec.replicas"],
            ),
            (
                r#"{"spec": {"containers": [{"name": "a", "name": "b"}]}}"#,
                vec!["spec.containers[0].name"],
            ),
            ("not json", vec![]),
        ];
        for (body, want) in cases {
            assert_eq!(duplicate_fields(body.as_bytes()), want, "{body}");
        }
    }

    #[test]
    fn openapi_v3_has_kinds_and_fieldvalidation() {
        let doc = openapi_v3_gv("/api/v1").unwrap();
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(
            doc["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"]["image"]
                .is_object()
        );
        let ops = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(ops["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let apps = openapi_v3_gv("apis/apps/v1").unwrap();
        assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
        assert!(openapi_v3_gv("apis/nope/v1").is_none());
        let v2 = openapi_v2();
        assert!(v2["definitions"]["io.k8s.api.batch.v1.Job"].is_object());
    }
}
