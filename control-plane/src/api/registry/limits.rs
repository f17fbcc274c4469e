//! LimitRange admission, as kube-apiserver's LimitRanger: a new pod's containers get the
//! namespace's default limits and requests (`default`, `defaultRequest`; a default limit is also
//! the default request), then every container, and the pod as a whole, must be within `min`,
//! `max` and `maxLimitRequestRatio`. A pod outside them is refused with 403 and Kubernetes'
//! messages. [`apply`] is pure and table-tested.

use serde_json::{json, Map, Value};
use skiff_common::quantity::Quantity;

/// Amounts in thousandths of the unit (millicores, millibytes), exact.
fn milli(v: &Value) -> Option<i64> {
    Quantity::parse(v.as_str()?).ok()?.scaled(3)
}

/// The containers of a pod spec (app and init), mutable.
fn containers(pod: &mut Value) -> Vec<&mut Value> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in spec.iter_mut() {
        if k == "containers" || k == "initContainers" {
            if let Some(list) = v.as_array_mut() {
                out.extend(list.iter_mut());
            }
        }
    }
    out
}

fn entries(item: &Value, field: &str) -> Vec<(String, Value)> {
    item.get(field)
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn resources<'a>(c: &'a mut Value, which: &str) -> Option<&'a mut Map<String, Value>> {
    let c = c.as_object_mut()?;
    let r = c.entry("resources").or_insert_with(|| json!({}));
    if !r.is_object() {
        *r = json!({});
    }
    let m = r.as_object_mut()?.entry(which).or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut()
}

