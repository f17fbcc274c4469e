//! Property tests for what the API does with untrusted bodies before any write: decoding (JSON,
//! YAML, protobuf), the duplicate- and unknown-field checks and validation never panic, and
//! answer every input with a value or an error. 256 cases each in CI;
//! `PROPTEST_CASES=100000 cargo test -p skiff-control-plane hostile_bodies` runs them longer.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::registry::rules;
use super::{protobuf, typed};
use crate::resources;

/// Arbitrary JSON, nested a few levels, with keys a pod spec uses (so validation goes deep).
fn json_value() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "metadata",
        "name",
        "labels",
        "annotations",
        "spec",
        "containers",
        "volumes",
        "image",
        "volumeMounts",
        "subPath",
        "resources",
        "limits",
        "memory",
        "cpu",
        "env",
        "items",
        "path",
        "key",
        "emptyDir",
        "sizeLimit",
        "configMap",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "../..", "/etc", "1e400", "lots", "-1", "..data", "a/b"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..5).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_answered(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = rules::decode_body(&bytes, true);
        let _ = typed::duplicate_fields(&bytes);
        let mut framed = b"k8s\0".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = protobuf::decode(&framed);
        let _ = protobuf::decode(&bytes);
    }

    #[test]
    fn arbitrary_objects_are_validated(spec in json_value(), meta in json_value()) {
        for plural in ["pods", "configmaps", "secrets", "services"] {
            let rt = resources::find("", "v1", plural).expect("served");
            let obj = json!({"apiVersion": "v1", "kind": rt.kind, "metadata": meta, "spec": spec, "data": spec});
            let _ = typed::unknown_fields(rt, &obj);
            let _ = rules::validate(rt, &obj);
        }
        for (group, plural) in [("apps", "deployments"), ("apps", "statefulsets"), ("batch", "jobs")] {
            let rt = resources::find(group, "v1", plural).expect("served");
            let obj = json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": spec}}});
            let _ = rules::validate(rt, &obj);
        }
    }
}
