//! The Mosquitto side of the fleet: `edgepod hub mosquitto-config` writes a configuration,
//! the broker's certificate and key (from the hub CA) and an ACL file; the hub rewrites the ACL
//! on every join and revoke and asks Mosquitto to re-read it (SIGHUP).
//!
//! The ACL rule, which the embedded broker enforces too: for cluster C, user `edgepod:hub` may
//! read and write `edgepod/v1/C/#`; each joined, non-revoked node N may read
//! `edgepod/v1/C/nodes/N/in/#` and `edgepod/v1/C/hub/#` and write `edgepod/v1/C/nodes/N/out/#`.
//! Nodes get explicit `user N` blocks rather than one `pattern` rule, so a revoked node has no
//! line at all: Mosquitto denies a user everything not granted.
//!
//! Where the output went is remembered in `DATA_DIR/fleet/mosquitto.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::nodes::NodesFile;
use super::{HUB_USER, IdentityError, read_json, write_json};
use crate::apiserver::tls::files::{PRIVATE, PUBLIC, write_atomic};

pub const CONF: &str = "mosquitto.conf";
pub const ACL: &str = "acl";
/// Mosquitto (2.0.11) writes it in the foreground too; the hub signals the pid in it.
pub const PID_FILE: &str = "mosquitto.pid";

/// Where `mosquitto-config` wrote, so joins and revocations can rewrite the ACL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub dir: PathBuf,
    pub cluster: String,
}

/// What `edgepod hub mosquitto-config` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    pub port: u16,
    /// Address the listener binds; all when `None`.
    pub bind: Option<String>,
    pub cluster: String,
    /// Extra names for the broker certificate, beyond this host's own.
    pub sans: Vec<String>,
}

fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet").join("mosquitto.json")
}

/// The ACL text for `cluster` and its active nodes.
pub fn render_acl<'a>(cluster: &str, nodes: impl IntoIterator<Item = &'a str>) -> String {
    let root = format!("edgepod/v1/{cluster}");
    let mut out = String::from(
        "# Written by edgepod: rewritten on every join and revoke, do not edit.\n\
         # Users are certificate CNs (use_identity_as_username).\n\n",
    );
    let _ = writeln!(out, "user {HUB_USER}\ntopic readwrite {root}/#\n");
    for n in nodes {
        let _ = writeln!(
            out,
            "user {n}\ntopic read {root}/nodes/{n}/in/#\ntopic read {root}/hub/#\n\
             topic write {root}/nodes/{n}/out/#\n"
        );
    }
    out
}

pub fn render_conf(dir: &Path, port: u16, bind: Option<&str>) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    let listener = match bind {
        Some(addr) => format!("listener {port} {addr}"),
        None => format!("listener {port}"),
    };
    format!(
        "# Written by `edgepod hub mosquitto-config`: Mosquitto as the edgepod fleet's broker.\n\
         # Every client presents a certificate from the edgepod hub CA; its CN is the MQTT user\n\
         # the ACL names. Reload (SIGHUP) after the ACL changes: edgepod sends it to the pid in\n\
         # {pid}; `systemctl reload mosquitto` does the same.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {acl}\n\
         # Off: the hub's SQLite is the truth and republishes every node's retained desired\n\
         # state when it reconnects, agents keep unacknowledged status in their outbox, and a\n\
         # Pi's SD card is spared the writes.\n\
         persistence false\n\
         pid_file {pid}\n\
         \n\
         {listener}\n\
         cafile {ca}\n\
         certfile {crt}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n",
        acl = p(ACL),
        pid = p(PID_FILE),
        ca = p("ca.crt"),
        crt = p("broker.crt"),
        key = p("broker.key"),
    )
}

