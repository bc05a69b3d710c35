//! The change log behind watches: every write appends one row in its own transaction, and
//! watchers read the rows after the resourceVersion they have seen.
//!
//! Owns: the `changes` table, its trimming window and the `compacted` mark, and the in-process
//! signal that a commit happened. Must not touch: object rows or watch semantics beyond "what
//! changed after resourceVersion N" (filtering by selector and bookmarks belong to the API
//! server).
use rusqlite::params;
use serde_json::Value;

use super::{StoreError, Tx};

/// How many recent changes are kept for watchers to resume from. A watcher further behind gets
/// 410 Gone and lists again, as with a compacted etcd; the window bounds the file on an SD card.
pub const CHANGE_WINDOW: i64 = 4096;

/// Trimming runs every this many writes rather than on each one.
const TRIM_EVERY: i64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The watch event `type` Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }

    fn parse(s: &str) -> Option<ChangeType> {
        match s {
            "ADDED" => Some(ChangeType::Added),
            "MODIFIED" => Some(ChangeType::Modified),
            "DELETED" => Some(ChangeType::Deleted),
            _ => None,
        }
    }
}

/// One write as a watcher sees it: the object after the write (before it, for a delete, stamped
/// with the deletion's resourceVersion).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub resource_version: u64,
    pub change: ChangeType,
    pub namespace: String,
    pub object: Value,
}

impl Tx<'_> {
    pub(super) fn log_change(
        &self,
        resource_version: i64,
        kind: &str,
        namespace: &str,
        change: ChangeType,
        body: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO changes (resource_version, kind, namespace, type, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![resource_version, kind, namespace, change.as_str(), body],
        )?;
        if resource_version % TRIM_EVERY == 0 {
            let cut = resource_version - CHANGE_WINDOW;
            if cut > 0 {
                self.conn
                    .execute("DELETE FROM changes WHERE resource_version <= ?1", [cut])?;
                self.conn
                    .execute("UPDATE revision SET compacted = MAX(compacted, ?1)", [cut])?;
            }
        }
        Ok(())
    }

    /// The newest resourceVersion no longer in the change log.
    pub fn compacted_resource_version(&self) -> Result<u64, StoreError> {
        let value: i64 = self
            .conn
            .query_row("SELECT compacted FROM revision", [], |row| row.get(0))?;
        Ok(value.unsigned_abs())
    }

    /// Changes to objects of `kind` (in `namespace`, when given) after resourceVersion `after`,
    /// oldest first, at most `limit` of them. [`StoreError::Expired`] when `after` is older than
    /// the log remembers.
    pub fn changes_since(
        &self,
        kind: &str,
        namespace: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let compacted = self.compacted_resource_version()?;
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                oldest: compacted + 1,
            });
        }
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT resource_version, namespace, type, body FROM changes
             WHERE kind = ?1 AND resource_version > ?2 AND (?3 IS NULL OR namespace = ?3)
             ORDER BY resource_version LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![kind, after, namespace, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (rv, namespace, change, body) = row?;
            let change = ChangeType::parse(&change).ok_or_else(|| {
                StoreError::Inconsistent(format!("change {rv} has type {change}"))
            })?;
            out.push(Change {
                resource_version: rv.unsigned_abs(),
                change,
                namespace,
                object: serde_json::from_str(&body)?,
            });
        }
        Ok(out)
    }
}
