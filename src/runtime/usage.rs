//! Usage counters of a container's cgroup, read-only: cumulative CPU time and the working set,
//! for the agent's metrics sampling.
//!
//! Owns: where the counters live on cgroup v1 and v2 and how they are read. Must not touch:
//! the cgroups' settings or membership (libcontainer's).
use std::path::Path;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Cumulative CPU time and current working set of one cgroup (or the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
}

/// The value after `key` on the `key value` line of a stat file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The counters of the cgroup `rel` (a cgroupsPath) below `root`: on cgroup v2 one directory
/// (`cpu.stat` usage_usec, `memory.current` minus `inactive_file`), on v1 the cpuacct and
/// memory hierarchies (`cpuacct.usage`, `memory.usage_in_bytes` minus `total_inactive_file`).
pub fn read_cgroup(root: &Path, v2: bool, rel: &str) -> Option<Counters> {
    let rel = rel.trim_start_matches('/');
    if v2 {
        let dir = root.join(rel);
        let cpu = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
        return Some(Counters {
            cpu_ns: keyed(&cpu, "usage_usec")?.saturating_mul(1000),
            memory_bytes: current.saturating_sub(keyed(&stat, "inactive_file").unwrap_or(0)),
        });
    }
    // Some hosts mount cpu and cpuacct together with no `cpuacct` link.
    let cpu = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| read_u64(&root.join(h).join(rel).join("cpuacct.usage")))?;
    let mem = root.join("memory").join(rel);
    let stat = std::fs::read_to_string(mem.join("memory.stat")).unwrap_or_default();
    let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
    Some(Counters {
        cpu_ns: cpu,
        memory_bytes: usage.saturating_sub(keyed(&stat, "total_inactive_file").unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn cgroup_v1_counters_from_cpuacct_and_memory() {
        let dir = tempfile::tempdir().unwrap();
        let rel = "/edgepod/podU/c1";
        let root = dir.path();
        write(
            &root.join("cpuacct/edgepod/podU/c1/cpuacct.usage"),
            "123456789\n",
        );
        write(
            &root.join("memory/edgepod/podU/c1/memory.usage_in_bytes"),
            "10485760\n",
        );
        write(
            &root.join("memory/edgepod/podU/c1/memory.stat"),
            "cache 4096\ninactive_file 1\ntotal_cache 4096\ntotal_inactive_file 2097152\n",
        );
        let c = read_cgroup(root, false, rel).unwrap();
        assert_eq!(c.cpu_ns, 123_456_789);
        assert_eq!(c.memory_bytes, 10_485_760 - 2_097_152);
        // A combined cpu,cpuacct mount is found too.
        let other = tempfile::tempdir().unwrap();
        write(&other.path().join("cpu,cpuacct/x/cpuacct.usage"), "7");
        assert_eq!(read_cgroup(other.path(), false, "x").unwrap().cpu_ns, 7);
        assert!(read_cgroup(root, false, "/missing").is_none());
    }

    #[test]
    fn cgroup_v2_counters_from_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            &root.join("edgepod/podU/c1/cpu.stat"),
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        );
        write(&root.join("edgepod/podU/c1/memory.current"), "8192000\n");
        write(
            &root.join("edgepod/podU/c1/memory.stat"),
            "anon 100\nfile 200\nactive_file 10\ninactive_file 192000\n",
        );
        let c = read_cgroup(root, true, "/edgepod/podU/c1").unwrap();
        assert_eq!(c.cpu_ns, 2_500_000);
        assert_eq!(c.memory_bytes, 8_000_000);
    }
}
