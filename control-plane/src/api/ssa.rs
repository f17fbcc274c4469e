//! Server-side apply and field ownership, as Kubernetes defines them: every write records which
//! manager owns which fields in `metadata.managedFields` (`FieldsV1`); an apply that changes a
//! field another manager owns is a conflict (409) unless forced, which moves the ownership; a
//! field an applier stops applying is removed unless someone else owns it. Lists with a merge
//! key are owned element by element (`k:{"name":"c"}`); other lists are owned whole. Pure code.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::patch::{self, PatchType};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Elem {
    /// A map field.
    Field(String),
    /// A list element by its merge key, as compact JSON (`{"name":"c"}`).
    Key(String),
}

type Path = Vec<Elem>;

/// Fields of the object envelope that nobody owns.
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The paths `v` sets: leaves, plus each keyed list element itself.
fn field_set(v: &Value) -> BTreeSet<Path> {
    fields_of(v, false)
}

/// The fields of the main resource (`status` false: everything but the status) or of the
/// `status` subresource (only the status).
fn fields_of(v: &Value, status: bool) -> BTreeSet<Path> {
    let root = match (
        v.get("apiVersion").and_then(Value::as_str),
        v.get("kind").and_then(Value::as_str),
    ) {
        (Some(av), Some(k)) => Some((av, k)),
        _ => None,
    };
    let mut out = BTreeSet::new();
    let Some(m) = v.as_object() else {
        return out;
    };
    for (k, child) in m {
        if k == "apiVersion" || k == "kind" || k.starts_with('$') || (k == "status") != status {
            continue;
        }
        if k == "metadata" {
            for (mk, mv) in child.as_object().into_iter().flatten() {
                if UNOWNED_META.contains(&mk.as_str()) {
                    continue;
                }
                let mut path = vec![Elem::Field(k.clone()), Elem::Field(mk.clone())];
                let mut names = vec![k.clone(), mk.clone()];
                collect(root, mv, &mut path, &mut names, &mut out);
            }
            continue;
        }
        let mut path = vec![Elem::Field(k.clone())];
        let mut names = vec![k.clone()];
        collect(root, child, &mut path, &mut names, &mut out);
    }
    out
}

/// The key of a list element, `{"name":"c"}`, when its list is keyed (by the kind's schema).
fn list_key(root: patch::Root<'_>, names: &[String], item: &Value) -> Option<String> {
    let (field, parents) = names.split_last()?;
    let crate::api::protobuf::Merge::Key(mk) = patch::rule(root, parents, field) else {
        return None;
    };
    let kv = item.get(&mk)?;
    Some(json!({ mk: kv }).to_string())
}

fn collect(
    root: patch::Root<'_>,
    v: &Value,
    path: &mut Path,
    names: &mut Vec<String>,
    out: &mut BTreeSet<Path>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if k.starts_with('$') {
                    continue;
                }
                path.push(Elem::Field(k.clone()));
                names.push(k.clone());
                collect(root, child, path, names, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| list_key(root, names, i).is_some()) =>
        {
            for item in items {
                let Some(key) = list_key(root, names, item) else {
                    continue;
                };
                path.push(Elem::Key(key));
                out.insert(path.clone());
                if let Some(m) = item.as_object() {
                    for (k, child) in m {
                        path.push(Elem::Field(k.clone()));
                        names.push(k.clone());
                        collect(root, child, path, names, out);
                        names.pop();
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

fn key_matches(item: &Value, key: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(key)
        .is_ok_and(|k| k.iter().all(|(f, v)| item.get(f) == Some(v)))
}

/// The value at `path`.
fn get<'a>(v: &'a Value, path: &[Elem]) -> Option<&'a Value> {
    let mut cur = v;
    for e in path {
        cur = match e {
            Elem::Field(f) => cur.get(f)?,
            Elem::Key(k) => cur.as_array()?.iter().find(|i| key_matches(i, k))?,
        };
    }
    Some(cur)
}

/// Remove what `path` names (a field or a keyed element).
fn remove(v: &mut Value, path: &[Elem]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for e in parents {
        let next = match e {
            Elem::Field(f) => cur.get_mut(f),
            Elem::Key(k) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| key_matches(i, k))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Elem::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Elem::Key(k) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|i| !key_matches(i, k));
            }
        }
    }
}

