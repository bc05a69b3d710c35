//! Crash consistency: a writer SIGKILLed at random instants never leaves a store that fails
//! [`Store::check`].
//!
//! The test binary re-executes itself, running only [`writer`] with [`DIR_VAR`] set, so the child
//! is a real separate process whose death SQLite did not see coming.
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::json;

use super::pod;
use crate::store::meta::random_bytes;
use crate::store::{Store, StoreError};

const DIR_VAR: &str = "EDGEPOD_STORE_CRASH_DIR";
const READY: &str = "edgepod-store-writer-ready";
const ROUNDS: usize = 12;
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// xorshift64: enough to vary the workload, seeded from the OS so each run differs.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(u64::from_le_bytes(random_bytes::<8>().unwrap()) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random write; misses (NotFound, AlreadyExists, Conflict) are part of the workload.
fn write_once(store: &Store, rng: &mut Rng) -> Result<(), StoreError> {
    let name = format!("pod-{}", rng.below(40));
    // Bodies of a few pages each, so commits span several WAL frames and checkpoints happen often.
    let padding = "x".repeat(1000 + rng.below(8000) as usize);
    let labels = [
        ("app", format!("app-{}", rng.below(4))),
        ("gen", rng.below(100).to_string()),
    ];
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut obj = pod("default", &name, &labels);
    obj["metadata"]["annotations"] = json!({"padding": padding});
    let outcome = match rng.below(6) {
        0 => store.create("Pod", &obj).map(drop),
        1 => store.put("Pod", &obj).map(drop),
        2 => store
            .update_with("Pod", "default", &name, |p| {
                p["metadata"]["labels"]["gen"] = json!(rng.below(100).to_string());
                Ok::<_, StoreError>(())
            })
            .map(drop),
        3 => store.delete("Pod", "default", &name).map(drop),
        4 => {
            let involved = ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some(name.clone()),
                ..ObjectReference::default()
            };
            store
                .record_event(
                    &involved,
                    "Warning",
                    "BackOff",
                    &format!("restart {}", rng.below(80)),
                    "test",
                )
                .map(drop)
        }
        _ => store.write(|tx| {
            let other = format!("pod-{}", rng.below(40));
            tx.put("Pod", &obj)?;
            tx.delete("Pod", "default", &other)?;
            tx.put("Pod", &pod("default", &other, &labels))?;
            Ok(())
        }),
    };
    match outcome {
        Err(
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. },
        ) => Ok(()),
        other => other,
    }
}

/// The child's body under [`DIR_VAR`]: write until killed. Run plainly, it is a bounded version of
/// the same workload that must leave a consistent store.
#[test]
fn writer() {
    if let Some(dir) = std::env::var_os(DIR_VAR) {
        let store = Store::open_in(Path::new(&dir)).unwrap();
        // Checkpoint every few commits so that kills also land inside checkpoints.
        store
            .lock()
            .pragma_update(None, "wal_autocheckpoint", 16)
            .unwrap();
        let mut rng = Rng::new();
        let opened_at = store.current_resource_version().unwrap();
        let mut announced = false;
        loop {
            write_once(&store, &mut rng).unwrap();
            if !announced && store.current_resource_version().unwrap() > opened_at {
                println!("{READY}");
                announced = true;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_in(dir.path()).unwrap();
    let mut rng = Rng::new();
    for _ in 0..300 {
        write_once(&store, &mut rng).unwrap();
    }
    assert!(store.current_resource_version().unwrap() > 0);
    store.check().unwrap();
}

#[test]
fn a_writer_killed_at_any_instant_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let test_name = format!("{}::writer", module_path!().split_once("::").unwrap().1);
    let mut rng = Rng::new();
    let mut last_version = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // libtest prints "test <name> ... " without a newline first, so READY ends a line.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.any(|line| line.ends_with(READY)));
        });
        if rx.recv_timeout(STARTUP_LIMIT) != Ok(true) {
            let _ = child.kill();
            panic!(
                "round {round}: the writer made no first write: {:?}",
                child.wait()
            );
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(200)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the writer failed on its own: {status}"
        );

        let store = Store::open_in(dir.path()).unwrap();
        store
            .check()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let version = store.current_resource_version().unwrap();
        assert!(version > last_version, "round {round}: no write survived");
        last_version = version;
    }
}
