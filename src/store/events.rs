//! core/v1 Events: recording with de-duplication, the caps, and lookup by involved object.
//!
//! Owns: the `event_index` table and the rules client-go's event correlator applies on the
//! client side (repeats fold into one Event's `count`). Events are ordinary objects of kind
//! `Event`, so `get`/`list` see them too. Must not touch: other kinds' rows.
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{StoreError, Tx};

pub const EVENT_KIND: &str = "Event";
/// Distinct Events kept per involved object (kind, namespace, name): a crash-looping pod
/// produces a bounded history, not an unbounded one.
pub const MAX_EVENTS_PER_OBJECT: usize = 64;
/// Events kept in all at most; past it the oldest by `lastTimestamp` go, down to an eighth
/// below, so the sort behind eviction runs once per few hundred Events rather than on each.
pub const MAX_EVENTS: usize = 4096;

impl Tx<'_> {
    /// Records an Event about `involved`. The same involved object (uid, kind, namespace, name),
    /// type, reason and message fold into one Event whose `count` grows and `lastTimestamp` moves.
    pub fn record_event(
        &self,
        involved: &ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
        source_component: &str,
    ) -> Result<Event, StoreError> {
        let kind = involved.kind.as_deref().filter(|k| !k.is_empty());
        let name = involved.name.as_deref().filter(|n| !n.is_empty());
        let (Some(kind), Some(name)) = (kind, name) else {
            return Err(StoreError::Invalid(
                "an event's involved object needs a kind and a name".to_string(),
            ));
        };
        let namespace = involved.namespace.as_deref().unwrap_or_default();
        let uid = involved.uid.as_deref().unwrap_or_default();
        let key = dedupe_key(&[uid, kind, namespace, name, type_, reason, message]);
        let now = Time(jiff::Timestamp::now());

        if let Some(stored) = self.find_event(&key)? {
            let mut event: Event = serde_json::from_value(stored.object.clone())?;
            event.count = Some(event.count.unwrap_or(1).saturating_add(1));
            event.last_timestamp = Some(now);
            let written = self.persist(EVENT_KIND, serde_json::to_value(&event)?, Some(stored))?;
            return Ok(serde_json::from_value(written)?);
        }

        // Events of cluster-scoped objects live in "default", as client-go's recorder puts them.
        let event_namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let event = Event {
            metadata: ObjectMeta {
                name: Some(self.event_name(event_namespace, name, now.0)?),
                namespace: Some(event_namespace.to_string()),
                ..ObjectMeta::default()
            },
            involved_object: involved.clone(),
            type_: Some(type_.to_string()),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            source: Some(EventSource {
                component: Some(source_component.to_string()),
                host: None,
            }),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            ..Event::default()
        };
        let written: Event = serde_json::from_value(self.persist(
            EVENT_KIND,
            serde_json::to_value(&event)?,
            None,
        )?)?;
        self.evict_events(
            "WHERE e.involved_kind = ?1 AND e.involved_namespace = ?2 AND e.involved_name = ?3",
            params![kind, namespace, name],
            MAX_EVENTS_PER_OBJECT,
        )?;
        let total: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM event_index", [], |r| r.get(0))?;
        if total as usize > MAX_EVENTS {
            self.evict_events("", params![], MAX_EVENTS - MAX_EVENTS / 8)?;
        }
        Ok(written)
    }

    /// Events about the object, oldest `lastTimestamp` first, as `kubectl describe` shows them.
    pub fn events_for(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT o.body FROM event_index e JOIN objects o ON o.id = e.object_id
             WHERE e.involved_kind = ?1 AND e.involved_namespace = ?2 AND e.involved_name = ?3
             ORDER BY e.last_seen, o.resource_version",
        )?;
        let rows = stmt.query_map(params![kind, namespace, name], |row| {
            row.get::<_, String>(0)
        })?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    /// Keeps `event_index` in step with an Event object's JSON, whoever wrote it.
    pub(super) fn index_event(&self, object_id: i64, obj: &Value) -> Result<(), StoreError> {
        let involved = &obj["involvedObject"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (kind, namespace, name, uid) = (
            text(&involved["kind"]),
            text(&involved["namespace"]),
            text(&involved["name"]),
            text(&involved["uid"]),
        );
        let key = dedupe_key(&[
            &uid,
            &kind,
            &namespace,
            &name,
            &text(&obj["type"]),
            &text(&obj["reason"]),
            &text(&obj["message"]),
        ]);
        let last_seen = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|field| obj[field].as_str()?.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second());
        self.conn.execute(
            "INSERT OR REPLACE INTO event_index
             (object_id, involved_kind, involved_namespace, involved_name, dedupe_key, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![object_id, kind, namespace, name, key, last_seen],
        )?;
        Ok(())
    }

    fn find_event(&self, key: &str) -> Result<Option<super::write::Stored>, StoreError> {
        let found: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT o.namespace, o.name FROM event_index e JOIN objects o ON o.id = e.object_id
                 WHERE e.dedupe_key = ?1 ORDER BY e.last_seen DESC, o.resource_version DESC LIMIT 1",
                [key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match found {
            Some((namespace, name)) => self.load(EVENT_KIND, &namespace, &name),
            None => Ok(None),
        }
    }

    /// `<involvedName>.<hex nanoseconds>`, the name client-go's recorder gives, bumped past any
    /// Event already holding it.
    fn event_name(
        &self,
        namespace: &str,
        involved_name: &str,
        at: jiff::Timestamp,
    ) -> Result<String, StoreError> {
        let mut nanos = at.as_nanosecond().unsigned_abs();
        loop {
            let name = format!("{involved_name}.{nanos:x}");
            if self.load(EVENT_KIND, namespace, &name)?.is_none() {
                return Ok(name);
            }
            nanos += 1;
        }
    }

    /// Deletes the Events matched by `filter` beyond the `keep` most recent ones.
    fn evict_events(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
        keep: usize,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT o.namespace, o.name FROM event_index e JOIN objects o ON o.id = e.object_id {filter}
             ORDER BY e.last_seen DESC, o.resource_version DESC LIMIT -1 OFFSET {keep}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let doomed = stmt
            .query_map(args, |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (namespace, name) in doomed {
            self.delete(EVENT_KIND, &namespace, &name)?;
        }
        Ok(())
    }
}

fn dedupe_key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}
