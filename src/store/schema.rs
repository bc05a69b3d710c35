//! Connection settings and the versioned schema migrations of the store file.
//!
//! Owns: the pragmas every connection needs and the `PRAGMA user_version` ladder. Must not touch:
//! rows. A migration only reshapes tables; data rewrites belong to the code that owns the data.
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only: a shipped migration
/// is never edited, since boards in the field have already run it.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = "
CREATE TABLE revision (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (singleton, value) VALUES (1, 0);

CREATE TABLE objects (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (kind, namespace, name)
);
CREATE INDEX objects_uid ON objects (uid);

CREATE TABLE labels (
    object_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (object_id, key)
) WITHOUT ROWID;
CREATE INDEX labels_key_value ON labels (key, value, object_id);

CREATE TABLE event_index (
    object_id INTEGER PRIMARY KEY REFERENCES objects (id) ON DELETE CASCADE,
    involved_kind TEXT NOT NULL,
    involved_namespace TEXT NOT NULL,
    involved_name TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE INDEX event_index_involved ON event_index (involved_kind, involved_namespace, involved_name, last_seen);
CREATE INDEX event_index_dedupe ON event_index (dedupe_key);
CREATE INDEX event_index_last_seen ON event_index (last_seen);
";

/// The change log watches read: one row per write, kept for a window of recent resourceVersions.
/// `compacted` is the newest resourceVersion already trimmed away; a watch from before it gets
/// 410 Gone, as from a compacted etcd.
const V2: &str = "
CREATE TABLE changes (
    resource_version INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX changes_kind ON changes (kind, resource_version);
ALTER TABLE revision ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
UPDATE revision SET compacted = value;
";

/// The fleet link's durable parts on a node: the outbox of reports not yet acknowledged by the
/// hub (one row per object key: a newer report replaces an unsent older one, and takes a new
/// `seq`, so an acknowledgement of the old `seq` cannot remove it), and small settings such as
/// the generation of the last desired state applied. AUTOINCREMENT: a `seq` is never reused,
/// even after the newest row is acknowledged and deleted.
const V3: &str = "
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Applies the per-connection settings; `path` only names the file in errors.
pub(super) fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // The agent and the CLI share the file: wait for the other's write rather than fail.
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL lets readers (the CLI) run while the agent writes, and appends instead of rewriting
    // pages in place, which is kinder to SD cards.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Setup {
            path: path.display().to_string(),
            reason: format!(
                "the filesystem does not support WAL journaling (journal_mode is {mode})"
            ),
        });
    }
    // With WAL, NORMAL syncs only at checkpoints: a power cut can lose the last few commits but
    // never corrupts the file, and the agent re-derives recent state from the node anyway. FULL
    // would fsync every commit, which on an SD card costs milliseconds and wears the flash.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let foreign_keys: bool = conn.pragma_query_value(None, "foreign_keys", |row| row.get(0))?;
    if !foreign_keys {
        return Err(StoreError::Setup {
            path: path.display().to_string(),
            reason: "this SQLite build cannot enforce foreign keys".to_string(),
        });
    }
    // Left alone, the WAL file keeps its high-water size after a checkpoint; small boards have
    // little disk to spare.
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

/// Applies the pending `migrations`, each with its version bump in one transaction, so a crash
/// between two leaves a schema at a well-defined version.
pub(super) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), StoreError> {
    let latest = migrations.len() as i64;
    loop {
        // Read the version under the write lock: another process may be migrating the same file.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > latest {
            return Err(StoreError::SchemaTooNew {
                path: path.display().to_string(),
                found: version,
                supported: latest,
            });
        }
        let Ok(index) = usize::try_from(version) else {
            return Err(StoreError::Setup {
                path: path.display().to_string(),
                reason: format!("negative schema version {version}"),
            });
        };
        let Some(sql) = migrations.get(index) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}
