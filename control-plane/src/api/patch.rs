//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch for
//! the built-in types (lists merged by their merge key, `$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`). Pure functions over JSON values.

use serde_json::{Map, Value};

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
}

/// Apply `patch` of type `kind` to `target`.
pub fn apply_patch(target: &Value, patch: &Value, kind: PatchType) -> Result<Value, PatchError> {
    let mut out = target.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, patch),
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| PatchError::Invalid(e.to_string()))?;
            json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Failed(e.to_string()))?;
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(PatchError::Invalid(
                    "a strategic merge patch must be a JSON object".into(),
                ));
            }
            strategic_merge(&mut out, patch, &mut Vec::new())?;
        }
    }
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

fn strategic_merge(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
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
                let merged = merge_list(tmap.get(key), plist, key, path)?;
                tmap.insert(key.clone(), merged);
            }
            Value::Object(_) => {
                path.push(key.clone());
                let entry = tmap.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(entry, pval, path)?;
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
        let mk = merge_key(path, field);
        let pos = |v: &Value| {
            order.iter().position(|o| match mk {
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
    if is_set_list(field) {
        let mut out = cur;
        for v in plist {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(mk) = merge_key(path, field) else {
        return Ok(Value::Array(plist.to_vec()));
    };
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
                strategic_merge(&mut out[i], pv, path)?;
                path.pop();
            }
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                path.push(field.to_string());
                strategic_merge(&mut fresh, pv, path)?;
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

    fn check(target: Value, patch: Value, kind: PatchType, want: Value) {
        let got = apply_patch(&target, &patch, kind).unwrap();
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
            PatchType::Json
        )
        .is_err());
        assert!(apply_patch(&json!({}), &json!([1]), PatchType::Strategic).is_err());
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

    proptest! {
        #[test]
        fn merges_lists_by_key_like_the_model(base in base(), entries in patch_entries()) {
            let out = apply_patch(&pod(&base), &patch_of(&entries), PatchType::Strategic).unwrap();
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
            let once = apply_patch(&pod(&base), &p, PatchType::Strategic).unwrap();
            let twice = apply_patch(&once, &p, PatchType::Strategic).unwrap();
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
            let out = apply_patch(&pod(&base), &json!({"spec": {"containers": items}}), PatchType::Strategic).unwrap();
            prop_assert_eq!(containers(&out), want);
        }
    }
}
