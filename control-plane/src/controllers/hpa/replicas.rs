//! Kubernetes' replica calculator (`pkg/controller/podautoscaler/replica_calculator.go`), pure:
//! from each pod's metric, its state and its request, the replica count one metric proposes.
//!
//! - Pods being deleted, failed or finished are ignored; pending pods (and, for CPU, pods not
//!   Ready) are unready; ready pods without a metric are missing.
//! - The usage ratio is (average usage / target); within the tolerance (10 %) nothing changes.
//! - When pods are missing or unready, the ratio is computed again assuming the missing ones use
//!   100 % of the target when scaling down and 0 % when scaling up, and the unready ones 0 %
//!   (only when scaling up); if that flips the direction or falls within the tolerance, nothing
//!   changes, and a scale up never proposes fewer pods (nor a scale down more) than there are.

/// The ratio within which nothing changes (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// How a pod counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Running and (for CPU) Ready.
    Ready,
    /// Pending, or (for CPU) not Ready yet.
    Unready,
    /// Being deleted, failed or finished.
    Ignored,
}

/// One pod as a metric sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSample {
    /// How it counts.
    pub state: PodState,
    /// Its usage (None: no metric for it).
    pub value: Option<f64>,
    /// Its request of the resource (utilization targets only).
    pub request: Option<f64>,
}

/// What a per-pod metric aims at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(f64),
    /// A value per pod.
    AverageValue(f64),
}

/// What one metric proposes.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// Replicas.
    pub replicas: i32,
    /// The current utilization in percent of requests (utilization targets).
    pub utilization: Option<i32>,
    /// The current average value per pod.
    pub average: f64,
}

/// Why no proposal could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoProposal {
    /// No pod had a metric.
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoMetrics,
    /// A pod with a metric has no request for the resource.
    #[error("missing request for {0}")]
    MissingRequest(String),
    /// A target of zero or less.
    #[error("the target must be above zero")]
    BadTarget,
}

fn ceil(v: f64) -> i32 {
    // A hair under the integer is that integer (the products below are not exact).
    let c = (v - 1e-9).ceil();
    c.clamp(0.0, i32::MAX as f64) as i32
}

/// (usage ratio, utilization %, average) of `samples`: (value, request).
fn ratio(samples: &[(f64, f64)], target: Target) -> Result<(f64, Option<i32>, f64), NoProposal> {
    if samples.is_empty() {
        return Err(NoProposal::NoMetrics);
    }
    let sum: f64 = samples.iter().map(|(v, _)| v).sum();
    let average = sum / samples.len() as f64;
    match target {
        Target::Utilization(t) => {
            let requests: f64 = samples.iter().map(|(_, r)| r).sum();
            if requests <= 0.0 {
                return Err(NoProposal::MissingRequest("the resource".into()));
            }
            let utilization = sum * 100.0 / requests;
            Ok((utilization / t, Some(utilization as i32), average))
        }
        Target::AverageValue(t) => Ok((average / t, None, average)),
    }
}

