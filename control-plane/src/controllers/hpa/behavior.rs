//! `spec.behavior` of an autoscaling/v2 HPA, as the HPA controller applies it
//! (`normalizeDesiredReplicasWithBehaviors`), pure:
//! 1. stabilization: the recommendation is held between the lowest recommendation of the
//!    scale-up window and the highest of the scale-down window (300 s by default), so a
//!    fluctuating metric does not flap;
//! 2. rate: a scale up or down is limited by its policies (Pods or Percent per period, over the
//!    scale events of that period), choosing the policy `selectPolicy` says (`Max`, `Min`,
//!    `Disabled`);
//! 3. bounds: `minReplicas` and `maxReplicas`.
//!
//! The reason the result was limited becomes the `ScalingLimited` condition.

use serde_json::Value;

/// A policy's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Pods per period.
    Pods,
    /// Percent of the replicas at the period's start, per period.
    Percent,
}

/// One `HPAScalingPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Pods or Percent.
    pub unit: Unit,
    /// How many.
    pub value: i32,
    /// Over how long, in seconds.
    pub period: i64,
}

/// `selectPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change this way.
    Disabled,
}

/// One direction's `HPAScalingRules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub window: i64,
    /// `selectPolicy`.
    pub select: Select,
    /// `policies`.
    pub policies: Vec<Policy>,
}

/// `spec.behavior`, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behavior {
    /// `scaleUp`.
    pub up: Rules,
    /// `scaleDown`.
    pub down: Rules,
}

impl Default for Behavior {
    /// Kubernetes' defaults: up at once by 100 % or 4 pods per 15 s, whichever is more; down
    /// after a 300 s window by up to 100 % per 15 s.
    fn default() -> Self {
        Behavior {
            up: Rules {
                window: 0,
                select: Select::Max,
                policies: vec![
                    Policy {
                        unit: Unit::Pods,
                        value: 4,
                        period: 15,
                    },
                    Policy {
                        unit: Unit::Percent,
                        value: 100,
                        period: 15,
                    },
                ],
            },
            down: Rules {
                window: 300,
                select: Select::Max,
                policies: vec![Policy {
                    unit: Unit::Percent,
                    value: 100,
                    period: 15,
                }],
            },
        }
    }
}

fn rules(spec: Option<&Value>, default: Rules) -> Rules {
    let Some(spec) = spec.filter(|v| v.is_object()) else {
        return default;
    };
    let window = spec
        .get("stabilizationWindowSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(default.window)
        .clamp(0, 3600);
    let select = match spec.get("selectPolicy").and_then(Value::as_str) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        Some("Max") => Select::Max,
        _ => default.select,
    };
    let policies = match spec.get("policies").and_then(Value::as_array) {
        Some(ps) => ps
            .iter()
            .filter_map(|p| {
                Some(Policy {
                    unit: match p.get("type").and_then(Value::as_str)? {
                        "Pods" => Unit::Pods,
                        "Percent" => Unit::Percent,
                        _ => return None,
                    },
                    value: p
                        .get("value")
                        .and_then(Value::as_i64)?
                        .clamp(1, i32::MAX as i64) as i32,
                    period: p
                        .get("periodSeconds")
                        .and_then(Value::as_i64)?
                        .clamp(1, 1800),
                })
            })
            .collect(),
        None => default.policies,
    };
    Rules {
        window,
        select,
        policies,
    }
}

impl Behavior {
    /// From `spec.behavior` (absent parts take the defaults).
    pub fn from_spec(behavior: Option<&Value>) -> Behavior {
        let d = Behavior::default();
        Behavior {
            up: rules(behavior.and_then(|b| b.get("scaleUp")), d.up),
            down: rules(behavior.and_then(|b| b.get("scaleDown")), d.down),
        }
    }

    /// The longest window (how much recommendation history matters).
    pub fn longest_window(&self) -> i64 {
        self.up.window.max(self.down.window)
    }
}

/// A past recommendation: (time in seconds, replicas).
pub type Recommendation = (i64, i32);

/// A past scale: (time in seconds, replicas added (> 0) or removed (< 0)).
pub type ScaleEvent = (i64, i32);

