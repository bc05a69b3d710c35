//! The SQLite store: one file under the data dir holding Kubernetes objects as JSON and events.
//!
//! Owns: the `edgepod.db` file, its schema and migrations, the global resourceVersion counter,
//! the metadata fields the API server stamps on writes (`resourceVersion`, `uid`,
//! `creationTimestamp`), label-indexed listing, and core/v1 Event aggregation and capping.
//!
//! Must not touch: object semantics beyond metadata. Defaulting and validation belong to
//! [`crate::api`]; the store keeps whatever JSON it is given, whole, so fields this build does not
//! know survive a round-trip through an older or newer edgepod.
//!
//! Every public operation runs in one SQLite transaction; [`Store::write`] groups several.
//! Namespaced kinds are addressed by `(kind, namespace, name)`; cluster-scoped ones use the empty
//! namespace, as the Kubernetes API does.

mod check;
mod events;
mod meta;
mod outbox;
mod schema;
mod select;
mod self_check;
mod tx;
mod watch;
mod write;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::LabelSelector;

pub use events::{EVENT_KIND, MAX_EVENTS, MAX_EVENTS_PER_OBJECT};
pub use outbox::OutboxRow;
pub use schema::SCHEMA_VERSION;
pub use self_check::self_check;
pub use tx::Tx;
pub use watch::{CHANGE_WINDOW, Change, ChangeType};

/// The file name of the database inside the data dir.
pub const DB_FILE: &str = "edgepod.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{kind} {namespace}/{name}: resourceVersion {expected} is stale (now {actual})")]
    Conflict {
        kind: String,
        namespace: String,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("store: object has no metadata.name")]
    NoName,
    #[error("store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} {namespace}/{name} already exists")]
    AlreadyExists {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name}: uid {expected} in the request does not match uid {actual}")]
    UidMismatch {
        kind: String,
        namespace: String,
        name: String,
        expected: String,
        actual: String,
    },
    #[error("store: invalid object: {0}")]
    Invalid(String),
    #[error(
        "store {path}: schema version {found} is newer than this edgepod {version} supports ({supported}): a newer edgepod wrote it, and this one refuses to run on it rather than corrupt it; install that newer edgepod again (downgrades across a store schema change are not supported)",
        version = env!("CARGO_PKG_VERSION")
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("store {path}: {reason}")]
    Setup { path: String, reason: String },
    #[error("store: inconsistent database: {0}")]
    Inconsistent(String),
    /// A watch from a resourceVersion the change log no longer holds.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
}

/// Makes `path` readable by its owner only: the database holds Secrets.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    // Only when needed: a reader that does not own the file should not fail on a no-op.
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0) {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    })
}

