//! Running the firewall tools (`nft`, `iptables-restore`...): a ruleset on stdin, their
//! stderr kept for the error. Owns nothing else; callers decide what a failure means.

use std::io::Write;
use std::process::{Command, Stdio};

use super::error::ProxyError;

/// Runs `program args`, feeding `stdin` if given; returns stdout.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ProxyError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProxyError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that dies early closes its stdin: its exit status and stderr say why, so a
        // write error here is not the one to report.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ProxyError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ProxyError::Command {
            program: program.to_string(),
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program args` runs and succeeds (backend detection, rule checks).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    run(program, args, None).is_ok()
}