/// Why the result differs from the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Above `maxReplicas`.
    TooManyReplicas,
    /// Below `minReplicas`.
    TooFewReplicas,
    /// Faster up than the policies allow.
    ScaleUpLimit,
    /// Faster down than the policies allow.
    ScaleDownLimit,
}

impl Limit {
    /// The condition's reason and message.
    pub fn reason(self) -> (&'static str, &'static str) {
        match self {
            Limit::TooManyReplicas => (
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
            Limit::TooFewReplicas => (
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            ),
            Limit::ScaleUpLimit => (
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            ),
            Limit::ScaleDownLimit => (
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            ),
        }
    }
}

/// Replicas changed within `period` seconds before `now`, the way `sign` goes.
fn changed_in(events: &[ScaleEvent], now: i64, period: i64, up: bool) -> i32 {
    events
        .iter()
        .filter(|(at, change)| *at > now - period && (*change > 0) == up && *change != 0)
        .map(|(_, change)| change.abs())
        .sum()
}

fn up_limit(current: i32, rules: &Rules, events: &[ScaleEvent], now: i64) -> i32 {
    if rules.select == Select::Disabled || rules.policies.is_empty() {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current - changed_in(events, now, p.period, true);
        match p.unit {
            Unit::Pods => start.saturating_add(p.value),
            Unit::Percent => (start as f64 * (1.0 + p.value as f64 / 100.0))
                .ceil()
                .min(i32::MAX as f64) as i32,
        }
    });
    match rules.select {
        Select::Min => proposals.min(),
        _ => proposals.max(),
    }
    .unwrap_or(current)
}

fn down_limit(current: i32, rules: &Rules, events: &[ScaleEvent], now: i64) -> i32 {
    if rules.select == Select::Disabled || rules.policies.is_empty() {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current + changed_in(events, now, p.period, false);
        match p.unit {
            Unit::Pods => start - p.value,
            Unit::Percent => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32,
        }
    });
    // `Min` picks the smallest change (the highest floor); `Max` the largest.
    match rules.select {
        Select::Min => proposals.max(),
        _ => proposals.min(),
    }
    .unwrap_or(current)
}

