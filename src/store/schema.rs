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
    // 2: the signed-in account and circles (see `session` and `group`). No secret is stored
    // here: the app password and tokens live in the OS keyring.
    "CREATE TABLE account (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        did TEXT NOT NULL,
        handle TEXT,
        pds TEXT NOT NULL,
        signed_in_at TEXT NOT NULL
    );
    CREATE TABLE contacts (
        did TEXT PRIMARY KEY,
        handle TEXT,
        source TEXT NOT NULL,
        added_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE policy_versions (
        uri TEXT NOT NULL,
        cid TEXT NOT NULL,
        author TEXT NOT NULL,
        record TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        PRIMARY KEY (uri, cid)
    ) WITHOUT ROWID;
    CREATE TABLE policies (
        uri TEXT PRIMARY KEY,
        author TEXT NOT NULL,
        latest_cid TEXT,
        checked_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE acks (
        uri TEXT PRIMARY KEY,
        member TEXT NOT NULL,
        policy_uri TEXT NOT NULL,
        cid TEXT NOT NULL,
        record TEXT NOT NULL,
        verified_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX acks_by_policy ON acks (policy_uri, member);
    CREATE TABLE answers (
        policy_uri TEXT NOT NULL,
        policy_cid TEXT NOT NULL,
        answer TEXT NOT NULL,
        ack_uri TEXT,
        at TEXT NOT NULL,
        PRIMARY KEY (policy_uri, policy_cid)
    ) WITHOUT ROWID;
    CREATE TABLE circle_subjects (
        policy_uri TEXT NOT NULL,
        did TEXT NOT NULL,
        added_repo INTEGER NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (policy_uri, did)
    ) WITHOUT ROWID;
    CREATE TABLE publications (
        collection TEXT NOT NULL,
        rkey TEXT NOT NULL,
        digest TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (collection, rkey)
    ) WITHOUT ROWID;
    CREATE TABLE size_estimates (
        did TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL,
        complete INTEGER NOT NULL,
        at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE group_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 3: peer verification (see `verify`): every result of every layer, the record
    // challenges this node issued and answered, the self-checks of its own copies, and the
    // holdings other nodes published (what they must still hold within the retention window).
    "CREATE TABLE verifications (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        verifier TEXT NOT NULL,
        target TEXT NOT NULL,
        subject TEXT NOT NULL,
        layer INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        latency_ms INTEGER,
        reason TEXT,
        via TEXT NOT NULL,
        policy_uri TEXT
    );
    CREATE INDEX verifications_by_copy ON verifications (target, subject, at);
    CREATE INDEX verifications_by_time ON verifications (at);
    CREATE TABLE challenges_issued (
        uri TEXT PRIMARY KEY,
        cid TEXT NOT NULL,
        target TEXT NOT NULL,
        subject TEXT NOT NULL,
        policy_uri TEXT,
        layer INTEGER NOT NULL,
        expected TEXT NOT NULL,
        issued_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        resolved_at TEXT,
        outcome TEXT,
        reason TEXT
    ) WITHOUT ROWID;
    CREATE TABLE challenges_answered (
        uri TEXT PRIMARY KEY,
        verifier TEXT NOT NULL,
        subject TEXT NOT NULL,
        response_uri TEXT,
        at TEXT NOT NULL,
        error TEXT
    ) WITHOUT ROWID;
    CREATE TABLE self_checks (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        did TEXT NOT NULL,
        blocks_checked INTEGER NOT NULL,
        bad_blocks INTEGER NOT NULL,
        missing_blocks INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        repaired INTEGER NOT NULL DEFAULT 0,
        detail TEXT
    );
    CREATE INDEX self_checks_by_did ON self_checks (did, at);
    CREATE TABLE holding_claims (
        node TEXT NOT NULL,
        subject TEXT NOT NULL,
        rev TEXT NOT NULL,
        data TEXT NOT NULL,
        first_seen_at TEXT NOT NULL,
        PRIMARY KEY (node, subject, rev)
    ) WITHOUT ROWID;",
    // 4: history that survives upstream loss (see `history`): the key that verified each
    // commit and the records it held, the identity last seen per account, when its PDS
    // stopped answering, and flags raised by upstream events (each keeps the last good state).
    "ALTER TABLE commits ADD COLUMN signing_key TEXT;
    ALTER TABLE commits ADD COLUMN records INTEGER;
    CREATE INDEX commits_by_time ON commits (repo_id, synced_at);
    ALTER TABLE repos ADD COLUMN signing_key TEXT;
    ALTER TABLE repos ADD COLUMN unreachable_since TEXT;
    CREATE TABLE upstream_flags (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detected_at TEXT NOT NULL,
        detail TEXT NOT NULL,
        good_rev TEXT,
        cleared_at TEXT
    );
    CREATE INDEX upstream_flags_by_repo ON upstream_flags (repo_id, cleared_at);",
    // 5: the kind of a failed sync beside its message (`sync::FailureKind`), so screens act on
    // a code and never search the words.
    "ALTER TABLE repos ADD COLUMN error_code TEXT;",
    // 6: a blob that could not be fetched or failed to verify is tried again on later syncs,
    // less and less often (see `sync::blobs`).
    "ALTER TABLE blobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE blobs ADD COLUMN retry_at TEXT;",
    // 7: the blobs the records name, as they name them: the type each reference declares (what
    // `serve` answers `getBlob` with) and the newest revision that wrote a reference to it
    // (`listBlobs?since=`). Filled by ingest from the records it verifies.
    "CREATE TABLE blob_refs (
        repo_id INTEGER NOT NULL,
        cid TEXT NOT NULL,
        mime TEXT,
        rev TEXT NOT NULL,
        PRIMARY KEY (repo_id, cid)
    ) WITHOUT ROWID;",
    // 8: the event streams followed (`follow`): per host, the cursor a reconnection resumes
    // after, and the connection's state.
    "CREATE TABLE follow_hosts (
        host TEXT PRIMARY KEY,
        cursor INTEGER,
        state TEXT NOT NULL,
        since TEXT NOT NULL,
        last_event_at TEXT,
        error TEXT
    );",
    // 9: a copy brought up to date from a friend's node while the account's server could not
    // serve it (`sync::peers`): which node (its account's DID) and when. Cleared by the next
    // backup from the server.
    "ALTER TABLE repos ADD COLUMN caught_up_from TEXT;
    ALTER TABLE repos ADD COLUMN caught_up_at TEXT;",
    // 10: what a failed whole-copy check (layer 2) found a copy lacks: records and bytes
    // (`verify::whole`), published beside the result and shown per copy.
    "ALTER TABLE verifications ADD COLUMN needs_records INTEGER;
    ALTER TABLE verifications ADD COLUMN needs_bytes INTEGER;",
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
        if i + 1 == BLOB_REFS_VERSION {
            fill_blob_refs(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version that adds `blob_refs`.
const BLOB_REFS_VERSION: usize = 7;

/// Fills `blob_refs` from the records a store already holds (once, on upgrade): each blob a
/// current record names, with its declared type, at the account's held revision (the revision
/// that wrote it is not known any more; a later one only makes `listBlobs?since=` say more).
fn fill_blob_refs(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let mut read = tx.prepare(
        "SELECT r.repo_id, b.data, coalesce(p.rev, '') FROM records r
         JOIN repos p ON p.id = r.repo_id
         JOIN blocks b ON b.repo_id = r.repo_id AND b.cid = r.cid",
    )?;
    let mut put = tx.prepare(
        "INSERT INTO blob_refs (repo_id, cid, mime, rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo_id, cid) DO UPDATE SET mime = coalesce(excluded.mime, blob_refs.mime)",
    )?;
    let mut rows = read.query([])?;
    while let Some(row) = rows.next()? {
        let data: Vec<u8> = row.get(1)?;
        for (cid, mime) in crate::repo::record::blobs_named_in(&data) {
            put.execute(rusqlite::params![
                row.get::<_, i64>(0)?,
                cid,
                mime,
                row.get::<_, String>(2)?
            ])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_made_before_blob_refs_gets_them_from_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let mut conn = Connection::open(&path).unwrap();
        // A store as version 6 left it, holding one record that names a blob and one that
        // names none.
        for sql in &MIGRATIONS[..BLOB_REFS_VERSION - 1] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", (BLOB_REFS_VERSION - 1) as i64)
            .unwrap();
        conn.execute(
            "INSERT INTO repos (id, did, added_at, rev) VALUES (1, 'did:plc:x', 'now', 'rev1')",
            [],
        )
        .unwrap();
        let blob = crate::repo::cid_for(crate::repo::RAW, b"picture").to_string();
        let records = [
            serde_json::json!({"$type": "app.bsky.actor.profile",
                "avatar": {"$type": "blob", "ref": {"$link": blob}, "mimeType": "image/jpeg", "size": 7}}),
            serde_json::json!({"$type": "app.bsky.feed.like", "subject": "x"}),
        ];
        for (i, record) in records.iter().enumerate() {
            let bytes = serde_ipld_dagcbor::to_vec(record).unwrap();
            let cid = crate::repo::cid_for_cbor(&bytes).to_bytes();
            conn.execute(
                "INSERT INTO blocks (repo_id, cid, data) VALUES (1, ?1, ?2)",
                rusqlite::params![cid, bytes],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (1, 'c', ?1, ?2)",
                rusqlite::params![i.to_string(), cid],
            )
            .unwrap();
        }
        migrate(&mut conn, &path).unwrap();
        let refs: Vec<(String, Option<String>, String)> = conn
            .prepare("SELECT cid, mime, rev FROM blob_refs")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(refs, [(blob, Some("image/jpeg".into()), "rev1".into())]);
    }
}
