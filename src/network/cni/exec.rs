//! Running one plugin executable as the CNI spec says: found by its `type` in the bin
//! directories, parameters in `CNI_*` environment variables, its configuration on stdin, the
//! result (or the spec's error JSON) on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::CniError;
use super::result::PluginError;

/// The three operations a runtime asks of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
        }
    }
}

/// The `CNI_*` parameters of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub op: Op,
    pub container_id: &'a str,
    /// Empty on a DEL whose namespace is already gone: plugins then release what they can.
    pub netns: &'a str,
    pub ifname: &'a str,
    /// `CNI_ARGS`: `KEY=VALUE` pairs joined with `;`.
    pub args: &'a str,
    /// For messages: the pod as `namespace/name`.
    pub pod: &'a str,
}

/// The executable of plugin `plugin_type`: the first bin directory holding it.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    bin_dirs
        .iter()
        .map(|d| d.join(plugin_type))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs plugin `plugin_type` with `stdin`; returns its stdout on success.
pub fn invoke(
    bin_dirs: &[PathBuf],
    plugin_type: &str,
    inv: &Invocation<'_>,
    stdin: &[u8],
) -> Result<Vec<u8>, CniError> {
    let exe = find_plugin(bin_dirs, plugin_type).ok_or_else(|| CniError::PluginNotFound {
        pod: inv.pod.to_string(),
        plugin: plugin_type.to_string(),
        dirs: bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })?;
    let cni_path = std::env::join_paths(bin_dirs).unwrap_or_default();
    let exec_err = |source| CniError::Exec {
        pod: inv.pod.to_string(),
        plugin: plugin_type.to_string(),
        command: inv.op.as_str(),
        source,
    };
    let mut child = Command::new(&exe)
        // Plugins see only what the spec gives them (and PATH, for the iptables they call).
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", inv.op.as_str())
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_err)?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin is judged by its exit status below.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(exec_err)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let e = PluginError::from_output(&out.stdout, &out.stderr);
    Err(CniError::Plugin {
        pod: inv.pod.to_string(),
        plugin: plugin_type.to_string(),
        command: inv.op.as_str(),
        code: e.code,
        msg: if e.msg.is_empty() {
            format!("exited with {}", out.status)
        } else {
            e.msg
        },
        details: e.details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv(op: Op) -> Invocation<'static> {
        Invocation {
            op,
            container_id: "uid-1",
            netns: "/run/netns/x",
            ifname: "eth0",
            args: "K8S_POD_NAME=web",
            pod: "default/web",
        }
    }

    #[test]
    fn a_plugin_gets_the_spec_environment_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let second = dir.path().join("second");
        std::fs::create_dir(&second).unwrap();
        script(
            &second,
            "echoer",
            r#"read -r conf; printf '{"cmd":"%s","id":"%s","netns":"%s","if":"%s","args":"%s","path":"%s","conf":%s}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$conf""#,
        );
        let dirs = vec![dir.path().join("first"), second.clone()];
        let out = invoke(&dirs, "echoer", &inv(Op::Add), b"{\"a\":1}\n").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "ADD");
        assert_eq!(v["id"], "uid-1");
        assert_eq!(v["netns"], "/run/netns/x");
        assert_eq!(v["if"], "eth0");
        assert_eq!(v["args"], "K8S_POD_NAME=web");
        assert_eq!(v["conf"]["a"], 1);
        assert!(v["path"].as_str().unwrap().ends_with("/second"));
    }

    #[test]
    fn failures_carry_the_spec_error_and_missing_plugins_are_named() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "failer",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"try again later","details":"busy"}'; exit 1"#,
        );
        let dirs = vec![dir.path().to_path_buf()];
        let e = invoke(&dirs, "failer", &inv(Op::Del), b"{}").unwrap_err();
        match &e {
            CniError::Plugin {
                code,
                msg,
                details,
                command,
                ..
            } => {
                assert_eq!(
                    (*code, msg.as_str(), details.as_str(), *command),
                    (11, "try again later", "busy", "DEL")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("default/web"), "{e}");
        let e = invoke(&dirs, "absent", &inv(Op::Add), b"{}").unwrap_err();
        assert!(matches!(e, CniError::PluginNotFound { .. }), "{e}");
        assert!(e.to_string().contains("absent"), "{e}");
    }
}
