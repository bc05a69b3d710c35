//! Board configs, board detection, disk type and GPU detection, on fixture trees.
//!
//! This machine is an x86_64 container with no device tree, no SD card and no GPU: every board
//! here is a fixture tree (tests/fixtures/boards/NAME, device-tree files NUL-separated as the
//! kernel writes them) or a fake /proc + /sys + /dev built by the test, read through the same
//! `root` parameter the agent passes `/` to on a real board.
use std::path::{Path, PathBuf};

use edgepod::agent::board::{BoardOptions, BoardSetup};
use edgepod::host::board::{self, Identity, Reserved};
use edgepod::host::disk::{DiskType, disk_type_of};
use edgepod::host::gpu;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn configs_dir() -> PathBuf {
    repo().join("board-configs")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/boards").join(name)
}

fn catalog() -> Vec<board::BoardConfig> {
    board::load_catalog(&configs_dir()).expect("board-configs/ loads")
}

#[test]
fn every_board_config_has_a_fixture_detected_as_it() {
    let catalog = catalog();
    let names: Vec<&str> = catalog.iter().map(|c| c.name.as_str()).collect();
    for wanted in [
        "rpi-zero-2w",
        "rpi3bplus",
        "rpi4b",
        "rpi5",
        "rpi-cm4",
        "orangepi5",
        "rock5b",
        "jetson-orin-nano",
    ] {
        assert!(
            names.contains(&wanted),
            "no board config {wanted}: {names:?}"
        );
    }
    for c in &catalog {
        let root = fixture(&c.name);
        let model = std::fs::read(root.join("proc/device-tree/model")).unwrap_or_else(|e| {
            panic!("board {} has no fixture at {}: {e}", c.name, root.display())
        });
        assert_eq!(
            model.last(),
            Some(&0),
            "{}: the kernel NUL-terminates model",
            c.name
        );
        let id = board::identify(&root);
        assert!(id.compatible.len() >= 2, "{}: {id:?}", c.name);
        let found = board::detect(&catalog, &id).map(|b| b.name.as_str());
        assert_eq!(found, Some(c.name.as_str()), "{id:?}");
        // Each identifies on its compatible strings alone too (a model string a vendor kernel
        // spells differently must not lose the board).
        let by_compatible = Identity {
            model: None,
            compatible: id.compatible.clone(),
        };
        assert_eq!(
            board::detect(&catalog, &by_compatible).map(|b| b.name.as_str()),
            Some(c.name.as_str())
        );
        assert!(!c.reserved.is_empty(), "{}: reserves nothing", c.name);
        assert!(c.storage.is_some(), "{}: no storage advice", c.name);
        assert!(!c.architectures.is_empty(), "{}", c.name);
    }
    // And no fixture without a config.
    for e in std::fs::read_dir(repo().join("tests/fixtures/boards")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            names.contains(&name.as_str()),
            "fixture {name} has no config"
        );
    }
}

#[test]
fn look_alike_boards_are_not_matched() {
    let catalog = catalog();
    let id = |model: &str, compatible: &[&str]| Identity {
        model: Some(model.to_string()),
        compatible: compatible.iter().map(|s| s.to_string()).collect(),
    };
    for other in [
        id(
            "Raspberry Pi 400 Rev 1.0",
            &["raspberrypi,400", "brcm,bcm2711"],
        ),
        id(
            "Raspberry Pi Compute Module 4S Rev 1.0",
            &["raspberrypi,4-compute-module-s", "brcm,bcm2711"],
        ),
        id(
            "Raspberry Pi 3 Model B Rev 1.2",
            &["raspberrypi,3-model-b", "brcm,bcm2837"],
        ),
        id(
            "Orange Pi 5 Plus",
            &["rockchip,rk3588-orangepi-5-plus", "rockchip,rk3588"],
        ),
        id(
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
            &[
                "nvidia,p3768-0000+p3767-0000",
                "nvidia,p3767-0000",
                "nvidia,tegra234",
            ],
        ),
        id("QEMU Standard PC (Q35 + ICH9, 2009)", &[]),
    ] {
        assert_eq!(
            board::detect(&catalog, &other).map(|b| &b.name),
            None,
            "{other:?}"
        );
    }
    // Mainline Linux spells the Orange Pi 5 its own way.
    let mainline = id(
        "Xunlong Orange Pi 5",
        &["xunlong,orangepi-5", "rockchip,rk3588s"],
    );
    assert_eq!(
        board::detect(&catalog, &mainline).map(|b| b.name.as_str()),
        Some("orangepi5")
    );
}

