//! The host checks behind `edgepod doctor`: can this machine run edgepod's pods, and what must
//! the user change if not.
//!
//! Every check has a stable id (used by `board-configs/*.yaml` `kernel[].check` and by tooling
//! reading `-o json`), a status, a one-line finding and, unless it passed, the fix. The checks
//! are grouped one file per concern: [`kernel`] (version, namespaces, seccomp, overlayfs),
//! [`cgroup`], [`cni`], [`storage`] (data dir filesystem, free space, disk type), [`clock`],
//! [`reach`] (hub broker and registries over TCP) and [`board_match`].
//!
//! Owns: reading `/proc` and `/sys` under [`Options::root`] (a fixture tree in tests), the
//! statvfs of the data dir, one `adjtimex` read, and plain TCP connects to the addresses the
//! caller resolved (never a TLS handshake, an MQTT session or a registry request).
//!
//! Must not touch: the store, the runtime, the fleet link. Where the hub and the registries are
//! is decided by the caller (the CLI reads tokens, identities and registries.yaml); this module
//! only dials what it is given.

mod board_match;
mod cgroup;
mod clock;
mod cni;
mod kernel;
mod reach;
mod storage;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use reach::Target;

/// How long any network check may take: a host with its network down must still get its answer
/// in a couple of seconds.
pub const NETWORK_TIMEOUT: Duration = Duration::from_secs(2);

/// The check ids, in the order they are reported.
pub const CHECK_IDS: &[&str] = &[
    "kernel",
    "namespaces",
    "cgroup-version",
    "cgroup-memory",
    "cgroup-cpu",
    "cgroup-pids",
    "overlayfs",
    "seccomp",
    "cni-plugins",
    "data-dir",
    "data-dir-space",
    "disk",
    "clock",
    "broker",
    "registry",
    "board",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    /// One line: what was found.
    pub message: String,
    /// What to do about it; `None` when the check passed.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, message: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Counts per status; `ok` is false when anything failed (the command's exit code).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub ok: bool,
}

/// Every check's outcome, in [`CHECK_IDS`] order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub summary: Summary,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's filesystem root (`/`); `/proc`, `/sys` and the CNI dirs are read under it.
    pub root: PathBuf,
    /// The data dir, a real path (statvfs'd, so never under `root`).
    pub data_dir: PathBuf,
    /// Directories searched for CNI plugins, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The hub's broker (and, for a token not yet used, its API); `Ok(None)`: no hub
    /// configured; `Err`: the caller could not tell (a bad token, a corrupt identity).
    pub hub: Result<Option<HubTargets>, String>,
    /// The registry endpoints a pull would try, in order; `Err`: registries.yaml is unreadable.
    pub registries: Result<Vec<Target>, String>,
    /// Where the board configs are.
    pub board_config_dir: PathBuf,
    /// `--board NAME`: use this config rather than detecting one.
    pub board: Option<String>,
}

/// Where the hub is and how the caller learnt it.
#[derive(Debug, Clone)]
pub struct HubTargets {
    /// `--server`, `--token`, `DATA_DIR/identity`: named in the finding.
    pub source: String,
    pub broker: Target,
    /// The hub API a token's join goes to first.
    pub api: Option<Target>,
}

/// Runs every check; the local ones in this thread, the network ones concurrently, none longer
/// than [`NETWORK_TIMEOUT`] (a check still dialing then is reported as timed out).
pub fn run(opts: &Options) -> Report {
    let deadline = Instant::now() + NETWORK_TIMEOUT + Duration::from_millis(300);
    let (tx, rx) = mpsc::channel::<Check>();
    // Name resolution (getaddrinfo) has no timeout of its own: these threads are detached and
    // abandoned if they overrun, the answer is then "timed out".
    {
        let tx = tx.clone();
        let hub = opts.hub.clone();
        std::thread::spawn(move || {
            let _ = tx.send(reach::broker(hub));
        });
    }
    {
        let tx = tx.clone();
        let registries = opts.registries.clone();
        std::thread::spawn(move || {
            let _ = tx.send(reach::registry(registries));
        });
    }
    drop(tx);

    let board = board_match::find(opts);
    let mut checks = Vec::with_capacity(CHECK_IDS.len());
    checks.extend(kernel::checks(&opts.root));
    checks.extend(cgroup::checks(&opts.root));
    checks.push(cni::check(&opts.root, &opts.cni_bin_dirs));
    checks.extend(storage::checks(&opts.root, &opts.data_dir));
    checks.push(clock::check(&opts.root));
    checks.push(board.check.clone());

    let mut pending = 2;
    while pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(c) => {
                checks.push(c);
                pending -= 1;
            }
            Err(_) => break,
        }
    }
    for (id, what) in [
        ("broker", "the hub's broker"),
        ("registry", "the registries"),
    ] {
        if !checks.iter().any(|c| c.id == id) {
            checks.push(Check::warn(
                id,
                format!(
                    "{what}: no answer within {} s (name resolution hanging?)",
                    NETWORK_TIMEOUT.as_secs()
                ),
                "check DNS (/etc/resolv.conf) and the network route",
            ));
        }
    }

    if let Some(config) = &board.config {
        board_match::apply_fixes(config, &mut checks);
    }
    checks.sort_by_key(|c| CHECK_IDS.iter().position(|id| *id == c.id));
    Report::new(checks)
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        let count = |s| checks.iter().filter(|c| c.status == s).count();
        let summary = Summary {
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            ok: count(Status::Fail) == 0,
        };
        Report { checks, summary }
    }
}

/// `path` (absolute) under `root`: `Path::join` would replace `root` by an absolute path.
pub(crate) fn under(root: &Path, path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// A file under `root` as text, `None` when it cannot be read.
pub(crate) fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(under(root, path)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_keeps_the_root() {
        assert_eq!(
            under(Path::new("/fx"), "/proc/cgroups"),
            PathBuf::from("/fx/proc/cgroups")
        );
        assert_eq!(
            under(Path::new("/"), "/proc/cgroups"),
            PathBuf::from("/proc/cgroups")
        );
    }

    #[test]
    fn summary_counts_and_fails() {
        let r = Report::new(vec![
            Check::pass("kernel", "ok"),
            Check::warn("disk", "sd", "x"),
            Check::fail("cni-plugins", "none", "y"),
        ]);
        assert_eq!(
            r.summary,
            Summary {
                pass: 1,
                warn: 1,
                fail: 1,
                ok: false
            }
        );
    }
}
