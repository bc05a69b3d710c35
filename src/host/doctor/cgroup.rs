//! cgroup checks: which hierarchy the runtime will use (v2 unified, v1, or v1 beside an empty
//! cgroup2 mount, "hybrid"), and whether the memory, cpu and pids controllers are there.
//!
//! The runtime (libcontainer) uses v2 only when `/sys/fs/cgroup` itself is a cgroup2 mount; on
//! a hybrid host it works through the v1 hierarchies, so that is where controllers are looked
//! for: `/proc/cgroups`'s enabled column plus a mounted hierarchy naming the controller.

use std::path::Path;

use super::{Check, read};

/// The default kernel command line fix for a disabled memory controller, when no board config
/// says better.
pub const GENERIC_MEMORY_FIX: &str = "add `cgroup_enable=memory cgroup_memory=1` to the kernel \
    command line and reboot (on a Raspberry Pi: the end of the single line in \
    /boot/firmware/cmdline.txt, /boot/cmdline.txt before Bookworm)";

pub use crate::host::mountinfo::{Mount, parse as parse_mountinfo};

/// One row of `/proc/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub name: String,
    pub hierarchy: u32,
    pub enabled: bool,
}

/// Parses `/proc/cgroups`: `#subsys_name hierarchy num_cgroups enabled`.
pub fn parse_proc_cgroups(text: &str) -> Vec<Controller> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            Some(Controller {
                name: f[0].to_string(),
                hierarchy: f[1].parse().ok()?,
                enabled: f[3] == "1",
            })
        })
        .collect()
}

/// Which cgroup interface the runtime will drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `/sys/fs/cgroup` is cgroup2; `controllers` is its `cgroup.controllers`.
    Unified { controllers: Vec<String> },
    /// v1 hierarchies; `hybrid` names a cgroup2 mount beside them (controllers stay in v1).
    V1 {
        hierarchies: Vec<Mount>,
        hybrid: Option<String>,
    },
    /// No cgroup filesystem mounted at all.
    None,
}

pub fn layout(
    mounts: &[Mount],
    unified_controllers: impl FnOnce(&str) -> Option<String>,
) -> Layout {
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2" && m.mount_point == "/sys/fs/cgroup")
    {
        let controllers = unified_controllers(&m.mount_point)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        return Layout::Unified { controllers };
    }
    let hierarchies: Vec<Mount> = mounts
        .iter()
        .filter(|m| m.fs_type == "cgroup")
        .cloned()
        .collect();
    let hybrid = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone());
    if hierarchies.is_empty() {
        return match hybrid {
            // cgroup2 mounted somewhere else only: treat it as the unified tree it is.
            Some(point) => Layout::Unified {
                controllers: unified_controllers(&point)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            },
            None => Layout::None,
        };
    }
    Layout::V1 {
        hierarchies,
        hybrid,
    }
}

pub fn checks(root: &Path) -> Vec<Check> {
    let mounts = parse_mountinfo(&read(root, "/proc/self/mountinfo").unwrap_or_default());
    let layout = layout(&mounts, |point| {
        read(root, &format!("{point}/cgroup.controllers"))
    });
    let proc_cgroups = parse_proc_cgroups(&read(root, "/proc/cgroups").unwrap_or_default());
    let cmdline = read(root, "/proc/cmdline").unwrap_or_default();
    evaluate(&layout, &proc_cgroups, &cmdline)
}

/// The four cgroup checks from what was read (separate from reading, for fixtures).
pub fn evaluate(layout: &Layout, proc_cgroups: &[Controller], cmdline: &str) -> Vec<Check> {
    let version = match layout {
        Layout::Unified { .. } => Check::pass("cgroup-version", "v2 (unified) at /sys/fs/cgroup"),
        Layout::V1 {
            hierarchies,
            hybrid: Some(point),
        } => Check::pass(
            "cgroup-version",
            format!(
                "v1 hybrid: {} v1 hierarchies, cgroup2 at {point} without controllers; the \
                 runtime uses v1",
                hierarchies.len()
            ),
        ),
        Layout::V1 {
            hierarchies,
            hybrid: None,
        } => Check::pass(
            "cgroup-version",
            format!("v1: {} hierarchies under /sys/fs/cgroup", hierarchies.len()),
        ),
        Layout::None => Check::fail(
            "cgroup-version",
            "no cgroup filesystem is mounted",
            "mount cgroup2 at /sys/fs/cgroup (`mount -t cgroup2 none /sys/fs/cgroup`, or boot \
             with an init that does, such as systemd)",
        ),
    };
    let mut out = vec![version];
    for (id, name, why) in [
        (
            "cgroup-memory",
            "memory",
            "memory limits and requests cannot be enforced",
        ),
        (
            "cgroup-cpu",
            "cpu",
            "CPU limits and shares cannot be enforced",
        ),
        (
            "cgroup-pids",
            "pids",
            "the per-container process limit cannot be enforced",
        ),
    ] {
        out.push(controller(id, name, why, layout, proc_cgroups, cmdline));
    }
    out
}

