//! Writing a verified commit as the account's head and a kept version: the one writer that a
//! polled sync (`ingest`) and the event stream (`crate::firehose::apply`) both use, once the
//! blocks and `records` rows of the commit are in place in their transaction.

use cid::Cid;
use rusqlite::Transaction;

use crate::store::StoreError;

/// A verified commit, as the store keeps it.
pub(crate) struct Version<'a> {
    pub repo_id: i64,
    pub commit: &'a Cid,
    pub rev: &'a str,
    /// The commit's record tree.
    pub data: &'a Cid,
    /// Records held after it.
    pub records: i64,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub blocks_added: u64,
    pub bytes_added: u64,
    /// The key that verified it (`did:key`).
    pub key: &'a str,
    /// The revision held before it (the state a new key's flag keeps).
    pub held_rev: Option<&'a str>,
}

/// Moves the account's head to `v`, keeps it as a version, and flags a new signing key.
pub(crate) fn keep(tx: &Transaction<'_>, v: &Version<'_>) -> Result<(), StoreError> {
    let now = crate::store::now_text();
    tx.prepare_cached(
        "UPDATE repos SET head = ?2, rev = ?3, data = ?4, records = ?5,
            blocks = blocks + ?6, bytes = bytes + ?7,
            state = 'synced', error = NULL, error_code = NULL, last_sync_at = ?8, last_attempt_at = ?8
         WHERE id = ?1",
    )?
    .execute(rusqlite::params![
        v.repo_id,
        v.commit.to_bytes(),
        v.rev,
        v.data.to_bytes(),
        v.records,
        v.blocks_added as i64,
        v.bytes_added as i64,
        now
    ])?;
    tx.prepare_cached(
        "INSERT INTO commits (repo_id, rev, cid, data, synced_at, creates, updates, deletes,
           signing_key, records)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (repo_id, rev) DO NOTHING",
    )?
    .execute(rusqlite::params![
        v.repo_id,
        v.rev,
        v.commit.to_bytes(),
        v.data.to_bytes(),
        now,
        v.creates as i64,
        v.updates as i64,
        v.deletes as i64,
        v.key,
        v.records
    ])?;
    let old_key: Option<String> = tx
        .prepare_cached("SELECT signing_key FROM repos WHERE id = ?1")?
        .query_row([v.repo_id], |r| r.get(0))?;
    if old_key.as_deref() != Some(v.key) {
        super::loss::observe_new_key(tx, v.repo_id, old_key.as_deref(), v.key, v.held_rev)?;
        tx.prepare_cached("UPDATE repos SET signing_key = ?2 WHERE id = ?1")?
            .execute(rusqlite::params![v.repo_id, v.key])?;
    }
    Ok(())
}

/// The `records` rows a commit's changes set or remove, for ingest and the event stream alike.
/// Counts come from what the statements did, so a row already there (or already gone) does
/// not throw the held count off.
pub(crate) struct RecordRows<'c> {
    insert: rusqlite::CachedStatement<'c>,
    update: rusqlite::CachedStatement<'c>,
    delete: rusqlite::CachedStatement<'c>,
}

impl<'c> RecordRows<'c> {
    pub(crate) fn new(conn: &'c rusqlite::Connection) -> rusqlite::Result<Self> {
        Ok(Self {
            insert: conn.prepare_cached(
                "INSERT INTO records (repo_id, collection, rkey, cid) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (repo_id, collection, rkey) DO NOTHING",
            )?,
            update: conn.prepare_cached(
                "UPDATE records SET cid = ?4 WHERE repo_id = ?1 AND collection = ?2 AND rkey = ?3",
            )?,
            delete: conn.prepare_cached(
                "DELETE FROM records WHERE repo_id = ?1 AND collection = ?2 AND rkey = ?3",
            )?,
        })
    }

    /// Points `collection/rkey` at `cid` (insert or update, whichever the row needs;
    /// `created` says which is tried first). Returns the rows added (0 or 1).
    pub(crate) fn set(
        &mut self,
        repo_id: i64,
        collection: &str,
        rkey: &str,
        cid: &Cid,
        created: bool,
    ) -> rusqlite::Result<i64> {
        let row = rusqlite::params![repo_id, collection, rkey, cid.to_bytes()];
        if created {
            if self.insert.execute(row)? == 0 {
                self.update.execute(row)?;
                return Ok(0);
            }
            return Ok(1);
        }
        if self.update.execute(row)? == 0 {
            self.insert.execute(row)?;
            return Ok(1);
        }
        Ok(0)
    }

    /// Removes `collection/rkey`; returns the rows removed (0 or 1).
    pub(crate) fn remove(
        &mut self,
        repo_id: i64,
        collection: &str,
        rkey: &str,
    ) -> rusqlite::Result<i64> {
        Ok(self
            .delete
            .execute(rusqlite::params![repo_id, collection, rkey])? as i64)
    }
}
