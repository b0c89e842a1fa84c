//! Schema and migrations, versioned by `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema one version up; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: repos, their blocks, current records, commit history, blobs.
    "CREATE TABLE repos (
        id INTEGER PRIMARY KEY,
        did TEXT NOT NULL UNIQUE,
        handle TEXT,
        pds TEXT,
        added_at TEXT NOT NULL,
        head BLOB,
        rev TEXT,
        data BLOB,
        records INTEGER NOT NULL DEFAULT 0,
        blocks INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        last_sync_at TEXT,
        last_attempt_at TEXT,
        upstream_status TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        error TEXT
    );
    CREATE TABLE blocks (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL,
        cid BLOB NOT NULL,
        data BLOB NOT NULL
    );
    CREATE UNIQUE INDEX blocks_by_cid ON blocks (repo_id, cid);
    CREATE TABLE records (
        repo_id INTEGER NOT NULL,
        collection TEXT NOT NULL,
        rkey TEXT NOT NULL,
        cid BLOB NOT NULL,
        PRIMARY KEY (repo_id, collection, rkey)
    ) WITHOUT ROWID;
    CREATE TABLE commits (
        repo_id INTEGER NOT NULL,
        rev TEXT NOT NULL,
        cid BLOB NOT NULL,
        data BLOB NOT NULL,
        synced_at TEXT NOT NULL,
        creates INTEGER NOT NULL,
        updates INTEGER NOT NULL,
        deletes INTEGER NOT NULL,
        PRIMARY KEY (repo_id, rev)
    ) WITHOUT ROWID;
    CREATE TABLE blobs (
        repo_id INTEGER NOT NULL,
        cid TEXT NOT NULL,
        state TEXT NOT NULL,
        size INTEGER,
        error TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (repo_id, cid)
    ) WITHOUT ROWID;",
];

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
