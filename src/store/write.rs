//! The row layout of objects: how one is loaded, stamped and written with its label rows.
//!
//! Owns: the `objects`, `labels` and `revision` tables. Must not touch: API semantics (conflicts,
//! existence checks), which `tx` decides before calling in here.
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::events::EVENT_KIND;
use super::meta;
use super::watch::ChangeType;
use super::{StoreError, Tx};

/// An object as stored, with its row id.
pub(super) struct Stored {
    pub id: i64,
    pub resource_version: i64,
    pub object: Value,
}

impl Tx<'_> {
    pub(super) fn load(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Stored>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, resource_version, body FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind, namespace, name],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)),
            )
            .optional()?;
        row.map(|(id, resource_version, body)| {
            Ok(Stored {
                id,
                resource_version,
                object: serde_json::from_str(&body)?,
            })
        })
        .transpose()
    }

    pub fn current_resource_version(&self) -> Result<u64, StoreError> {
        let value: i64 = self
            .conn
            .query_row("SELECT value FROM revision", [], |row| row.get(0))?;
        Ok(value.unsigned_abs())
    }

    fn next_resource_version(&self) -> Result<i64, StoreError> {
        let rv = self.conn.query_row(
            "UPDATE revision SET value = value + 1 RETURNING value",
            [],
            |row| row.get(0),
        )?;
        self.last_resource_version.set(rv);
        Ok(rv)
    }

    /// Writes `obj` over `existing` (or as a new row), stamping resourceVersion and, when absent,
    /// uid and creationTimestamp. Identity must already be validated by the caller.
    pub(super) fn persist(
        &self,
        kind: &str,
        mut obj: Value,
        existing: Option<Stored>,
    ) -> Result<Value, StoreError> {
        let id = meta::identity(&obj)?;
        meta::stamp_kind(kind, &mut obj)?;
        if let Some(old) = &existing {
            let metadata = meta::metadata_mut(&mut obj)?;
            for key in ["uid", "creationTimestamp"] {
                if unset(metadata.get(key))
                    && let Some(kept) = old.object.get("metadata").and_then(|m| m.get(key))
                {
                    metadata.insert(key.to_string(), kept.clone());
                }
            }
            metadata.insert(
                "resourceVersion".to_string(),
                Value::String(old.resource_version.to_string()),
            );
            // The API server does not bump resourceVersion for a write that changes nothing.
            if obj == old.object {
                return Ok(obj);
            }
        }
        let resource_version = self.next_resource_version()?;
        let metadata = meta::metadata_mut(&mut obj)?;
        metadata.insert(
            "resourceVersion".to_string(),
            Value::String(resource_version.to_string()),
        );
        if unset(metadata.get("uid")) {
            metadata.insert("uid".to_string(), Value::String(meta::new_uid()?));
        }
        if unset(metadata.get("creationTimestamp")) {
            metadata.insert("creationTimestamp".to_string(), meta::now()?);
        }
        let uid = meta::field(&obj, "uid").unwrap_or_default().to_string();
        let labels = meta::labels(&obj)?;
        let body = serde_json::to_string(&obj)?;
        let change = if existing.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.log_change(resource_version, kind, &id.namespace, change, &body)?;
        let row_id = match existing {
            Some(old) => {
                self.conn.execute(
                    "UPDATE objects SET uid = ?1, resource_version = ?2, body = ?3 WHERE id = ?4",
                    params![uid, resource_version, body, old.id],
                )?;
                self.conn
                    .execute("DELETE FROM labels WHERE object_id = ?1", [old.id])?;
                old.id
            }
            None => self.conn.query_row(
                "INSERT INTO objects (kind, namespace, name, uid, resource_version, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![kind, id.namespace, id.name, uid, resource_version, body],
                |row| row.get(0),
            )?,
        };
        let mut insert = self
            .conn
            .prepare("INSERT INTO labels (object_id, key, value) VALUES (?1, ?2, ?3)")?;
        for (key, value) in &labels {
            insert.execute(params![row_id, key, value])?;
        }
        if kind == EVENT_KIND {
            self.index_event(row_id, &obj)?;
        }
        Ok(obj)
    }

    /// Deletes the row (labels and event index follow by cascade) and returns the object stamped
    /// with the deletion's resourceVersion.
    pub(super) fn remove(&self, stored: Stored) -> Result<Value, StoreError> {
        let resource_version = self.next_resource_version()?;
        self.conn
            .execute("DELETE FROM objects WHERE id = ?1", [stored.id])?;
        let mut obj = stored.object;
        meta::metadata_mut(&mut obj)?.insert(
            "resourceVersion".to_string(),
            Value::String(resource_version.to_string()),
        );
        let kind = meta::stamped_kind(&obj).unwrap_or_default().to_string();
        let namespace = meta::field(&obj, "namespace")
            .unwrap_or_default()
            .to_string();
        self.log_change(
            resource_version,
            &kind,
            &namespace,
            ChangeType::Deleted,
            &serde_json::to_string(&obj)?,
        )?;
        Ok(obj)
    }
}

/// Go's reading of a metadata field: missing, null and `""` all mean unset.
fn unset(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}
