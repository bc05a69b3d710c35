//! The agent's image garbage collection: every period (5 minutes by default, as the kubelet's)
//! it notes which images its pods use and, past the high threshold of the image filesystem,
//! removes unused ones least recently used first ([`crate::image::space`]).
//!
//! Owns: when a pass runs and what counts as in use (every container and init container image
//! of every pod this node knows, running, starting or stopping). Must not touch: the store's
//! files (the image store removes) or pods.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::image::ImageStore;
use crate::image::space::{Thresholds, UsageTracker};
use crate::store::Store;

pub struct ImageGc {
    thresholds: Thresholds,
    period: Duration,
    next: Instant,
    tracker: UsageTracker,
}

/// The images a pod's containers name.
pub fn pod_images(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
    })
}

impl ImageGc {
    pub fn new(thresholds: Thresholds, period: Duration) -> ImageGc {
        ImageGc {
            thresholds,
            period,
            next: Instant::now() + period.min(Duration::from_secs(30)),
            tracker: UsageTracker::default(),
        }
    }

    /// Runs a pass when one is due; `pods` are every pod the node knows.
    pub fn tick<'a>(
        &mut self,
        images: &ImageStore,
        store: &Store,
        node: &str,
        pods: impl Iterator<Item = &'a Pod>,
    ) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.period;
        let refs: Vec<&str> = pods.flat_map(pod_images).collect();
        let result = (|| {
            let in_use: HashSet<_> = images.ids_of(refs.iter().copied())?;
            let now = jiff::Timestamp::now();
            self.tracker.observe(&images.ids()?, &in_use, now);
            let order = self
                .tracker
                .candidates(&in_use, now, self.thresholds.min_age);
            images.free_space(&order, &self.thresholds)
        })();
        let node_ref = k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            uid: Some(node.to_string()),
            ..Default::default()
        };
        let warn = |reason: &str, message: &str| {
            tracing::warn!("{message}");
            if let Err(e) = store.record_event(&node_ref, "Warning", reason, message, "kubelet") {
                tracing::debug!("recording event: {e}");
            }
        };
        match result {
            Ok(report)
                if report.before.percent_used() >= u64::from(self.thresholds.high_percent) =>
            {
                tracing::info!(
                    removed = report.removed.len(),
                    before = report.before.percent_used(),
                    after = report.after.percent_used(),
                    "image garbage collection"
                );
                if report.after.percent_used() > u64::from(self.thresholds.low_percent) {
                    warn(
                        "FreeDiskSpaceFailed",
                        &format!(
                            "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                            free_goal(&report.before, self.thresholds.low_percent),
                            report
                                .after
                                .available
                                .saturating_sub(report.before.available)
                        ),
                    );
                }
            }
            Ok(_) => {}
            Err(e) => warn("ImageGCFailed", &format!("image garbage collection: {e}")),
        }
    }
}

/// Bytes to free to get from `usage` down to `low` percent, as the kubelet computes it.
fn free_goal(usage: &crate::image::space::FsUsage, low: u8) -> u64 {
    let target_available = usage.capacity * (100 - u64::from(low.min(100))) / 100;
    target_available.saturating_sub(usage.available)
}
