//! Opening the file: pragmas and migrations.
use std::path::Path;

use rusqlite::Connection;

use super::{pod, store};
use crate::store::schema::migrate_with;
use crate::store::{DB_FILE, SCHEMA_VERSION, Store, StoreError};

fn user_version(conn: &Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |row| row.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[test]
fn connections_run_in_wal_with_normal_sync_and_foreign_keys() {
    let (_dir, store) = store();
    let conn = store.lock();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .unwrap();
    assert_eq!(synchronous, 1, "NORMAL");
    let foreign_keys: bool = conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(foreign_keys);
    assert_eq!(user_version(&conn), SCHEMA_VERSION);
}

#[test]
fn reopening_keeps_data_and_does_not_migrate_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    let created = Store::open_in(&data_dir)
        .unwrap()
        .create("Pod", &pod("default", "web", &[]))
        .unwrap();
    assert!(data_dir.join(DB_FILE).is_file());
    for _ in 0..3 {
        let store = Store::open_in(&data_dir).unwrap();
        assert_eq!(
            store.get("Pod", "default", "web").unwrap(),
            Some(created.clone())
        );
        assert_eq!(store.current_resource_version().unwrap(), 1);
        assert_eq!(user_version(&store.lock()), SCHEMA_VERSION);
    }
}

#[test]
fn a_file_from_a_newer_edgepod_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    match Store::open(&path) {
        Err(StoreError::SchemaTooNew {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn each_migration_applies_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut conn = Connection::open(&path).unwrap();
    let good = "CREATE TABLE a (x INTEGER);";
    let broken = "CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);";
    assert!(migrate_with(&mut conn, Path::new("m.db"), &[good, broken]).is_err());
    assert_eq!(user_version(&conn), 1);
    assert!(has_table(&conn, "a"));
    assert!(
        !has_table(&conn, "b"),
        "the failed migration left a table behind"
    );

    let fixed = "CREATE TABLE b (x INTEGER);";
    migrate_with(&mut conn, Path::new("m.db"), &[good, fixed]).unwrap();
    assert_eq!(user_version(&conn), 2);
    assert!(has_table(&conn, "b"));
    // Already at the latest version: nothing runs, so a non-idempotent migration is harmless.
    migrate_with(&mut conn, Path::new("m.db"), &[good, fixed]).unwrap();
    assert_eq!(user_version(&conn), 2);
}

#[test]
fn open_in_reports_a_data_dir_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("occupied");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(matches!(
        Store::open_in(&file.join("data")),
        Err(StoreError::Io { .. })
    ));
}
