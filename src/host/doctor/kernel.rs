//! Kernel checks: version, namespaces, seccomp, overlayfs; and reading the kernel's build
//! config (`/proc/config.gz` or `/boot/config-RELEASE`) for what `/proc` cannot tell.

use std::io::Read;
use std::path::Path;

use super::{Check, read, under};

/// Below this, pods cannot run: cgroup v2's cpu controller arrived in 4.15 (4.6 brought the
/// cgroup namespace, 4.3 the pids controller), and no Raspberry Pi OS release that is still
/// patched ships anything older (Buster: 4.19).
pub const MINIMUM: Version = Version(4, 15, 0);
/// Below this, things work but worse: `pidfd_open` (5.3) lets `kubectl exec` sessions wait on
/// their process instead of polling on a timer.
pub const RECOMMENDED: Version = Version(5, 3, 0);

/// A kernel release's numeric part: `6.1.21-v8+` is 6.1.21.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// The leading `MAJOR.MINOR[.PATCH]` of a release string; the rest (`-v8+`, `-rc1`) ignored.
    pub fn parse(release: &str) -> Option<Version> {
        let mut parts = release.trim().split('.').map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

/// A `CONFIG_` option's value in the kernel's build config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tristate {
    Builtin,
    Module,
    Off,
}

/// The kernel's build config, when the kernel exposes it.
#[derive(Debug, Default)]
pub struct KernelConfig {
    text: Option<String>,
    /// Where it was read from, for messages.
    pub source: Option<String>,
}

impl KernelConfig {
    /// `/proc/config.gz` (CONFIG_IKCONFIG_PROC, what Raspberry Pi kernels have), else
    /// `/boot/config-RELEASE` (Debian, Ubuntu).
    pub fn load(root: &Path, release: &str) -> KernelConfig {
        let gz = under(root, "/proc/config.gz");
        if let Ok(file) = std::fs::File::open(&gz) {
            let mut text = String::new();
            // Bounded: a kernel config is a few hundred KB uncompressed.
            let mut decoder = flate2::read::GzDecoder::new(file).take(16 << 20);
            if decoder.read_to_string(&mut text).is_ok() {
                return KernelConfig {
                    text: Some(text),
                    source: Some("/proc/config.gz".into()),
                };
            }
        }
        let boot = format!("/boot/config-{}", release.trim());
        match read(root, &boot) {
            Some(text) => KernelConfig {
                text: Some(text),
                source: Some(boot),
            },
            None => KernelConfig::default(),
        }
    }

    #[cfg(test)]
    pub fn parse(text: &str) -> KernelConfig {
        KernelConfig {
            text: Some(text.to_string()),
            source: Some("test".into()),
        }
    }

    /// `None` when there is no config to read; `Off` when the config lacks the option.
    pub fn get(&self, name: &str) -> Option<Tristate> {
        let text = self.text.as_ref()?;
        for line in text.lines() {
            if let Some(value) = line
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return Some(match value.trim() {
                    "y" => Tristate::Builtin,
                    "m" => Tristate::Module,
                    _ => Tristate::Off,
                });
            }
        }
        Some(Tristate::Off)
    }
}

