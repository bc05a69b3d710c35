//! Image garbage collection on a small image filesystem (a real 48 MiB tmpfs as the data dir):
//! past the high threshold the agent removes unused images until usage is at or below the low
//! one, never an image a pod uses; `edgepod image prune` removes every unused image.
mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::bin;
use common::tmpfs::Tmpfs;
use sha2::{Digest as _, Sha256};

const MIB: usize = 1 << 20;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An OCI archive of `name` with one layer holding `size` bytes no other image shares.
fn synthetic_image(dir: &Path, name: &str, seed: u64, size: usize) -> std::path::PathBuf {
    let mut content = vec![0u8; size];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in content.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_cksum();
    layer
        .append_data(&mut header, "data.bin", &content[..])
        .unwrap();
    let layer = layer.into_inner().unwrap();
    let layer_hex = sha(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
        "os": "linux",
        "config": {"Cmd": ["/data.bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]}
    }))
    .unwrap();
    let config_hex = sha(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{config_hex}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_hex}"), "size": layer.len()}]
    }))
    .unwrap();
    let manifest_hex = sha(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{manifest_hex}"), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": name}}]
    }))
    .unwrap();
    let path = dir.join(format!("{seed}.oci.tar"));
    let mut archive = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        archive.append_data(&mut h, name, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    add(&format!("blobs/sha256/{layer_hex}"), &layer);
    add(&format!("blobs/sha256/{config_hex}"), &config);
    add(&format!("blobs/sha256/{manifest_hex}"), &manifest);
    archive.into_inner().unwrap().flush().unwrap();
    path
}

fn edgepod(data: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edgepod {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn percent_used(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    let (blocks, avail) = (st.blocks() as u64, st.blocks_available() as u64);
    (blocks - avail) * 100 / blocks
}

#[test]
fn unused_images_go_past_the_high_threshold_and_prune_takes_the_rest() {
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let data = Tmpfs::mount("48m");
    let data_dir = data.path();
    let (busybox, _) = common::fixtures::busybox_archives();
    edgepod(data_dir, &["image", "import", busybox.to_str().unwrap()]);
    for i in 1..=6 {
        let archive = synthetic_image(work.path(), &format!("fill/img{i}:v1"), i, 4 * MIB);
        edgepod(data_dir, &["image", "import", archive.to_str().unwrap()]);
    }
    // Ballast up to 90 % used: past the high threshold whatever the images take.
    let st = nix::sys::statvfs::statvfs(data_dir).unwrap();
    let block = st.fragment_size() as u64;
    let (total, avail) = (
        st.blocks() as u64 * block,
        st.blocks_available() as u64 * block,
    );
    let ballast = (total * 90 / 100).saturating_sub(total - avail);
    std::fs::write(data_dir.join("ballast"), vec![1u8; ballast as usize]).unwrap();
    assert!(percent_used(data_dir) >= 89, "{}", percent_used(data_dir));

    // A pod uses img3 (its container cannot start: the image holds no program) and busybox.
    let manifests = work.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("uses.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: uses}\nspec:\n  containers:\n  - {name: a, image: fill/img3:v1}\n  - {name: b, image: busybox, command: [sleep, '3600']}\n",
    )
    .unwrap();
    let mut agent = Command::new(bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["agent", "--node-name", "gc-node", "--pod-network", "none"])
        .arg("--manifests")
        .arg(&manifests)
        .args([
            "--image-gc-period",
            "1",
            "--minimum-image-ttl-duration",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(work.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while percent_used(data_dir) > 80 {
        assert!(
            Instant::now() < deadline,
            "still {} % used; agent log:\n{}",
            percent_used(data_dir),
            std::fs::read_to_string(work.path().join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = edgepod(data_dir, &["image", "ls"]);
    assert!(
        listed.contains("fill/img3"),
        "an image a pod uses went: {listed}"
    );
    assert!(listed.contains("busybox"), "{listed}");
    let left = (1..=6)
        .filter(|i| listed.contains(&format!("fill/img{i} ")))
        .count();
    // 4 MiB each out of 48: getting from 90 % to 80 % takes a few, not all five unused ones.
    assert!(
        left >= 2,
        "more removed than needed to reach 80 %: {listed}"
    );

    // prune (the agent still running): everything no pod of this node's store uses.
    let out = edgepod(data_dir, &["image", "prune"]);
    assert!(out.contains("images removed"), "{out}");
    let listed = edgepod(data_dir, &["image", "ls"]);
    let fills: Vec<&str> = listed.lines().filter(|l| l.contains("fill/")).collect();
    assert_eq!(fills.len(), 1, "{listed}");
    assert!(fills[0].contains("fill/img3"), "{listed}");
    assert!(listed.contains("busybox"), "{listed}");

    // Leave no container behind: the pod goes, then the agent.
    std::fs::remove_file(manifests.join("uses.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while edgepod(data_dir, &["get", "pods"]).contains("uses") {
        assert!(Instant::now() < deadline, "the pod did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = agent.wait();
    let _ = std::fs::remove_file(data_dir.join("ballast"));
}