/// The replicas a per-pod metric (a Resource or a Pods metric) proposes for `current` replicas
/// whose pods are `pods`. `resource` names the resource in messages. Pure.
pub fn per_pod(
    current: i32,
    pods: &[PodSample],
    target: Target,
    resource: &str,
) -> Result<Proposal, NoProposal> {
    let t = match target {
        Target::Utilization(t) | Target::AverageValue(t) => t,
    };
    if t <= 0.0 || !t.is_finite() {
        return Err(NoProposal::BadTarget);
    }
    let utilization = matches!(target, Target::Utilization(_));
    let request_of = |p: &PodSample| -> Result<f64, NoProposal> {
        match (utilization, p.request) {
            (false, _) => Ok(0.0),
            (true, Some(r)) if r > 0.0 => Ok(r),
            (true, _) => Err(NoProposal::MissingRequest(resource.to_string())),
        }
    };
    let mut ready = Vec::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    for p in pods {
        match (p.state, p.value) {
            (PodState::Ignored, _) => {}
            (PodState::Unready, _) => unready.push(p),
            (PodState::Ready, None) => missing.push(p),
            (PodState::Ready, Some(v)) => ready.push((v, request_of(p)?)),
        }
    }
    let (usage_ratio, current_utilization, average) = ratio(&ready, target)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization: current_utilization,
        average,
    };
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil(usage_ratio * ready.len() as f64)));
    }
    let mut all = ready.clone();
    for p in &missing {
        let request = request_of(p)?;
        let assumed = match (usage_ratio < 1.0, target) {
            // Scaling down: a missing pod is assumed at the target.
            (true, Target::Utilization(t)) => request * t / 100.0,
            (true, Target::AverageValue(t)) => t,
            // Scaling up: at nothing.
            (false, _) => 0.0,
        };
        all.push((assumed, request));
    }
    if scale_up_with_unready {
        for p in &unready {
            all.push((0.0, request_of(p)?));
        }
    }
    let (new_ratio, _, _) = ratio(&all, target)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil(new_ratio * all.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// The replicas an Object metric with a `Value` target proposes: the ratio times the ready
/// pods (from zero replicas, the ratio itself). Pure.
pub fn object_value(current: i32, ready_pods: i32, value: f64, target: f64) -> i32 {
    if target <= 0.0 {
        return current;
    }
    let ratio = value / target;
    if current == 0 {
        return ceil(ratio);
    }
    if (1.0 - ratio).abs() <= TOLERANCE {
        return current;
    }
    ceil(ratio * ready_pods as f64)
}

/// The replicas an Object metric with an `AverageValue` target proposes. Pure.
pub fn object_average(current: i32, value: f64, target: f64) -> i32 {
    if target <= 0.0 {
        return current;
    }
    if current > 0 && (1.0 - value / (target * current as f64)).abs() <= TOLERANCE {
        return current;
    }
    ceil(value / target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(v: f64, r: f64) -> PodSample {
        PodSample {
            state: PodState::Ready,
            value: Some(v),
            request: Some(r),
        }
    }
    fn missing(r: f64) -> PodSample {
        PodSample {
            state: PodState::Ready,
            value: None,
            request: Some(r),
        }
    }
    fn unready(r: f64) -> PodSample {
        PodSample {
            state: PodState::Unready,
            value: None,
            request: Some(r),
        }
    }
    fn ignored() -> PodSample {
        PodSample {
            state: PodState::Ignored,
            value: Some(1e9),
            request: Some(1.0),
        }
    }

    type Case<'a> = (
        &'a str,
        i32,
        Vec<PodSample>,
        Target,
        Result<i32, NoProposal>,
    );

    #[test]
    fn proposals_follow_kubernetes_replica_calculator() {
        let u = Target::Utilization;
        let cases: Vec<Case> = vec![
            // The documented example: 200m used of a 100m target doubles; 50m halves.
            ("doubles", 1, vec![ready(200.0, 100.0)], u(100.0), Ok(2)),
            (
                "halves",
                2,
                vec![ready(50.0, 100.0), ready(50.0, 100.0)],
                u(100.0),
                Ok(1),
            ),
            // ceil(currentReplicas * current / desired).
            (
                "three at 90 % of a 50 % target",
                3,
                vec![ready(90.0, 100.0), ready(90.0, 100.0), ready(90.0, 100.0)],
                u(50.0),
                Ok(6),
            ),
            // Within the 10 % tolerance nothing changes.
            (
                "within tolerance",
                4,
                vec![ready(105.0, 100.0); 4],
                u(100.0),
                Ok(4),
            ),
            (
                "just outside",
                4,
                vec![ready(111.0, 100.0); 4],
                u(100.0),
                Ok(5),
            ),
            // Missing pods: assumed at the target when scaling down...
            (
                "missing while scaling down",
                3,
                vec![ready(10.0, 100.0), ready(10.0, 100.0), missing(100.0)],
                u(50.0),
                Ok(2),
            ),
            // ... and at nothing when scaling up.
            (
                "missing while scaling up",
                3,
                vec![ready(150.0, 100.0), ready(150.0, 100.0), missing(100.0)],
                u(50.0),
                Ok(6),
            ),
            // Unready pods count as 0 % when scaling up.
            (
                "unready while scaling up",
                3,
                vec![ready(100.0, 100.0), unready(100.0), unready(100.0)],
                u(50.0),
                Ok(3),
            ),
            (
                "unready pods do not block a scale up that holds",
                2,
                vec![ready(300.0, 100.0), unready(100.0)],
                u(50.0),
                Ok(6),
            ),
            // A direction that flips once the missing are counted: nothing changes.
            (
                "flip",
                2,
                vec![ready(110.0, 100.0), missing(100.0)],
                u(100.0),
                Ok(2),
            ),
            (
                "ignored pods do not count",
                1,
                vec![ready(100.0, 100.0), ignored()],
                u(100.0),
                Ok(1),
            ),
            // Average values (Pods metrics, Resource averageValue).
            (
                "average value",
                2,
                vec![ready(30.0, 0.0), ready(10.0, 0.0)],
                Target::AverageValue(10.0),
                Ok(4),
            ),
            (
                "idle",
                3,
                vec![ready(0.0, 0.0); 3],
                Target::AverageValue(10.0),
                Ok(0),
            ),
            (
                "no metrics",
                2,
                vec![missing(100.0), unready(100.0)],
                u(50.0),
                Err(NoProposal::NoMetrics),
            ),
            (
                "no request",
                1,
                vec![PodSample {
                    state: PodState::Ready,
                    value: Some(1.0),
                    request: None,
                }],
                u(50.0),
                Err(NoProposal::MissingRequest("cpu".into())),
            ),
            (
                "zero target",
                1,
                vec![ready(1.0, 1.0)],
                u(0.0),
                Err(NoProposal::BadTarget),
            ),
        ];
        for (what, current, pods, target, want) in cases {
            let got = per_pod(current, &pods, target, "cpu").map(|p| p.replicas);
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn the_current_utilization_is_of_the_ready_pods() {
        let p = per_pod(
            2,
            &[ready(30.0, 100.0), ready(60.0, 100.0), missing(100.0)],
            Target::Utilization(50.0),
            "cpu",
        )
        .expect("a proposal");
        assert_eq!((p.utilization, p.average), (Some(45), 45.0));
    }

    #[test]
    fn object_metrics() {
        assert_eq!(object_value(2, 2, 200.0, 100.0), 4);
        assert_eq!(object_value(2, 2, 105.0, 100.0), 2);
        assert_eq!(object_value(0, 0, 150.0, 100.0), 2);
        assert_eq!(object_average(2, 300.0, 100.0), 3);
        assert_eq!(object_average(3, 310.0, 100.0), 3);
        assert_eq!(object_average(0, 50.0, 100.0), 1);
    }
}
