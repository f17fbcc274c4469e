//! ResourceQuota admission, as kube-apiserver's quota plugin: a create whose usage would take a
//! quota of its namespace past `spec.hard` is refused (403, `exceeded quota: q, requested: ...,
//! used: ..., limited: ...`); one that fits is charged to the quota's `status.used` in the same
//! store transaction as the create (with the quota's revision as precondition, so concurrent
//! creates cannot both take the last unit; the loser tries again). A pod that names no request or
//! limit of a compute resource a quota tracks is refused (`must specify ...`). The quota
//! controller (`controllers::quota`) recomputes `status.used` from what exists, so deletions give
//! usage back. An update that makes an object use more (a Service turned NodePort or
//! LoadBalancer, a claim that asks for more storage) is admitted and charged the same way for
//! what it adds ([`growth`]); one that uses less is given back by the controller.
//!
//! Tracked: `pods`, `cpu`/`memory` (= requests), `requests.*` and `limits.*` of cpu, memory and
//! ephemeral-storage, `requests.storage` and `persistentvolumeclaims`, `services`,
//! `services.nodeports`, `services.loadbalancers`, `configmaps`, `secrets`,
//! `replicationcontrollers`, `resourcequotas`, and `count/<resource>[.<group>]` of any kind.
//! Scopes select pods, from `spec.scopes` and `spec.scopeSelector.matchExpressions` together
//! ([`scope_matches`]): `BestEffort`, `NotBestEffort`, `Terminating`, `NotTerminating`,
//! `CrossNamespacePodAffinity`, and `PriorityClass` (`In`, `NotIn`, `Exists`, `DoesNotExist` of
//! `spec.priorityClassName`). Amounts are exact, in thousandths of their unit.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use skiff_common::quantity::Quantity;

use super::limits::format_amount;
use crate::api::error::{ApiError, ApiResult};
use crate::api::AppState;
use crate::resources::{self, ResourceType};
use crate::store::{StoreError, Write};

/// Amounts by resource name, in thousandths.
pub(crate) type Usage = BTreeMap<String, i64>;

fn milli(v: &Value) -> Option<i64> {
    Quantity::parse(v.as_str()?).ok()?.scaled(3)
}

const COMPUTE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// What one object uses, by every name a quota may track it under.
pub(crate) fn usage(rt: &ResourceType, obj: &Value) -> Usage {
    let mut u = Usage::new();
    let count = if rt.group.is_empty() {
        format!("count/{}", rt.plural)
    } else {
        format!("count/{}.{}", rt.plural, rt.group)
    };
    u.insert(count, 1000);
    match (rt.group, rt.plural) {
        ("", "pods") => pod_usage(obj, &mut u),
        ("", "services") => {
            u.insert("services".into(), 1000);
            let ports = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            match obj.pointer("/spec/type").and_then(Value::as_str) {
                Some("NodePort") => {
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                Some("LoadBalancer") => {
                    u.insert("services.loadbalancers".into(), 1000);
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), 1000);
            if let Some(s) = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(milli)
            {
                u.insert("requests.storage".into(), s);
            }
        }
        ("", p @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            u.insert(p.into(), 1000);
        }
        _ => {}
    }
    u
}

/// A pod's compute: per resource, the larger of its app containers' sum and its largest init
/// container (requests default to limits), as Kubernetes counts it.
fn pod_usage(pod: &Value, u: &mut Usage) {
    u.insert("pods".into(), 1000);
    let list = |f: &str| {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for which in ["requests", "limits"] {
        for r in COMPUTE {
            let amount = |c: &Value| {
                c.pointer(&format!("/resources/{which}/{r}"))
                    .or_else(|| {
                        (which == "requests")
                            .then(|| c.pointer(&format!("/resources/limits/{r}")))
                            .flatten()
                    })
                    .and_then(milli)
            };
            let app: Vec<Option<i64>> = list("containers").iter().map(amount).collect();
            if app.iter().all(Option::is_none)
                && list("initContainers").iter().all(|c| amount(c).is_none())
            {
                continue;
            }
            let sum: i64 = app.iter().flatten().sum();
            let init = list("initContainers")
                .iter()
                .filter_map(amount)
                .max()
                .unwrap_or(0);
            let total = sum.max(init);
            u.insert(format!("{which}.{r}"), total);
            if which == "requests" && *r != "ephemeral-storage" {
                u.insert(r.to_string(), total);
            }
        }
    }
}

/// Does the quota's scope select this object? (Scopes apply to pods only.) Every entry of
/// `spec.scopes` (as `Exists`) and of `spec.scopeSelector.matchExpressions` must match.
pub(crate) fn selects(quota: &Value, rt: &ResourceType, obj: &Value) -> bool {
    let listed = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s, "Exists", Vec::new()));
    let selected = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            (
                e.get("scopeName").and_then(Value::as_str).unwrap_or(""),
                e.get("operator").and_then(Value::as_str).unwrap_or(""),
                values,
            )
        });
    let scopes: Vec<(&str, &str, Vec<&str>)> = listed.chain(selected).collect();
    if scopes.is_empty() {
        return true;
    }
    if (rt.group, rt.plural) != ("", "pods") {
        return false;
    }
    scopes
        .iter()
        .all(|(name, op, values)| scope_matches(name, op, values, obj))
}

