//! `edgepod doctor` on this machine: the real binary, the real /proc, /sys and /usr/lib/cni.
//!
//! What this machine is (and the assertions rely on): an x86_64 container with cgroup v1
//! hybrid (v1 hierarchies with memory, cpu and pids, an empty cgroup2 at
//! /sys/fs/cgroup/unified), every namespace, overlayfs, seccomp filters, Debian's
//! containernetworking-plugins in /usr/lib/cni, and no board config matching it.
//! Runs as root (one test mounts a tmpfs).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tmpfs::Tmpfs;
use serde_json::Value;

const IDS: &[&str] = &[
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

struct Run {
    code: i32,
    stdout: String,
    elapsed: Duration,
}

fn doctor(data_dir: &Path, args: &[&str]) -> Run {
    let boards = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_edgepod"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("doctor")
        .arg("--board-config-dir")
        .arg(boards.path())
        // No mirrors: the registry check dials Docker Hub only.
        .args(["--private-registry", "/nonexistent/registries.yaml"])
        .args(args)
        .env_remove("EDGEPOD_TOKEN")
        .env_remove("EDGEPOD_HOST_ROOT")
        .env_remove("EDGEPOD_DATA_DIR")
        .output()
        .expect("running edgepod doctor");
    let elapsed = start.elapsed();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        elapsed,
    }
}

fn json(data_dir: &Path, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let run = doctor(data_dir, &all);
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout));
    (run, v)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn status<'a>(report: &'a Value, id: &str) -> &'a str {
    check(report, id)["status"].as_str().unwrap()
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn every_check_runs_on_this_machine() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let (run, report) = json(data.path(), &["--cni-bin-dir", "/usr/lib/cni"]);
    eprintln!("doctor -o json took {:?}:\n{}", run.elapsed, run.stdout);

    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, IDS);
    for c in report["checks"].as_array().unwrap() {
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["fix", "id", "message", "status"], "{c}");
        assert!(!c["message"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["message"].as_str().unwrap().contains('\n'), "{c}");
        // A fix exactly where the check did not pass.
        assert_eq!(c["fix"].is_string(), c["status"] != "pass", "{c}");
    }

    let k = check(&report, "kernel");
    assert_eq!(k["status"], "pass", "{k}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        k["message"].as_str().unwrap().starts_with(release.trim()),
        "{k}"
    );
    assert!(
        k["message"].as_str().unwrap().contains("minimum 4.15.0"),
        "{k}"
    );
    assert_eq!(status(&report, "namespaces"), "pass");
    let v = check(&report, "cgroup-version");
    assert_eq!(v["status"], "pass", "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("v1 hybrid"),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("/sys/fs/cgroup/unified"),
        "{v}"
    );
    for id in ["cgroup-memory", "cgroup-cpu", "cgroup-pids"] {
        let c = check(&report, id);
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c["message"].as_str().unwrap().contains("(v1)"), "{c}");
    }
    assert_eq!(status(&report, "overlayfs"), "pass");
    assert_eq!(status(&report, "seccomp"), "pass");
    let cni = check(&report, "cni-plugins");
    assert_eq!(cni["status"], "pass", "{cni}");
    assert_eq!(
        cni["message"],
        "bridge, host-local, portmap, loopback in /usr/lib/cni"
    );
    let d = check(&report, "data-dir");
    assert_eq!(d["status"], "pass", "{d}");
    assert!(
        d["message"].as_str().unwrap().contains(" is on ext4 "),
        "{d}"
    );
    // This machine's disk is shared and fills up: the verdict follows its real numbers.
    let s = check(&report, "data-dir-space");
    let st = nix::sys::statvfs::statvfs(data.path()).unwrap();
    let block = st.fragment_size() as u64;
    let (total, avail) = (
        st.blocks() as u64 * block,
        st.blocks_available() as u64 * block,
    );
    let used = (total - avail) * 100 / total;
    let expected = if avail < 512 << 20 {
        "fail"
    } else if avail < 2 << 30 || used >= 85 {
        "warn"
    } else {
        "pass"
    };
    assert_eq!(s["status"], expected, "{s} ({avail} of {total} bytes free)");
    let m = s["message"].as_str().unwrap();
    assert!(m.contains(&format!("({used}% used)")), "{m}");
    assert!(
        m.contains("fail below 512.0 MiB, warn below 2.0 GiB or above 85% used"),
        "{m}"
    );
    // The disk type of a virtio disk is not one of sd/ssd/hdd: reported, not warned about.
    assert_eq!(status(&report, "disk"), "pass");
    // Whether this machine's clock is NTP-disciplined is not ours to decide; it is never a fail.
    assert!(["pass", "warn"].contains(&status(&report, "clock")));
    let b = check(&report, "broker");
    assert_eq!(b["status"], "pass", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("no hub configured"),
        "{b}"
    );
    // Docker Hub may or may not be reachable from here; unreachable is a warning only.
    let r = check(&report, "registry");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("https://registry-1.docker.io/v2"),
        "{r}"
    );
    assert!(
        ["pass", "warn"].contains(&r["status"].as_str().unwrap()),
        "{r}"
    );
    let board = check(&report, "board");
    assert_eq!(board["status"], "warn", "{board}");
    assert!(
        board["message"]
            .as_str()
            .unwrap()
            .starts_with("no board config matches"),
        "{board}"
    );

    let s = &report["summary"];
    let fails = if expected == "fail" { 1 } else { 0 };
    assert_eq!(s["fail"], fails, "{s}");
    assert_eq!(s["ok"], fails == 0);
    assert_eq!(
        s["pass"].as_u64().unwrap() + s["warn"].as_u64().unwrap() + fails,
        IDS.len() as u64
    );
    assert_eq!(run.code, if fails == 0 { 0 } else { 1 });
    // Network checks are bounded at 2 s; everything else reads a few files.
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
}

