//! The HPA's scaling behaviour (`spec.behavior`): stabilisation windows over past
//! recommendations and rate policies over past scale events, with min/max, as Kubernetes'
//! `normalizeDesiredReplicasWithBehaviors` applies them. Pure: time comes in as arguments.
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    pub(super) percent: bool,
    pub(super) value: i32,
    pub(super) period: i64,
}

/// One direction of `spec.behavior`, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rules {
    pub(super) window: i64,
    pub(super) select: Select,
    pub(super) policies: Vec<Policy>,
}

impl Rules {
    /// `spec.behavior.scaleUp|scaleDown` with Kubernetes' defaults for what is missing:
    /// up at once by the larger of 100% or 4 pods per 15 s; down after a 300 s window, by up
    /// to 100% per 15 s.
    pub(super) fn of(hpa: &Value, up: bool) -> Rules {
        let b = hpa.pointer(if up {
            "/spec/behavior/scaleUp"
        } else {
            "/spec/behavior/scaleDown"
        });
        let field = |k: &str| b.and_then(|b| b.get(k));
        let default_policies = if up {
            vec![
                Policy {
                    percent: false,
                    value: 4,
                    period: 15,
                },
                Policy {
                    percent: true,
                    value: 100,
                    period: 15,
                },
            ]
        } else {
            vec![Policy {
                percent: true,
                value: 100,
                period: 15,
            }]
        };
        let policies = field("policies")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| Policy {
                        percent: p["type"] == "Percent",
                        value: p["value"].as_i64().unwrap_or(0) as i32,
                        period: p["periodSeconds"].as_i64().unwrap_or(15),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|p| !p.is_empty())
            .unwrap_or(default_policies);
        Rules {
            window: field("stabilizationWindowSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(if up { 0 } else { 300 }),
            select: match field("selectPolicy").and_then(Value::as_str) {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                _ => Select::Max,
            },
            policies,
        }
    }

    pub(super) fn longest_period(&self) -> i64 {
        self.policies.iter().map(|p| p.period).max().unwrap_or(0)
    }
}

/// A past scaling of the target: when, and by how many replicas.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScaleEvent {
    pub(super) at: Timestamp,
    pub(super) change: i32,
}

/// What the autoscaler remembers of one HPA between passes.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Raw recommendations with their time, for the stabilisation windows.
    pub(super) recommendations: Vec<(Timestamp, i32)>,
    pub(super) up: Vec<ScaleEvent>,
    pub(super) down: Vec<ScaleEvent>,
    pub(super) last_sync: Option<(Timestamp, i64)>,
}

pub(super) fn secs_before(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_sub(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MIN)
}

/// Replicas added (or removed) by `events` within the last `period` seconds.
pub(super) fn change_in_period(events: &[ScaleEvent], period: i64, now: Timestamp) -> i32 {
    let cutoff = secs_before(now, period);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

/// The replica count a policy's period started from: `current` with the period's recorded
/// scale-ups taken off and scale-downs put back.
fn period_start(current: i32, h: &History, period: i64, now: Timestamp) -> i32 {
    current - change_in_period(&h.up, period, now) + change_in_period(&h.down, period, now)
}

/// The most replicas the scale-up rules allow from `current`.
pub(super) fn scale_up_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = period_start(current, h, p.period, now);
        if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        }
    });
    let limit = match rules.select {
        Select::Min => proposals.min(),
        _ => proposals.max(),
    };
    limit.unwrap_or(current)
}

/// The fewest replicas the scale-down rules allow from `current`.
pub(super) fn scale_down_limit(current: i32, h: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = period_start(current, h, p.period, now);
        if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        } else {
            start - p.value
        }
    });
    // "Max" picks the policy allowing the biggest change, i.e. the lowest floor.
    let limit = match rules.select {
        Select::Min => proposals.max(),
        _ => proposals.min(),
    };
    limit.unwrap_or(current)
}

/// The outcome of the behaviour rules: replicas, and why (for AbleToScale and ScalingLimited).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Normalized {
    pub(super) replicas: i32,
    pub(super) stabilized: Option<(&'static str, &'static str)>,
    pub(super) limited: bool,
    pub(super) reason: &'static str,
    pub(super) message: &'static str,
}

/// Applies the stabilisation windows (the lowest recommendation of the scale-up window, the
/// highest of the scale-down window) and then the rate policies and min/max to `desired`,
/// recording `desired` in the history.
pub(super) fn normalize(
    h: &mut History,
    up: &Rules,
    down: &Rules,
    (min, max): (i32, i32),
    current: i32,
    desired: i32,
    now: Timestamp,
) -> Normalized {
    // A fresh history starts with the current size, so a restart does not scale down at once.
    if h.recommendations.is_empty() && down.window > 0 {
        h.recommendations.push((now, current));
    }
    let (up_cut, down_cut) = (secs_before(now, up.window), secs_before(now, down.window));
    let (mut lowest, mut highest) = (desired, desired);
    for &(at, r) in &h.recommendations {
        if at > up_cut {
            lowest = lowest.min(r);
        }
        if at > down_cut {
            highest = highest.max(r);
        }
    }
    let keep = secs_before(now, up.window.max(down.window));
    h.recommendations.retain(|(at, _)| *at > keep);
    h.recommendations.push((now, desired));
    let stabilized = current.max(lowest).min(highest);
    let why = (stabilized != desired).then_some({
        if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        }
    });
    let (mut replicas, mut reason, mut message) = (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if stabilized > current {
        let limit = scale_up_limit(current, h, up, now).max(current);
        let (ceiling, r, m) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > ceiling {
            (replicas, reason, message) = (ceiling, r, m);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, h, down, now).min(current);
        let (floor, r, m) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < floor {
            (replicas, reason, message) = (floor, r, m);
        }
    }
    Normalized {
        replicas,
        stabilized: why,
        limited: replicas != stabilized,
        reason,
        message,
    }
}

/// Notes a scaling of the target for the rate policies, dropping events older than any
/// policy's period.
pub(super) fn record_scale(
    h: &mut History,
    up: &Rules,
    down: &Rules,
    from: i32,
    to: i32,
    now: Timestamp,
) {
    let event = ScaleEvent {
        at: now,
        change: (to - from).abs(),
    };
    if to > from {
        h.up.push(event);
    } else {
        h.down.push(event);
    }
    let (up_cut, down_cut) = (
        secs_before(now, up.longest_period()),
        secs_before(now, down.longest_period()),
    );
    h.up.retain(|e| e.at > up_cut);
    h.down.retain(|e| e.at > down_cut);
}