#[test]
fn identity_is_read_from_sysfs_or_dmi_when_proc_has_no_device_tree() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("sys/firmware/devicetree/base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("model"), b"Raspberry Pi 5 Model B Rev 1.0\0").unwrap();
    std::fs::write(
        base.join("compatible"),
        b"raspberrypi,5-model-b\0brcm,bcm2712\0",
    )
    .unwrap();
    let id = board::identify(dir.path());
    assert_eq!(id.model.as_deref(), Some("Raspberry Pi 5 Model B Rev 1.0"));
    assert_eq!(id.compatible, ["raspberrypi,5-model-b", "brcm,bcm2712"]);

    let dir = tempfile::tempdir().unwrap();
    let dmi = dir.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("product_name"), "Standard PC (Q35 + ICH9, 2009)\n").unwrap();
    let id = board::identify(dir.path());
    assert_eq!(id.model.as_deref(), Some("Standard PC (Q35 + ICH9, 2009)"));
    assert!(id.compatible.is_empty());
    assert_eq!(
        board::identify(Path::new("/nonexistent")),
        Identity::default()
    );
}

#[test]
fn small_boards_keep_more_back_and_are_not_overcommitted() {
    let catalog = catalog();
    let get = |n: &str| catalog.iter().find(|c| c.name == n).unwrap().clone();
    // A Zero 2 W's MemTotal with a 64-bit OS is about 420 MiB.
    let zero = get("rpi-zero-2w").reserved_for(420 << 20);
    assert_eq!(
        zero,
        Reserved {
            cpu_millis: 250,
            memory_bytes: 160 << 20
        }
    );
    assert!(
        zero.memory_bytes * 3 >= 420 << 20,
        "a third of a Zero's memory"
    );
    // A 4 GB Pi 4 (MemTotal 3.7 GiB) takes its 4Gi tier, an 8 GB one the last.
    let pi4 = get("rpi4b");
    assert_eq!(
        pi4.reserved_for(3_900_000_000).memory_bytes,
        (160 + 256) << 20
    );
    assert_eq!(
        pi4.reserved_for(7_800_000_000).memory_bytes,
        (192 + 320) << 20
    );
    assert_eq!(pi4.log_rotation(), (Some(4 << 20), Some(3)));
    assert_eq!(get("rpi-zero-2w").log_rotation(), (Some(1 << 20), Some(2)));
    // Every Raspberry Pi config carries the cmdline.txt fix for the memory cgroup.
    for c in catalog.iter().filter(|c| c.name.starts_with("rpi")) {
        let fix = c.kernel.iter().find(|k| k.check == "cgroup-memory");
        assert!(
            fix.is_some_and(
                |k| k.fix.contains("cgroup_enable=memory") && k.fix.contains("cmdline.txt")
            ),
            "{}",
            c.name
        );
    }
}

/// A copy of board-configs/rpi4b.yaml with `edit` applied, in a directory of its own.
fn broken_config(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(configs_dir().join("rpi4b.yaml")).unwrap();
    let path = dir.path().join("rpi4b.yaml");
    std::fs::write(&path, edit(text)).unwrap();
    (dir, path)
}