/// Does one scope requirement select the pod? Pure. An unknown scope or operator selects every
/// pod (stricter, never looser); validation refuses them.
pub(crate) fn scope_matches(scope: &str, op: &str, values: &[&str], pod: &Value) -> bool {
    let best_effort = ["containers", "initContainers"].iter().all(|f| {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|w| {
                    c.pointer(&format!("/resources/{w}"))
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                })
            })
    });
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    let holds = match scope {
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match op {
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => true,
            };
        }
        _ => return true,
    };
    match op {
        "DoesNotExist" => !holds,
        _ => holds,
    }
}

/// Does a pod's affinity or anti-affinity name other namespaces (`namespaces` or a
/// `namespaceSelector`)?
fn cross_namespace_affinity(pod: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(a) = pod.pointer(&format!("/spec/affinity/{kind}")) else {
            return false;
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|t| {
            t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
                || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
    })
}

/// `k=v,...` of the given amounts, by name.
fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", format_amount(k, *v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Hard limits of a quota.
pub(crate) fn hard(quota: &Value) -> Usage {
    amounts(quota.pointer("/spec/hard"))
}

/// The amounts of a `used` or `hard` map.
pub(crate) fn amounts_of(v: &Value) -> Usage {
    amounts(Some(v))
}

fn amounts(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), milli(v)?)))
        .collect()
}

/// The quota's usage after adding `delta`, or the refusal. Pure.
pub(crate) fn admit(
    name: &str,
    hard: &Usage,
    used: &Usage,
    delta: &Usage,
    pod_containers: &[(String, Usage, Usage)],
) -> Result<Usage, String> {
    // A tracked compute resource every container must name.
    let mut missing = Vec::new();
    for key in hard.keys() {
        let (which, r) = match key.split_once('.') {
            Some((w @ ("requests" | "limits"), r)) if COMPUTE.contains(&r) => (w, r),
            None if key == "cpu" || key == "memory" => ("requests", key.as_str()),
            _ => continue,
        };
        let lacking: Vec<&str> = pod_containers
            .iter()
            .filter(|(_, req, lim)| {
                let named = if which == "requests" {
                    req.contains_key(r) || lim.contains_key(r)
                } else {
                    lim.contains_key(r)
                };
                !named
            })
            .map(|(n, _, _)| n.as_str())
            .collect();
        if !lacking.is_empty() {
            missing.push(format!("{which}.{r} for: {}", lacking.join(",")));
        }
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(format!(
            "failed quota: {name}: must specify {}",
            missing.join("; ")
        ));
    }
    let mut next = used.clone();
    let mut exceeded = Vec::new();
    for (k, limit) in hard {
        let Some(d) = delta.get(k) else { continue };
        let now = used.get(k).copied().unwrap_or(0);
        let total = now.saturating_add(*d);
        if total > *limit {
            exceeded.push(k.clone());
        }
        next.insert(k.clone(), total);
    }
    if exceeded.is_empty() {
        return Ok(next);
    }
    let mask = |u: &Usage| -> Usage {
        exceeded
            .iter()
            .map(|k| (k.clone(), u.get(k).copied().unwrap_or(0)))
            .collect()
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        pretty(&mask(delta)),
        pretty(&mask(used)),
        pretty(&mask(hard))
    ))
}

/// Per container: name, requests, limits (for the `must specify` check).
fn containers(obj: &Value) -> Vec<(String, Usage, Usage)> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|f| {
            obj.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| {
            (
                c.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                amounts(c.pointer("/resources/requests")),
                amounts(c.pointer("/resources/limits")),
            )
        })
        .collect()
}

/// What an update adds to an object's usage: the resources it uses more of, by how much. Pure.
pub(crate) fn growth(rt: &ResourceType, old: &Value, new: &Value) -> Usage {
    let before = usage(rt, old);
    usage(rt, new)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(&k).copied().unwrap_or(0));
            (d > 0).then_some((k, d))
        })
        .collect()
}

