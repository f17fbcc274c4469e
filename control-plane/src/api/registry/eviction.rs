//! `pods/eviction` (policy/v1 Eviction, what `kubectl drain` posts): a pod is deleted only if
//! the PodDisruptionBudget that covers it allows one more disruption. The budget is computed
//! from the namespace's pods at the time ([`crate::disruption`]) and the eviction is recorded
//! in the budget's status (`disruptedPods`, `disruptionsAllowed` one less) with the budget's
//! resourceVersion as precondition, so concurrent evictions cannot both spend the last
//! disruption. A pod that is not running (pending, finished) is evicted without a budget.

use serde_json::{json, Value};

use super::{delete, get_object, list_matching, Filter, Query};
use crate::api::error::{ApiError, ApiResult};
use crate::api::selectors::LabelSelector;
use crate::api::strategy::str_at;
use crate::api::AppState;
use crate::resources::{self, ResourceType};

/// How often an eviction retries when its budget changed meanwhile.
const RETRIES: usize = 8;

fn rt(group: &str, plural: &str) -> ApiResult<&'static ResourceType> {
    resources::find(group, "v1", plural)
        .ok_or_else(|| ApiError::Internal(format!("{plural} not registered")))
}

/// Is the pod Ready and not being deleted?
pub(crate) fn healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_none_or(Value::is_null)
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// Does a budget's selector select these labels? (In policy/v1 an empty selector selects
/// every pod of the namespace.)
fn selects(pdb: &Value, labels: Option<&Value>) -> bool {
    let sel = pdb.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    LabelSelector::from_object(&sel).is_ok_and(|s| s.matches(labels.unwrap_or(&Value::Null)))
}

/// Evict `ns/name` with these delete options.
pub(crate) async fn evict(
    state: &AppState,
    ns: &str,
    name: &str,
    opts: &Value,
    q: &Query,
) -> ApiResult<()> {
    let pods = rt("", "pods")?;
    let budgets = rt("policy", "poddisruptionbudgets")?;
    let mut attempt = 0;
    loop {
        let pod = get_object(state, pods, ns, name).await?;
        let running = str_at(&pod, "/status/phase") == "Running";
        let terminating = pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        if running && !terminating {
            let all = Filter::from_query(budgets, &Query::new())?;
            let (pdbs, _) = list_matching(state, budgets, Some(ns), &all).await?;
            let labels = pod.pointer("/metadata/labels");
            let covering: Vec<Value> = pdbs.into_iter().filter(|b| selects(b, labels)).collect();
            if covering.len() > 1 {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
                ));
            }
            if let Some(pdb) = covering.into_iter().next() {
                match spend(state, budgets, ns, name, &pod, pdb).await {
                    Err(ApiError::Conflict { .. }) if attempt < RETRIES => {
                        attempt += 1;
                        continue;
                    }
                    other => other?,
                }
            }
        }
        return delete(state, pods, ns, name, opts, q).await.map(|_| ());
    }
}

/// Spend one disruption of `pdb` on `pod`, or refuse with 429.
async fn spend(
    state: &AppState,
    budgets: &ResourceType,
    ns: &str,
    name: &str,
    pod: &Value,
    mut pdb: Value,
) -> ApiResult<()> {
    let pods = rt("", "pods")?;
    let all = Filter::from_query(pods, &Query::new())?;
    let (in_ns, _) = list_matching(state, pods, Some(ns), &all).await?;
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .cloned()
        .unwrap_or(json!({}));
    let covered: Vec<&Value> = in_ns
        .iter()
        .filter(|p| selects(&pdb, p.pointer("/metadata/labels")))
        .filter(|p| !matches!(str_at(p, "/status/phase"), "Succeeded" | "Failed"))
        .collect();
    let healthy_now = covered
        .iter()
        .filter(|p| healthy(p) && disrupted.get(str_at(p, "/metadata/name")).is_none())
        .count() as i64;
    let spec = pdb.get("spec").cloned().unwrap_or(json!({}));
    let b = crate::disruption::budget(&spec, covered.len() as i64, healthy_now);
    // An unhealthy pod does not count against the budget when the budget is met (and always,
    // with `unhealthyPodEvictionPolicy: AlwaysAllow`).
    let unhealthy = !healthy(pod);
    let always = str_at(&spec, "/unhealthyPodEvictionPolicy") == "AlwaysAllow";
    if unhealthy && (always || b.current_healthy >= b.desired_healthy) {
        return Ok(());
    }
    if b.disruptions_allowed < 1 {
        return Err(ApiError::DisruptionBudget(format!(
            "The disruption budget {} needs {} healthy pods and has {} currently",
            str_at(&pdb, "/metadata/name"),
            b.desired_healthy,
            b.current_healthy
        )));
    }
    let now = crate::api::registry::rules::now_rfc3339();
    pdb["status"]["disruptionsAllowed"] = json!(b.disruptions_allowed - 1);
    pdb["status"]["currentHealthy"] = json!(b.current_healthy);
    pdb["status"]["desiredHealthy"] = json!(b.desired_healthy);
    pdb["status"]["expectedPods"] = json!(b.expected_pods);
    pdb["status"]["disruptedPods"][name] = json!(now);
    let pdb_name = str_at(&pdb, "/metadata/name").to_string();
    // The budget's resourceVersion stays in the body: a precondition.
    super::update(state, budgets, ns, &pdb_name, pdb, true, &Query::new())
        .await
        .map(|_| ())
}