#[test]
fn a_malformed_board_config_names_its_file_and_field() {
    // (text in rpi4b.yaml, replaced by, what the error must name), the first occurrence only.
    let cases = [
        // A misspelt field deep inside.
        (
            "kubeReserved: {cpu: 100m",
            "kubeReserved: {cpus: 100m",
            "unknown field `cpus`",
        ),
        // A misspelt top-level field.
        ("labels:", "lables:", "unknown field `lables`"),
        (
            "memory: 96Mi",
            "memory: lots",
            "reserved[0].kubeReserved.memory",
        ),
        ("check: cgroup-memory", "check: cgroups", "kernel[0].check"),
        ("name: rpi4b", "name: pi4", "name"),
    ];
    for (from, to, field) in cases {
        let (dir, path) = broken_config(|t| t.replacen(from, to, 1));
        let err = board::load_catalog(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
    // Line numbers point at the misspelt field.
    let (dir, _) = broken_config(|t| t.replace("labels:", "lables:"));
    let err = board::load_catalog(dir.path()).unwrap_err().to_string();
    assert!(err.contains("line "), "{err}");
}

#[test]
fn an_unknown_board_name_lists_the_known_ones() {
    let catalog = catalog();
    let err = board::by_name(&catalog, "rpi6", &configs_dir())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"rpi6\"") && err.contains("rpi4b") && err.contains("jetson-orin-nano"),
        "{err}"
    );
    assert!(
        board::load_catalog(Path::new("/nonexistent/board-configs"))
            .unwrap()
            .is_empty()
    );
}

// --- disk type -----------------------------------------------------------------------------

/// A fake machine: `mounts` are `(MAJ:MIN, mount point, source)`; `devices` are
/// `(MAJ:MIN, sysfs path under /sys/devices of the partition or disk, rotational)`.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new(mounts: &[(&str, &str, &str)]) -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        let info: String = mounts
            .iter()
            .enumerate()
            .map(|(i, (dev, at, source))| {
                format!(
                    "{} 1 {dev} / {at} rw,relatime shared:{i} - ext4 {source} rw\n",
                    20 + i
                )
            })
            .collect();
        std::fs::write(dir.path().join("proc/self/mountinfo"), info).unwrap();
        FakeHost { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A block device: `disk` is its sysfs path under /sys/devices, `part` a partition in it.
    fn device(&self, dev: &str, disk: &str, part: Option<&str>, rotational: &str) -> PathBuf {
        let sys = self.root().join("sys");
        let disk_dir = sys.join("devices").join(disk);
        std::fs::create_dir_all(disk_dir.join("queue")).unwrap();
        std::fs::write(disk_dir.join("queue/rotational"), format!("{rotational}\n")).unwrap();
        let mut target = format!("devices/{disk}");
        if let Some(p) = part {
            std::fs::create_dir_all(disk_dir.join(p)).unwrap();
            std::fs::write(disk_dir.join(p).join("partition"), "1\n").unwrap();
            target = format!("{target}/{p}");
        }
        for (dir, up) in [("dev/block", "../../"), ("class/block", "../../")] {
            std::fs::create_dir_all(sys.join(dir)).unwrap();
            let name = if dir == "dev/block" {
                dev.to_string()
            } else {
                target.rsplit('/').next().unwrap().to_string()
            };
            let _ = std::os::unix::fs::symlink(format!("{up}{target}"), sys.join(dir).join(name));
        }
        sys.join("devices").join(&target)
    }
}

#[test]
fn an_sd_card_is_sd() {
    let h = FakeHost::new(&[("179:2", "/", "/dev/mmcblk0p2")]);
    h.device(
        "179:2",
        "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
        Some("mmcblk0p2"),
        "0",
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Sd
    );
    assert_eq!(DiskType::Sd.label(), Some("sd"));
}

#[test]
fn nvme_is_ssd() {
    let h = FakeHost::new(&[("259:2", "/", "/dev/nvme0n1p2")]);
    h.device(
        "259:2",
        "platform/axi/1000110000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/nvme/nvme0/nvme0n1",
        Some("nvme0n1p2"),
        "0",
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Ssd
    );
}

