//! The k8s-openapi type behind each served kind: strict decoding (one decoding into the typed
//! form finds unknown and mistyped fields), duplicate-field detection on the raw body, and
//! the OpenAPI v2/v3 documents generated from the types' real schemas (what `kubectl explain`
//! and kubectl's validation read). Pure code.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use schemars::generate::SchemaSettings;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

use super::schema::{spell, FieldPath, Schema, Seg, Typed};
use crate::resources::{self, ResourceType};

/// The `autoscaling/v1` `Scale` of the `scale` subresources.
static SCALE: Typed<k8s_openapi::api::autoscaling::v1::Scale> = Typed::NEW;

/// Decode `obj` through its typed form: `Err` when a field has the wrong type, else the paths
/// of fields the type does not know (`spec.containers[0].colour`), except those whose value is
/// null or empty. One typed decoding, which records what it skips; nothing is encoded again.
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Result<Vec<FieldPath>, String> {
    Ok(rt
        .schema
        .ignored(obj)?
        .into_iter()
        .filter(|path| {
            !path.value_in(obj).is_none_or(|v| {
                v.is_null()
                    || v.as_object().is_some_and(Map::is_empty)
                    || v.as_array().is_some_and(Vec::is_empty)
            })
        })
        .collect())
}

/// The paths of keys that appear twice in one JSON object of `body` (`spec.replicas`), which a
/// `serde_json::Value` would silently collapse. Empty for bodies that are not JSON. Keys are
/// borrowed from the body where they have no escapes, and a path is spelled out only for a
/// duplicate.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut path = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = DupSeed {
        path: &mut path,
        found: &mut found,
    };
    if seed.deserialize(&mut de).is_err() {
        return Vec::new();
    }
    found.into_iter().collect()
}

struct DupSeed<'a, 'de> {
    path: &'a mut Vec<Seg<'de>>,
    found: &'a mut BTreeSet<String>,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Up to this many keys, an object's keys are checked by a linear search.
const SMALL_OBJECT: usize = 16;

/// An object's key, borrowed from the body when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_, 'de> {
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
        loop {
            self.path.push(Seg::Index(i));
            let more = seq
                .next_element_seed(DupSeed {
                    path: &mut *self.path,
                    found: &mut *self.found,
                })?
                .is_some();
            self.path.pop();
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Most objects are small, where a linear search beats a set; large ones get a set.
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let twice = if many.is_empty() && keys.len() < SMALL_OBJECT {
                let seen = keys.contains(&k);
                if !seen {
                    keys.push(k.clone());
                }
                seen
            } else {
                many.extend(keys.drain(..));
                !many.insert(k.clone())
            };
            self.path.push(Seg::Key(k));
            if twice {
                self.found.insert(spell(self.path));
            }
            map.next_value_seed(DupSeed {
                path: &mut *self.path,
                found: &mut *self.found,
            })?;
            self.path.pop();
        }
        Ok(())
    }
}

fn gv_kinds(group: &str, version: &str) -> Vec<&'static ResourceType> {
    resources::all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