/// Writes the configuration, certificates, key and ACL into `opts.out` and remembers it.
/// Returns the configuration file's path.
pub fn write_config(data_dir: &Path, opts: &Options) -> Result<PathBuf, IdentityError> {
    super::validate_cluster(&opts.cluster)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| IdentityError::io(&opts.out, e))?;
    // Absolute paths in the configuration: Mosquitto resolves relative ones from its own cwd.
    let dir = std::fs::canonicalize(&opts.out).map_err(|e| IdentityError::io(&opts.out, e))?;
    let broker = crate::apiserver::tls::broker_certificate(data_dir, &opts.sans)?;
    let put = |name: &str, text: &str, mode: u32| {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes(), mode).map_err(|e| IdentityError::io(&path, e))
    };
    put("ca.crt", &broker.ca_pem, PUBLIC)?;
    put("broker.crt", &broker.cert_pem, PUBLIC)?;
    put("broker.key", &broker.key_pem, PRIVATE)?;
    let _guard = super::lock(data_dir)?;
    let nodes = super::nodes::load(data_dir)?;
    put(ACL, &render_acl(&opts.cluster, nodes.active()), PUBLIC)?;
    put(
        CONF,
        &render_conf(&dir, opts.port, opts.bind.as_deref()),
        PUBLIC,
    )?;
    give_to_mosquitto_user(&dir);
    let record = record_path(data_dir);
    write_json(
        &record,
        &Written {
            dir: dir.clone(),
            cluster: opts.cluster.clone(),
        },
    )?;
    Ok(dir.join(CONF))
}

/// Mosquitto started as root drops to the `mosquitto` user before it reads its key and the ACL
/// and writes its pid file (2.0.11 does all three as that user); hand it the directory and the
/// files so that works, as Debian's package hands it /etc/mosquitto. The directory's parents
/// must let that user through (a data dir of 0700 does not).
fn give_to_mosquitto_user(dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name("mosquitto") else {
        return;
    };
    let names = ["broker.key", ACL, "ca.crt", "broker.crt", CONF];
    for path in std::iter::once(dir.to_path_buf()).chain(names.iter().map(|n| dir.join(n))) {
        if let Err(e) = nix::unistd::chown(&path, Some(user.uid), Some(user.gid)) {
            tracing::warn!(path = %path.display(), error = %e, "could not give the file to the mosquitto user");
        }
    }
}

/// Rewrites the ACL where `mosquitto-config` wrote it (nothing when it never ran) and signals
/// Mosquitto. The caller holds the fleet lock and passes the current node records.
pub(super) fn refresh_acl(data_dir: &Path, nodes: &NodesFile) -> Result<(), IdentityError> {
    let record = record_path(data_dir);
    if !record.exists() {
        return Ok(());
    }
    let written: Written = read_json(&record)?;
    let acl = written.dir.join(ACL);
    write_atomic(
        &acl,
        render_acl(&written.cluster, nodes.active()).as_bytes(),
        PUBLIC,
    )
    .map_err(|e| IdentityError::io(&acl, e))?;
    give_to_mosquitto_user(&written.dir);
    reload(&written.dir);
    Ok(())
}

/// SIGHUP to the Mosquitto whose pid file is in `dir`, if it is running; whether one was sent.
pub fn reload(dir: &Path) -> bool {
    let pid_file = dir.join(PID_FILE);
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        tracing::info!(
            acl = %dir.join(ACL).display(),
            "ACL rewritten; no Mosquitto pid file, reload Mosquitto (SIGHUP) to apply it"
        );
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    // Only a process that is Mosquitto: a stale pid file may name anything by now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "mosquitto" {
        return false;
    }
    let sent = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .is_ok();
    tracing::info!(pid, sent, "asked Mosquitto to reload its ACL");
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_grants_each_node_only_its_own_topics() {
        let acl = render_acl("prod", ["pi-1", "pi-2"]);
        assert!(acl.contains("user edgepod:hub\ntopic readwrite edgepod/v1/prod/#\n"));
        assert!(acl.contains(
            "user pi-1\ntopic read edgepod/v1/prod/nodes/pi-1/in/#\n\
             topic read edgepod/v1/prod/hub/#\ntopic write edgepod/v1/prod/nodes/pi-1/out/#\n"
        ));
        assert!(!acl.contains("pattern"));
        assert!(!render_acl("prod", ["pi-1"]).contains("pi-2"));
    }

    #[test]
    fn conf_requires_certificates() {
        let conf = render_conf(Path::new("/etc/edgepod-mqtt"), 8883, Some("127.0.0.1"));
        for line in [
            "listener 8883 127.0.0.1",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            "acl_file /etc/edgepod-mqtt/acl",
            "keyfile /etc/edgepod-mqtt/broker.key",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing");
        }
    }
}
