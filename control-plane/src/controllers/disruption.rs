//! The disruption controller: each PodDisruptionBudget's status (`currentHealthy`,
//! `desiredHealthy`, `expectedPods`, `disruptionsAllowed`, the `DisruptionAllowed` condition)
//! from the pods it selects, as kube-controller-manager keeps it; pods the eviction API
//! recorded in `disruptedPods` count as gone until their deletion is seen (at most two
//! minutes). The arithmetic is [`crate::disruption::budget`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{json, Map, Value};

use super::{ready_since, ControllerError, PodInformer};
use crate::api::selectors::LabelSelector;

/// How long an eviction's record keeps a pod out of the healthy count.
const DISRUPTED_FOR: i64 = 120;

struct Ctx {
    client: kube::Client,
    pods: PodInformer,
}

/// Run the controller: any pod change in a namespace may change its budgets.
pub async fn run(client: kube::Client, pods: PodInformer) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pods.clone(),
    });
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            super::in_pod_namespace(&budgets, &pod)
        })
        .run(reconcile, super::retry, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The status a budget's pods give it at `now`, and when to look again (a disruption record
/// expiring).
pub fn status(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: jiff::Timestamp,
) -> Result<(Value, Option<Duration>), ControllerError> {
    let spec = serde_json::to_value(&pdb.spec)?;
    let selector = spec
        .get("selector")
        .cloned()
        .filter(|s| !s.is_null())
        .unwrap_or(json!({}));
    let selector = LabelSelector::from_object(&selector).map_err(ControllerError::Invalid)?;
    let covered: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| selector.matches_map(p.metadata.labels.as_ref()))
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .collect();
    // Eviction records of pods still there and not yet being deleted, younger than the limit.
    let mut disrupted = Map::new();
    let mut recheck = None;
    for (name, at) in pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
    {
        let age = now.duration_since(at.0).as_secs();
        let pending = covered.iter().any(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.metadata.deletion_timestamp.is_none()
        });
        if pending && age < DISRUPTED_FOR {
            recheck = Some(Duration::from_secs((DISRUPTED_FOR - age).max(1) as u64));
            disrupted.insert(name, json!(at.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
        }
    }
    let healthy = covered
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && ready_since(p).is_some()
                && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
        })
        .count() as i64;
    let b = crate::disruption::budget(&spec, covered.len() as i64, healthy);
    let allowed = b.disruptions_allowed > 0;
    let (reason, message) = if allowed {
        ("SufficientPods", "")
    } else {
        ("InsufficientPods", "")
    };
    let previous = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let status_text = if allowed { "True" } else { "False" };
    let since = match previous {
        Some(c) if c.status == status_text => Some(c.last_transition_time.0),
        _ => None,
    }
    .unwrap_or(now);
    let status = json!({
        "observedGeneration": pdb.metadata.generation,
        "currentHealthy": b.current_healthy,
        "desiredHealthy": b.desired_healthy,
        "expectedPods": b.expected_pods,
        "disruptionsAllowed": b.disruptions_allowed,
        "disruptedPods": if disrupted.is_empty() { Value::Null } else { Value::Object(disrupted) },
        "conditions": [{
            "type": "DisruptionAllowed", "status": status_text, "reason": reason, "message": message,
            "observedGeneration": pdb.metadata.generation,
            "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }],
    });
    Ok((status, recheck))
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let (want, recheck) = status(&pdb, &ctx.pods.in_namespace(&ns), jiff::Timestamp::now())?;
    let have = serde_json::to_value(&pdb.status)?;
    let same = [
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
        "disruptionsAllowed",
        "observedGeneration",
    ]
    .iter()
    .all(|k| have.get(*k) == want.get(*k))
        && have.get("disruptedPods").filter(|v| !v.is_null())
            == want.get("disruptedPods").filter(|v| !v.is_null())
        && have.pointer("/conditions/0/status") == want.pointer("/conditions/0/status");
    if !same {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        // A merge patch replaces `disruptedPods` entries one by one: the whole status is put.
        let mut full = pdb.as_ref().clone();
        full.status = Some(serde_json::from_value(want)?);
        match api.replace_status(&name, &Default::default(), &full).await {
            // The eviction API spent a disruption meanwhile: its event brings us back.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => {
                super::ignore_missing(other)?;
            }
        }
    }
    Ok(match recheck {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn status_counts_healthy_pods_and_recent_evictions() {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 2},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptedPods": {"c": "2026-01-01T00:00:00Z", "gone": "2026-01-01T00:00:00Z"},
                "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0, "disruptionsAllowed": 0}
        }))
        .unwrap();
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, false),
            pod("d", false, false),
        ];
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let (s, recheck) = status(&pdb, &pods, now).unwrap();
        // c was just evicted: a and b are healthy, 2 of 4 are needed, none may go.
        assert_eq!(
            (
                &s["currentHealthy"],
                &s["expectedPods"],
                &s["disruptionsAllowed"]
            ),
            (&json!(2), &json!(4), &json!(0))
        );
        assert_eq!(s["disruptedPods"], json!({"c": "2026-01-01T00:00:00Z"}));
        assert_eq!(recheck, Some(Duration::from_secs(60)));
        // Two minutes later the record is dropped and c counts again.
        let later: jiff::Timestamp = "2026-01-01T00:02:30Z".parse().unwrap();
        let (s, _) = status(&pdb, &pods, later).unwrap();
        assert_eq!(
            (
                &s["currentHealthy"],
                &s["disruptionsAllowed"],
                &s["disruptedPods"]
            ),
            (&json!(3), &json!(1), &Value::Null)
        );
        assert_eq!(s["conditions"][0]["status"], "True");
    }
}