/// Schemas of the kinds of one group/version (plus what they reference), each kind tagged with
/// `x-kubernetes-group-version-kind`.
fn schemas(
    settings: SchemaSettings,
    kinds: &[&'static ResourceType],
    extra: &[&dyn Schema],
) -> Map<String, Value> {
    let mut generator = settings.into_generator();
    let mut tagged = Vec::new();
    for r in kinds {
        if r.schema.raw().is_some() {
            continue;
        }
        let name = r.schema.register(&mut generator);
        tagged.push((name, r.group, r.version, r.kind));
    }
    for schema in extra {
        schema.register(&mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for r in kinds {
        if let Some((name, schema)) = r.schema.raw() {
            defs.insert(name.clone(), schema);
            tagged.push((name, r.group, r.version, r.kind));
        }
    }
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
fn doc_hash() -> String {
    format!(
        "skiff-{}-{}",
        env!("CARGO_PKG_VERSION"),
        resources::generation()
    )
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
    let extra: &[&dyn Schema] = if kinds.iter().any(|r| r.subresources.contains(&"scale")) {
        &[&SCALE]
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
    let kinds: Vec<&'static ResourceType> = resources::all();
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/definitions".into();
    settings.meta_schema = None;
    let defs = schemas(settings, &kinds, &[&SCALE]);
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

/// The media type of the protobuf form of `/openapi/v2` (gnostic's `openapi.v2.Document`), as
/// kube-openapi answers it (clients ask with `...spec.v2@v1.0+protobuf`, which Go's media type
/// parser cannot read back).
pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` in the protobuf form kubectl asks for: a valid `openapi.v2.Document` with the
/// version and title and no definitions. kubectl then finds no schema for any kind: it
/// validates served kinds on the server (`fieldValidation`, from the v3 documents), lets a kind
/// the server does not serve through to its own `no matches for kind` message, and computes
/// strategic merge patches from its compiled-in types, which carry the merge keys.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
        let mut varint = |mut v: u64| loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        };
        varint(number << 3 | 2);
        varint(payload.len() as u64);
        out.extend_from_slice(payload);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, skiff_common::KUBE_GIT_VERSION.as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceType {
        resources::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn unknown_fields_table() {
        // (object, the unknown fields found; None: a field has the wrong type)
        let cases: Vec<(Value, Option<Vec<&str>>)> = vec![
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "bogus": 1},
                    "spec": {"containers": [{"name": "c", "image": "x", "colour": "red"}], "extra": {}}}),
                Some(vec!["metadata.bogus", "spec.containers[0].colour"]),
            ),
            // Null and empty unknown values are not reported.
            (
                json!({"metadata": {"name": "a", "x": null, "y": []},
                    "spec": {"containers": [{"name": "c"}, {"name": "d", "z": {}}]}}),
                Some(vec![]),
            ),
            // Inside optional fields, arrays of objects and maps of objects.
            (
                json!({"spec": {"containers": [{"name": "c"}, {"name": "d",
                    "resources": {"limits": {"cpu": "1"}, "colour": "blue"},
                    "ports": [{"containerPort": 80, "hostname": "h"}]}],
                    "nodeSelector": {"a": "b"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "why": "x"}]}}),
                Some(vec![
                    "spec.containers[1].ports[0].hostname",
                    "spec.containers[1].resources.colour",
                    "status.conditions[0].why",
                ]),
            ),
            // Labels and annotations are maps: any key is known.
            (
                json!({"metadata": {"labels": {"any": "x"}, "annotations": {"b/c": "d"}}}),
                Some(vec![]),
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
                    "spec": {"containers": "nope"}}),
                None,
            ),
            (json!({"spec": {"containers": [{"name": 7}]}}), None),
            // A key with a dot is one field.
            (json!({"metadata": {"a.b": 1}}), Some(vec!["metadata.a.b"])),
        ];
        for (obj, want) in cases {
            let got = unknown_fields(pods(), &obj).ok().map(|found| {
                let mut v: Vec<String> = found.iter().map(ToString::to_string).collect();
                v.sort();
                v
            });
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{obj}");
            // Removing what was found leaves nothing unknown.
            if let Ok(found) = unknown_fields(pods(), &obj) {
                let mut cleaned = obj.clone();
                found.iter().for_each(|f| f.remove_from(&mut cleaned));
                assert_eq!(unknown_fields(pods(), &cleaned), Ok(vec![]), "{obj}");
            }
        }
    }

    #[test]
    fn openapi_v2_protobuf_is_a_document_with_version_and_info() {
        let doc = openapi_v2_protobuf();
        // swagger = "2.0" (field 1), then info (field 2) holding title and version.
        assert_eq!(&doc[..5], &[0x0a, 3, b'2', b'.', b'0']);
        assert_eq!(doc[5], 0x12);
        assert_eq!(doc[6] as usize, doc.len() - 7);
        assert_eq!(&doc[7..19], b"\x0a\x0aKubernetes");
    }

    #[test]
    fn every_served_kind_decodes_through_its_typed_form() {
        for r in resources::RESOURCES {
            let obj =
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            assert_eq!(r.schema.ignored(&obj), Ok(vec![]), "{}", r.kind);
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
            // An escaped key is the same key.
            (r#"{"data": {"a\u0062": 1, "ab": 2}}"#, vec!["data.ab"]),
            (
                r#"{"x": [[{"k": 1}, {"k": 1, "k": 2}]]}"#,
                vec!["x[0][1].k"],
            ),
            ("not json", vec![]),
        ];
        for (body, want) in cases {
            assert_eq!(duplicate_fields(body.as_bytes()), want, "{body}");
        }
        // Past the small-object search: a duplicate of an early key found late, and twice.
        let mut big: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        big.push("\"k3\": 0".into());
        big.push("\"k99\": 0".into());
        let body = format!("{{\"data\": {{{}}}}}", big.join(", "));
        assert_eq!(
            duplicate_fields(body.as_bytes()),
            vec!["data.k3", "data.k99"]
        );
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