#[test]
fn a_usb_ssd_holding_the_data_dir_is_ssd_and_the_sd_card_beside_it_is_not() {
    let h = FakeHost::new(&[
        ("179:2", "/", "/dev/mmcblk0p2"),
        ("8:1", "/mnt/usb\\040ssd", "/dev/sda1"),
    ]);
    h.device(
        "179:2",
        "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
        Some("mmcblk0p2"),
        "0",
    );
    h.device(
        "8:1",
        "platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-2/2-2:1.0/host0/target0:0:0/0:0:0:0/block/sda",
        Some("sda1"),
        "0",
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/mnt/usb ssd/edgepod")),
        DiskType::Ssd
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Sd
    );
    // A sibling directory whose name only starts like the mount point is on the SD card.
    assert_eq!(disk_type_of(h.root(), Path::new("/mnt/usb")), DiskType::Sd);
}

#[test]
fn a_spinning_sata_disk_is_hdd() {
    let h = FakeHost::new(&[("8:17", "/", "/dev/sdb1")]);
    h.device(
        "8:17",
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sdb",
        Some("sdb1"),
        "1",
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Hdd
    );
    // A whole disk without partitions too.
    let h = FakeHost::new(&[("8:32", "/", "/dev/sdc")]);
    h.device(
        "8:32",
        "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdc",
        None,
        "1",
    );
    assert_eq!(disk_type_of(h.root(), Path::new("/data")), DiskType::Hdd);
}

#[test]
fn lvm_and_btrfs_are_followed_to_their_disk() {
    // LVM: dm-0 sits on sda2 of a USB SSD.
    let h = FakeHost::new(&[("254:0", "/", "/dev/mapper/vg-root")]);
    let part = h.device(
        "8:2",
        "platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda",
        Some("sda2"),
        "0",
    );
    let dm = h.device("254:0", "virtual/block/dm-0", None, "0");
    std::fs::create_dir_all(dm.join("slaves")).unwrap();
    let rel = pathdiff(&part, &dm.join("slaves"));
    std::os::unix::fs::symlink(rel, dm.join("slaves/sda2")).unwrap();
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Ssd
    );

    // btrfs mounts carry an anonymous device number; the source names the device.
    let h = FakeHost::new(&[("0:33", "/", "/dev/mmcblk1p1")]);
    h.device(
        "179:1",
        "platform/fe310000.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk1",
        Some("mmcblk1p1"),
        "0",
    );
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Sd
    );
}

/// `to` relative to directory `from` (both under the same root).
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[test]
fn overlays_and_missing_trees_are_unknown() {
    let h = FakeHost::new(&[("0:50", "/", "overlay")]);
    assert_eq!(
        disk_type_of(h.root(), Path::new("/var/lib/edgepod")),
        DiskType::Unknown
    );
    assert_eq!(
        disk_type_of(Path::new("/nonexistent"), Path::new("/var/lib/edgepod")),
        DiskType::Unknown
    );
    assert_eq!(DiskType::Unknown.label(), None);
    // A device number sysfs does not know.
    let h = FakeHost::new(&[("8:1", "/", "/dev/sda1")]);
    assert_eq!(disk_type_of(h.root(), Path::new("/x")), DiskType::Unknown);
}

// --- GPUs ----------------------------------------------------------------------------------

fn dev_tree(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }
    dir
}

