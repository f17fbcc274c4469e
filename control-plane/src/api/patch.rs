//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch for
//! the built-in types (lists merged by their merge key, `$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`). Pure functions over JSON values.
//!
//! Work is bounded as kube-apiserver bounds it since CVE-2019-1002100: a JSON patch has at most
//! [`MAX_JSON_PATCH_OPERATIONS`] operations, its operations are applied one at a time and the
//! bytes its `copy` operations add up to may not pass the object size limit (checked before
//! each copy, so a patch that doubles a subtree again and again is refused before it allocates),
//! and no patch of any type may produce an object larger than that limit.

use serde_json::{Map, Value};

use crate::api::protobuf::Merge;

/// The patch types Kubernetes accepts, by Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply; merged like a strategic patch for now).
    Apply,
}

impl PatchType {
    /// From a Content-Type header value.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not what its type requires.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation failed.
    #[error("the JSON patch could not be applied: {0}")]
    Failed(String),
    /// The patch is too large, or would make the object too large (413).
    #[error("{0}")]
    TooLarge(String),
}

/// kube-apiserver's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The size of `v` as compact JSON, counted up to `limit` (a larger value stops the count
/// early and answers `None`), so measuring a huge value costs no more than `limit` bytes.
pub fn json_size_within(v: &Value, limit: usize) -> Option<usize> {
    struct Counter {
        n: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter { n: 0, limit };
    serde_json::to_writer(&mut c, v).ok()?;
    Some(c.n)
}

fn too_large(limit: usize) -> PatchError {
    PatchError::TooLarge(format!(
        "the patch would make the object larger than {limit} bytes"
    ))
}

/// Apply a JSON patch one operation at a time, refusing a `copy` that would take the bytes
/// copied so far past `limit`.
fn json_patch_bounded(out: &mut Value, patch: &Value, limit: usize) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Invalid("a JSON patch must be a JSON array".into()))?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::Invalid(e.to_string()))?;
    let mut copied = 0usize;
    for op in ops.0 {
        if let json_patch::PatchOperation::Copy(c) = &op {
            let from = c.from.to_string();
            if let Some(src) = out.pointer(&from) {
                let size = json_size_within(src, limit.saturating_sub(copied))
                    .ok_or_else(|| too_large(limit))?;
                copied += size;
            }
        }
        json_patch::patch(out, std::slice::from_ref(&op))
            .map_err(|e| PatchError::Failed(e.to_string()))?;
    }
    Ok(())
}

/// Apply `patch` of type `kind` to `target`; the result may be at most `limit` bytes as JSON.
pub fn apply_patch(
    target: &Value,
    patch: &Value,
    kind: PatchType,
    limit: usize,
) -> Result<Value, PatchError> {
    let mut out = target.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, patch),
        PatchType::Json => json_patch_bounded(&mut out, patch, limit)?,
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(PatchError::Invalid(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            }
            // The schema of the object patched decides how its lists merge.
            let root = match (
                target.get("apiVersion").and_then(Value::as_str),
                target.get("kind").and_then(Value::as_str),
            ) {
                (Some(av), Some(k)) => Some((av, k)),
                _ => None,
            };
            strategic_merge(&mut out, patch, &mut Vec::new(), root)?;
        }
    }
    json_size_within(&out, limit).ok_or_else(|| too_large(limit))?;
    Ok(out)
}

