//! Applying verified commits to the store: each becomes a kept version (a `commits` row),
//! exactly as a polled sync of the same commit would leave it.
//!
//! Many commits go in one transaction ([`apply_checked`]): each is checked against the held
//! state as the transaction sees it (so the second commit of an account chains onto the
//! first one of the same batch), and written only once verified. A refused commit writes
//! nothing and does not stop the others; the commits after it of the same account are then
//! refused too (they no longer chain), and the copy held stays the last verified one. Only a
//! failure of the store itself rolls the whole batch back.
//!
//! What is written: the commit block, the new tree's nodes and the new records (the blocks
//! the verification used, not whatever else the CAR carried), the `records` rows the
//! changes name, the blobs new records name (`blob_refs`), the repo's head, and the kept
//! version with the key that verified it (a new key raises the same flag as a polled sync).

use std::collections::HashMap;

use cid::Cid;
use rusqlite::{Connection, OptionalExtension, Transaction};

use super::frame::CommitEvent;
use super::verify::{
    self, Held, HeldKey, ReadError, Refusal, RefusalKind, Signed, Verdict, Verified,
};
use crate::export::StoreSource;
use crate::repo::mst::{BlockSource, Change, MstError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A commit event after the first stage of verification (see [`verify::check_signed`]),
/// with what a refusal must name.
#[derive(Clone, Debug)]
pub struct Checked {
    pub seq: i64,
    pub did: String,
    pub signed: Result<Box<Signed>, Refusal>,
}

/// The first stage, on any thread: the event on its own against the account's key.
pub fn check(event: CommitEvent, key: &HeldKey) -> Checked {
    let (seq, did) = (event.seq, event.repo.clone());
    Checked {
        seq,
        did,
        signed: verify::check_signed(event, key).map(Box::new),
    }
}

/// A commit written as a kept version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub seq: i64,
    pub did: String,
    pub rev: String,
    pub commit: String,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Records held after this commit.
    pub records: i64,
    pub blocks_added: u64,
}

/// What became of one commit event.
#[derive(Clone, Debug)]
pub enum Outcome {
    Applied(Applied),
    Refused {
        seq: i64,
        did: String,
        refusal: Refusal,
    },
}

impl Outcome {
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Applied(_) => None,
            Self::Refused { refusal, .. } => Some(refusal),
        }
    }
}

/// Verifies one commit event and, when it holds, writes it (one transaction).
pub fn apply_commit(
    conn: &mut Connection,
    event: CommitEvent,
    key: &HeldKey,
) -> Result<Outcome, ApplyError> {
    let mut outcomes = apply_checked(conn, vec![check(event, key)])?;
    outcomes.pop().ok_or_else(|| {
        ApplyError::Read(ReadError("the batch gave no outcome for its commit".into()))
    })
}

/// The second stage and the writes of a batch, in one transaction, in order: one outcome per
/// commit.
pub fn apply_checked(
    conn: &mut Connection,
    batch: Vec<Checked>,
) -> Result<Vec<Outcome>, ApplyError> {
    let tx = conn.transaction()?;
    let mut cache = ReadCache::default();
    let mut outcomes = Vec::with_capacity(batch.len());
    for checked in batch {
        let (seq, did) = (checked.seq, checked.did);
        let refused = |refusal| Outcome::Refused {
            seq,
            did: did.clone(),
            refusal,
        };
        let signed = match checked.signed {
            Ok(signed) => *signed,
            Err(refusal) => {
                outcomes.push(refused(refusal));
                continue;
            }
        };
        let Some(row) = held_row(&tx, &did)? else {
            outcomes.push(refused(Refusal {
                kind: RefusalKind::NotHeld,
                words: format!("{did} is not backed up here"),
            }));
            continue;
        };
        let mut source = cache.source(&tx, row.id);
        match verify::check_chain(signed, &row.held, &mut source)? {
            Verdict::Refused(refusal) => outcomes.push(refused(refusal)),
            Verdict::Verified(verified) => {
                outcomes.push(Outcome::Applied(write(&tx, &row, &verified)?));
                // Held now: the account's next commit reads them as its old tree.
                let Verified { nodes, .. } = *verified;
                cache.keep(row.id, nodes.into_iter().skip(1));
            }
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

/// The most bytes of held blocks a [`ReadCache`] keeps (in two generations of half this).
const READ_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Held blocks read once for many commits: the subtrees beside a change are the same for
/// every commit of an account, so each is read from SQLite once, and the nodes a commit wrote
/// are its next commit's old tree. Keyed by account too: a block counts for an account only
/// if that account holds it. Bounded: when the recent generation is full it becomes the old
/// one, and what was older is dropped (a block used again is carried forward).
#[derive(Default)]
pub(crate) struct ReadCache {
    recent: HashMap<(i64, Cid), Vec<u8>>,
    older: HashMap<(i64, Cid), Vec<u8>>,
    bytes: usize,
}

impl ReadCache {
    /// Notes blocks of an account that are held (written in this transaction).
    fn keep(&mut self, repo_id: i64, blocks: impl Iterator<Item = (Cid, Vec<u8>)>) {
        for (cid, bytes) in blocks {
            self.insert((repo_id, cid), bytes);
        }
    }

    fn insert(&mut self, key: (i64, Cid), bytes: Vec<u8>) {
        if self.bytes + bytes.len() > READ_CACHE_BYTES / 2 {
            self.older = std::mem::take(&mut self.recent);
            self.bytes = 0;
        }
        self.bytes += bytes.len();
        self.recent.insert(key, bytes);
    }

    fn get(&mut self, key: &(i64, Cid)) -> Option<Vec<u8>> {
        if let Some(bytes) = self.recent.get(key) {
            return Some(bytes.clone());
        }
        let bytes = self.older.remove(key)?;
        self.insert(*key, bytes.clone());
        Some(bytes)
    }

    pub(crate) fn source<'a>(&'a mut self, conn: &'a Connection, repo_id: i64) -> CachedSource<'a> {
        CachedSource {
            cache: self,
            store: StoreSource { conn, repo_id },
        }
    }
}

/// One account's held blocks, through a [`ReadCache`].
pub(crate) struct CachedSource<'a> {
    cache: &'a mut ReadCache,
    store: StoreSource<'a>,
}

impl BlockSource for CachedSource<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        let key = (self.store.repo_id, *cid);
        if let Some(bytes) = self.cache.get(&key) {
            return Ok(Some(bytes));
        }
        let found = self.store.get_block(cid)?;
        if let Some(bytes) = &found {
            self.cache.insert(key, bytes.clone());
        }
        Ok(found)
    }
}

