//! Telling systemd how a role is doing (`Type=notify`, `WatchdogSec=`): the sd_notify protocol,
//! written out here (one datagram per message to `$NOTIFY_SOCKET`).
//!
//! A role hands [`supervise`] three questions: is it ready (the hub's API serves, the agent's
//! reconcile loop has made its first pass, `up`'s own Node is registered and Ready), are its
//! loops alive (each bumps a heartbeat; a loop that stops bumping stops the `WATCHDOG=1` pings,
//! so systemd restarts a wedged service rather than watching it hang), and a `STATUS=` line.
//! One thread answers them: `READY=1` once, pings every `WATCHDOG_USEC/2`, `STOPPING=1` as
//! soon as a stop signal arrives.
//!
//! [`take_from_env`] runs first thing in `main`: it reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` and removes them from the environment, so no child (the container shim,
//! CNI plugins, the containers themselves) inherits a socket that is not theirs to write.
//! Without `NOTIFY_SOCKET` everything here is a no-op.
//!
//! Owns: the notify socket and the supervision thread. Must not touch: what the roles run.
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The service manager's socket and watchdog, as the environment gave them at start.
struct Manager {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WATCHDOG_USEC`, when the watchdog is meant for this process.
    watchdog: Option<Duration>,
}

static MANAGER: OnceLock<Option<Manager>> = OnceLock::new();

/// Reads and removes systemd's notify variables; call while the process has one thread.
pub fn take_from_env() {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        // SAFETY: called at the top of main, before any thread exists that could read the
        // environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
    let manager = socket.and_then(|s| match connect(&s) {
        Ok((socket, addr)) => Some(Manager {
            socket,
            addr,
            watchdog: watchdog(usec.as_deref(), pid.as_deref(), std::process::id()),
        }),
        Err(e) => {
            eprintln!(
                "NOTIFY_SOCKET {}: {e}; not notifying systemd",
                s.to_string_lossy()
            );
            None
        }
    });
    let _ = MANAGER.set(manager);
}

/// An unbound datagram socket and the address of `NOTIFY_SOCKET` (a path, or `@name` for an
/// abstract socket).
fn connect(var: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = var.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(var))?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@…)",
            ));
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// The watchdog timeout when `WATCHDOG_USEC` is set and `WATCHDOG_PID`, if set, is `me`.
fn watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

fn manager() -> Option<&'static Manager> {
    MANAGER.get().and_then(Option::as_ref)
}

/// True when systemd (or anything speaking its protocol) listens.
pub fn enabled() -> bool {
    manager().is_some()
}

/// Sends `state` (newline-separated `KEY=VALUE` lines); failures are logged, never fatal.
pub fn send(state: &str) {
    let Some(m) = manager() else {
        return;
    };
    if let Err(e) = m.socket.send_to_addr(state.as_bytes(), &m.addr) {
        tracing::warn!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
    }
}

/// When a loop last showed it was alive; cheap to bump from any thread.
#[derive(Clone, Debug)]
pub struct Heartbeat(Arc<AtomicU64>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for Heartbeat {
    fn default() -> Self {
        let h = Heartbeat(Arc::new(AtomicU64::new(0)));
        h.beat();
        h
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let then = Duration::from_millis(self.0.load(Ordering::Relaxed));
        epoch().elapsed().saturating_sub(then)
    }

    /// Bumps this heartbeat from a tokio task every `every`: alive as long as the runtime
    /// still runs tasks.
    pub fn tick_on_tokio(&self, every: Duration) {
        let beat = self.clone();
        tokio::spawn(async move {
            loop {
                beat.beat();
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// What the supervision thread asks the role.
pub struct Probes {
    /// True once the role serves (polled until it is).
    pub ready: Box<dyn Fn() -> bool + Send>,
    /// `Err(why)` when a main loop has stopped making progress.
    pub alive: Box<dyn Fn(Duration) -> Result<(), String> + Send>,
    /// The `STATUS=` line.
    pub status: Box<dyn Fn() -> String + Send>,
}

/// Stops the supervision thread (sending `STOPPING=1` if the role ends without a signal).
pub struct Supervision {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Supervision {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the thread looks at the probes; small so `READY=1` follows readiness closely.
const TICK: Duration = Duration::from_millis(100);
/// How often an unchanged `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Starts telling systemd about the role `probes` describe; a no-op without `NOTIFY_SOCKET`.
pub fn supervise(probes: Probes) -> Supervision {
    let done = Arc::new(AtomicBool::new(false));
    if !enabled() {
        return Supervision { done, thread: None };
    }
    let stop = Arc::clone(&done);
    let thread = std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || supervision(probes, &stop));
    match thread {
        Ok(t) => Supervision {
            done,
            thread: Some(t),
        },
        Err(e) => {
            tracing::warn!("sd_notify thread: {e}");
            Supervision { done, thread: None }
        }
    }
}