/// The merge key of a list field, by field name and position (None: the list is replaced).
pub(super) fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    let under_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" if under_container => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "ownerReferences" => Some("uid"),
        "taints" => Some("key"),
        "addresses" => Some("type"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of primitives merged as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// The apiVersion and kind of the object patched, whose schema says how lists merge.
pub(crate) type Root<'a> = Option<(&'a str, &'a str)>;

/// How the list `field` at `path` merges: by the kind's schema (a built-in kind's
/// `patchStrategy` and `patchMergeKey`, a custom kind's `x-kubernetes-list-type` and
/// `x-kubernetes-list-map-keys`), else (no schema says) by the field's name.
pub(crate) fn rule(root: Root<'_>, path: &[String], field: &str) -> Merge {
    if let Some(m) = root.and_then(|(av, k)| crate::api::protobuf::merge_rule(av, k, path, field)) {
        return m;
    }
    // A built-in kind's schema is the tables; only other kinds may be custom.
    let custom = root
        .filter(|(av, k)| !crate::api::protobuf::is_table_kind(av, k))
        .and_then(|(av, k)| {
            crate::resources::all()
                .into_iter()
                .find(|r| r.kind == k && r.api_version() == av)
                .and_then(|r| r.schema.raw())
        });
    if let Some((_, schema)) = custom {
        if let Some(m) = crate::api::strategy::custom::list_rule(&schema, path, field) {
            return m;
        }
    }
    if is_set_list(field) {
        return Merge::Set;
    }
    match merge_key(path, field) {
        Some(k) => Merge::Key(k.to_string()),
        None => Merge::Replace,
    }
}

fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    root: Root<'_>,
) -> Result<(), PatchError> {
    let Some(pmap) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = pmap.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return Ok(());
    }
    if pmap.get("$patch").and_then(Value::as_str) == Some("delete") {
        *target = Value::Null;
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let retain: Option<Vec<String>> = pmap.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    let tmap = target
        .as_object_mut()
        .ok_or_else(|| PatchError::Invalid("target is not an object".into()))?;
    for (key, pval) in pmap {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tmap.get_mut(field), pval.as_array()) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if pval.is_null() {
            tmap.remove(key);
            continue;
        }
        match pval {
            Value::Array(plist) => {
                let merged = merge_list(tmap.get(key), plist, key, path, root)?;
                tmap.insert(key.clone(), merged);
            }
            Value::Object(_) => {
                path.push(key.clone());
                let entry = tmap.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(entry, pval, path, root)?;
                path.pop();
                if entry.is_null() {
                    tmap.remove(key);
                }
            }
            _ => {
                tmap.insert(key.clone(), pval.clone());
            }
        }
    }
    if let Some(keep) = retain {
        tmap.retain(|k, _| keep.contains(k));
    }
    // Order lists as `$setElementOrder` says.
    for (key, order) in pmap {
        let Some(field) = key.strip_prefix("$setElementOrder/") else {
            continue;
        };
        let (Some(Value::Array(list)), Some(order)) = (tmap.get_mut(field), order.as_array())
        else {
            continue;
        };
        let mk = match rule(root, path, field) {
            Merge::Key(k) => Some(k),
            _ => None,
        };
        let pos = |v: &Value| {
            order.iter().position(|o| match &mk {
                Some(k) => o.get(k).is_some() && o.get(k) == v.get(k),
                None => o == v,
            })
        };
        list.sort_by_key(|v| pos(v).unwrap_or(usize::MAX));
    }
    Ok(())
}

