//! Object rules applied before a write reaches the store: decoding, defaulting, validation
//! and the metadata the server owns (uid, creationTimestamp, generation); unknown fields are
//! found by `typed`. Pure functions.

use serde_json::{json, Map, Value};

use super::error::{ApiError, FieldCause};
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
pub fn decode_body(body: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
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

pub use skiff_common::names::{is_dns1123_label, is_dns1123_subdomain};
use skiff_common::names::{LABEL_MSG, SUBDOMAIN_MSG};

/// Validate an object; the causes are returned as a 422 `Invalid` by the caller.
pub fn validate(rt: &ResourceType, obj: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push(FieldCause::required("metadata.name"));
    } else if rt.kind == "Namespace" {
        if !is_dns1123_label(name) {
            causes.push(FieldCause::invalid("metadata.name", name, LABEL_MSG));
        }
    } else if !is_dns1123_subdomain(name) {
        causes.push(FieldCause::invalid("metadata.name", name, SUBDOMAIN_MSG));
    }
    super::validation::validate_metadata(obj, &mut causes);
    if rt.kind == "Pod" {
        validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", &mut causes);
    } else {
        super::kinds::validate(rt, obj, &mut causes);
    }
    causes
}

/// Validate a pod spec found at `prefix` (`spec`, `spec.template.spec`).
pub(super) fn validate_pod_spec(spec: &Value, prefix: &str, causes: &mut Vec<FieldCause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(FieldCause::required(format!("{prefix}.containers"))),
        Some(c) if c.is_empty() => {
            causes.push(FieldCause::required(format!("{prefix}.containers")))
        }
        _ => {}
    }
    let volumes = super::validation::validate_volumes(spec, prefix, causes);
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{prefix}.{list}[{i}]");
            super::validation::validate_container(c, &at, &volumes, causes);
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
            if cname.is_empty() {
                causes.push(FieldCause::required(format!("{at}.name")));
            } else if !is_dns1123_label(cname) {
                causes.push(FieldCause::invalid(format!("{at}.name"), cname, LABEL_MSG));
            } else if seen.contains(&cname) {
                causes.push(FieldCause::duplicate(format!("{at}.name"), cname));
            } else {
                seen.push(cname);
            }
            match c.get("image").and_then(Value::as_str) {
                None | Some("") => causes.push(FieldCause::required(format!("{at}.image"))),
                Some(img) => {
                    if let Err(e) = skiff_common::image::ImageRef::parse(img) {
                        causes.push(FieldCause::invalid(
                            format!("{at}.image"),
                            img,
                            &e.to_string(),
                        ));
                    }
                }
            }
            if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
                if skiff_common::image::PullPolicy::parse(p).is_none() {
                    let supported =
                        skiff_common::image::PullPolicy::VALUES.map(|v| format!("{v:?}"));
                    causes.push(FieldCause {
                        reason: "FieldValueNotSupported",
                        field: format!("{at}.imagePullPolicy"),
                        message: format!(
                            "Unsupported value: {p:?}: supported values: {}",
                            supported.join(", ")
                        ),
                    });
                }
            }
            if c.pointer("/securityContext/privileged")
                .and_then(Value::as_bool)
                == Some(true)
            {
                causes.push(FieldCause::forbidden(
                    format!("{at}.securityContext.privileged"),
                    "privileged containers are not supported for WebAssembly workloads",
                ));
            }
            if c.pointer("/securityContext/capabilities/add")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                causes.push(FieldCause::forbidden(
                    format!("{at}.securityContext.capabilities.add"),
                    "Linux capabilities do not apply to WebAssembly workloads",
                ));
            }
            match (list, c.get("restartPolicy").and_then(Value::as_str)) {
                (_, None) | ("initContainers", Some("Always")) => {}
                ("initContainers", Some(p)) => causes.push(FieldCause {
                    reason: "FieldValueNotSupported",
                    field: format!("{at}.restartPolicy"),
                    message: format!("Unsupported value: {p:?}: supported values: \"Always\""),
                }),
                (_, Some(_)) => causes.push(FieldCause::forbidden(
                    format!("{at}.restartPolicy"),
                    "may not be set for non-init containers",
                )),
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if c.get(probe).and_then(|p| p.get("exec")).is_some() {
                    causes.push(FieldCause::forbidden(format!("{at}.{probe}.exec"), "exec probes are not supported for WebAssembly workloads; use httpGet or tcpSocket"));
                }
            }
        }
    }
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            causes.push(FieldCause {
                reason: "FieldValueNotSupported",
                field: format!("{prefix}.restartPolicy"),
                message: format!("Unsupported value: {p:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
            });
        }
    }
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(field).and_then(Value::as_bool) == Some(true) {
            causes.push(FieldCause::forbidden(
                format!("{prefix}.{field}"),
                "host namespaces do not apply to WebAssembly workloads",
            ));
        }
    }
}