/// `FieldsV1` of a set of paths.
fn encode(set: &BTreeSet<Path>) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[Elem]) {
        let Some((e, rest)) = path.split_first() else {
            return;
        };
        let k = match e {
            Elem::Field(f) => format!("f:{f}"),
            Elem::Key(k) => format!("k:{k}"),
        };
        let child = node.entry(k).or_insert_with(|| json!({}));
        if let Value::Object(m) = child {
            if rest.is_empty() && matches!(e, Elem::Key(_)) {
                m.insert(".".into(), json!({}));
            }
            insert(m, rest);
        }
    }
    let mut root = Map::new();
    for path in set {
        insert(&mut root, path);
    }
    Value::Object(root)
}

/// The set of paths in a `FieldsV1` value.
fn decode(fields: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
            return;
        }
        for (k, child) in m {
            let elem = if k == "." {
                out.insert(path.clone());
                continue;
            } else if let Some(f) = k.strip_prefix("f:") {
                Elem::Field(f.to_string())
            } else if let Some(key) = k.strip_prefix("k:") {
                Elem::Key(key.to_string())
            } else {
                continue;
            };
            path.push(elem);
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Value,
    set: BTreeSet<Path>,
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            subresource: e["subresource"].as_str().unwrap_or("").to_string(),
            time: e.get("time").cloned().unwrap_or(Value::Null),
            set: decode(&e["fieldsV1"]),
        })
        .collect()
}

fn store(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation,
                "apiVersion": e.api_version, "time": e.time, "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// A path as Kubernetes prints it in conflicts (`.spec.containers[name="c"].image`).
fn show(path: &[Elem]) -> String {
    let mut s = String::new();
    for e in path {
        match e {
            Elem::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Elem::Key(k) => {
                let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let inner: Vec<String> = m.iter().map(|(f, v)| format!("{f}={v}")).collect();
                s.push_str(&format!("[{}]", inner.join(",")));
            }
        }
    }
    s
}

/// Who writes, and how.
pub struct Writer<'a> {
    /// `fieldManager`.
    pub manager: &'a str,
    /// `apiVersion` of the object as written.
    pub api_version: String,
    /// `""` or `"status"`.
    pub subresource: &'a str,
    /// Now, as `metav1.Time`.
    pub now: &'a str,
}

/// Why an apply was refused: Kubernetes' message, and each conflict as (message, field path).
#[derive(Debug, PartialEq, Eq)]
pub struct Conflicts(pub String, pub Vec<(String, String)>);