/// Default `pod`'s containers from `ranges` (LimitRange objects) and check them; the messages
/// of every violation when there are any.
pub(crate) fn apply(pod: &mut Value, ranges: &[Value]) -> Result<(), Vec<String>> {
    let items: Vec<&Value> = ranges
        .iter()
        .flat_map(|r| {
            r.pointer("/spec/limits")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect();
    let of_type = |t: &str| {
        items
            .iter()
            .filter(move |i| i.get("type").and_then(Value::as_str) == Some(t))
            .copied()
            .collect::<Vec<&Value>>()
    };
    let (container_items, pod_items) = (of_type("Container"), of_type("Pod"));
    // Defaults first, from every range.
    for c in containers(pod) {
        for item in &container_items {
            let limits_default = entries(item, "default");
            let mut requests_default = entries(item, "defaultRequest");
            for (r, q) in &limits_default {
                if !requests_default.iter().any(|(k, _)| k == r) {
                    requests_default.push((r.clone(), q.clone()));
                }
            }
            if let Some(limits) = resources(c, "limits") {
                for (r, q) in limits_default {
                    limits.entry(r).or_insert(q);
                }
            }
            let limits = c
                .pointer("/resources/limits")
                .cloned()
                .unwrap_or_else(|| json!({}));
            if let Some(requests) = resources(c, "requests") {
                for (r, q) in requests_default {
                    // An explicit limit below the default request is the request (as Kubernetes:
                    // a request never defaults above its limit).
                    let q = match (limits.get(&r), milli(&q)) {
                        (Some(l), Some(d)) if milli(l).is_some_and(|l| l < d) => l.clone(),
                        _ => q,
                    };
                    requests.entry(r).or_insert(q);
                }
            }
        }
    }
    let mut errors = Vec::new();
    let mut totals: (Map<String, Value>, Map<String, Value>) = (Map::new(), Map::new());
    let mut sums = (
        std::collections::BTreeMap::<String, i64>::new(),
        std::collections::BTreeMap::<String, i64>::new(),
    );
    for c in containers(pod) {
        let req = c
            .pointer("/resources/requests")
            .cloned()
            .unwrap_or(Value::Null);
        let lim = c
            .pointer("/resources/limits")
            .cloned()
            .unwrap_or(Value::Null);
        for (k, v) in req.as_object().into_iter().flatten() {
            *sums.0.entry(k.clone()).or_default() += milli(v).unwrap_or(0);
        }
        for (k, v) in lim.as_object().into_iter().flatten() {
            *sums.1.entry(k.clone()).or_default() += milli(v).unwrap_or(0);
        }
        for item in &container_items {
            check(item, "Container", &req, &lim, &mut errors);
        }
    }
    for (k, v) in sums.0 {
        let text = format_amount(&k, v);
        totals.0.insert(k, json!(text));
    }
    for (k, v) in sums.1 {
        let text = format_amount(&k, v);
        totals.1.insert(k, json!(text));
    }
    for item in &pod_items {
        check(
            item,
            "Pod",
            &Value::Object(totals.0.clone()),
            &Value::Object(totals.1.clone()),
            &mut errors,
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The min/max/ratio checks of one range item on requests `req` and limits `lim`.
fn check(item: &Value, kind: &str, req: &Value, lim: &Value, errors: &mut Vec<String>) {
    let shown = |v: &Value| v.as_str().unwrap_or("").to_string();
    for (r, min) in entries(item, "min") {
        match req.get(&r) {
            None => errors.push(format!(
                "minimum {r} usage per {kind} is {}.  No request is specified",
                shown(&min)
            )),
            Some(q) if milli(q) < milli(&min) => errors.push(format!(
                "minimum {r} usage per {kind} is {}, but request is {}",
                shown(&min),
                shown(q)
            )),
            _ => {}
        }
    }
    for (r, max) in entries(item, "max") {
        match lim.get(&r) {
            None => errors.push(format!(
                "maximum {r} usage per {kind} is {}.  No limit is specified",
                shown(&max)
            )),
            Some(q) if milli(q) > milli(&max) => errors.push(format!(
                "maximum {r} usage per {kind} is {}, but limit is {}",
                shown(&max),
                shown(q)
            )),
            _ => {}
        }
    }
    for (r, ratio) in entries(item, "maxLimitRequestRatio") {
        let (Some(l), Some(q), Some(max)) = (
            lim.get(&r).and_then(milli),
            req.get(&r).and_then(milli),
            milli(&ratio),
        ) else {
            continue;
        };
        // limit / request > ratio, in integers: limit × 1000 > ratio × request.
        if q > 0 && i128::from(l) * 1000 > i128::from(max) * i128::from(q) {
            let provided = l as f64 / q as f64;
            errors.push(format!(
                "{r} max limit to request ratio per {kind} is {}, but provided ratio is {provided:.6}",
                shown(&ratio)
            ));
        }
    }
}

/// A milli-amount of `resource` as Kubernetes prints it: CPU and counts as `250m` or `2`,
/// byte amounts with the largest binary suffix that divides them (`128Mi`).
pub(crate) fn format_amount(resource: &str, v: i64) -> String {
    let bytes_like = !resource.ends_with("cpu")
        && resource != "pods"
        && !resource.starts_with("count/")
        && (resource.contains("memory") || resource.contains("storage"));
    if bytes_like && v % 1000 == 0 && v != 0 {
        let b = v / 1000;
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if b % unit == 0 {
                return format!("{}{suffix}", b / unit);
            }
        }
        return b.to_string();
    }
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

/// The message of a refusal: one error as is, several in brackets (Kubernetes' aggregate).
pub(crate) fn message(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        json!({"spec": {"limits": limits}})
    }

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "main", "image": "x", "resources": resources}]}})
    }

    #[test]
    fn limit_range_table() {
        let defaults = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "min": {"cpu": "50m"}, "max": {"cpu": "1", "memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "5"}}]));
        let pod_max = range(json!([{"type": "Pod", "max": {"memory": "256Mi"}}]));
        // (ranges, pod resources, expected resources after defaulting, or the errors)
        type Case<'a> = (Vec<Value>, Value, Result<Value, Vec<&'a str>>);
        let cases: Vec<Case> = vec![
            (
                vec![defaults.clone()],
                json!({}),
                Ok(json!({"limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m", "memory": "128Mi"}})),
            ),
            (
                vec![defaults.clone()],
                json!({"limits": {"cpu": "200m"}}),
                Ok(json!({"limits": {"cpu": "200m", "memory": "128Mi"},
                    "requests": {"cpu": "100m", "memory": "128Mi"}})),
            ),
            (
                vec![defaults.clone()],
                json!({"limits": {"cpu": "2"}}),
                Err(vec![
                    "maximum cpu usage per Container is 1, but limit is 2",
                    "cpu max limit to request ratio per Container is 5, but provided ratio is 20.000000",
                ]),
            ),
            (
                vec![defaults.clone()],
                json!({"requests": {"cpu": "10m"}}),
                Err(vec![
                    "minimum cpu usage per Container is 50m, but request is 10m",
                    "cpu max limit to request ratio per Container is 5, but provided ratio is 50.000000",
                ]),
            ),
            (
                vec![range(json!([{"type": "Container", "max": {"memory": "1Gi"}}]))],
                json!({}),
                Err(vec!["maximum memory usage per Container is 1Gi.  No limit is specified"]),
            ),
            (
                vec![defaults.clone(), pod_max.clone()],
                json!({}),
                Ok(json!({"limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m", "memory": "128Mi"}})),
            ),
            (
                vec![pod_max],
                json!({"limits": {"memory": "512Mi"}}),
                Err(vec!["maximum memory usage per Pod is 256Mi, but limit is 512Mi"]),
            ),
        ];
        for (ranges, resources, want) in cases {
            let mut p = pod(resources.clone());
            let got = apply(&mut p, &ranges);
            match want {
                Ok(r) => {
                    assert_eq!(got, Ok(()), "{resources}");
                    assert_eq!(p["spec"]["containers"][0]["resources"], r, "{resources}");
                }
                Err(msgs) => assert_eq!(
                    got,
                    Err(msgs.iter().map(|s| s.to_string()).collect()),
                    "{resources}"
                ),
            }
        }
    }
}
