//! The few system calls unpacking needs that std does not offer. None follows a symlink in the
//! last path component: unpacked trees are full of links meant for the container, not the host.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub(crate) fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let path = c_path(path)?;
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a device node or fifo; `kind` is `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
pub(crate) fn mknod(path: &Path, kind: SFlag, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
    nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(perm), dev).map_err(io::Error::from)
}

pub(crate) fn set_mtime(path: &Path, seconds: i64) -> io::Result<()> {
    // time_t is i32 on 32-bit targets (armv7 musl): clamp far-off mtimes there rather than fail.
    #[allow(deprecated)] // libc deprecates `time_t` on musl: it is to become 64-bit there.
    let seconds = libc::time_t::try_from(seconds).unwrap_or(if seconds < 0 {
        libc::time_t::MIN
    } else {
        libc::time_t::MAX
    });
    let time = TimeSpec::new(seconds, 0);
    nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(io::Error::from)
}

/// Flushes the filesystem holding `path`: one call instead of an fsync per unpacked file.
pub(crate) fn syncfs(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