#[test]
fn a_missing_cni_plugin_dir_fails_with_the_fix() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let (run, report) = json(data.path(), &["--cni-bin-dir", "/nonexistent"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let c = check(&report, "cni-plugins");
    assert_eq!(c["status"], "fail", "{c}");
    assert_eq!(
        c["message"],
        "no CNI plugin directory: /nonexistent does not exist"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("apt install containernetworking-plugins"),
        "{c}"
    );
    assert_eq!(report["summary"]["ok"], false);
    assert_eq!(report["summary"]["fail"], 1);

    // The same as people read it: a FAIL line and the fix under it, no colour into a pipe.
    let run = doctor(data.path(), &["--cni-bin-dir", "/nonexistent"]);
    assert_eq!(run.code, 1);
    eprintln!("{}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| {
            l.starts_with("FAIL  cni-plugins") && l.ends_with("/nonexistent does not exist")
        })
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        lines[at + 1]
            .trim_start()
            .starts_with("fix: install the plugins"),
        "{}",
        lines[at + 1]
    );
    assert!(lines.iter().any(|l| l.starts_with("PASS  namespaces")));
    assert!(lines.iter().any(|l| l.starts_with("WARN  board")));
    // Every WARN and FAIL has its fix line right below.
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("WARN") || l.starts_with("FAIL") {
            assert!(lines[i + 1].trim_start().starts_with("fix: "), "{l}");
        }
    }
    assert!(!run.stdout.contains('\x1b'));
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("16 checks: ") && last.ends_with(", 1 failed"),
        "{last}"
    );
}

