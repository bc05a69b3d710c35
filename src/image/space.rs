//! Keeping the image filesystem from filling up, as the kubelet's image garbage collector does:
//! once the filesystem holding the store is used past the high threshold (85 %), unused images
//! are removed, least recently used first, until it is below the low threshold (80 %). An image
//! a pod uses, or one first seen less than the minimum age ago (2 minutes: a pull that has not
//! started its container yet), is never removed. `edgepod image prune` removes every unused image.
//!
//! Usage is measured (statvfs) after each removal rather than estimated from image sizes: layers
//! shared between images, and other files on the same filesystem, make estimates wrong.
//!
//! Owns: the order of removal and when to stop. Must not touch: which images are in use (the
//! agent knows its pods and tells) or when a pass runs.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use super::digest::Digest;
use super::error::ImageError;
use super::store::ImageStore;

/// The kubelet's `--image-gc-high-threshold`, `--image-gc-low-threshold` and
/// `--minimum-image-ttl-duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

impl Thresholds {
    /// Checks the pair as the kubelet does (its error text names the flags).
    pub fn validate(&self) -> Result<(), String> {
        if self.high_percent > 100 {
            return Err(format!(
                "--image-gc-high-threshold must be 0 to 100, not {}",
                self.high_percent
            ));
        }
        if self.low_percent > self.high_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must not be above --image-gc-high-threshold ({})",
                self.low_percent, self.high_percent
            ));
        }
        Ok(())
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub available: u64,
}

impl FsUsage {
    pub fn of(path: &Path) -> Result<FsUsage, ImageError> {
        let st = nix::sys::statvfs::statvfs(path)
            .map_err(|e| ImageError::io(path)(std::io::Error::from(e)))?;
        let block = st.fragment_size() as u64;
        Ok(FsUsage {
            capacity: st.blocks() as u64 * block,
            available: st.blocks_available() as u64 * block,
        })
    }

    /// Used share in percent, as the kubelet computes it (capacity minus available).
    pub fn percent_used(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        (self.capacity - self.available.min(self.capacity)) * 100 / self.capacity
    }
}

/// When each image (by id) was first seen and last used: the kubelet keeps this in memory too,
/// so after a restart every image counts as seen and used at the restart.
#[derive(Debug, Default)]
pub struct UsageTracker {
    seen: HashMap<Digest, (Timestamp, Timestamp)>,
}

impl UsageTracker {
    /// Records that the images in `in_use` are used now, and that every stored image exists.
    pub fn observe(&mut self, stored: &[Digest], in_use: &HashSet<Digest>, now: Timestamp) {
        self.seen.retain(|id, _| stored.contains(id));
        for id in stored {
            let entry = self.seen.entry(id.clone()).or_insert((now, now));
            if in_use.contains(id) {
                entry.1 = now;
            }
        }
    }

    /// Unused images old enough to go, least recently used first (then the oldest seen).
    pub fn candidates(
        &self,
        in_use: &HashSet<Digest>,
        now: Timestamp,
        min_age: Duration,
    ) -> Vec<Digest> {
        let min_age = jiff::SignedDuration::try_from(min_age).unwrap_or_default();
        let mut out: Vec<(&Digest, &(Timestamp, Timestamp))> = self
            .seen
            .iter()
            .filter(|(id, (first, _))| {
                !in_use.contains(*id) && now.duration_since(*first) >= min_age
            })
            .collect();
        out.sort_by(|a, b| (a.1.1, a.1.0, a.0.as_str()).cmp(&(b.1.1, b.1.0, b.0.as_str())));
        out.into_iter().map(|(id, _)| id.clone()).collect()
    }
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeReport {
    pub before: FsUsage,
    pub after: FsUsage,
    /// Image ids removed, in order.
    pub removed: Vec<Digest>,
}

impl ImageStore {
    /// The kubelet's image GC pass: nothing below the high threshold; above it, the images of
    /// `order` (see [`UsageTracker::candidates`]) are removed one by one until usage is at or
    /// below the low threshold or none is left.
    pub fn free_space(
        &self,
        order: &[Digest],
        thresholds: &Thresholds,
    ) -> Result<FreeReport, ImageError> {
        let before = FsUsage::of(self.root())?;
        let mut report = FreeReport {
            before,
            after: before,
            removed: Vec::new(),
        };
        if before.percent_used() < u64::from(thresholds.high_percent) {
            return Ok(report);
        }
        for id in order {
            if report.after.percent_used() <= u64::from(thresholds.low_percent) {
                break;
            }
            match self.remove(id.as_str()) {
                Ok(_) | Err(ImageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            report.removed.push(id.clone());
            report.after = FsUsage::of(self.root())?;
        }
        Ok(report)
    }

    /// The ids of the stored images `references` name (references to nothing are skipped).
    pub fn ids_of<'a>(
        &self,
        references: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashSet<Digest>, ImageError> {
        let records = self.list()?;
        let mut ids = HashSet::new();
        for r in references {
            if let Ok(found) = super::lookup::find(&records, r) {
                ids.extend(found.into_iter().map(|i| records[i].config_digest.clone()));
            }
        }
        Ok(ids)
    }

    /// Every stored image id.
    pub fn ids(&self) -> Result<Vec<Digest>, ImageError> {
        let mut ids: Vec<Digest> = self.list()?.into_iter().map(|r| r.config_digest).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Removes every stored image whose id is not in `in_use`; returns their ids.
    pub fn prune(&self, in_use: &HashSet<Digest>) -> Result<Vec<Digest>, ImageError> {
        let mut removed = Vec::new();
        for id in self.ids()?.into_iter().filter(|id| !in_use.contains(id)) {
            match self.remove(id.as_str()) {
                Ok(_) | Err(ImageError::NotFound { .. }) => removed.push(id),
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Digest {
        Digest::of_bytes(s.as_bytes())
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn least_recently_used_unused_images_old_enough_go_first() {
        let (a, b, c, d) = (id("a"), id("b"), id("c"), id("d"));
        let mut tr = UsageTracker::default();
        let stored = vec![a.clone(), b.clone(), c.clone()];
        tr.observe(&stored, &HashSet::from([a.clone(), b.clone()]), t(0));
        tr.observe(&stored, &HashSet::from([b.clone()]), t(300));
        // d appears later: younger than the minimum age, it is spared.
        let stored = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        tr.observe(&stored, &HashSet::from([c.clone()]), t(400));
        let in_use = HashSet::from([c.clone()]);
        let min = Duration::from_secs(120);
        // a last used at 0 (seen at 0), b at 300; c is in use; d is too young.
        assert_eq!(
            tr.candidates(&in_use, t(450), min),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(
            tr.candidates(&in_use, t(600), min),
            vec![a.clone(), b.clone(), d.clone()]
        );
        // Removed from the store: forgotten.
        tr.observe(std::slice::from_ref(&b), &HashSet::new(), t(700));
        assert_eq!(tr.candidates(&HashSet::new(), t(900), min), vec![b]);
    }

    #[test]
    fn thresholds_are_checked_like_the_kubelet_flags() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = Thresholds {
            high_percent: 70,
            low_percent: 80,
            ..Thresholds::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("--image-gc-low-threshold (80)")
        );
    }

    #[test]
    fn usage_in_percent() {
        let u = FsUsage {
            capacity: 1000,
            available: 140,
        };
        assert_eq!(u.percent_used(), 86);
        assert!(FsUsage::of(Path::new("/")).unwrap().capacity > 0);
    }
}
