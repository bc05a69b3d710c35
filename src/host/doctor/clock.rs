//! Clock synchronisation: TLS certificates (the hub's, registries') are checked against the
//! clock, and CronJobs fire by it. A Raspberry Pi has no battery-backed clock, so until NTP has
//! run it boots at the last saved time.
//!
//! The kernel knows whether an NTP client (chrony, systemd-timesyncd, ntpd) disciplines it:
//! `adjtimex` reports `STA_UNSYNC` until one does. No timedatectl (no D-Bus on small systems).

use std::path::Path;

use super::{Check, read, under};

/// Daemons that keep the clock synchronised, by process name.
const NTP_CLIENTS: &[&str] = &[
    "chronyd",
    "systemd-timesyncd",
    "ntpd",
    "openntpd",
    "ntpdate",
];

pub fn check(root: &Path) -> Check {
    let fix = "run an NTP client: `apt install systemd-timesyncd` (or chrony) and \
               `timedatectl set-ntp true`; make sure UDP port 123 is not blocked";
    let (synced, maxerror_us) = kernel_sync_state();
    if synced {
        return Check::pass(
            "clock",
            format!(
                "synchronised (kernel NTP state; max error {} ms)",
                maxerror_us / 1000
            ),
        );
    }
    let running = running_ntp_client(root);
    let message = match running {
        Some(name) => format!(
            "not synchronised yet ({name} is running): TLS certificates and CronJob \
             schedules depend on the clock"
        ),
        None => "not synchronised and no NTP client running: TLS certificates and CronJob \
                 schedules depend on the clock"
            .to_string(),
    };
    Check::warn("clock", message, fix)
}

/// Whether the kernel clock is disciplined, and its estimated maximum error in microseconds.
fn kernel_sync_state() -> (bool, libc::c_long) {
    // SAFETY: timex is plain data; all-zero (modes = 0) asks adjtimex to read, not to set.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timex this function owns.
    let state = unsafe { libc::adjtimex(&mut tx) };
    let synced = state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    (synced, tx.maxerror)
}

/// The first NTP client found among the processes in `root`'s `/proc`.
fn running_ntp_client(root: &Path) -> Option<String> {
    let entries = std::fs::read_dir(under(root, "/proc")).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(comm) = read(root, &format!("/proc/{pid}/comm")) {
            let comm = comm.trim();
            // comm is cut at 15 bytes: systemd-timesyncd is "systemd-timesyn".
            if let Some(client) = NTP_CLIENTS
                .iter()
                .find(|c| (comm.len() == 15 && c.starts_with(comm)) || **c == comm)
            {
                return Some(client.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_truncated_comm() {
        let root = tempfile::tempdir().unwrap();
        for (pid, comm) in [("1", "init\n"), ("412", "systemd-timesyn\n")] {
            let dir = root.path().join("proc").join(pid);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), comm).unwrap();
        }
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        assert_eq!(
            running_ntp_client(root.path()).as_deref(),
            Some("systemd-timesyncd")
        );
        std::fs::remove_dir_all(root.path().join("proc/412")).unwrap();
        assert_eq!(running_ntp_client(root.path()), None);
    }
}