/// A handle on the database, shared by threads and tokio tasks alike.
pub struct Store {
    // One connection behind a mutex: SQLite serialises writers anyway, and a single connection
    // keeps the per-connection pragmas in one place.
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The newest committed resourceVersion, for watchers in this process to wait on.
    committed: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // Opening races with other processes opening or closing the same file (the agent and
        // a CLI command at once): switching to WAL, WAL recovery and the last closer's checkpoint
        // can answer SQLITE_BUSY without going through busy_timeout. Those clear within
        // milliseconds, so opening retries for a while before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match Self::open_once(path) {
                Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        owner_only(path)?;
        schema::configure(&conn, path)?;
        // SQLite gives the -wal and -shm files the database's mode; older ones are fixed here.
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if Path::new(&p).exists() {
                owner_only(Path::new(&p))?;
            }
        }
        schema::migrate(&mut conn, path)?;
        let current: i64 = conn.query_row("SELECT value FROM revision", [], |row| row.get(0))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            committed: tokio::sync::watch::Sender::new(current.unsigned_abs()),
        })
    }

    /// Opens `data_dir/edgepod.db`, creating `data_dir` first.
    pub fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        Store::open(&data_dir.join(DB_FILE))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction drops its `rusqlite::Transaction`, which rolls back: the
        // connection behind a poisoned lock is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction, committed only when `f` returns `Ok`.
    ///
    /// The transaction takes the write lock up front (`BEGIN IMMEDIATE`) so that two processes
    /// sharing the file (agent and CLI) wait on `busy_timeout` instead of failing on a lock upgrade.
    pub fn write<R, E>(&self, f: impl FnOnce(&Tx<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.lock();
        let tx = Tx::new(
            conn.transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::from)?,
        );
        let out = f(&tx)?;
        let rv = tx.commit()?;
        drop(conn);
        if rv > 0 {
            self.committed.send_replace(rv.unsigned_abs());
        }
        Ok(out)
    }

    /// Wakes when a write commits in this process; the value is the newest resourceVersion.
    /// Writes by other processes sharing the file are not signalled.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// See [`Tx::changes_since`].
    pub fn changes_since(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.read(|tx| tx.changes_since(kind, namespace, after, limit))
    }

    /// [`Tx::list_raw`] and the resourceVersion it was read at, in one snapshot.
    pub fn list_raw_at(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<String>, u64), StoreError> {
        self.read(|tx| {
            Ok((
                tx.list_raw(kind, namespace)?,
                tx.current_resource_version()?,
            ))
        })
    }

    /// A consistent list and the resourceVersion it was read at, in one snapshot: what a
    /// Kubernetes list returns, so a watch from that version misses nothing.
    pub fn list_at(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        self.read(|tx| {
            Ok((
                tx.list(kind, namespace, selector)?,
                tx.current_resource_version()?,
            ))
        })
    }

    /// Runs `f` on one consistent snapshot; reads only, so nothing is committed.
    fn read<R>(&self, f: impl FnOnce(&Tx<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut conn = self.lock();
        let tx = Tx::new(conn.transaction_with_behavior(TransactionBehavior::Deferred)?);
        f(&tx)
    }

    pub fn get(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.read(|tx| tx.get(kind, namespace, name))
    }

    pub fn get_as<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.read(|tx| tx.get_as(kind, namespace, name))
    }

    /// Objects of `kind` ordered by namespace then name; `namespace: None` means all namespaces.
    pub fn list(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Value>, StoreError> {
        self.read(|tx| tx.list(kind, namespace, selector))
    }

    pub fn list_as<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|tx| tx.list_as(kind, namespace, selector))
    }

    /// Stores a new object; [`StoreError::AlreadyExists`] when the name is taken.
    pub fn create(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        self.write(|tx| tx.create(kind, obj))
    }

    pub fn create_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        self.write(|tx| tx.create_as(kind, obj))
    }

    /// Creates or replaces the object, whatever resourceVersion it carries.
    pub fn put(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        self.write(|tx| tx.put(kind, obj))
    }

    pub fn put_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        self.write(|tx| tx.put_as(kind, obj))
    }

    /// Replaces an existing object; a stale `metadata.resourceVersion` is a [`StoreError::Conflict`].
    pub fn update(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        self.write(|tx| tx.update(kind, obj))
    }

    pub fn update_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        self.write(|tx| tx.update_as(kind, obj))
    }

    /// Read-modify-write of one object in one transaction, so no concurrent write is lost.
    pub fn update_with<F, E>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        f: F,
    ) -> Result<Value, E>
    where
        F: FnOnce(&mut Value) -> Result<(), E>,
        E: From<StoreError>,
    {
        self.write(|tx| tx.update_with(kind, namespace, name, f))
    }

    /// Removes the object and returns it as last stored, stamped with the deletion's
    /// resourceVersion as the API server does; `None` when there was nothing to delete.
    pub fn delete(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.write(|tx| tx.delete(kind, namespace, name))
    }

    /// The resourceVersion of the latest write, 0 for an empty store.
    pub fn current_resource_version(&self) -> Result<u64, StoreError> {
        self.read(|tx| tx.current_resource_version())
    }

    /// Records a core/v1 Event about `involved`, folding repeats into one Event's `count`.
    pub fn record_event(
        &self,
        involved: &ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
        source_component: &str,
    ) -> Result<Event, StoreError> {
        self.write(|tx| tx.record_event(involved, type_, reason, message, source_component))
    }

    /// Events about the object, oldest `lastTimestamp` first.
    pub fn events_for(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(|tx| tx.events_for(kind, namespace, name))
    }

    /// Verifies the file (`PRAGMA integrity_check`) and the store's own invariants; returns the
    /// number of objects checked.
    pub fn check(&self) -> Result<u64, StoreError> {
        self.read(|tx| tx.check())
    }
}
