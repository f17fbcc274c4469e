//! HorizontalPodAutoscalers (autoscaling/v2): `minReplicas` defaults to 1, `maxReplicas` is
//! required and not below it, a target is named; the `kubectl get hpa` columns.

use serde_json::{json, Value};

use super::print::{age_col, col, int_at, name_col};
use super::{ensure_object, entry, str_at, Row, Strategy};
use crate::api::error::FieldCause;

/// The HorizontalPodAutoscaler strategy.
pub(crate) struct HorizontalPodAutoscaler;

impl Strategy for HorizontalPodAutoscaler {
    fn initial_status(&self) -> Option<Value> {
        Some(json!({"desiredReplicas": 0}))
    }

    fn default(&self, obj: &mut Value) {
        {
            entry(ensure_object(obj, "spec"), "minReplicas", json!(1));
        }
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        {
            let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
            match spec.get("maxReplicas").and_then(Value::as_i64) {
                None => causes.push(FieldCause::required("spec.maxReplicas")),
                Some(max) if max < min => causes.push(FieldCause::invalid(
                    "spec.maxReplicas",
                    &max.to_string(),
                    "must be greater than or equal to `minReplicas`",
                )),
                _ => {}
            }
            if spec
                .pointer("/scaleTargetRef/name")
                .and_then(Value::as_str)
                .is_none()
            {
                causes.push(FieldCause::required("spec.scaleTargetRef.name"));
            }
        }
    }

