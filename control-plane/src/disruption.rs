//! Disruption budgets: how many of a PodDisruptionBudget's pods may be disrupted now, as
//! Kubernetes' disruption controller computes it. Shared by the eviction API (which refuses an
//! eviction the budget does not allow) and the controller that keeps each budget's status.
//! Pure code.

use serde_json::Value;

/// A budget's numbers (`status` of a PodDisruptionBudget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Pods that count as healthy (Ready, not being deleted, not just evicted).
    pub current_healthy: i64,
    /// Healthy pods the budget asks for.
    pub desired_healthy: i64,
    /// Pods the budget covers.
    pub expected_pods: i64,
    /// Evictions allowed now.
    pub disruptions_allowed: i64,
}

/// An int-or-percent (`2`, `"50%"`) of `total`, rounded up as Kubernetes does; None when
/// it is neither.
pub fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => {
                let p: i64 = p.parse().ok()?;
                Some((p * total + 99) / 100)
            }
            None => s.parse().ok(),
        },
        _ => None,
    }
}

/// The budget of a spec (`minAvailable` or `maxUnavailable`) over `expected` pods of which
/// `healthy` are healthy. Neither set: no disruption is allowed, as with `maxUnavailable: 0`.
pub fn budget(spec: &Value, expected: i64, healthy: i64) -> Budget {
    let set = |k: &str| spec.get(k).filter(|v| !v.is_null());
    let desired = match (set("minAvailable"), set("maxUnavailable")) {
        (Some(min), _) => scaled(min, expected).unwrap_or(expected),
        (None, Some(max)) => expected - scaled(max, expected).unwrap_or(0),
        (None, None) => expected,
    }
    .max(0);
    Budget {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: (healthy - desired).max(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn budget_table() {
        // (spec, expected, healthy) -> (desired, allowed)
        let cases = [
            (json!({"minAvailable": 2}), 3, 3, (2, 1)),
            (json!({"minAvailable": 2}), 3, 2, (2, 0)),
            (json!({"minAvailable": "50%"}), 3, 3, (2, 1)),
            (json!({"minAvailable": "100%"}), 4, 4, (4, 0)),
            (json!({"maxUnavailable": 1}), 3, 3, (2, 1)),
            (json!({"maxUnavailable": "34%"}), 3, 3, (1, 2)),
            (json!({"maxUnavailable": 0}), 3, 3, (3, 0)),
            (json!({"minAvailable": 5}), 3, 3, (5, 0)),
            (json!({}), 2, 2, (2, 0)),
        ];
        for (spec, expected, healthy, want) in cases {
            let b = budget(&spec, expected, healthy);
            assert_eq!((b.desired_healthy, b.disruptions_allowed), want, "{spec}");
        }
    }
}
