//! Layer unpacking against hostile and whiteout-carrying tars, built byte by byte so that
//! names no well-behaved tar writer would produce can be tested.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::digest::Digest;
use super::error::ImageError;
use super::unpack::{OPAQUE_XATTR, Whiteouts, apply};

enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A file with owner, mode and PAX xattrs.
    Owned {
        name: &'a str,
        uid: u64,
        gid: u64,
        mode: u32,
        xattrs: &'a [(&'a str, &'a [u8])],
    },
}

fn header(kind: tar::EntryType, name: &str, link: &str, size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_old();
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let result = match *entry {
            Entry::Dir(name) => builder.append(
                &header(tar::EntryType::Directory, name, "", 0, 0o755),
                &[][..],
            ),
            Entry::File(name, data) => builder.append(
                &header(tar::EntryType::Regular, name, "", data.len() as u64, 0o644),
                data,
            ),
            Entry::Symlink(name, target) => builder.append(
                &header(tar::EntryType::Symlink, name, target, 0, 0o777),
                &[][..],
            ),
            Entry::Hardlink(name, target) => builder.append(
                &header(tar::EntryType::Link, name, target, 0, 0o644),
                &[][..],
            ),
            Entry::Owned {
                name,
                uid,
                gid,
                mode,
                xattrs,
            } => {
                let pax: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                builder
                    .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
                let mut h = header(tar::EntryType::Regular, name, "", 1, mode);
                h.set_uid(uid);
                h.set_gid(gid);
                h.set_cksum();
                builder.append(&h, &b"x"[..])
            }
        };
        result.unwrap();
    }
    builder.into_inner().unwrap()
}

fn unpack(entries: &[Entry], dest: &Path, mode: Whiteouts) -> Result<(), ImageError> {
    apply(&layer(entries)[..], dest, mode, &Digest::of_bytes(b"layer"))
}

fn xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

/// A store dir and, beside it, a directory a hostile layer would like to write into.
fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    (tmp, dest, outside)
}

fn assert_bad_layer(result: Result<(), ImageError>, member: &str) {
    match result {
        Err(ImageError::BadLayer { member: m, .. }) => assert_eq!(m, member),
        other => panic!("expected BadLayer for {member:?}, got {other:?}"),
    }
}

#[test]
fn dot_dot_and_absolute_names_are_refused() {
    let (_tmp, dest, _) = dirs();
    assert_bad_layer(
        unpack(
            &[Entry::File("../escaped", b"x")],
            &dest,
            Whiteouts::Overlay,
        ),
        "../escaped",
    );
    assert_bad_layer(
        unpack(
            &[Entry::File("a/../../escaped", b"x")],
            &dest,
            Whiteouts::Overlay,
        ),
        "a/../../escaped",
    );
    assert_bad_layer(
        unpack(
            &[Entry::File("/tmp/escaped", b"x")],
            &dest,
            Whiteouts::Delete,
        ),
        "/tmp/escaped",
    );
    assert_bad_layer(
        unpack(&[Entry::File(".wh...", b"")], &dest, Whiteouts::Overlay),
        ".wh...",
    );
    assert!(!dest.parent().unwrap().join("escaped").exists());
}

#[test]
fn writes_through_a_planted_symlink_are_refused() {
    let (_tmp, dest, outside) = dirs();
    let absolute = outside.to_str().unwrap();
    for mode in [Whiteouts::Overlay, Whiteouts::Delete] {
        let entries = [
            Entry::Symlink("bin", absolute),
            Entry::File("bin/evil", b"x"),
        ];
        assert_bad_layer(unpack(&entries, &dest, mode), "bin/evil");
        let entries = [
            Entry::Symlink("up", "../outside"),
            Entry::Hardlink("up/evil", "up"),
        ];
        assert!(unpack(&entries, &dest, mode).is_err());
        fs::remove_dir_all(&dest).unwrap();
        fs::create_dir(&dest).unwrap();
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
}

#[test]
fn hardlinks_must_stay_inside_the_layer() {
    let (_tmp, dest, outside) = dirs();
    fs::write(outside.join("secret"), b"s").unwrap();
    assert_bad_layer(
        unpack(
            &[Entry::Hardlink("h", "../outside/secret")],
            &dest,
            Whiteouts::Overlay,
        ),
        "h",
    );
    assert_bad_layer(
        unpack(
            &[Entry::Hardlink("h", "/etc/passwd")],
            &dest,
            Whiteouts::Overlay,
        ),
        "h",
    );
    let absolute = outside.to_str().unwrap();
    let via_symlink = [
        Entry::Symlink("s", absolute),
        Entry::Hardlink("h", "s/secret"),
    ];
    assert_bad_layer(unpack(&via_symlink, &dest, Whiteouts::Overlay), "h");
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);

    // A file of the layer below is not the layer's own either.
    fs::write(dest.join("lower"), b"l").unwrap();
    assert_bad_layer(
        unpack(&[Entry::Hardlink("h", "lower")], &dest, Whiteouts::Delete),
        "h",
    );
}