fn supervision(probes: Probes, done: &AtomicBool) {
    let watchdog = manager().and_then(|m| m.watchdog);
    let mut ready = false;
    let mut last_status = String::new();
    let mut status_at = Instant::now();
    let mut next_ping = Instant::now();
    let mut stalled = false;
    loop {
        if crate::agent::stop_requested() || done.load(Ordering::SeqCst) {
            send("STOPPING=1\nSTATUS=stopping");
            return;
        }
        let now = Instant::now();
        if !ready && (probes.ready)() {
            ready = true;
            last_status = (probes.status)();
            status_at = now;
            send(&format!("READY=1\nSTATUS={last_status}"));
            tracing::info!("ready (told systemd)");
        } else if ready && now >= status_at + STATUS_EVERY {
            let status = (probes.status)();
            if status != last_status {
                send(&format!("STATUS={status}"));
                last_status = status;
            }
            status_at = now;
        }
        if let Some(timeout) = watchdog
            && now >= next_ping
        {
            // Before READY the start timeout, not the watchdog, bounds a slow start.
            match if ready {
                (probes.alive)(timeout)
            } else {
                Ok(())
            } {
                Ok(()) => {
                    send("WATCHDOG=1");
                    if stalled {
                        tracing::info!("main loops alive again; watchdog pings resumed");
                        stalled = false;
                    }
                }
                Err(why) => {
                    if !stalled {
                        tracing::error!("{why}; not pinging the systemd watchdog");
                        send(&format!("STATUS={why}"));
                        stalled = true;
                    }
                }
            }
            next_ping = now + timeout / 2;
        }
        std::thread::sleep(TICK);
    }
}

/// `Err` naming the first of `beats` older than `timeout`.
pub fn check_beats<'a>(
    beats: impl IntoIterator<Item = (&'a str, Duration)>,
    timeout: Duration,
) -> Result<(), String> {
    for (what, age) in beats {
        if age >= timeout {
            return Err(format!(
                "{what} has made no progress for {:.1}s",
                age.as_secs_f64()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_for_this_pid_only() {
        assert_eq!(
            watchdog(Some("500000"), None, 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog(Some("500000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog(Some("500000"), Some("8"), 7), None);
        assert_eq!(watchdog(Some("0"), None, 7), None);
        assert_eq!(watchdog(Some("x"), None, 7), None);
        assert_eq!(watchdog(None, None, 7), None);
    }

    #[test]
    fn abstract_and_path_sockets() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edgepod-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let (socket, addr) = connect(std::ffi::OsStr::new(&format!("@{name}"))).unwrap();
        socket.send_to_addr(b"READY=1", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(connect(std::ffi::OsStr::new("relative")).is_err());
        assert!(connect(std::ffi::OsStr::new("/run/x")).is_ok());
    }

    #[test]
    fn stale_beats_are_named() {
        let t = Duration::from_secs(1);
        assert!(check_beats([("a", Duration::ZERO)], t).is_ok());
        let e = check_beats([("a", Duration::ZERO), ("the b loop", t)], t).unwrap_err();
        assert!(e.contains("the b loop"), "{e}");
    }
}
