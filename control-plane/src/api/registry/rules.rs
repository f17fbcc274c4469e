//! The rules every object follows before a write reaches the store, whatever its kind: body
//! decoding, `fieldValidation`, names (and `generateName`), metadata validation, the metadata
//! the server owns (uid, creationTimestamp, generation) and what an update keeps; the kind's
//! own rules come from its strategy. Pure functions.

use serde_json::{json, Value};

use crate::api::error::{ApiError, FieldCause};
use crate::api::strategy::{ensure_object, NameRule};
use crate::resources::ResourceType;

/// `fieldValidation` as the client asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject unknown fields (400).
    Strict,
    /// Accept, and warn in a `Warning` header.
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    /// From the query parameter (Kubernetes' default is Warn).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v.unwrap_or("Warn") {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" | "" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::BadRequest(format!(
                "fieldValidation must be one of Strict, Warn or Ignore, not {other:?}"
            ))),
        }
    }
}

/// Parse a request body as JSON (or YAML, which apply patches may use).
pub(crate) fn decode_body(body: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(e) if yaml_ok => serde_yaml::from_slice::<Value>(body).map_err(|_| {
            ApiError::BadRequest(format!("the body of the request could not be decoded: {e}"))
        }),
        Err(e) => Err(ApiError::BadRequest(format!(
            "the body of the request could not be decoded: {e}"
        ))),
    }
}

use skiff_common::names::{is_dns1123_label, is_dns1123_subdomain, LABEL_MSG, SUBDOMAIN_MSG};

/// Validate an object; the causes are returned as a 422 `Invalid` by the caller.
pub(crate) fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push(FieldCause::required("metadata.name"));
    } else {
        match rt.strategy.name_rule() {
            NameRule::Label if !is_dns1123_label(name) => {
                causes.push(FieldCause::invalid("metadata.name", name, LABEL_MSG))
            }
            NameRule::Subdomain if !is_dns1123_subdomain(name) => {
                causes.push(FieldCause::invalid("metadata.name", name, SUBDOMAIN_MSG))
            }
            NameRule::PathSegment => {
                let why = if name == "." || name == ".." {
                    Some(format!("may not be '{name}'"))
                } else {
                    ['/', '%']
                        .iter()
                        .find(|c| name.contains(**c))
                        .map(|c| format!("may not contain '{c}'"))
                };
                if let Some(why) = why {
                    causes.push(FieldCause::invalid("metadata.name", name, &why));
                }
            }
            _ => {}
        }
    }
    crate::api::validation::validate_metadata(obj, &mut causes);
    rt.strategy.validate(obj, &mut causes);
    causes
}

/// The server-owned metadata and the defaults of a new object.
pub(crate) fn prepare_create(rt: &ResourceType, obj: &mut Value, namespace: &str) {
    let now = now_rfc3339();
    let meta = ensure_object(obj, "metadata");
    if rt.namespaced {
        meta.insert("namespace".into(), json!(namespace));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    meta.insert("generation".into(), json!(1));
    if rt.subresources.contains(&"status") {
        match rt.strategy.initial_status() {
            Some(Value::Null) => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            Some(status) => obj["status"] = status,
            None => {}
        }
    }
    rt.strategy.default(obj);
    rt.strategy.prepare_create(obj);
}

/// `generateName` → a name with a random suffix.
pub(crate) fn generate_name(obj: &mut Value) {
    let has_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if has_name {
        return;
    }
    if let Some(prefix) = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let suffix: String = scripted_suffix().unwrap_or_else(random_suffix);
        ensure_object(obj, "metadata").insert("name".into(), json!(format!("{prefix}{suffix}")));
    }
}

/// Kubernetes' random name suffix: five characters of its alphabet without vowels.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

/// The suffix a test scripted for the next generated name.
#[cfg(test)]
fn scripted_suffix() -> Option<String> {
    test_suffixes::next()
}

/// Outside tests, suffixes are random.
#[cfg(not(test))]
fn scripted_suffix() -> Option<String> {
    None
}

/// Suffixes tests can script (to make `generateName` collide on purpose).
#[cfg(test)]
pub(crate) mod test_suffixes {
    use std::sync::Mutex;

    static NEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// The suffixes the next generated names get, in order.
    pub(crate) fn script(suffixes: &[&str]) {
        if let Ok(mut n) = NEXT.lock() {
            *n = suffixes.iter().rev().map(|s| s.to_string()).collect();
        }
    }

