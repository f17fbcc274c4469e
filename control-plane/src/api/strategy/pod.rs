//! Pods: the pod spec's defaults and validation (shared with every kind that holds a pod
//! template), the admission defaults of a new pod (not-ready/unreachable tolerations, QoS
//! class, `Pending`), what an update may change, graceful deletion of a bound pod, and the
//! `kubectl get pods` columns.

use serde_json::{json, Map, Value};

use skiff_common::names::{is_dns1123_label, LABEL_MSG};

use super::print::{col, human_duration};
use super::{ensure_object, Row, Strategy};
use crate::api::error::FieldCause;

/// The Pod strategy.
pub(crate) struct Pod;

impl Strategy for Pod {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        default_pod_spec(ensure_object(obj, "spec"));
    }

    fn prepare_create(&self, obj: &mut Value) {
        default_tolerations(ensure_object(obj, "spec"));
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if let Err(c) = pod_spec_change_allowed(
            old.get("spec").unwrap_or(&Value::Null),
            new.get("spec").unwrap_or(&Value::Null),
        ) {
            causes.push(c);
        }
    }

    /// Pods on a node are deleted gracefully: the node stops them and then removes the object.
    fn grace_period(&self, obj: &Value, opts: &Value) -> Option<i64> {
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return None;
        }
        let grace = opts
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                obj.pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30);
        (grace > 0).then_some(grace)
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            super::print::name_col(),
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            super::print::age_col(),
            col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        pod_cells(obj, row.name.clone(), row.age.clone(), row.now)
    }
}

/// Validate a pod spec found at `prefix` (`spec`, `spec.template.spec`).
pub(crate) fn validate_pod_spec(spec: &Value, prefix: &str, causes: &mut Vec<FieldCause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(FieldCause::required(format!("{prefix}.containers"))),
        Some(c) if c.is_empty() => {
            causes.push(FieldCause::required(format!("{prefix}.containers")))
        }
        _ => {}
    }
    let volumes = crate::api::validation::validate_volumes(spec, prefix, causes);
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
            crate::api::validation::validate_container(c, &at, &volumes, causes);
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

/// How long a new pod tolerates its node being not ready or unreachable before it is evicted
/// (the `DefaultTolerationSeconds` admission; skiff's default is 30 s, set by the server).
static DEFAULT_TOLERATION_SECONDS: std::sync::atomic::AtomicI64 =
    std::sync::atomic::AtomicI64::new(30);

/// Set the toleration seconds new pods get (server start-up).
pub(crate) fn set_default_toleration_seconds(secs: i64) {
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
pub(crate) fn default_pod_spec(spec: &mut Map<String, Value>) {
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
pub(crate) fn qos_class(spec: &Value) -> &'static str {
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

/// The pod spec fields that may change after creation (as in Kubernetes: images,
/// activeDeadlineSeconds, tolerations additions, terminationGracePeriodSeconds).
pub(crate) fn pod_spec_change_allowed(old: &Value, new: &Value) -> Result<(), FieldCause> {
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

fn pod_cells(pod: &Value, name: String, age: String, now: jiff::Timestamp) -> Vec<Value> {
    let statuses: Vec<&Value> = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let init_specs: Vec<&Value> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let is_sidecar = |name: Option<&str>| {
        init_specs.iter().any(|c| {
            c.get("name").and_then(Value::as_str) == name
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    // Sidecars (restartable init containers) count in READY, as kubectl prints it.
    let mut total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0)
        + init_specs
            .iter()
            .filter(|c| is_sidecar(c.get("name").and_then(Value::as_str)))
            .count();
    total = total.max(statuses.len());
    let mut ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let mut restarts = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .or_else(|| pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let mut note_restart = |c: &Value, restarts: &mut i64| {
        *restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
    };
    // Init containers first: `Init:N/M`, `Init:<reason>` while they have not all completed.
    let init_statuses: Vec<&Value> = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut initializing = false;
    let mut sidecar_restarts = 0;
    for (i, c) in init_statuses.iter().enumerate() {
        note_restart(c, &mut restarts);
        if is_sidecar(c.get("name").and_then(Value::as_str)) {
            note_restart(c, &mut sidecar_restarts);
            if c.get("started").and_then(Value::as_bool) == Some(true)
                && c.get("ready").and_then(Value::as_bool) == Some(true)
            {
                ready += 1;
            }
            continue;
        }
        let terminated = c.pointer("/state/terminated");
        let waiting = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        match (terminated, waiting) {
            (Some(t), _) if t.get("exitCode").and_then(Value::as_i64) == Some(0) => continue,
            (Some(t), _) => {
                reason = match t
                    .get("reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    Some(r) => format!("Init:{r}"),
                    None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(sig) => format!("Init:Signal:{sig}"),
                        None => format!(
                            "Init:ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            }
            (None, Some(w)) => reason = format!("Init:{w}"),
            (None, None) => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }
    let initialized = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Initialized")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
    let mut has_running = false;
    // Until the init containers are done, the app containers' statuses say nothing yet.
    let show_containers = !initializing || initialized;
    if show_containers {
        restarts = sidecar_restarts;
    }
    for c in statuses.iter().rev().filter(|_| show_containers) {
        note_restart(c, &mut restarts);
        if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            reason = match t
                .get("reason")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
            {
                Some(r) => r.to_string(),
                None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!(
                        "ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            };
        } else if c.pointer("/state/running").is_some()
            && c.get("ready").and_then(Value::as_bool) == Some(true)
        {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        reason = "Terminating".into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let or_none = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age),
        json!(or_none(
            pod.pointer("/status/podIP").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/spec/nodeName").and_then(Value::as_str)
        )),
        json!(or_none(
            pod.pointer("/status/nominatedNodeName")
                .and_then(Value::as_str)
        )),
        json!("<none>"),
    ]
}