#[test]
fn the_hub_broker_reachable_or_not() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = closed_port();
    let server = format!("127.0.0.1:{port}");
    let (run, report) = json(data.path(), &["--server", &server]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let b = check(&report, "broker");
    assert_eq!(b["status"], "fail", "{b}");
    let m = b["message"].as_str().unwrap();
    assert!(
        m.contains(&server) && m.contains("refused") && m.contains("(from --server)"),
        "{m}"
    );
    assert!(b["fix"].as_str().unwrap().contains("hub is running"), "{b}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().to_string();
    let (run, report) = json(data.path(), &["--server", &open]);
    let b = check(&report, "broker");
    assert_eq!(b["status"], "pass", "{b}");
    assert_eq!(run.code, 0, "{}", run.stdout);

    // A join token names the broker and the API; both are dialled, as `agent --token` would.
    let token = edgepod::fleet::identity::JoinToken {
        api: format!("https://{open}"),
        broker: format!("mqtts://127.0.0.1:{port}"),
        ca: "0".repeat(64),
        secret: "s3cret".into(),
        cluster: "default".into(),
    }
    .encode();
    let (run, report) = json(data.path(), &["--token", &token]);
    assert_eq!(run.code, 1);
    let b = check(&report, "broker");
    let m = b["message"].as_str().unwrap();
    assert!(
        m.starts_with(&format!("cannot reach mqtts://127.0.0.1:{port}")),
        "{m}"
    );
    assert!(m.ends_with("(from --token)"), "{m}");
    assert!(!m.contains("https://"), "the API answered: {m}");

    let (run, report) = json(data.path(), &["--token", "not-a-token"]);
    assert_eq!(run.code, 1);
    assert!(
        check(&report, "broker")["message"]
            .as_str()
            .unwrap()
            .contains("EP1.")
    );
}

#[test]
fn a_full_tmpfs_data_dir_fails_space() {
    let data = Tmpfs::mount("1m");
    // Filled to the last block.
    let err = std::fs::write(data.path().join("ballast"), vec![1u8; 2 << 20]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));

    let (run, report) = json(data.path(), &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let s = check(&report, "data-dir-space");
    assert_eq!(s["status"], "fail", "{s}");
    let m = s["message"].as_str().unwrap();
    assert!(m.starts_with("0.0 MiB free of 1.0 MiB (100% used)"), "{m}");
    assert!(s["fix"].as_str().unwrap().contains("USB SSD"), "{s}");
    let d = check(&report, "data-dir");
    assert_eq!(d["status"], "warn", "{d}");
    assert!(
        d["message"].as_str().unwrap().contains("is on tmpfs"),
        "{d}"
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("lost at every reboot"),
        "{d}"
    );
}

#[test]
fn a_data_dir_not_created_yet_is_judged_by_its_parent() {
    let parent = tempfile::tempdir_in("/var/tmp").unwrap();
    let (_, report) = json(
        &parent.path().join("edgepod"),
        &["--cni-bin-dir", "/usr/lib/cni"],
    );
    let d = check(&report, "data-dir");
    assert_eq!(d["status"], "pass", "{d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .contains("does not exist yet"),
        "{d}"
    );
    assert!(
        !parent.path().join("edgepod").exists(),
        "doctor must not create the data dir"
    );
}

/// The network down, a broker that never answers: a private network namespace with only
/// loopback, whose firewall drops the SYNs to the broker's port. Every network check is
/// bounded, so the whole run stays near the 2 s connect limit.
#[test]
fn a_silent_broker_times_out_in_two_seconds() {
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let boards = tempfile::tempdir().unwrap();
    let script = format!(
        "ip link set lo up && iptables -A INPUT -p tcp --dport 9 -j DROP && exec {} \
         --data-dir {} doctor -o json --server 127.0.0.1:9 --board-config-dir {} \
         --private-registry /nonexistent/registries.yaml",
        env!("CARGO_BIN_EXE_edgepod"),
        data.path().display(),
        boards.path().display()
    );
    let start = Instant::now();
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .env_remove("EDGEPOD_TOKEN")
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let b = check(&report, "broker");
    assert_eq!(b["status"], "fail", "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("no answer within 2 s"),
        "{b}"
    );
    // No route and no DNS server in here: a warning, at once.
    let r = check(&report, "registry");
    assert_eq!(r["status"], "warn", "{r}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(3500),
        "{elapsed:?}"
    );
}

/// A Raspberry Pi OS (Bullseye) host with the memory controller off, as a fixture tree under
/// the hidden --host-root (no such board here): /proc/cgroups, mountinfo and cmdline.
#[test]
fn a_pi_with_memory_cgroup_disabled_from_a_fixture_root() {
    let root = tempfile::tempdir().unwrap();
    let proc = root.path().join("proc");
    std::fs::create_dir_all(proc.join("self")).unwrap();
    std::fs::write(
        proc.join("cgroups"),
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t60\t1\ncpuacct\t2\t60\t1\n\
         memory\t0\t70\t0\npids\t3\t60\t1\n",
    )
    .unwrap();
    std::fs::write(
        proc.join("self/mountinfo"),
        "21 1 179:2 / / rw,noatime shared:1 - ext4 /dev/root rw\n\
         24 21 0:22 / /sys/fs/cgroup ro shared:4 - tmpfs tmpfs ro,mode=755\n\
         25 24 0:23 / /sys/fs/cgroup/unified rw shared:5 - cgroup2 cgroup2 rw,nsdelegate\n\
         28 24 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
         29 24 0:27 / /sys/fs/cgroup/pids rw shared:10 - cgroup cgroup rw,pids\n",
    )
    .unwrap();
    std::fs::write(
        proc.join("cmdline"),
        "coherent_pool=1M 8250.nr_uarts=0 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 \
         fsck.repair=yes rootwait cgroup_disable=memory\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
    std::fs::write(
        root.path().join("proc/sys/kernel/osrelease"),
        "5.10.103-v7l+\n",
    )
    .unwrap();
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    let (run, report) = json(data.path(), &["--host-root", root.path().to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert_eq!(status(&report, "kernel"), "pass");
    assert!(
        check(&report, "kernel")["message"]
            .as_str()
            .unwrap()
            .starts_with("5.10.103-v7l+")
    );
    assert!(
        check(&report, "cgroup-version")["message"]
            .as_str()
            .unwrap()
            .starts_with("v1 hybrid")
    );
    let mem = check(&report, "cgroup-memory");
    assert_eq!(mem["status"], "fail", "{mem}");
    let m = mem["message"].as_str().unwrap();
    assert!(
        m.contains("disabled") && m.contains("cgroup_disable=memory"),
        "{m}"
    );
    assert!(
        mem["fix"]
            .as_str()
            .unwrap()
            .contains("cgroup_enable=memory cgroup_memory=1"),
        "{mem}"
    );
    assert!(
        mem["fix"]
            .as_str()
            .unwrap()
            .contains("/boot/firmware/cmdline.txt"),
        "{mem}"
    );
    assert_eq!(status(&report, "cgroup-cpu"), "pass");
    assert_eq!(status(&report, "cgroup-pids"), "pass");
}