/// The quota updates that charge a new `obj` of `rt` in `ns` (none when no quota tracks it), or
/// the 403 when one would be exceeded.
pub(super) async fn charge(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    obj: &Value,
) -> ApiResult<Vec<Write>> {
    charge_delta(state, rt, ns, name, obj, usage(rt, obj), true).await
}

/// The quota updates that charge an update of `old` to `new` for what it adds (none when it
/// adds nothing a quota tracks), or the 403. Pods' compute cannot change in place, so their
/// containers are not checked again.
pub(super) async fn charge_update(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: &Value,
    new: &Value,
) -> ApiResult<Vec<Write>> {
    let delta = growth(rt, old, new);
    if delta.is_empty() {
        return Ok(Vec::new());
    }
    charge_delta(state, rt, ns, name, new, delta, false).await
}

async fn charge_delta(
    state: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    obj: &Value,
    delta: Usage,
    created: bool,
) -> ApiResult<Vec<Write>> {
    if ns.is_empty() {
        return Ok(Vec::new());
    }
    let Some(quota_rt) = resources::find("", "v1", "resourcequotas") else {
        return Ok(Vec::new());
    };
    let quotas = state
        .store
        .list(&quota_rt.storage_key(), Some(ns))
        .await
        .map_err(|e| ApiError::from_store(e, &quota_rt.qualified(), ""))?;
    if quotas.objects.is_empty() {
        return Ok(Vec::new());
    }
    let is_pod = created && (rt.group, rt.plural) == ("", "pods");
    let pod_containers = if is_pod { containers(obj) } else { Vec::new() };
    let mut writes = Vec::new();
    for stored in &quotas.objects {
        let mut quota = super::materialize(quota_rt, stored)?;
        let hard = hard(&quota);
        if !delta.keys().any(|k| hard.contains_key(k)) || !selects(&quota, rt, obj) {
            continue;
        }
        let quota_name = stored.key.name.clone();
        let tracked: Vec<(String, Usage, Usage)> = if is_pod {
            pod_containers.clone()
        } else {
            Vec::new()
        };
        let used = amounts(quota.pointer("/status/used"));
        let next = admit(&quota_name, &hard, &used, &delta, &tracked).map_err(|message| {
            ApiError::Denied {
                group: rt.group.into(),
                resource: rt.plural.into(),
                name: name.into(),
                message,
            }
        })?;
        let used_json: serde_json::Map<String, Value> = next
            .iter()
            .map(|(k, v)| (k.clone(), json!(format_amount(k, *v))))
            .collect();
        quota["status"]["used"] = Value::Object(used_json);
        quota["status"]["hard"] = quota.pointer("/spec/hard").cloned().unwrap_or(json!({}));
        writes.push(Write::Update {
            key: stored.key.clone(),
            data: super::to_stored(quota_rt, &mut quota)?,
            precondition: Some(stored.revision),
        });
    }
    Ok(writes)
}