    pub(super) fn next() -> Option<String> {
        NEXT.lock().ok()?.pop()
    }
}

/// Carry the server-owned fields of `old` into an update `new`; bump `generation` when the
/// spec changed. For the main resource the status is kept; for `/status` only status changes.
pub(crate) fn prepare_update(new: &mut Value, old: &Value, status_only: bool) {
    if status_only {
        let status = new.as_object_mut().and_then(|m| m.remove("status"));
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        // Labels and annotations may change through /status too (as in Kubernetes for some types);
        // keep everything else from the old object.
        *new = merged;
        return;
    }
    let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
    let meta = ensure_object(new, "metadata");
    for k in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(k) {
            Some(v) => {
                meta.insert(k.into(), v.clone());
            }
            None => {
                meta.remove(k);
            }
        }
    }
    if let Some(status) = old.get("status") {
        new["status"] = status.clone();
    } else if let Some(m) = new.as_object_mut() {
        m.remove("status");
    }
    if new.get("spec") != old.get("spec") {
        let gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["generation"] = json!(gen + 1);
    }
}

/// Now as RFC 3339 with second precision, as Kubernetes writes `metav1.Time`.
pub(crate) fn now_rfc3339() -> String {
    // Truncated to the second, as Kubernetes does (never a time in the future).
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::strategy::pod::qos_class;
    use crate::resources;

    fn pods() -> &'static ResourceType {
        resources::find("", "v1", "pods").unwrap()
    }

    #[test]
    fn hostile_bodies_are_errors_not_crashes() {
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep_yaml = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        // A billion laughs: nine levels of ten aliases each.
        let mut laughs = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 10].join(",");
            laughs.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        for (body, yaml_ok) in [
            (deep_json.as_bytes(), false),
            (deep_json.as_bytes(), true),
            (deep_yaml.as_bytes(), true),
            (laughs.as_bytes(), true),
            (&b"\xff\xfe garbage"[..], true),
        ] {
            assert!(
                matches!(decode_body(body, yaml_ok), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
    }

    #[test]
    fn pod_validation_table() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                json!({"metadata": {"name": "ok"}, "spec": {"containers": [{"name": "c", "image": "hello"}]}}),
                vec![],
            ),
            (
                json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "hello"}]}}),
                vec!["metadata.name"],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {}}),
                vec!["spec.containers"],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}]}}),
                vec!["spec.containers[0].image"],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "c", "image": "y"}]}}),
                vec!["spec.containers[1].name"],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"hostNetwork": true, "restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}}}]}}),
                vec![
                    "spec.containers[0].livenessProbe.exec",
                    "spec.restartPolicy",
                    "spec.hostNetwork",
                ],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Sometimes"}, {"name": "d", "image": "x", "imagePullPolicy": "Never"}]}}),
                vec!["spec.containers[0].imagePullPolicy"],
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"initContainers": [{"name": "s", "image": "x", "restartPolicy": "Always"}, {"name": "i", "image": "x", "restartPolicy": "Never"}], "containers": [{"name": "c", "image": "x", "restartPolicy": "Always"}]}}),
                vec![
                    "spec.initContainers[1].restartPolicy",
                    "spec.containers[0].restartPolicy",
                ],
            ),
        ];
        for (pod, want) in cases {
            let got: Vec<String> = validate(pods(), &pod)
                .into_iter()
                .map(|c| c.field)
                .collect();
            assert_eq!(got, want, "{pod}");
        }
    }

    #[test]
    fn qos_table() {
        let cases = vec![
            (json!({"containers": [{}]}), "BestEffort"),
            (
                json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers": [{"resources": {"requests": {"memory": "1Gi"}}}]}),
                "Burstable",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(qos_class(&spec), want, "{spec}");
        }
    }

    #[test]
    fn update_keeps_server_fields_and_bumps_generation() {
        let old = json!({"metadata": {"name": "a", "uid": "u", "generation": 1, "creationTimestamp": "t"}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        let mut new = json!({"metadata": {"name": "a", "uid": "evil"}, "spec": {"x": 2}, "status": {"phase": "Failed"}});
        prepare_update(&mut new, &old, false);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(new["status"]["phase"], "Running");
        let mut st =
            json!({"metadata": {"name": "a"}, "spec": {"x": 9}, "status": {"phase": "Succeeded"}});
        prepare_update(&mut st, &old, true);
        assert_eq!(st["spec"]["x"], 1);
        assert_eq!(st["status"]["phase"], "Succeeded");
    }
}
