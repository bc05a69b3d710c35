//! Crash-loop back-off: 10 s, 20 s, 40 s … capped at 300 s by default, reset once a container
//! ran for 10 minutes.
//!
//! Nothing is kept in memory: the exponent travels in each container's meta and the times are
//! the shim's CLOCK_BOOTTIME stamps. So a restarted agent resumes every back-off where it was,
//! and a board without an RTC that jumps its wall clock at NTP sync neither stalls nor storms
//! restarts.

use std::time::Duration;

use crate::runtime::{ContainerInfo, ContainerState};

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

impl BackoffPolicy {
    /// The wait before restarting after an attempt that started with `exponent`.
    pub fn delay(&self, exponent: u32) -> Duration {
        let factor = 1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// (started, finished) of an ended attempt on the boot clock, in milliseconds.
    fn span(last: &ContainerInfo) -> Option<(u64, u64)> {
        match &last.state {
            ContainerState::Exited(start, exit) => {
                let started = start
                    .as_ref()
                    .map_or(exit.finished_boot_ms, |s| s.started_boot_ms);
                Some((started, exit.finished_boot_ms))
            }
            // The shim died: when the container stopped is unknown; count from its start.
            ContainerState::Lost(start) => Some((start.started_boot_ms, start.started_boot_ms)),
            _ => None,
        }
    }

    /// The exponent the next attempt starts with.
    pub fn next_exponent(&self, last: &ContainerInfo) -> u32 {
        match Self::span(last) {
            Some((started, finished))
                if finished.saturating_sub(started) >= self.reset_after.as_millis() as u64 =>
            {
                0
            }
            _ => last.meta.backoff_exponent.saturating_add(1),
        }
    }

    /// How long the container must still wait before its next attempt (`None`: start now).
    pub fn remaining(&self, last: &ContainerInfo, now_boot_ms: u64) -> Option<Duration> {
        let (started, finished) = Self::span(last)?;
        let exponent = if finished.saturating_sub(started) >= self.reset_after.as_millis() as u64 {
            0
        } else {
            last.meta.backoff_exponent
        };
        // A finish stamp ahead of the clock is from before a reboot: nothing to wait for.
        if finished > now_boot_ms {
            return None;
        }
        let ready_at = finished.saturating_add(self.delay(exponent).as_millis() as u64);
        (now_boot_ms < ready_at).then(|| Duration::from_millis(ready_at - now_boot_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerMeta, ExitRecord, StartRecord};

    fn ended(exponent: u32, started: u64, finished: u64) -> ContainerInfo {
        ContainerInfo {
            id: "x".into(),
            meta: ContainerMeta {
                pod_uid: "u".into(),
                pod_namespace: "default".into(),
                pod_name: "p".into(),
                container_name: "c".into(),
                attempt: 1,
                init: false,
                log_path: "/l".into(),
                cgroups_path: "/c".into(),
                image: "i".into(),
                image_id: "d".into(),
                backoff_exponent: exponent,
                sandbox_id: "s".into(),
                stdin: false,
            },
            state: ContainerState::Exited(
                Some(StartRecord {
                    pid: 1,
                    shim_pid: 1,
                    started_at: String::new(),
                    started_boot_ms: started,
                }),
                ExitRecord {
                    exit_code: 1,
                    signal: None,
                    oom_killed: false,
                    finished_at: String::new(),
                    finished_boot_ms: finished,
                    message: None,
                },
            ),
        }
    }

    #[test]
    fn delays_double_from_the_base_and_cap() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (0..7).map(|e| p.delay(e).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(p.delay(200), Duration::from_secs(300));
    }

    #[test]
    fn remaining_counts_from_the_exit_on_the_boot_clock() {
        let p = BackoffPolicy::default();
        let c = ended(1, 1_000, 2_000);
        assert_eq!(p.remaining(&c, 12_000), Some(Duration::from_secs(10)));
        assert_eq!(p.remaining(&c, 22_000), None);
        assert_eq!(p.next_exponent(&c), 2);
        // A clock behind the stamp means a reboot happened in between.
        assert_eq!(p.remaining(&c, 500), None);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let p = BackoffPolicy::default();
        let c = ended(5, 0, 700_000);
        assert_eq!(p.next_exponent(&c), 0);
        assert_eq!(p.remaining(&c, 705_000), Some(Duration::from_secs(5)));
    }
}