fn merge_list(
    current: Option<&Value>,
    plist: &[Value],
    field: &str,
    path: &mut Vec<String>,
    root: Root<'_>,
) -> Result<Value, PatchError> {
    let cur: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if plist
        .iter()
        .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            plist
                .iter()
                .filter(|v| v.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let mk = match rule(root, path, field) {
        Merge::Set => {
            let mut out = cur;
            for v in plist {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            return Ok(Value::Array(out));
        }
        Merge::Replace => return Ok(Value::Array(plist.to_vec())),
        Merge::Key(k) => k,
    };
    let mk = mk.as_str();
    let mut out = cur;
    for pv in plist {
        let Some(kv) = pv.get(mk) else {
            return Err(PatchError::Invalid(format!(
                "map in list {field} lacks its merge key {mk}"
            )));
        };
        let idx = out.iter().position(|v| v.get(mk) == Some(kv));
        let delete = pv.get("$patch").and_then(Value::as_str) == Some("delete");
        match (idx, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                path.push(field.to_string());
                strategic_merge(&mut out[i], pv, path, root)?;
                path.pop();
            }
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                path.push(field.to_string());
                strategic_merge(&mut fresh, pv, path, root)?;
                path.pop();
                out.push(fresh);
            }
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// With the kind known, lists merge as Kubernetes' schema says: a Node's taints are
    /// replaced whole (`atomic`), a pod's containers merged by name.
    #[test]
    fn strategic_merge_follows_the_kinds_schema() {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let p = json!({"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}});
        let got = apply_patch(&node, &p, PatchType::Strategic, 1 << 20).unwrap();
        assert_eq!(
            got["spec"]["taints"],
            json!([{"key": "b", "effect": "NoSchedule"}])
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}]}});
        let got = apply_patch(&pod, &p, PatchType::Strategic, 1 << 20).unwrap();
        assert_eq!(got["spec"]["containers"][0]["image"], "x");
        assert_eq!(got["spec"]["containers"][1]["image"], "z");
    }

    fn check(target: Value, patch: Value, kind: PatchType, want: Value) {
        let got = apply_patch(&target, &patch, kind, 1 << 30).unwrap();
        assert_eq!(got, want, "patch {patch}");
    }

    #[test]
    fn strategic_table() {
        let pod = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"containers": [
                {"name": "main", "image": "hello:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "side", "image": "ticker:1"}]}});
        let cases = vec![
            // kubectl apply: change one env var, keep the rest by merge key.
            (
                json!({"spec": {"$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
                    "containers": [{"name": "main", "env": [{"name": "A", "value": "9"}]}]}}),
                json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
                    "spec": {"containers": [
                        {"name": "main", "image": "hello:1", "env": [{"name": "A", "value": "9"}, {"name": "B", "value": "2"}]},
                        {"name": "side", "image": "ticker:1"}]}}),
            ),
            // null deletes a key; a new label merges.
            (
                json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
                json!({"metadata": {"labels": {"b": "2"}, "finalizers": ["x"]},
                    "spec": {"containers": [
                        {"name": "main", "image": "hello:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                        {"name": "side", "image": "ticker:1"}]}}),
            ),
            // $patch: delete removes a list element; finalizers merge as a set.
            (
                json!({"metadata": {"finalizers": ["y", "x"]}, "spec": {"containers": [{"name": "side", "$patch": "delete"}]}}),
                json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x", "y"]},
                    "spec": {"containers": [
                        {"name": "main", "image": "hello:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}),
            ),
            // $setElementOrder reorders.
            (
                json!({"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "main"}], "containers": [{"name": "side", "image": "ticker:2"}]}}),
                json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
                    "spec": {"containers": [
                        {"name": "side", "image": "ticker:2"},
                        {"name": "main", "image": "hello:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}),
            ),
        ];
        for (patch, want) in cases {
            check(pod.clone(), patch, PatchType::Strategic, want);
        }
    }

    #[test]
    fn merge_and_json_patch() {
        check(
            json!({"a": [1, 2], "b": 1}),
            json!({"a": [3], "b": null}),
            PatchType::Merge,
            json!({"a": [3]}),
        );
        check(
            json!({"spec": {"replicas": 1}}),
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            PatchType::Json,
            json!({"spec": {"replicas": 3}}),
        );
        assert!(apply_patch(
            &json!({}),
            &json!([{"op": "remove", "path": "/nope"}]),
            PatchType::Json,
            1 << 30
        )
        .is_err());
        assert!(apply_patch(&json!({}), &json!([1]), PatchType::Strategic, 1 << 30).is_err());
    }

    #[test]
    fn patches_cannot_amplify() {
        // CVE-2019-1002100: each copy doubles a subtree; 40 of them would be terabytes.
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": ["x".repeat(1000)]})];
        for _ in 0..40 {
            ops.push(json!({"op": "copy", "from": "/a", "path": "/b"}));
            ops.push(json!({"op": "copy", "from": "/b", "path": "/a/-"}));
        }
        let limit = 3 << 20;
        let err = apply_patch(&json!({}), &Value::Array(ops), PatchType::Json, limit).unwrap_err();
        assert!(matches!(err, PatchError::TooLarge(_)), "{err}");
        // Too many operations.
        let many =
            vec![json!({"op": "test", "path": "", "value": {}}); MAX_JSON_PATCH_OPERATIONS + 1];
        let err = apply_patch(&json!({}), &Value::Array(many), PatchType::Json, limit).unwrap_err();
        assert!(err.to_string().contains("maximum operations"), "{err}");
        // Any patch type: a result past the limit is refused.
        let big = json!({"data": {"k": "y".repeat(2000)}});
        for kind in [PatchType::Merge, PatchType::Strategic] {
            let err = apply_patch(&json!({}), &big, kind, 1000).unwrap_err();
            assert!(matches!(err, PatchError::TooLarge(_)), "{kind:?}");
        }
        // Within the limit, copies work.
        let ok = json!([{"op": "add", "path": "/a", "value": 1}, {"op": "copy", "from": "/a", "path": "/b"}]);
        assert_eq!(
            apply_patch(&json!({}), &ok, PatchType::Json, limit).unwrap(),
            json!({"a": 1, "b": 1})
        );
        assert_eq!(json_size_within(&json!({"a": [1, 2]}), 100), Some(11));
        assert_eq!(json_size_within(&json!({"a": [1, 2]}), 5), None);
    }
}

/// Properties of strategic merge patch, checked against a model of Kubernetes' documented
/// behaviour for lists with a merge key (containers by `name`) and for maps.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[derive(Clone, Debug)]
    enum Entry {
        Set(String, String),
        Delete(String),
    }

    fn names() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(str::to_string)
    }

    fn base() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map(names(), "[a-z]{1,3}", 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    fn patch_entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::btree_map(names(), prop::option::of("[a-z]{1,3}"), 0..5).prop_map(|m| {
            m.into_iter()
                .map(|(n, img)| match img {
                    Some(i) => Entry::Set(n, i),
                    None => Entry::Delete(n),
                })
                .collect()
        })
    }

    /// The documented outcome: matched elements merge in place, `$patch: delete` removes,
    /// new elements are appended in patch order.
    fn model(base: &[(String, String)], patch: &[Entry]) -> Vec<(String, String)> {
        let mut out = base.to_vec();
        for e in patch {
            match e {
                Entry::Delete(n) => out.retain(|(m, _)| m != n),
                Entry::Set(n, img) => match out.iter_mut().find(|(m, _)| m == n) {
                    Some(c) => c.1 = img.clone(),
                    None => out.push((n.clone(), img.clone())),
                },
            }
        }
        out
    }

    fn pod(containers: &[(String, String)]) -> Value {
        let cs: Vec<Value> = containers
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i, "args": ["x"]}))
            .collect();
        json!({"metadata": {"labels": {"keep": "1", "drop": "2"}}, "spec": {"containers": cs}})
    }

    fn patch_of(entries: &[Entry]) -> Value {
        let cs: Vec<Value> = entries
            .iter()
            .map(|e| match e {
                Entry::Set(n, i) => json!({"name": n, "image": i}),
                Entry::Delete(n) => json!({"name": n, "$patch": "delete"}),
            })
            .collect();
        json!({"metadata": {"labels": {"drop": null, "new": "3"}}, "spec": {"containers": cs}})
    }

    fn containers(v: &Value) -> Vec<(String, String)> {
        v.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["image"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// One JSON patch operation over a small set of paths, the kind of thing a fuzzer tries.
    fn hostile_op() -> impl Strategy<Value = Value> {
        let paths = prop::sample::select(vec![
            "", "/a", "/a/b", "/a/b/-", "/a/b/0", "/c", "/c/d", "/s", "/a/x~1y", "/zz/0",
        ]);
        let ops = prop::sample::select(vec!["add", "copy", "move", "remove", "replace", "test"]);
        (ops, paths.clone(), paths, 0usize..200).prop_map(|(op, path, from, n)| {
            json!({"op": op, "path": path, "from": from, "value": {"v": "x".repeat(n), "l": [n]}})
        })
    }

    proptest! {
        // Untrusted patches of every type: never a panic, never a result past the limit, and
        // the work per patch bounded by it (PROPTEST_CASES=100000 for a longer run by hand).
        #[test]
        fn hostile_patches_stay_within_the_limit(
            ops in prop::collection::vec(hostile_op(), 0..80),
            merge in prop::collection::btree_map("[a-c]", prop::option::of("[a-z]{0,300}"), 0..6),
        ) {
            let limit = 16 * 1024;
            let doc = json!({"a": {"b": [1, 2, 3]}, "c": {"d": "y"}, "s": "x".repeat(100)});
            let patches = [
                (Value::Array(ops), PatchType::Json),
                (json!({"a": merge, "c": null}), PatchType::Merge),
                (json!({"a": merge, "$patch": "replace"}), PatchType::Strategic),
                (json!({"spec": {"containers": [{"name": "x", "$patch": "delete"}]}, "a": merge}), PatchType::Apply),
            ];
            for (patch, kind) in patches {
                if let Ok(out) = apply_patch(&doc, &patch, kind, limit) {
                    prop_assert!(json_size_within(&out, limit).is_some());
                }
            }
        }

        #[test]
        fn merges_lists_by_key_like_the_model(base in base(), entries in patch_entries()) {
            let out = apply_patch(&pod(&base), &patch_of(&entries), PatchType::Strategic, 1 << 30).unwrap();
            prop_assert_eq!(containers(&out), model(&base, &entries));
            // Fields the patch does not name survive on merged elements.
            for c in out["spec"]["containers"].as_array().unwrap() {
                let was_there = base.iter().any(|(n, _)| c["name"] == json!(n));
                prop_assert_eq!(c.get("args").is_some(), was_there);
            }
            // null deletes a map key; other keys stay; new keys are added.
            prop_assert_eq!(&out["metadata"]["labels"], &json!({"keep": "1", "new": "3"}));
        }

        #[test]
        fn applying_a_patch_twice_is_applying_it_once(base in base(), entries in patch_entries()) {
            let p = patch_of(&entries);
            let once = apply_patch(&pod(&base), &p, PatchType::Strategic, 1 << 30).unwrap();
            let twice = apply_patch(&once, &p, PatchType::Strategic, 1 << 30).unwrap();
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn replace_directive_replaces_the_list(base in base(), entries in patch_entries()) {
            let mut items: Vec<Value> = entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Set(n, i) => Some(json!({"name": n, "image": i})),
                    Entry::Delete(_) => None,
                })
                .collect();
            let want: Vec<(String, String)> = items
                .iter()
                .map(|c| (c["name"].as_str().unwrap().into(), c["image"].as_str().unwrap().into()))
                .collect();
            items.push(json!({"$patch": "replace"}));
            let out = apply_patch(&pod(&base), &json!({"spec": {"containers": items}}), PatchType::Strategic, 1 << 30).unwrap();
            prop_assert_eq!(containers(&out), want);
        }
    }
}