/// Did a create lose a race for a quota (another write charged it first)?
pub(super) fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::Refused { index, source } if *index > 0 && matches!(**source, StoreError::Conflict { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(pairs: &[(&str, i64)]) -> Usage {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn scope_table() {
        let pod = |spec: Value| json!({"spec": spec});
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        let sized =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        let deadline = pod(json!({"activeDeadlineSeconds": 30, "containers": [{"name": "c"}]}));
        let high = pod(json!({"priorityClassName": "high", "containers": [{"name": "c"}]}));
        let cross = pod(
            json!({"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "podAffinityTerm": {"topologyKey": "k", "namespaceSelector": {}}}]}}}),
        );
        // (scope, operator, values, pod, selected)
        let cases: Vec<(&str, &str, &[&str], &Value, bool)> = vec![
            ("BestEffort", "Exists", &[], &plain, true),
            ("BestEffort", "Exists", &[], &sized, false),
            ("NotBestEffort", "Exists", &[], &sized, true),
            ("Terminating", "Exists", &[], &deadline, true),
            ("Terminating", "Exists", &[], &plain, false),
            ("NotTerminating", "Exists", &[], &plain, true),
            ("PriorityClass", "In", &["high", "mid"], &high, true),
            ("PriorityClass", "In", &["low"], &high, false),
            ("PriorityClass", "In", &["low"], &plain, false),
            ("PriorityClass", "NotIn", &["low"], &high, true),
            ("PriorityClass", "NotIn", &["high"], &high, false),
            ("PriorityClass", "NotIn", &["high"], &plain, true),
            ("PriorityClass", "Exists", &[], &high, true),
            ("PriorityClass", "Exists", &[], &plain, false),
            ("PriorityClass", "DoesNotExist", &[], &plain, true),
            ("CrossNamespacePodAffinity", "Exists", &[], &cross, true),
            ("CrossNamespacePodAffinity", "Exists", &[], &plain, false),
        ];
        for (scope, op, values, p, want) in cases {
            assert_eq!(
                scope_matches(scope, op, values, p),
                want,
                "{scope} {op} {values:?} {p}"
            );
        }
        // The list and the selector together: both must select.
        let pods = resources::find("", "v1", "pods").unwrap();
        let q = json!({"spec": {"scopes": ["NotTerminating"], "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(selects(&q, pods, &high));
        assert!(!selects(&q, pods, &plain));
        let configmaps = resources::find("", "v1", "configmaps").unwrap();
        assert!(!selects(&q, configmaps, &json!({})));
    }

    #[test]
    fn quota_arithmetic_table() {
        let pods = resources::find("", "v1", "pods").unwrap();
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
        }});
        let got = usage(pods, &pod);
        assert_eq!(got["pods"], 1000);
        assert_eq!(got["count/pods"], 1000);
        // max(250m + 1 (request defaults to limit), 2 (init)) = 2
        assert_eq!(got["requests.cpu"], 2000);
        assert_eq!(got["cpu"], 2000);
        assert_eq!(got["limits.cpu"], 1500);
        assert_eq!(got["requests.memory"], (128i64 << 20) * 1000);
        let deploy = resources::find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            usage(deploy, &json!({})),
            u(&[("count/deployments.apps", 1000)])
        );
        // Updates are charged for what they add only.
        let services = resources::find("", "v1", "services").unwrap();
        let svc =
            |t: &str, ports: usize| json!({"spec": {"type": t, "ports": vec![json!({}); ports]}});
        assert_eq!(
            growth(services, &svc("ClusterIP", 2), &svc("NodePort", 2)),
            u(&[("services.nodeports", 2000)])
        );
        assert_eq!(
            growth(services, &svc("NodePort", 1), &svc("LoadBalancer", 2)),
            u(&[
                ("services.loadbalancers", 1000),
                ("services.nodeports", 1000)
            ])
        );
        assert!(growth(services, &svc("NodePort", 2), &svc("ClusterIP", 2)).is_empty());
        let claims = resources::find("", "v1", "persistentvolumeclaims").unwrap();
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert_eq!(
            growth(claims, &pvc("1Gi"), &pvc("3Gi")),
            u(&[("requests.storage", (2i64 << 30) * 1000)])
        );
        assert!(growth(claims, &pvc("3Gi"), &pvc("1Gi")).is_empty());

        // (hard, used, delta, containers, result)
        let c = |name: &str, req: &[(&str, i64)], lim: &[(&str, i64)]| {
            (name.to_string(), u(req), u(lim))
        };
        type Containers = Vec<(String, Usage, Usage)>;
        type Case<'a> = (Usage, Usage, Usage, Containers, Result<Usage, &'a str>);
        let cases: Vec<Case> = vec![
            (u(&[("pods", 2000)]), u(&[("pods", 1000)]), u(&[("pods", 1000)]), vec![], Ok(u(&[("pods", 2000)]))),
            (
                u(&[("pods", 2000)]),
                u(&[("pods", 2000)]),
                u(&[("pods", 1000)]),
                vec![],
                Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"),
            ),
            (
                u(&[("pods", 10000), ("requests.memory", (100i64 << 20) * 1000)]),
                u(&[("pods", 1000), ("requests.memory", 0)]),
                u(&[("pods", 1000), ("requests.memory", (128i64 << 20) * 1000)]),
                vec![c("a", &[("memory", 1)], &[])],
                Err("exceeded quota: q, requested: requests.memory=128Mi, used: requests.memory=0, limited: requests.memory=100Mi"),
            ),
            (
                u(&[("limits.cpu", 4000)]),
                u(&[]),
                u(&[("limits.cpu", 1000)]),
                vec![c("a", &[("cpu", 1)], &[]), c("b", &[], &[("cpu", 1)])],
                Err("failed quota: q: must specify limits.cpu for: a"),
            ),
            (u(&[("services.nodeports", 1000)]), u(&[]), u(&[("services", 1000)]), vec![], Ok(u(&[]))),
        ];
        for (hard, used, delta, containers, want) in cases {
            let got = admit("q", &hard, &used, &delta, &containers);
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{hard:?} {used:?} {delta:?}"
            );
        }
    }
}