    fn columns(&self) -> Vec<Value> {
        vec![
            name_col(),
            col("Reference", "string", 0, "reference to scaled resource"),
            col("Targets", "string", 0, "the current and the target metrics"),
            col("MinPods", "string", 0, "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
            col("MaxPods", "integer", 0, "maxReplicas is the upper limit for the number of pods that can be set by the autoscaler."),
            col("Replicas", "integer", 0, "current number of replicas of pods managed by this autoscaler."),
            age_col(),
        ]
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        let s = |p: &str| str_at(obj, p).to_string();
        let reference = format!(
            "{}/{}",
            s("/spec/scaleTargetRef/kind"),
            s("/spec/scaleTargetRef/name")
        );
        let min = obj
            .pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        vec![
            json!(row.name),
            json!(reference),
            json!(targets(obj)),
            json!(min.to_string()),
            json!(int_at(obj, "/spec/maxReplicas")),
            json!(int_at(obj, "/status/currentReplicas")),
            json!(row.age),
        ]
    }
}

/// The Targets column, as kubectl prints it: each metric's current value over its target
/// (`cpu: 45%/50%`, `1500m/1`), `<unknown>` before the controller has measured it, the first
/// two and `+ N more...` beyond.
fn targets(obj: &Value) -> String {
    let specs = obj
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = obj
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let unknown = || "<unknown>".to_string();
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_i64().map(|n| n.to_string()))
    };
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = statuses.get(i);
            match m["type"].as_str() {
                Some("Pods") => format!(
                    "{}/{}",
                    st.and_then(|s| text(&s["pods"]["current"]["averageValue"]))
                        .unwrap_or_else(unknown),
                    text(&m["pods"]["target"]["averageValue"]).unwrap_or_else(unknown)
                ),
                Some("Resource") => {
                    let name = m["resource"]["name"].as_str().unwrap_or("");
                    let target = &m["resource"]["target"];
                    if let Some(v) = text(&target["averageValue"]) {
                        format!(
                            "{name}: {}/{v}",
                            st.and_then(|s| text(&s["resource"]["current"]["averageValue"]))
                                .unwrap_or_else(unknown)
                        )
                    } else {
                        let current = st
                            .and_then(|s| s["resource"]["current"]["averageUtilization"].as_i64())
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(unknown);
                        let goal = target["averageUtilization"]
                            .as_i64()
                            .map(|u| format!("{u}%"))
                            .unwrap_or_else(|| "<auto>".into());
                        format!("{name}: {current}/{goal}")
                    }
                }
                Some("Object") => format!(
                    "{}/{}",
                    st.and_then(|s| text(&s["object"]["current"]["value"]))
                        .unwrap_or_else(unknown),
                    text(&m["object"]["target"]["value"])
                        .or_else(|| text(&m["object"]["target"]["averageValue"]))
                        .unwrap_or_else(unknown)
                ),
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

/// The annotation an autoscaling/v1 view keeps the v2 metrics it cannot show in, so an update
/// through v1 loses none of them (as Kubernetes does with its own annotations).
const V2_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// Where the v1 view keeps the v2 `behavior`.
const V2_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Is `m` the v2 metric that v1's `targetCPUUtilizationPercentage` is?
fn is_cpu_utilization(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization")
}

/// autoscaling/v1 HorizontalPodAutoscalers: a view of the v2 objects, converted both ways.
pub(crate) struct HorizontalPodAutoscalerV1;

impl Strategy for HorizontalPodAutoscalerV1 {
    fn default(&self, obj: &mut Value) {
        HorizontalPodAutoscaler.default(obj);
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<FieldCause>) {
        HorizontalPodAutoscaler.validate(obj, causes);
    }

    fn columns(&self) -> Vec<Value> {
        HorizontalPodAutoscaler.columns()
    }

    fn cells(&self, obj: &Value, row: &Row) -> Vec<Value> {
        HorizontalPodAutoscaler.cells(&self.storage_form(obj.clone()), row)
    }

    /// v1 → v2: the CPU target becomes a Resource metric, with the metrics the v1 form kept
    /// aside.
    fn storage_form(&self, mut obj: Value) -> Value {
        let kept_json = |obj: &Value, key: &str| {
            obj.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
        };
        let kept: Vec<Value> = kept_json(&obj, V2_METRICS)
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        let behavior = kept_json(&obj, V2_BEHAVIOR);
        if let Some(a) = obj
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(V2_METRICS);
            a.remove(V2_BEHAVIOR);
            if a.is_empty() {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("annotations");
                }
            }
        }
        let mut metrics: Vec<Value> = kept
            .into_iter()
            .filter(|m| !is_cpu_utilization(m))
            .collect();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(cpu) = spec
                .remove("targetCPUUtilizationPercentage")
                .filter(|v| !v.is_null())
            {
                metrics.insert(0, json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}));
            }
            if !metrics.is_empty() {
                spec.insert("metrics".into(), Value::Array(metrics));
            }
            if let Some(b) = behavior {
                spec.insert("behavior".into(), b);
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            if let Some(cpu) = status
                .remove("currentCPUUtilizationPercentage")
                .filter(|v| !v.is_null())
            {
                status.insert("currentMetrics".into(), json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]));
            }
        }
        obj["apiVersion"] = json!("autoscaling/v2");
        obj["kind"] = json!("HorizontalPodAutoscaler");
        obj
    }

    /// v2 → v1: the CPU utilization target as `targetCPUUtilizationPercentage`; every other
    /// metric kept in an annotation.
    fn served_form(&self, mut obj: Value) -> Value {
        let metrics: Vec<Value> = obj
            .pointer_mut("/spec")
            .and_then(Value::as_object_mut)
            .and_then(|s| s.remove("metrics"))
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default();
        let (cpu, rest): (Vec<Value>, Vec<Value>) =
            metrics.into_iter().partition(is_cpu_utilization);
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if let Some(t) = cpu
                .first()
                .and_then(|m| m.pointer("/resource/target/averageUtilization"))
            {
                spec.insert("targetCPUUtilizationPercentage".into(), t.clone());
            }
        }
        let behavior = obj
            .pointer_mut("/spec")
            .and_then(Value::as_object_mut)
            .and_then(|s| s.remove("behavior"));
        let mut keep = Vec::new();
        if !rest.is_empty() {
            keep.push((V2_METRICS, Value::Array(rest).to_string()));
        }
        if let Some(b) = behavior.filter(|b| !b.is_null()) {
            keep.push((V2_BEHAVIOR, b.to_string()));
        }
        if !keep.is_empty() {
            let meta = ensure_object(&mut obj, "metadata");
            if let Some(a) = entry(meta, "annotations", json!({})).as_object_mut() {
                for (k, v) in keep {
                    a.insert(k.into(), json!(v));
                }
            }
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let current = status.remove("currentMetrics");
            let cpu_now = current
                .as_ref()
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter().find(|m| {
                        m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
                    })
                })
                .and_then(|m| m.pointer("/resource/current/averageUtilization"))
                .cloned();
            if let Some(c) = cpu_now {
                status.insert("currentCPUUtilizationPercentage".into(), c);
            }
            status.remove("conditions");
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_kubectl_prints_them() {
        let cpu = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}});
        let mem = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let rps = json!({"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "5"}}});
        let cases = [
            (json!({"spec": {}}), "<none>"),
            (json!({"spec": {"metrics": [cpu]}}), "cpu: <unknown>/50%"),
            (
                json!({"spec": {"metrics": [cpu, rps]}, "status": {"currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "9m"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "http_requests_per_second"}, "current": {"averageValue": "1500m"}}}]}}),
                "cpu: 45%/50%, 1500m/5",
            ),
            (
                json!({"spec": {"metrics": [cpu, mem, rps]}}),
                "cpu: <unknown>/50%, memory: <unknown>/100Mi + 1 more...",
            ),
        ];
        for (obj, want) in cases {
            assert_eq!(targets(&obj), want, "{obj}");
        }
    }
}