/// The account's row as the transaction sees it.
struct HeldRow {
    id: i64,
    held: Held,
    records: i64,
}

fn held_row(conn: &Connection, did: &str) -> rusqlite::Result<Option<HeldRow>> {
    let cid = |b: Option<Vec<u8>>| b.and_then(|b| Cid::try_from(b.as_slice()).ok());
    let mut stmt =
        conn.prepare_cached("SELECT id, head, rev, data, records FROM repos WHERE did = ?1")?;
    stmt.query_row([did], |r| {
        Ok(HeldRow {
            id: r.get(0)?,
            held: Held {
                head: cid(r.get(1)?),
                rev: r.get(2)?,
                data: cid(r.get(3)?),
            },
            records: r.get(4)?,
        })
    })
    .optional()
}

/// Counts of one commit's writes.
#[derive(Default)]
struct Written {
    creates: u64,
    updates: u64,
    deletes: u64,
    /// Rows added minus rows removed, as the statements report them.
    rows_delta: i64,
    blocks_added: u64,
    bytes_added: u64,
}

fn write(tx: &Transaction<'_>, row: &HeldRow, v: &Verified) -> Result<Applied, ApplyError> {
    let mut w = Written::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO blocks (repo_id, cid, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo_id, cid) DO NOTHING",
        )?;
        for (cid, data) in v.nodes.iter().map(|(c, d)| (c, d)).chain(v.records.iter()) {
            if insert.execute(rusqlite::params![row.id, cid.to_bytes(), data])? == 1 {
                w.blocks_added += 1;
                w.bytes_added += data.len() as u64;
            }
        }
    }
    write_records(tx, row.id, v, &mut w)?;
    let records = row.records + w.rows_delta;
    crate::sync::kept::keep(
        tx,
        &crate::sync::kept::Version {
            repo_id: row.id,
            commit: &v.commit_cid,
            rev: &v.rev,
            data: &v.data,
            records,
            creates: w.creates,
            updates: w.updates,
            deletes: w.deletes,
            blocks_added: w.blocks_added,
            bytes_added: w.bytes_added,
            key: &v.signing_key,
            held_rev: row.held.rev.as_deref(),
        },
    )?;
    Ok(Applied {
        seq: v.seq,
        did: v.did.clone(),
        rev: v.rev.clone(),
        commit: v.commit_cid.to_string(),
        creates: w.creates,
        updates: w.updates,
        deletes: w.deletes,
        records,
        blocks_added: w.blocks_added,
    })
}

/// The `records` rows (and the blobs new records name) of the verified changes.
fn write_records(
    tx: &Transaction<'_>,
    repo_id: i64,
    v: &Verified,
    w: &mut Written,
) -> Result<(), ApplyError> {
    let mut rows = crate::sync::kept::RecordRows::new(tx)?;
    for change in &v.changes {
        let (key, cid, created) = match change {
            Change::Create { key, cid } => (key, Some(cid), true),
            Change::Update { key, cid, .. } => (key, Some(cid), false),
            Change::Delete { key, .. } => (key, None, false),
        };
        let text = String::from_utf8_lossy(key);
        let (collection, rkey) = text.split_once('/').unwrap_or((&text, ""));
        let Some(cid) = cid else {
            w.rows_delta -= rows.remove(repo_id, collection, rkey)?;
            w.deletes += 1;
            continue;
        };
        if let Some(bytes) = v.records.get(cid) {
            let refs = crate::sync::blobrefs::named_in(bytes);
            if !refs.is_empty() {
                crate::sync::blobrefs::note(tx, repo_id, &v.rev, &refs)?;
            }
        }
        // The change's kind decides which of insert and update is tried first.
        w.rows_delta += rows.set(repo_id, collection, rkey, cid, created)?;
        if created {
            w.creates += 1;
        } else {
            w.updates += 1;
        }
    }
    Ok(())
}
