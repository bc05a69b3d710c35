//! Crash-loop back-off per container: 10 s, 20 s, 40 s … capped at 300 s by default, reset once
//! a container ran for 10 minutes. Measured on the monotonic clock, so a board without an RTC
//! that jumps its wall clock at NTP sync neither stalls nor storms restarts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
    /// A container that ran this long without trouble starts its back-off afresh.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    delay: Duration,
    /// When the agent first saw the current attempt exited.
    exited_seen: Option<Instant>,
}

/// Back-off state of every container the agent restarts, keyed by (pod UID, container name).
#[derive(Debug, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    entries: HashMap<(String, String), Entry>,
    started: HashMap<(String, String), Instant>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            ..Default::default()
        }
    }

    /// Notes that an attempt started now.
    pub fn started(&mut self, pod_uid: &str, container: &str) {
        let key = (pod_uid.to_string(), container.to_string());
        self.started.insert(key.clone(), Instant::now());
        if let Some(e) = self.entries.get_mut(&key) {
            e.exited_seen = None;
        }
    }

    /// For an exited container: `None` if it may restart now, or how long it must still wait.
    pub fn remaining(&mut self, pod_uid: &str, container: &str) -> Option<Duration> {
        let key = (pod_uid.to_string(), container.to_string());
        let now = Instant::now();
        let ran_long = self
            .started
            .get(&key)
            .is_some_and(|s| now.duration_since(*s) >= self.policy.reset_after);
        let policy = self.policy;
        let entry = self.entries.entry(key).or_insert(Entry {
            delay: Duration::ZERO,
            exited_seen: None,
        });
        if ran_long {
            entry.delay = Duration::ZERO;
        }
        let seen = *entry.exited_seen.get_or_insert(now);
        let delay = if entry.delay.is_zero() {
            policy.base
        } else {
            entry.delay
        };
        let ready_at = seen + delay;
        if now >= ready_at {
            entry.delay = (delay * 2).min(policy.max);
            None
        } else {
            Some(ready_at - now)
        }
    }

    /// The delay the next restart of this container waits, for messages.
    pub fn current_delay(&self, pod_uid: &str, container: &str) -> Duration {
        self.entries
            .get(&(pod_uid.to_string(), container.to_string()))
            .map(|e| {
                if e.delay.is_zero() {
                    self.policy.base
                } else {
                    e.delay
                }
            })
            .unwrap_or(self.policy.base)
    }

    pub fn forget_pod(&mut self, pod_uid: &str) {
        self.entries.retain(|(uid, _), _| uid != pod_uid);
        self.started.retain(|(uid, _), _| uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            base: Duration::from_millis(20),
            max: Duration::from_millis(50),
            reset_after: Duration::from_secs(600),
        });
        b.started("u", "c");
        assert!(
            b.remaining("u", "c").is_some(),
            "first restart waits the base delay"
        );
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.remaining("u", "c").is_none());
        b.started("u", "c");
        let wait = b.remaining("u", "c").unwrap();
        assert!(wait > Duration::from_millis(30), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(2));
        assert!(b.remaining("u", "c").is_none());
        assert_eq!(b.current_delay("u", "c"), Duration::from_millis(50));
    }
}