/// The server-owned metadata and the defaults of a new object.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value, namespace: &str) {
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
    match rt.kind {
        "Pod" => {
            default_pod_spec(ensure_object(obj, "spec"));
            default_tolerations(ensure_object(obj, "spec"));
            let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        _ => super::kinds::default(rt, obj),
    }
}

/// The spec defaults Kubernetes applies on every write (create and update).
pub fn default_spec(rt: &ResourceType, obj: &mut Value) {
    match rt.kind {
        "Pod" => default_pod_spec(ensure_object(obj, "spec")),
        "Namespace" | "Node" => {}
        _ => super::kinds::default(rt, obj),
    }
}

/// `generateName` → a name with a random suffix.
pub fn generate_name(obj: &mut Value) {
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
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
            .collect();
        ensure_object(obj, "metadata").insert("name".into(), json!(format!("{prefix}{suffix}")));
    }
}

/// How long a new pod tolerates its node being not ready or unreachable before it is evicted
/// (the `DefaultTolerationSeconds` admission; skiff's default is 30 s, set by the server).
static DEFAULT_TOLERATION_SECONDS: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(30);

/// Set the toleration seconds new pods get (server start-up).
pub fn set_default_toleration_seconds(secs: i64) {
    DEFAULT_TOLERATION_SECONDS.store(secs.max(0), std::sync::atomic::Ordering::Relaxed);
}

/// Add `NoExecute` tolerations for `node.kubernetes.io/not-ready` and `unreachable` with the
/// default seconds, unless the pod already tolerates them (as the admission plugin does).
fn default_tolerations(spec: &mut Map<String, Value>) {
    let secs = DEFAULT_TOLERATION_SECONDS.load(std::sync::atomic::Ordering::Relaxed);
    let list = spec.entry("tolerations").or_insert(json!([]));
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
            (k == key || (k.is_empty() && exists)) && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}));
        }
    }
}

/// Kubernetes' defaults for a pod spec (of a pod or of a template).
pub(super) fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert(json!({}));
    spec.entry("priority").or_insert(json!(0));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                let parsed = c
                    .get("image")
                    .and_then(Value::as_str)
                    .and_then(|i| skiff_common::image::ImageRef::parse(i).ok());
                if let Some(image) = parsed {
                    let policy = skiff_common::image::PullPolicy::default_for(&image);
                    c.entry("imagePullPolicy").or_insert(json!(policy.as_str()));
                }
            }
        }
    }
}

/// The pod's QoS class, from its containers' requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = c.pointer("/resources/limits");
        let requests = c.pointer("/resources/requests");
        let has = |v: Option<&Value>, k: &str| v.and_then(|m| m.get(k)).is_some();
        if has(limits, "cpu")
            || has(limits, "memory")
            || has(requests, "cpu")
            || has(requests, "memory")
        {
            any = true;
        }
        for k in ["cpu", "memory"] {
            let l = limits.and_then(|m| m.get(k));
            let r = requests.and_then(|m| m.get(k));
            if l.is_none() || (r.is_some() && r != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Carry the server-owned fields of `old` into an update `new`; bump `generation` when the
/// spec changed. For the main resource the status is kept; for `/status` only status changes.
pub fn prepare_update(new: &mut Value, old: &Value, status_only: bool) {
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

/// The pod spec fields that may change after creation (as in Kubernetes: images,
/// activeDeadlineSeconds, tolerations additions, terminationGracePeriodSeconds).
pub fn pod_spec_change_allowed(old: &Value, new: &Value) -> Result<(), FieldCause> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = v.get_mut(list) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(m) = v.as_object_mut() {
            for k in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "nodeName",
            ] {
                m.remove(k);
            }
        }
        v
    };
    if strip(old) != strip(new) {
        return Err(FieldCause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    Ok(())
}

pub(super) fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.get(key).is_some_and(Value::is_object) {
        obj[key] = json!({});
    }
    match obj.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Now as RFC 3339 with second precision, as Kubernetes writes `metav1.Time`.
pub fn now_rfc3339() -> String {
    // Truncated to the second, as Kubernetes does (never a time in the future).
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
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