fn controller(
    id: &'static str,
    name: &str,
    why: &str,
    layout: &Layout,
    proc_cgroups: &[Controller],
    cmdline: &str,
) -> Check {
    let disabled_on_cmdline = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("cgroup_disable="))
        .any(|list| list.split(',').any(|c| c == name));
    let fix = match name {
        "memory" => GENERIC_MEMORY_FIX.to_string(),
        "pids" => {
            "use a kernel with CONFIG_CGROUP_PIDS, or run the agent with --pids-limit 0".to_string()
        }
        _ => format!("use a kernel with the {name} controller (CONFIG_CGROUP_SCHED for cpu)"),
    };
    let cmdline_note = if disabled_on_cmdline {
        format!(" (the kernel command line has cgroup_disable={name})")
    } else {
        String::new()
    };
    let row = proc_cgroups.iter().find(|c| c.name == name);
    let status = match layout {
        Layout::None => return Check::fail(id, format!("{name}: no cgroup filesystem"), fix),
        Layout::Unified { controllers } => {
            if controllers.iter().any(|c| c == name) {
                Ok(format!("{name} controller in cgroup.controllers (v2)"))
            } else {
                Err(format!(
                    "{name} controller missing from cgroup.controllers (v2)"
                ))
            }
        }
        Layout::V1 { hierarchies, .. } => match row {
            None => Err(format!(
                "the kernel has no {name} controller (/proc/cgroups)"
            )),
            Some(c) if !c.enabled => Err(format!("{name} controller disabled (/proc/cgroups)")),
            Some(_) => match hierarchies
                .iter()
                .find(|m| m.super_options.iter().any(|o| o == name))
            {
                Some(m) => Ok(format!(
                    "{name} controller enabled, mounted at {} (v1)",
                    m.mount_point
                )),
                None => Err(format!(
                    "{name} controller enabled but no v1 hierarchy mounts it"
                )),
            },
        },
    };
    match status {
        Ok(message) => Check::pass(id, message),
        Err(message) if name == "pids" => {
            Check::warn(id, format!("{message}{cmdline_note}: {why}"), fix)
        }
        Err(message) => Check::fail(id, format!("{message}{cmdline_note}: {why}"), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    const PI_OLD: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t5\t1\t1
cpu\t3\t64\t1
cpuacct\t3\t64\t1
blkio\t6\t64\t1
memory\t0\t73\t0
devices\t4\t64\t1
freezer\t8\t1\t1
net_cls\t2\t1\t1
pids\t7\t69\t1
";

    const HYBRID: &str = "\
23 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,pids
26 1 179:2 / /mnt/my\\040disk rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
";

    #[test]
    fn proc_cgroups_rows() {
        let rows = parse_proc_cgroups(PI_OLD);
        assert_eq!(rows.len(), 9);
        let mem = rows.iter().find(|c| c.name == "memory").unwrap();
        assert!(!mem.enabled);
        assert_eq!(mem.hierarchy, 0);
        assert!(rows.iter().find(|c| c.name == "cpu").unwrap().enabled);
        assert!(parse_proc_cgroups("garbage\n#x\n").is_empty());
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 6);
        assert_eq!(m[2].fs_type, "cgroup2");
        assert_eq!(m[3].mount_point, "/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m[3].super_options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(m[5].mount_point, "/mnt/my disk");
        assert_eq!(m[5].source, "/dev/mmcblk0p2");
        assert!(parse_mountinfo("no separator here\n").is_empty());
    }

    #[test]
    fn hybrid_pi_with_memory_disabled() {
        let mounts = parse_mountinfo(HYBRID);
        let l = layout(&mounts, |_| Some(String::new()));
        assert!(matches!(&l, Layout::V1 { hybrid: Some(p), .. } if p == "/sys/fs/cgroup/unified"));
        let checks = evaluate(
            &l,
            &parse_proc_cgroups(PI_OLD),
            "console=tty1 root=PARTUUID=x cgroup_disable=memory rootwait",
        );
        let by = |id: &str| checks.iter().find(|c| c.id == id).unwrap().clone();
        assert_eq!(by("cgroup-version").status, Status::Pass);
        assert!(by("cgroup-version").message.contains("hybrid"));
        let mem = by("cgroup-memory");
        assert_eq!(mem.status, Status::Fail);
        assert!(
            mem.message.contains("cgroup_disable=memory"),
            "{}",
            mem.message
        );
        assert_eq!(mem.fix.as_deref(), Some(GENERIC_MEMORY_FIX));
        assert_eq!(by("cgroup-cpu").status, Status::Pass);
        assert!(
            by("cgroup-cpu")
                .message
                .contains("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(by("cgroup-pids").status, Status::Pass);
    }

    #[test]
    fn unified_controllers() {
        let mounts = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let l = layout(&mounts, |p| {
            assert_eq!(p, "/sys/fs/cgroup");
            Some("cpuset cpu io pids\n".into())
        });
        let checks = evaluate(&l, &[], "");
        assert_eq!(checks[0].message, "v2 (unified) at /sys/fs/cgroup");
        assert_eq!(checks[1].status, Status::Fail);
        assert_eq!(checks[2].status, Status::Pass);
        assert_eq!(checks[3].status, Status::Pass);
    }

    #[test]
    fn no_cgroups_at_all() {
        let checks = evaluate(&layout(&[], |_| None), &[], "");
        assert!(checks.iter().all(|c| c.status == Status::Fail));
    }
}
