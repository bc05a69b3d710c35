//! Verifying a store file: SQLite's own integrity check plus the invariants the store keeps
//! between its tables and the JSON bodies.
//!
//! Owns: the definition of a consistent store. Must not touch: anything; it only reads.
use std::collections::BTreeMap;

use serde_json::Value;

use super::events::EVENT_KIND;
use super::{StoreError, Tx, meta};

impl Tx<'_> {
    /// Returns the number of objects when the file and every row agree, otherwise
    /// [`StoreError::Inconsistent`] naming the first disagreement.
    pub fn check(&self) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let verdict = stmt
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        if verdict != ["ok"] {
            return Err(StoreError::Inconsistent(format!(
                "integrity_check: {}",
                verdict.join("; ")
            )));
        }
        let mut stmt = self.conn.prepare("PRAGMA foreign_key_check")?;
        if stmt.query([])?.next()?.is_some() {
            return Err(StoreError::Inconsistent(
                "rows refer to deleted objects".to_string(),
            ));
        }
        let duplicated: bool = self.conn.query_row(
            "SELECT COUNT(*) != COUNT(DISTINCT resource_version) FROM objects",
            [],
            |row| row.get(0),
        )?;
        if duplicated {
            return Err(StoreError::Inconsistent(
                "two objects share a resourceVersion".to_string(),
            ));
        }
        let counter = i64::try_from(self.current_resource_version()?).unwrap_or(i64::MAX);

        let mut stmt = self.conn.prepare(
            "SELECT o.id, o.kind, o.namespace, o.name, o.uid, o.resource_version, o.body, e.object_id IS NOT NULL
             FROM objects o LEFT JOIN event_index e ON e.object_id = o.id",
        )?;
        let mut labels_of = self
            .conn
            .prepare("SELECT key, value FROM labels WHERE object_id = ?1")?;
        let mut rows = stmt.query([])?;
        let mut count = 0;
        while let Some(row) = rows.next()? {
            let (id, kind, namespace, name): (i64, String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let (uid, resource_version, body, indexed): (String, i64, String, bool) =
                (row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?);
            let at = format!("{kind} {namespace}/{name}");
            let obj: Value = serde_json::from_str(&body)
                .map_err(|e| StoreError::Inconsistent(format!("{at}: body: {e}")))?;
            let ensure = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(StoreError::Inconsistent(format!("{at}: {what}")))
                }
            };

            let identity = meta::identity(&obj)?;
            ensure(
                identity.namespace == namespace && identity.name == name,
                "body names another object",
            )?;
            ensure(
                obj.get("kind").and_then(Value::as_str) == Some(kind.as_str()),
                "body has another kind",
            )?;
            ensure(
                meta::field(&obj, "uid") == Some(uid.as_str()),
                "uid column differs from body",
            )?;
            let rv = resource_version.to_string();
            ensure(
                meta::field(&obj, "resourceVersion") == Some(rv.as_str()),
                "resource_version column differs from body",
            )?;
            ensure(
                resource_version <= counter,
                "resourceVersion is ahead of the counter",
            )?;
            ensure(indexed == (kind == EVENT_KIND), "event index out of step")?;
            let rows: BTreeMap<String, String> = labels_of
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            ensure(
                rows == meta::labels(&obj)?,
                "label rows differ from metadata.labels",
            )?;
            count += 1;
        }
        Ok(count)
    }
}