/// The replicas to scale to from `current`, given the metrics' `desired`, the bounds, the
/// behavior, the recommendations of the last windows (to which `desired` is added, and from
/// which what is older than the longest window goes) and the scale events. Pure.
pub fn normalize(
    current: i32,
    desired: i32,
    bounds: (i32, i32),
    behavior: &Behavior,
    history: &mut Vec<Recommendation>,
    events: &[ScaleEvent],
    now: i64,
) -> (i32, Option<Limit>) {
    let (min, max) = bounds;
    // 1. Stabilization.
    let (mut up, mut down) = (desired, desired);
    for (at, r) in history.iter() {
        if *at > now - behavior.up.window {
            up = up.min(*r);
        }
        if *at > now - behavior.down.window {
            down = down.max(*r);
        }
    }
    history.retain(|(at, _)| *at > now - behavior.longest_window());
    history.push((now, desired));
    let mut stable = current;
    if stable < up {
        stable = up;
    }
    if stable > down {
        stable = down;
    }
    // 2 and 3. Rate and bounds.
    if stable > current {
        let limit = up_limit(current, &behavior.up, events, now).max(current);
        let (ceiling, why) = if max > limit {
            (limit, Limit::ScaleUpLimit)
        } else {
            (max, Limit::TooManyReplicas)
        };
        if stable > ceiling {
            return (ceiling, Some(why));
        }
        (stable, None)
    } else if stable < current {
        let limit = down_limit(current, &behavior.down, events, now).min(current);
        let (floor, why) = if min < limit {
            (limit, Limit::ScaleDownLimit)
        } else {
            (min, Limit::TooFewReplicas)
        };
        if stable < floor {
            return (floor, Some(why));
        }
        (stable, None)
    } else {
        (stable, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn behavior_takes_kubernetes_defaults_where_silent() {
        assert_eq!(Behavior::from_spec(None), Behavior::default());
        let b = Behavior::from_spec(Some(&json!({
            "scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Min",
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}, {"type": "Bogus", "value": 1, "periodSeconds": 1}]},
        })));
        assert_eq!(b.up, Behavior::default().up);
        assert_eq!(
            b.down,
            Rules {
                window: 60,
                select: Select::Min,
                policies: vec![Policy {
                    unit: Unit::Pods,
                    value: 1,
                    period: 60
                }]
            }
        );
    }

    type Case<'a> = (
        &'a str,
        i32,
        i32,
        Behavior,
        Vec<Recommendation>,
        Vec<ScaleEvent>,
        (i32, Option<Limit>),
    );

    #[test]
    fn stabilization_rate_and_bounds() {
        let d = Behavior::default;
        let fast_down = || Behavior {
            down: Rules {
                window: 0,
                ..Behavior::default().down
            },
            ..Behavior::default()
        };
        let one_pod_a_minute_down = || Behavior {
            down: Rules {
                window: 0,
                select: Select::Max,
                policies: vec![Policy {
                    unit: Unit::Pods,
                    value: 1,
                    period: 60,
                }],
            },
            ..Behavior::default()
        };
        let no_down = || Behavior {
            down: Rules {
                window: 0,
                select: Select::Disabled,
                policies: vec![],
            },
            ..Behavior::default()
        };
        let now = 1000;
        let cases: Vec<Case> = vec![
            ("steady", 3, 3, d(), vec![], vec![], (3, None)),
            // Up: the larger of +4 pods and +100 % per 15 s.
            ("up within the rate", 2, 4, d(), vec![], vec![], (4, None)),
            (
                "up by 4 from 1",
                1,
                10,
                d(),
                vec![],
                vec![],
                (5, Some(Limit::ScaleUpLimit)),
            ),
            (
                "up by 4 or 100 % from 4",
                4,
                50,
                d(),
                vec![],
                vec![],
                (8, Some(Limit::ScaleUpLimit)),
            ),
            // What was added in the period counts.
            (
                "up after a recent scale",
                8,
                20,
                d(),
                vec![],
                vec![(now - 5, 4)],
                (8, Some(Limit::ScaleUpLimit)),
            ),
            (
                "up to the maximum",
                8,
                12,
                d(),
                vec![],
                vec![],
                (10, Some(Limit::TooManyReplicas)),
            ),
            // Down: held by the 300 s window's highest recommendation.
            (
                "down held by the window",
                5,
                1,
                d(),
                vec![(now - 200, 5), (now - 100, 3)],
                vec![],
                (5, None),
            ),
            (
                "down to the window's highest",
                5,
                1,
                d(),
                vec![(now - 400, 5), (now - 100, 3)],
                vec![],
                (3, None),
            ),
            (
                "down without a window",
                5,
                3,
                fast_down(),
                vec![(now - 100, 5)],
                vec![],
                (3, None),
            ),
            (
                "down to the minimum",
                5,
                0,
                fast_down(),
                vec![],
                vec![],
                (2, Some(Limit::TooFewReplicas)),
            ),
            (
                "one pod a minute",
                5,
                1,
                one_pod_a_minute_down(),
                vec![],
                vec![],
                (4, Some(Limit::ScaleDownLimit)),
            ),
            (
                "one pod a minute, one gone already",
                4,
                1,
                one_pod_a_minute_down(),
                vec![],
                vec![(now - 30, -1)],
                (4, Some(Limit::ScaleDownLimit)),
            ),
            (
                "scale down disabled",
                5,
                1,
                no_down(),
                vec![],
                vec![],
                (5, Some(Limit::ScaleDownLimit)),
            ),
        ];
        for (what, current, desired, behavior, mut history, events, want) in cases {
            let got = normalize(
                current,
                desired,
                (2, 10),
                &behavior,
                &mut history,
                &events,
                now,
            );
            assert_eq!(got, want, "{what}");
            assert_eq!(history.last(), Some(&(now, desired)), "{what}: recorded");
        }
    }

    #[test]
    fn scale_to_zero_with_a_minimum_of_zero() {
        let b = Behavior {
            down: Rules {
                window: 0,
                ..Behavior::default().down
            },
            ..Behavior::default()
        };
        assert_eq!(normalize(2, 0, (0, 5), &b, &mut vec![], &[], 0), (0, None));
        assert_eq!(normalize(0, 1, (0, 5), &b, &mut vec![], &[], 0), (1, None));
    }
}