#[test]
fn gpus_are_found_by_their_device_nodes() {
    let pi4 = gpu::detect(&fixture("rpi4b"));
    let kinds: Vec<&str> = pi4.iter().map(|g| g.kind.as_str()).collect();
    assert_eq!(kinds, ["drm", "videocore"]);
    assert_eq!(pi4[0].devices, [PathBuf::from("/dev/dri/renderD128")]);
    assert_eq!(pi4[1].devices, [PathBuf::from("/dev/vchiq")]);

    let jetson = dev_tree(&[
        "dev/nvhost-ctrl",
        "dev/nvhost-ctrl-gpu",
        "dev/nvhost-gpu",
        "dev/nvmap",
        "dev/nvgpu/igpu0/ctrl",
        "dev/null",
    ]);
    let found = gpu::detect(jetson.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, "nvidia");
    assert!(found[0].devices.contains(&PathBuf::from("/dev/nvmap")));
    assert!(
        found[0]
            .devices
            .contains(&PathBuf::from("/dev/nvgpu/igpu0/ctrl"))
    );
    assert!(!found[0].devices.contains(&PathBuf::from("/dev/null")));

    let desktop = dev_tree(&["dev/nvidia0", "dev/nvidiactl", "dev/nvidia-uvm"]);
    assert_eq!(gpu::detect(desktop.path())[0].kind, "nvidia");
    let rockchip = dev_tree(&["dev/mali0", "dev/dri/card0"]);
    let found = gpu::detect(rockchip.path());
    assert_eq!(
        found.len(),
        1,
        "card0 alone is a display, not a GPU: {found:?}"
    );
    assert_eq!(found[0].kind, "mali");
    assert!(gpu::detect(dev_tree(&["dev/null", "dev/dri/card0"]).path()).is_empty());
}

// --- what the agent applies ----------------------------------------------------------------

fn setup(root: &Path, name: Option<&str>, config_dir: &Path, memory: u64) -> BoardSetup {
    BoardSetup::detect(
        &BoardOptions {
            host_root: root.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            name: name.map(str::to_string),
        },
        Path::new("/var/lib/edgepod"),
        memory,
    )
    .unwrap()
}

#[test]
fn the_agent_applies_the_detected_board() {
    // A 2 GB Pi 4 (fixture): root on its SD card, the V3D render node there.
    let s = setup(&fixture("rpi4b"), None, &configs_dir(), 1_900_000_000);
    let l = |k: &str| s.labels.get(k).map(String::as_str);
    assert_eq!(l("edgepod.io/board"), Some("rpi4b"));
    assert_eq!(
        l("edgepod.io/board-model"),
        Some("Raspberry-Pi-4-Model-B-Rev-1.4")
    );
    assert_eq!(l("edgepod.io/board-family"), Some("raspberrypi"));
    assert_eq!(l("disk"), Some("sd"));
    assert_eq!(l("gpu"), Some("true"));
    assert_eq!(l("edgepod.io/gpu"), Some("drm"));
    assert_eq!(
        s.reserved,
        Reserved {
            cpu_millis: 250,
            memory_bytes: (128 + 192) << 20
        }
    );
    assert_eq!(s.log_rotation(), (Some(4 << 20), Some(3)));

    // --board overrides: a 3B+ has no GPU for containers, whatever device nodes exist.
    let s = setup(
        &fixture("rpi4b"),
        Some("rpi3bplus"),
        &configs_dir(),
        900_000_000,
    );
    assert_eq!(
        s.labels.get("edgepod.io/board").map(String::as_str),
        Some("rpi3bplus")
    );
    assert!(!s.labels.contains_key("gpu"), "{:?}", s.labels);
    assert_eq!(s.labels.get("disk").map(String::as_str), Some("sd"));
    assert_eq!(s.log_rotation(), (Some(2 << 20), Some(2)));

    // An unknown --board is an error naming the known boards.
    let err = BoardSetup::detect(
        &BoardOptions {
            host_root: fixture("rpi4b"),
            config_dir: configs_dir(),
            name: Some("pi4".into()),
        },
        Path::new("/var/lib/edgepod"),
        1 << 30,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("rpi4b") && err.contains("rpi-zero-2w"),
        "{err}"
    );

    // Without configs the board is only its model, and what is found is still labelled.
    let s = setup(&fixture("rpi4b"), None, Path::new("/nonexistent"), 1 << 30);
    assert_eq!(s.config, None);
    assert_eq!(
        s.labels.get("edgepod.io/board").map(String::as_str),
        Some("Raspberry-Pi-4-Model-B-Rev-1.4")
    );
    assert_eq!(s.labels.get("gpu").map(String::as_str), Some("true"));
    assert_eq!(s.reserved, Reserved::default());
}
