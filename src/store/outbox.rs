//! The outbox and settings tables (schema V3): what a node has to tell the hub and has not yet had
//! acknowledged, and small durable values of the fleet link.
//!
//! Owns: the rows of `outbox` and `settings`. Must not touch: objects. What a row means is the
//! fleet link's business; here a row is a key, a sequence number and bytes.
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, Tx};

/// One report waiting for the hub's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: u64,
    pub key: String,
    pub body: Vec<u8>,
}

impl Store {
    /// Queues `body` under `key`, replacing an unacknowledged row of the same key (only the
    /// newest report of an object matters); returns the new row's sequence number.
    pub fn outbox_put(&self, key: &str, body: &[u8]) -> Result<u64, StoreError> {
        self.write(|tx| tx.outbox_put(key, body))
    }

    /// Rows with a sequence number above `after`, oldest first, at most `limit`.
    pub fn outbox_pending(&self, after: u64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT seq, key, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(
            params![after as i64, i64::try_from(limit).unwrap_or(i64::MAX)],
            |row| {
                Ok(OutboxRow {
                    seq: row.get::<_, i64>(0)?.unsigned_abs(),
                    key: row.get(1)?,
                    body: row.get(2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes the acknowledged rows; a `seq` replaced by a newer report since matches nothing.
    pub fn outbox_ack(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.conn.prepare("DELETE FROM outbox WHERE seq = ?1")?;
            let mut n = 0;
            for seq in seqs {
                n += stmt.execute([*seq as i64])?;
            }
            Ok(n)
        })
    }

    /// How many rows wait, and how many of them have keys starting with `prefix`.
    pub fn outbox_len(&self, prefix: &str) -> Result<(u64, u64), StoreError> {
        let conn = self.lock();
        let all: i64 = conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        let some: i64 = conn.query_row(
            "SELECT count(*) FROM outbox WHERE substr(key, 1, length(?1)) = ?1",
            [prefix],
            |r| r.get(0),
        )?;
        Ok((all.unsigned_abs(), some.unsigned_abs()))
    }

    /// Drops the oldest rows whose keys start with `prefix` beyond the newest `keep` of them
    /// (reports that may be lost, such as events, so days offline cannot fill the disk).
    pub fn outbox_trim(&self, prefix: &str, keep: u64) -> Result<usize, StoreError> {
        self.write(|tx| {
            Ok(tx.conn.execute(
                "DELETE FROM outbox WHERE substr(key, 1, length(?1)) = ?1 AND seq NOT IN \
                 (SELECT seq FROM outbox WHERE substr(key, 1, length(?1)) = ?1 ORDER BY seq DESC LIMIT ?2)",
                params![prefix, keep as i64],
            )?)
        })
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }
}

impl Tx<'_> {
    pub fn outbox_put(&self, key: &str, body: &[u8]) -> Result<u64, StoreError> {
        self.conn
            .execute("DELETE FROM outbox WHERE key = ?1", [key])?;
        self.conn.execute(
            "INSERT INTO outbox (key, body) VALUES (?1, ?2)",
            params![key, body],
        )?;
        Ok(self.conn.last_insert_rowid().unsigned_abs())
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn a_newer_report_replaces_the_unacknowledged_one_and_outlives_its_ack() {
        let (_d, s) = store();
        let first = s.outbox_put("pod/a", b"1").expect("put");
        s.outbox_put("pod/b", b"x").expect("put");
        let second = s.outbox_put("pod/a", b"2").expect("put");
        assert!(second > first);
        let rows = s.outbox_pending(0, 10).expect("pending");
        assert_eq!(
            rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["pod/b", "pod/a"]
        );
        // The hub acknowledges the first report of pod/a, which the second replaced.
        assert_eq!(s.outbox_ack(&[first]).expect("ack"), 0);
        assert_eq!(s.outbox_len("event/").expect("len"), (2, 0));
        assert_eq!(s.outbox_ack(&[second]).expect("ack"), 1);
        let rows = s.outbox_pending(0, 10).expect("pending");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].body, b"x");
        // Sequence numbers are never reused.
        s.outbox_ack(&[rows[0].seq]).expect("ack");
        assert!(s.outbox_put("pod/c", b"y").expect("put") > second);
    }

    #[test]
    fn trimming_keeps_the_newest_rows_of_a_prefix() {
        let (_d, s) = store();
        for i in 0..5 {
            s.outbox_put(&format!("event/{i}"), b"e").expect("put");
        }
        s.outbox_put("pod/a", b"p").expect("put");
        assert_eq!(s.outbox_trim("event/", 2).expect("trim"), 3);
        let keys: Vec<String> = s
            .outbox_pending(0, 10)
            .expect("pending")
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["event/3", "event/4", "pod/a"]);
        assert_eq!(s.outbox_len("event/").expect("len"), (3, 2));
    }

    #[test]
    fn settings_are_written_in_transactions() {
        let (_d, s) = store();
        assert_eq!(s.setting("g").expect("get"), None);
        s.write(|tx| tx.set_setting("g", "7")).expect("set");
        let r: Result<(), StoreError> = s.write(|tx| {
            tx.set_setting("g", "8")?;
            Err(StoreError::NoName)
        });
        assert!(r.is_err());
        assert_eq!(s.setting("g").expect("get").as_deref(), Some("7"));
    }
}