#[test]
fn hardlinks_symlinks_owners_modes_and_xattrs_are_kept() {
    let (_tmp, dest, _) = dirs();
    let entries = [
        Entry::Dir("bin"),
        Entry::File("bin/busybox", b"elf"),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Hardlink("bin/ash", "bin/busybox"),
        Entry::Owned {
            name: "bin/su",
            uid: 1000,
            gid: 3000,
            mode: 0o4755,
            xattrs: &[
                ("user.note", b"kept"),
                ("trusted.overlay.redirect", b"/etc"),
            ],
        },
    ];
    unpack(&entries, &dest, Whiteouts::Overlay).unwrap();
    assert_eq!(
        fs::read_link(dest.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let busybox = fs::metadata(dest.join("bin/busybox")).unwrap();
    assert_eq!(
        busybox.ino(),
        fs::metadata(dest.join("bin/ash")).unwrap().ino()
    );
    assert_eq!(busybox.mtime(), 1_700_000_000);
    let su = fs::metadata(dest.join("bin/su")).unwrap();
    assert_eq!(
        (su.uid(), su.gid(), su.permissions().mode() & 0o7777),
        (1000, 3000, 0o4755)
    );
    assert_eq!(
        xattr(&dest.join("bin/su"), b"user.note").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        xattr(&dest.join("bin/su"), b"trusted.overlay.redirect"),
        None
    );
}

#[test]
fn overlay_mode_writes_whiteouts_the_overlayfs_way() {
    let (_tmp, dest, _) = dirs();
    let entries = [
        Entry::Dir("a"),
        Entry::File("a/.wh.gone", b""),
        Entry::Dir("d"),
        Entry::File("d/.wh..wh..opq", b""),
        Entry::File("d/new", b"n"),
        Entry::File(".wh..wh.plnk", b""),
    ];
    unpack(&entries, &dest, Whiteouts::Overlay).unwrap();
    let whiteout = fs::symlink_metadata(dest.join("a/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0);
    assert_eq!(
        xattr(&dest.join("d"), OPAQUE_XATTR).as_deref(),
        Some(&b"y"[..])
    );
    assert!(dest.join("d/new").is_file());
    assert!(!dest.join("a/.wh.gone").exists());
    assert!(!dest.join(".wh..wh.plnk").exists());
}

#[test]
fn delete_mode_removes_what_whiteouts_hide_from_lower_layers_only() {
    let (_tmp, dest, _) = dirs();
    let lower = [
        Entry::File("a/keep", b"k"),
        Entry::File("a/gone", b"g"),
        Entry::File("d/old", b"o"),
        Entry::File("d/sub/old", b"o"),
        Entry::Symlink("lib", "usr/lib"),
    ];
    unpack(&lower, &dest, Whiteouts::Delete).unwrap();
    let upper = [
        Entry::File("a/.wh.gone", b""),
        Entry::File("d/sub/new", b"n"),
        Entry::File("d/.wh..wh..opq", b""),
        Entry::File("d/mine", b"m"),
        Entry::File("x", b"x"),
        Entry::File(".wh.x", b""),
        Entry::File("lib/libc.so", b"c"),
    ];
    unpack(&upper, &dest, Whiteouts::Delete).unwrap();
    assert!(dest.join("a/keep").is_file());
    assert!(!dest.join("a/gone").exists());
    assert!(!dest.join("d/old").exists());
    assert!(!dest.join("d/sub/old").exists());
    assert!(dest.join("d/sub/new").is_file());
    assert!(dest.join("d/mine").is_file());
    assert!(
        dest.join("x").is_file(),
        "a whiteout hid a file of its own layer"
    );
    assert!(fs::symlink_metadata(dest.join("lib")).unwrap().is_dir());
    assert!(dest.join("lib/libc.so").is_file());
}
