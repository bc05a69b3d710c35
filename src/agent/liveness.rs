//! When each agent loop of this process last made progress, by node name: what a service
//! manager's watchdog is fed from (see `roles::notify`). A reconcile pass stuck in a call that
//! never returns stops the beats; a slow pass only delays one.
//!
//! Owns: the per-node timestamps. Must not touch: the loop itself.
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn beats() -> &'static Mutex<HashMap<String, Instant>> {
    static BEATS: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    BEATS.get_or_init(Default::default)
}

/// The loop of `node` is alive now.
pub fn beat(node: &str) {
    let mut map = beats().lock().unwrap_or_else(|p| p.into_inner());
    match map.get_mut(node) {
        Some(t) => *t = Instant::now(),
        None => {
            map.insert(node.to_string(), Instant::now());
        }
    }
}

/// How long ago the loop of `node` last beat; `None` before its first completed pass.
pub fn since(node: &str) -> Option<Duration> {
    let map = beats().lock().unwrap_or_else(|p| p.into_inner());
    map.get(node).map(Instant::elapsed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn beats_per_node() {
        assert!(super::since("liveness-test-a").is_none());
        super::beat("liveness-test-a");
        assert!(super::since("liveness-test-a").is_some_and(|d| d.as_secs() < 5));
        assert!(super::since("liveness-test-b").is_none());
    }
}
