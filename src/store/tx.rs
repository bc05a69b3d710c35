//! One store transaction and the object operations it offers.
//!
//! Owns: the API-server semantics of create, get, put, update (compare-and-swap), read-modify-write
//! and delete. Must not touch: SQL row layout (see `write`) or listing (see `select`).
use rusqlite::Transaction;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::StoreError;
use super::meta::{self, Identity};

/// A transaction on the store, from [`super::Store::write`]; everything it does commits or rolls
/// back together.
pub struct Tx<'c> {
    pub(super) conn: Transaction<'c>,
    /// The newest resourceVersion this transaction assigned (0: none), so the store can wake
    /// watchers once it commits.
    pub(super) last_resource_version: std::cell::Cell<i64>,
}

impl<'c> Tx<'c> {
    pub(super) fn new(conn: Transaction<'c>) -> Self {
        Tx {
            conn,
            last_resource_version: std::cell::Cell::new(0),
        }
    }

    /// Commits and returns the newest resourceVersion written (0 when nothing was).
    pub(super) fn commit(self) -> Result<i64, StoreError> {
        let rv = self.last_resource_version.get();
        self.conn.commit()?;
        Ok(rv)
    }

    pub fn get(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        Ok(self
            .load(kind, namespace, name)?
            .map(|stored| stored.object))
    }

    pub fn get_as<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get(kind, namespace, name)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(StoreError::from)
    }

    pub fn create(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        let id = meta::identity(obj)?;
        if meta::field(obj, "resourceVersion").is_some() {
            return Err(StoreError::Invalid(
                "resourceVersion should not be set on objects to be created".to_string(),
            ));
        }
        if self.load(kind, &id.namespace, &id.name)?.is_some() {
            return Err(already_exists(kind, &id));
        }
        self.persist(kind, obj.clone(), None)
    }

    pub fn create_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        Ok(serde_json::from_value(
            self.create(kind, &serde_json::to_value(obj)?)?,
        )?)
    }

    /// Creates or replaces. An object carrying another uid than the stored one is a new
    /// incarnation of the name: it replaces the old one whole, creationTimestamp included.
    pub fn put(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        let id = meta::identity(obj)?;
        let existing = self.load(kind, &id.namespace, &id.name)?;
        let same_incarnation = match (&existing, meta::field(obj, "uid")) {
            (Some(old), Some(uid)) => meta::field(&old.object, "uid") == Some(uid),
            _ => true,
        };
        match existing {
            Some(old) if same_incarnation => self.persist(kind, obj.clone(), Some(old)),
            Some(old) => {
                self.remove(old)?;
                self.persist(kind, obj.clone(), None)
            }
            None => self.persist(kind, obj.clone(), None),
        }
    }

    pub fn put_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        Ok(serde_json::from_value(
            self.put(kind, &serde_json::to_value(obj)?)?,
        )?)
    }

    /// Replaces an existing object. When `obj` carries a resourceVersion it must be the stored
    /// one ([`StoreError::Conflict`] otherwise); without one the update is unconditional, as a
    /// Kubernetes PUT without resourceVersion is.
    pub fn update(&self, kind: &str, obj: &Value) -> Result<Value, StoreError> {
        let id = meta::identity(obj)?;
        let Some(old) = self.load(kind, &id.namespace, &id.name)? else {
            return Err(not_found(kind, &id));
        };
        if let Some(expected) = meta::field(obj, "resourceVersion") {
            let actual = old.resource_version.to_string();
            if expected != actual {
                return Err(StoreError::Conflict {
                    kind: kind.to_string(),
                    namespace: id.namespace,
                    name: id.name,
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        check_uid(kind, &id, obj, &old.object)?;
        self.persist(kind, obj.clone(), Some(old))
    }

    pub fn update_as<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        obj: &T,
    ) -> Result<T, StoreError> {
        Ok(serde_json::from_value(
            self.update(kind, &serde_json::to_value(obj)?)?,
        )?)
    }

    /// Hands the stored object to `f` and stores what `f` leaves, within this transaction. An
    /// error from `f` stores nothing; `f` may not rename the object nor change its uid.
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
        let id = Identity {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let Some(old) = self.load(kind, namespace, name)? else {
            return Err(not_found(kind, &id).into());
        };
        let mut obj = old.object.clone();
        f(&mut obj)?;
        if meta::identity(&obj)? != id {
            return Err(StoreError::Invalid(format!(
                "update of {kind} {namespace}/{name} renamed it"
            ))
            .into());
        }
        check_uid(kind, &id, &obj, &old.object)?;
        Ok(self.persist(kind, obj, Some(old))?)
    }

    pub fn delete(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreError> {
        match self.load(kind, namespace, name)? {
            Some(old) => Ok(Some(self.remove(old)?)),
            None => Ok(None),
        }
    }
}

fn check_uid(kind: &str, id: &Identity, obj: &Value, old: &Value) -> Result<(), StoreError> {
    match (meta::field(obj, "uid"), meta::field(old, "uid")) {
        (Some(given), Some(stored)) if given != stored => Err(StoreError::UidMismatch {
            kind: kind.to_string(),
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            expected: given.to_string(),
            actual: stored.to_string(),
        }),
        _ => Ok(()),
    }
}

fn not_found(kind: &str, id: &Identity) -> StoreError {
    StoreError::NotFound {
        kind: kind.to_string(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
    }
}

fn already_exists(kind: &str, id: &Identity) -> StoreError {
    StoreError::AlreadyExists {
        kind: kind.to_string(),
        namespace: id.namespace.clone(),
        name: id.name.clone(),
    }
}