pub fn checks(root: &Path) -> Vec<Check> {
    let release = read(root, "/proc/sys/kernel/osrelease")
        .or_else(|| {
            nix::sys::utsname::uname()
                .ok()
                .map(|u| u.release().to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let config = KernelConfig::load(root, &release);
    vec![
        version(release.trim()),
        namespaces(root, &config),
        overlayfs(root, &config),
        seccomp(root, &config),
    ]
}

fn version(release: &str) -> Check {
    let upgrade = "upgrade the kernel (on Raspberry Pi OS: `sudo apt full-upgrade` and reboot; \
                   older images: flash a current Raspberry Pi OS Lite)";
    match Version::parse(release) {
        None => Check::warn(
            "kernel",
            format!("cannot read the kernel version ({release:?})"),
            "check that /proc is mounted",
        ),
        Some(v) if v < MINIMUM => Check::fail(
            "kernel",
            format!(
                "{release}: older than {MINIMUM}, the minimum (cgroup v2's cpu controller, the \
                 cgroup namespace and the pids controller are all older than that)"
            ),
            upgrade,
        ),
        Some(v) if v < RECOMMENDED => Check::warn(
            "kernel",
            format!(
                "{release}: works, but older than {RECOMMENDED} (no pidfd_open: exec sessions \
                 poll for their command's exit)"
            ),
            upgrade,
        ),
        Some(_) => Check::pass(
            "kernel",
            format!("{release} (minimum {MINIMUM}, recommended {RECOMMENDED} or newer)"),
        ),
    }
}

/// Namespaces a pod's containers get (mount, uts, ipc, pid, net) and two that edgepod does not
/// use yet but container images increasingly expect of a host (user, cgroup).
const REQUIRED_NS: &[(&str, &str, &str)] = &[
    ("mnt", "mount", "CONFIG_NAMESPACES"),
    ("uts", "uts", "CONFIG_UTS_NS"),
    ("ipc", "ipc", "CONFIG_IPC_NS"),
    ("pid", "pid", "CONFIG_PID_NS"),
    ("net", "net", "CONFIG_NET_NS"),
];
const OPTIONAL_NS: &[(&str, &str, &str)] = &[
    ("user", "user", "CONFIG_USER_NS"),
    ("cgroup", "cgroup", "CONFIG_CGROUP_NS"),
];

fn namespaces(root: &Path, config: &KernelConfig) -> Check {
    let ns_dir = under(root, "/proc/self/ns");
    let listed = std::fs::read_dir(&ns_dir).is_ok();
    // /proc/self/ns lists what this kernel has; the config only when /proc says nothing.
    let has = |file: &str, option: &str| {
        if listed {
            ns_dir.join(file).exists()
        } else {
            matches!(config.get(option), Some(Tristate::Builtin))
        }
    };
    let missing = |set: &[(&str, &'static str, &str)]| -> Vec<(&'static str, String)> {
        set.iter()
            .filter(|(file, _, option)| !has(file, option))
            .map(|(_, name, option)| (*name, option.to_string()))
            .collect()
    };
    let required = missing(REQUIRED_NS);
    let mut optional = missing(OPTIONAL_NS);
    // Built in yet switched off: Debian-family kernels can ship user namespaces disabled.
    if !optional.iter().any(|(n, _)| *n == "user")
        && read(root, "/proc/sys/user/max_user_namespaces").is_some_and(|v| v.trim() == "0")
    {
        optional.push(("user", "user.max_user_namespaces=0".into()));
    }
    let names = |v: &[(&str, String)]| v.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let options = |v: &[(&str, String)]| {
        v.iter()
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let source = if listed {
        "/proc/self/ns"
    } else {
        config.source.as_deref().unwrap_or("nothing readable")
    };
    if !required.is_empty() {
        return Check::fail(
            "namespaces",
            format!(
                "missing {} namespace(s) every pod needs (from {source})",
                names(&required)
            ),
            format!(
                "use a kernel built with {} (the distribution's standard kernel has them)",
                options(&required)
            ),
        );
    }
    if !optional.is_empty() {
        return Check::warn(
            "namespaces",
            format!(
                "mount, uts, ipc, pid, net present; {} missing or disabled (not used by pods \
                 today)",
                names(&optional)
            ),
            format!(
                "enable {} (for user namespaces: `sysctl -w user.max_user_namespaces=15000`)",
                options(&optional)
            ),
        );
    }
    Check::pass(
        "namespaces",
        "mount, uts, ipc, pid, net, user, cgroup all present",
    )
}

fn overlayfs(root: &Path, config: &KernelConfig) -> Check {
    let listed = read(root, "/proc/filesystems").is_some_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    if listed {
        return Check::pass("overlayfs", "overlay in /proc/filesystems");
    }
    let fallback = "pods still run, but every container start copies its whole image into its \
                    rootfs (slow, and SD-card wear)";
    match config.get("CONFIG_OVERLAY_FS") {
        Some(Tristate::Module) => Check::warn(
            "overlayfs",
            format!("overlay is a module that is not loaded; {fallback}"),
            "`modprobe overlay` and add `overlay` to /etc/modules-load.d/edgepod.conf",
        ),
        _ => Check::warn(
            "overlayfs",
            format!("the kernel has no overlayfs; {fallback}"),
            "use a kernel with CONFIG_OVERLAY_FS (every Raspberry Pi OS kernel has it)",
        ),
    }
}

fn seccomp(root: &Path, config: &KernelConfig) -> Check {
    // The field exists only in kernels built with CONFIG_SECCOMP; filter mode (what container
    // profiles are) is what actions_avail describes.
    let status_field = read(root, "/proc/self/status")
        .is_some_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    let filter = under(root, "/proc/sys/kernel/seccomp/actions_avail").exists()
        || matches!(config.get("CONFIG_SECCOMP_FILTER"), Some(Tristate::Builtin));
    match (status_field, filter) {
        (true, true) => Check::pass("seccomp", "seccomp filter mode available"),
        (true, false) => Check::warn(
            "seccomp",
            "seccomp without filter mode (CONFIG_SECCOMP_FILTER): syscall profiles cannot apply",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        ),
        (false, _) => Check::warn(
            "seccomp",
            "the kernel has no seccomp: containers cannot be given syscall filters",
            "use a kernel built with CONFIG_SECCOMP and CONFIG_SECCOMP_FILTER",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(Version::parse("6.1.21-v8+"), Some(Version(6, 1, 21)));
        assert_eq!(Version::parse("6.18.44-fc-v1300"), Some(Version(6, 18, 44)));
        assert_eq!(Version::parse("5.10"), Some(Version(5, 10, 0)));
        assert_eq!(Version::parse("6.8.0-rc1"), Some(Version(6, 8, 0)));
        assert_eq!(Version::parse("4.19.0-27-arm64\n"), Some(Version(4, 19, 0)));
        assert_eq!(Version::parse("garbage"), None);
        assert!(Version(4, 9, 0) < MINIMUM);
        assert!(Version(4, 14, 98) < MINIMUM);
        assert!(Version(4, 19, 0) >= MINIMUM && Version(4, 19, 0) < RECOMMENDED);
        assert!(Version(5, 10, 0) > Version(5, 3, 0));
        assert!(Version(10, 0, 0) > Version(9, 99, 99));
    }

    #[test]
    fn version_verdicts() {
        assert_eq!(version("4.9.253-v7+").status, super::super::Status::Fail);
        assert_eq!(version("4.19.66-v7+").status, super::super::Status::Warn);
        let ok = version("6.6.31+rpt-rpi-v8");
        assert_eq!(ok.status, super::super::Status::Pass);
        assert!(ok.message.contains("minimum 4.15.0"), "{}", ok.message);
    }

    #[test]
    fn config_options() {
        let c = KernelConfig::parse(
            "CONFIG_OVERLAY_FS=m\nCONFIG_SECCOMP=y\n# CONFIG_USER_NS is not set\n",
        );
        assert_eq!(c.get("CONFIG_OVERLAY_FS"), Some(Tristate::Module));
        assert_eq!(c.get("CONFIG_SECCOMP"), Some(Tristate::Builtin));
        assert_eq!(c.get("CONFIG_USER_NS"), Some(Tristate::Off));
        // A prefix of another option's name is not that option.
        assert_eq!(c.get("CONFIG_SECCOMP_FILTER"), Some(Tristate::Off));
        assert_eq!(KernelConfig::default().get("CONFIG_SECCOMP"), None);
    }
}
