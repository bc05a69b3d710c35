//! Turning names from archives (outside input) into paths that stay inside a directory.
//!
//! Every name is reduced to plain components before it touches the filesystem: an absolute
//! name or one with `..` is refused outright rather than "fixed", because a tar that carries
//! one was made by a broken or hostile tool.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A member name as a relative path of normal components; `.` and `./` give the empty path
/// (the archive root). The error is the reason, for the caller to name the member with.
pub(crate) fn member_path(name: &[u8]) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.starts_with(b"/") {
        return Err("absolute path".to_string());
    }
    let mut path = PathBuf::new();
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path contains \"..\"".to_string()),
            normal => path.push(OsStr::from_bytes(normal)),
        }
    }
    Ok(path)
}

/// Where a symlink member at `member` pointing at `target` leads, inside the archive. Only
/// relative targets that stay inside are accepted: the archive is a bag of files, not a root.
pub(crate) fn resolve_in_archive(member: &Path, target: &[u8]) -> Result<PathBuf, String> {
    if target.starts_with(b"/") {
        return Err("link to an absolute path".to_string());
    }
    let mut resolved: Vec<&OsStr> = member
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if resolved.pop().is_none() {
                    return Err("link leads outside the archive".to_string());
                }
            }
            normal => resolved.push(OsStr::from_bytes(normal)),
        }
    }
    Ok(resolved.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_reduced_to_normal_components() {
        let ok =
            |name: &str| member_path(name.as_bytes()).map(|p| p.to_string_lossy().into_owned());
        assert_eq!(ok("./bin/busybox"), Ok("bin/busybox".to_string()));
        assert_eq!(ok("bin//sh/"), Ok("bin/sh".to_string()));
        assert_eq!(ok("."), Ok(String::new()));
        assert_eq!(ok("./"), Ok(String::new()));
        assert_eq!(ok("a/.wh..wh..opq"), Ok("a/.wh..wh..opq".to_string()));
        assert_eq!(ok("...."), Ok("....".to_string()));
    }

    #[test]
    fn escaping_member_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "./..",
            "//x",
        ] {
            assert!(member_path(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn archive_links_resolve_inside_only() {
        let member = Path::new("abc/layer.tar");
        assert_eq!(
            resolve_in_archive(member, b"../def.tar"),
            Ok(PathBuf::from("def.tar"))
        );
        assert_eq!(
            resolve_in_archive(member, b"./x/../y"),
            Ok(PathBuf::from("abc/y"))
        );
        assert!(resolve_in_archive(member, b"../../etc/passwd").is_err());
        assert!(resolve_in_archive(member, b"/etc/passwd").is_err());
    }
}