/// Server-side apply of `applied` over `live` (None: the object does not exist yet).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    who: &Writer<'_>,
    force: bool,
) -> Result<Value, Conflicts> {
    let empty = json!({});
    let live = live.unwrap_or(&empty);
    let mut owners = entries(live);
    let applied_set = field_set(applied);
    let ours = |e: &Entry| {
        e.manager == who.manager && e.operation == "Apply" && e.subresource == who.subresource
    };
    // (manager, its apiVersion, path)
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for p in &applied_set {
        if get(applied, p) == get(live, p) {
            continue;
        }
        for e in owners.iter().filter(|e| !ours(e)) {
            if e.set.contains(p) && matches!(p.last(), Some(Elem::Field(_))) {
                conflicts.push((e.manager.clone(), e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        // Kubernetes' wording, which kubectl extends with how to resolve it.
        let n = conflicts.len();
        let message = if n == 1 {
            let (m, av, p) = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with \"{m}\" using {av}: {}",
                show(p)
            )
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, av, p)| format!("conflict with \"{m}\" using {av}: {}", show(p)))
                .collect();
            format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
        };
        let causes = conflicts
            .iter()
            .map(|(m, av, p)| (format!("conflict with \"{m}\" using {av}"), show(p)))
            .collect();
        return Err(Conflicts(message, causes));
    }
    // Bounded by its inputs (two bodies within the request limit); the caller checks the result.
    let mut out = patch::apply_patch(live, applied, PatchType::Strategic, usize::MAX)
        .map_err(|e| Conflicts(e.to_string(), Vec::new()))?;
    // Fields this manager applied before and no longer applies go, unless someone else owns them.
    if let Some(prev) = owners.iter().find(|e| ours(e)) {
        let dropped: Vec<Path> = prev.set.difference(&applied_set).cloned().collect();
        for p in dropped.iter().rev() {
            let shared = owners.iter().any(|e| !ours(e) && e.set.contains(p));
            if !shared {
                remove(&mut out, p);
            }
        }
    }
    for (_, _, p) in &conflicts {
        for e in owners.iter_mut().filter(|e| !ours(e)) {
            e.set.remove(p);
        }
    }
    owners.retain(|e| !ours(e));
    owners.push(Entry {
        manager: who.manager.to_string(),
        operation: "Apply".into(),
        api_version: who.api_version.clone(),
        subresource: who.subresource.to_string(),
        time: json!(who.now),
        set: applied_set,
    });
    prune(&out, &mut owners);
    store(&mut out, owners);
    Ok(out)
}

/// A non-apply write (create, update, patch) by `who`: it owns what it changed, and others stop
/// owning those fields.
pub fn record_update(old: Option<&Value>, new: &mut Value, who: &Writer<'_>) {
    let empty = json!({});
    let before = old.unwrap_or(&empty);
    // Entries come from the old object: a client cannot rewrite ownership by sending them.
    let mut owners = entries(before);
    let changed: BTreeSet<Path> = fields_of(new, who.subresource == "status")
        .into_iter()
        .filter(|p| get(new, p) != get(before, p))
        .collect();
    if !changed.is_empty() {
        for e in owners.iter_mut() {
            e.set.retain(|p| !changed.contains(p));
        }
        let mine = owners.iter_mut().find(|e| {
            e.manager == who.manager && e.operation == "Update" && e.subresource == who.subresource
        });
        match mine {
            Some(e) => {
                e.set.extend(changed);
                e.time = json!(who.now);
                e.api_version = who.api_version.clone();
            }
            None => owners.push(Entry {
                manager: who.manager.to_string(),
                operation: "Update".into(),
                api_version: who.api_version.clone(),
                subresource: who.subresource.to_string(),
                time: json!(who.now),
                set: changed,
            }),
        }
    }
    prune(new, &mut owners);
    store(new, owners);
}

/// Ownership of fields that no longer exist goes.
fn prune(obj: &Value, owners: &mut [Entry]) {
    for e in owners.iter_mut() {
        e.set.retain(|p| get(obj, p).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "apps/v1".into(),
            subresource: "",
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn deploy(replicas: i64, image: &str, extra_label: Option<&str>) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
        if let Some(l) = extra_label {
            d["metadata"]["labels"][l] = json!("x");
        }
        d
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = field_set(&deploy(1, "a", Some("tier")));
        let enc = encode(&set);
        assert_eq!(
            enc["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(
            enc["f:metadata"]["f:labels"],
            json!({"f:app": {}, "f:tier": {}})
        );
        assert!(enc["f:metadata"].get("f:name").is_none());
        assert_eq!(decode(&enc), set);
    }

    #[test]
    fn apply_table() {
        // (step, manager, applied, force, expected outcome)
        let created = apply(None, &deploy(1, "a", Some("tier")), &who("alice"), false).unwrap();
        assert_eq!(created["metadata"]["managedFields"][0]["manager"], "alice");
        // Alice re-applies without the label: she owned it alone, so it goes.
        let v2 = apply(Some(&created), &deploy(1, "a", None), &who("alice"), false).unwrap();
        assert!(v2["metadata"]["labels"].get("tier").is_none());
        // Bob applies a different replicas: a conflict with alice, unless forced.
        let bob = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply(Some(&v2), &bob, &who("bob"), false).unwrap_err();
        assert_eq!(
            err.0,
            "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
        );
        let forced = apply(Some(&v2), &bob, &who("bob"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        // Now bob owns replicas: alice re-applying replicas 1 conflicts with bob.
        let err = apply(Some(&forced), &deploy(1, "a", None), &who("alice"), false).unwrap_err();
        assert!(err.0.contains("\"bob\""), "{}", err.0);
        // Applying the same value as the live one is shared ownership, not a conflict.
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        assert!(apply(Some(&forced), &same, &who("carol"), false).is_ok());
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let created = apply(None, &deploy(1, "a", None), &who("alice"), false).unwrap();
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&created), &mut scaled, &who("kubectl-scale"));
        let owners: Vec<&str> = scaled["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["alice", "kubectl-scale"]);
        // Alice's apply with the old replicas now conflicts with the scaler.
        let err = apply(Some(&scaled), &deploy(1, "a", None), &who("alice"), false).unwrap_err();
        assert!(err.0.contains("kubectl-scale"), "{}", err.0);
        // A client cannot forge ownership: entries come from the stored object.
        let mut forged = scaled.clone();
        forged["metadata"]["managedFields"] = json!([]);
        record_update(Some(&scaled), &mut forged, &who("mallory"));
        assert_eq!(
            forged["metadata"]["managedFields"],
            scaled["metadata"]["managedFields"]
        );
    }
}
