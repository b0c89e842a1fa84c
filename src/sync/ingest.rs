//! Ingest: one CAR into the store, in one transaction.
//!
//! Blocks are hashed as they stream in and written to `blocks`; then the commit
//! is checked (DID, version, rev order, signature) and the new record tree is
//! diffed against the stored one, which validates every new node and proves
//! every record is present. Only then do `records` and the repo's head change,
//! and the transaction commits. Any failure rolls everything back: the previous
//! good copy is untouched.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use cid::Cid;
use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::crypto::{PublicKey, SignatureError};
use crate::repo::car::{CarError, CarReader};
use crate::repo::commit::{Commit, CommitError};
use crate::repo::mst::{self, BlockSource, Change, MstError};
use crate::repo::{digest_key, tid};

/// How far in the future a commit's rev may claim to be.
const MAX_REV_SKEW_MICROS: u64 = 10 * 60 * 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Car(#[from] CarError),
    #[error("the CAR has no root: it does not name a commit")]
    NoRoot,
    #[error("the commit block {0} named by the CAR is not in it")]
    MissingCommit(String),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("the commit is for {found}, not {expected}")]
    WrongDid { expected: String, found: String },
    #[error("the commit's signature is invalid: {0}")]
    Signature(#[from] SignatureError),
    #[error("the server sent revision {found}, which is not newer than the copy already held ({held}); keeping the held copy")]
    StaleRev { found: String, held: String },
    #[error("the commit's revision {0} claims a time in the future")]
    FutureRev(String),
    #[error("the record tree is invalid: {0}")]
    Mst(#[from] MstError),
    #[error("record {key} ({cid}) is missing: the repository is incomplete")]
    MissingRecord { key: String, cid: String },
    #[error("the account is not in the store")]
    UnknownRepo,
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(Box<crate::store::StoreError>),
}

impl IngestError {
    /// A `since` CAR that lacks blocks may be fixed by fetching the whole repo.
    pub fn is_incomplete(&self) -> bool {
        matches!(
            self,
            Self::Mst(MstError::MissingBlock(_)) | Self::MissingRecord { .. }
        )
    }
}

/// What one ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestOutcome {
    pub commit: String,
    pub rev: String,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub blocks_added: u64,
    pub bytes_added: u64,
    pub records: i64,
    pub nodes_validated: u64,
}

/// Progress reported while ingesting.
#[derive(Clone, Copy, Debug)]
pub enum IngestProgress {
    Blocks { blocks: u64, bytes: u64 },
    Verifying,
}

/// MST node blocks of this CAR, in memory; everything else from the store.
struct Source<'a> {
    nodes: &'a HashMap<[u8; 32], Vec<u8>>,
    tx: &'a Transaction<'a>,
    repo_id: i64,
}

impl BlockSource for Source<'_> {
    fn get_block(&mut self, cid: &Cid) -> Result<Option<Vec<u8>>, MstError> {
        if let Some(bytes) = self.nodes.get(&digest_key(cid)) {
            return Ok(Some(bytes.clone()));
        }
        let mut stmt = self
            .tx
            .prepare_cached("SELECT data FROM blocks WHERE repo_id = ?1 AND cid = ?2")
            .map_err(|e| MstError::Source(e.to_string()))?;
        stmt.query_row(rusqlite::params![self.repo_id, cid.to_bytes()], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| MstError::Source(e.to_string()))
    }
}

/// Does this DAG-CBOR block start like an MST node (`{"e": …, "l": …}`)?
fn looks_like_node(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xa2, 0x61, b'e'])
}

/// Ingests the CAR in `reader` for `did`, signed by `key`.
pub fn ingest_car(
    conn: &mut Connection,
    did: &str,
    key: &PublicKey,
    reader: impl Read,
    progress: &mut dyn FnMut(IngestProgress),
) -> Result<IngestOutcome, IngestError> {
    ingest(conn, did, key, reader, progress, false)
}

/// Ingests a whole repo (a `getRepo` answer without `since`) over the copy held,
/// to repair it: the commit may be the one already held (same rev and CID; an
/// older one is still refused), the whole tree is validated and every record
/// proven present as for a first sync, the missing blocks are added, `records`
/// is rebuilt from the tree and the repo's block counters recounted, all in one
/// transaction. A commit already in `commits` is not inserted again.
pub fn reingest_full_car(
    conn: &mut Connection,
    did: &str,
    key: &PublicKey,
    reader: impl Read,
    progress: &mut dyn FnMut(IngestProgress),
) -> Result<IngestOutcome, IngestError> {
    ingest(conn, did, key, reader, progress, true)
}

fn ingest(
    conn: &mut Connection,
    did: &str,
    key: &PublicKey,
    reader: impl Read,
    progress: &mut dyn FnMut(IngestProgress),
    full: bool,
) -> Result<IngestOutcome, IngestError> {
    let started = std::time::Instant::now();
    let tx = conn.transaction()?;
    #[allow(clippy::type_complexity)]
    let (repo_id, held_head, held_rev, held_data, held_records): (
        i64,
        Option<Vec<u8>>,
        Option<String>,
        Option<Vec<u8>>,
        i64,
    ) = tx
        .query_row(
            "SELECT id, head, rev, data, records FROM repos WHERE did = ?1",
            [did],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?
        .ok_or(IngestError::UnknownRepo)?;
    let held_data = held_data.and_then(|b| Cid::try_from(b.as_slice()).ok());

    let mut car = CarReader::new(reader)?;
    let root = *car.roots().first().ok_or(IngestError::NoRoot)?;
    let mut nodes: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
    let mut present: HashSet<[u8; 32]> = HashSet::new();
    // Records that name blobs, with the blobs they name (most records name none).
    let mut named: HashMap<[u8; 32], Vec<(String, Option<String>)>> = HashMap::new();
    let mut commit_bytes: Option<Vec<u8>> = None;
    let mut outcome = IngestOutcome::default();
    let (mut seen_blocks, mut seen_bytes) = (0u64, 0u64);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO blocks (repo_id, cid, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (repo_id, cid) DO NOTHING",
        )?;
        while let Some((cid, data)) = car.next_block()? {
            let digest = digest_key(&cid);
            if cid == root {
                commit_bytes = Some(data.to_vec());
            } else if looks_like_node(data) {
                nodes.insert(digest, data.to_vec());
            } else {
                let refs = super::blobrefs::named_in(data);
                if !refs.is_empty() {
                    named.insert(digest, refs);
                }
            }
            present.insert(digest);
            if insert.execute(rusqlite::params![repo_id, cid.to_bytes(), data])? == 1 {
                outcome.blocks_added += 1;
                outcome.bytes_added += data.len() as u64;
            }
            seen_blocks += 1;
            seen_bytes += data.len() as u64;
            if seen_blocks % 20_000 == 0 {
                progress(IngestProgress::Blocks {
                    blocks: seen_blocks,
                    bytes: seen_bytes,
                });
            }
        }
    }
    progress(IngestProgress::Verifying);
    let streamed = started.elapsed();

    let commit_bytes = commit_bytes.ok_or_else(|| IngestError::MissingCommit(root.to_string()))?;
    let commit = Commit::decode(&commit_bytes)?;
    if commit.did != did {
        return Err(IngestError::WrongDid {
            expected: did.to_string(),
            found: commit.did,
        });
    }
    if let Some(held) = &held_rev {
        // A repair may re-ingest exactly the commit held.
        let same_commit = full
            && commit.rev.as_str() == held.as_str()
            && held_head.as_deref() == Some(root.to_bytes().as_slice());
        if commit.rev.as_str() <= held.as_str() && !same_commit {
            return Err(IngestError::StaleRev {
                found: commit.rev,
                held: held.clone(),
            });
        }
    }
    let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
    if tid::timestamp_micros(&commit.rev).unwrap_or(0) > now + MAX_REV_SKEW_MICROS {
        return Err(IngestError::FutureRev(commit.rev));
    }
    commit.verify_signature(key)?;

    let (mut creates, mut updates, mut deletes) = (0u64, 0u64, 0u64);
    if full {
        // The held tree may be damaged: `records` is rebuilt from the new tree alone,
        // with changes counted against the rows held (keys seen go to a temp table).
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS reingest_seen (
               collection TEXT NOT NULL, rkey TEXT NOT NULL, PRIMARY KEY (collection, rkey)
             ) WITHOUT ROWID;
             DELETE FROM temp.reingest_seen;",
        )?;
    }
    let old_tree = if full { None } else { held_data };
    // Rows added minus rows removed, as the statements report them (so a row already there
    // or already gone does not throw the count off).
    let mut rows_delta = 0i64;
    let stats = {
        let mut source = Source {
            nodes: &nodes,
            tx: &tx,
            repo_id,
        };
        let mut rows = super::kept::RecordRows::new(&tx)?;
        let mut exists =
            tx.prepare_cached("SELECT 1 FROM blocks WHERE repo_id = ?1 AND cid = ?2")?;
        let mut held_cid = tx.prepare_cached(
            "SELECT cid FROM records WHERE repo_id = ?1 AND collection = ?2 AND rkey = ?3",
        )?;
        let mut seen = match full {
            true => Some(tx.prepare_cached(
                "INSERT OR IGNORE INTO temp.reingest_seen (collection, rkey) VALUES (?1, ?2)",
            )?),
            false => None,
        };
        let mut apply = |change: Change| -> Result<(), IngestError> {
            let (key, cid) = match &change {
                Change::Create { key, cid } | Change::Update { key, cid, .. } => (key, Some(cid)),
                Change::Delete { key, .. } => (key, None),
            };
            let text = String::from_utf8_lossy(key);
            let (collection, rkey) = text.split_once('/').unwrap_or((&text, ""));
            match cid {
                Some(cid) => {
                    let held = present.contains(&digest_key(cid))
                        || exists.exists(rusqlite::params![repo_id, cid.to_bytes()])?;
                    if !held {
                        return Err(IngestError::MissingRecord {
                            key: text.into_owned(),
                            cid: cid.to_string(),
                        });
                    }
                    if let Some(refs) = named.get(&digest_key(cid)) {
                        super::blobrefs::note(&tx, repo_id, &commit.rev, refs)?;
                    }
                    let mut created = matches!(change, Change::Create { .. });
                    if let Some(seen) = seen.as_mut() {
                        // Against the empty tree every key comes as a create.
                        seen.execute(rusqlite::params![collection, rkey])?;
                        let held: Option<Vec<u8>> = held_cid
                            .query_row(rusqlite::params![repo_id, collection, rkey], |r| r.get(0))
                            .optional()?;
                        match held {
                            Some(held) if held == cid.to_bytes() => return Ok(()),
                            Some(_) => created = false,
                            None => {}
                        }
                    }
                    // The diff's word decides which of insert and update is tried first.
                    rows_delta += rows.set(repo_id, collection, rkey, cid, created)?;
                    if created {
                        creates += 1;
                    } else {
                        updates += 1;
                    }
                }
                None => {
                    rows_delta -= rows.remove(repo_id, collection, rkey)?;
                    deletes += 1;
                }
            }
            Ok(())
        };
        mst::diff(&mut source, old_tree, commit.data, &mut apply)?
    };
    if full {
        deletes += tx.execute(
            "DELETE FROM records WHERE repo_id = ?1 AND NOT EXISTS (
               SELECT 1 FROM temp.reingest_seen s
               WHERE s.collection = records.collection AND s.rkey = records.rkey)",
            [repo_id],
        )? as u64;
        tx.execute("DELETE FROM temp.reingest_seen", [])?;
    }

    let walked = started.elapsed();
    let records: i64 = if old_tree.is_some() {
        // An incremental ingest: the count held, moved by the rows this diff added and
        // removed. Counting the rows would cost time in proportion to the repo, not the diff.
        held_records + rows_delta
    } else {
        // A first sync or a repair walked the whole tree: counting is cheap beside that, and
        // a repair must not trust the count held.
        tx.query_row(
            "SELECT count(*) FROM records WHERE repo_id = ?1",
            [repo_id],
            |r| r.get(0),
        )?
    };
    if full {
        // Rows may have been lost or removed since they were counted: count them again.
        tx.execute(
            "UPDATE repos SET
               blocks = (SELECT count(*) FROM blocks WHERE repo_id = ?1) - ?2,
               bytes = (SELECT coalesce(sum(length(data)), 0) FROM blocks WHERE repo_id = ?1) - ?3
             WHERE id = ?1",
            rusqlite::params![
                repo_id,
                outcome.blocks_added as i64,
                outcome.bytes_added as i64
            ],
        )?;
    }
    let key_text = key.to_did_key();
    super::kept::keep(
        &tx,
        &super::kept::Version {
            repo_id,
            commit: &root,
            rev: &commit.rev,
            data: &commit.data,
            records,
            creates,
            updates,
            deletes,
            blocks_added: outcome.blocks_added,
            bytes_added: outcome.bytes_added,
            key: &key_text,
            held_rev: held_rev.as_deref(),
        },
    )
    .map_err(|e| IngestError::Store(Box::new(e)))?;
    tx.commit()?;
    tracing::debug!(
        did,
        ?streamed,
        ?walked,
        committed = ?started.elapsed(),
        "ingest phases (cumulative)"
    );
    Ok(IngestOutcome {
        commit: root.to_string(),
        rev: commit.rev,
        creates,
        updates,
        deletes,
        records,
        nodes_validated: stats.new_nodes_read,
        ..outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigningKey;
    use crate::repo::build::{BuiltRepo, RepoBuilder};

    const DID: &str = "did:plc:countcountcountcountcoun";

    struct Fixture {
        _dir: tempfile::TempDir,
        conn: Connection,
        key: PublicKey,
        repo: RepoBuilder,
        built: BuiltRepo,
        rev: u64,
    }

    impl Fixture {
        fn new(records: usize) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p2pds.sqlite");
            let mut conn = Connection::open(&path).unwrap();
            crate::store::schema::migrate(&mut conn, &path).unwrap();
            crate::store::add_repo(&conn, DID, None, None).unwrap();
            let signing = SigningKey::generate_k256();
            let key = signing.public_key();
            let mut repo = RepoBuilder::new(DID, signing);
            for i in 0..records {
                repo.put_json("app.test.post", &format!("{i:06}"), &Self::post(i, "first"));
            }
            let rev = 1_700_000_000_000_000;
            let built = repo.build(&tid::format(rev, 0));
            let mut f = Fixture {
                _dir: dir,
                conn,
                key,
                repo,
                built,
                rev,
            };
            let car = f.built.car_bytes();
            ingest_car(&mut f.conn, DID, &f.key, &car[..], &mut |_| {}).unwrap();
            f
        }

        fn post(i: usize, text: &str) -> serde_json::Value {
            serde_json::json!({"$type": "app.test.post", "n": i, "text": text})
        }

        /// Builds the next commit from the builder and ingests it as a `since` CAR.
        fn commit(&mut self) -> IngestOutcome {
            self.rev += 1000;
            let next = self.repo.build(&tid::format(self.rev, 0));
            let car = next.diff_car_bytes(&self.built);
            self.built = next;
            ingest_car(&mut self.conn, DID, &self.key, &car[..], &mut |_| {}).unwrap()
        }

        /// (`repos.records`, the rows in `records`).
        fn counts(&self) -> (i64, i64) {
            let held = self
                .conn
                .query_row("SELECT records FROM repos WHERE did = ?1", [DID], |r| {
                    r.get(0)
                })
                .unwrap();
            let rows = self
                .conn
                .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
                .unwrap();
            (held, rows)
        }
    }

    #[test]
    fn the_record_count_follows_incremental_ingests() {
        let mut f = Fixture::new(50);
        assert_eq!(f.counts(), (50, 50));
        // Each step: (creates, updates, deletes) applied to the builder, then one commit.
        let steps: [(
            std::ops::Range<usize>,
            std::ops::Range<usize>,
            std::ops::Range<usize>,
        ); 6] = [
            (50..51, 0..0, 0..0),
            (51..60, 0..5, 0..0),
            (0..0, 5..10, 10..20),
            (60..70, 20..30, 30..35),
            (0..0, 0..0, 35..70),
            (100..103, 20..25, 0..5),
        ];
        for (step, (creates, updates, deletes)) in steps.into_iter().enumerate() {
            let expected = (creates.len(), updates.len(), deletes.len());
            for i in creates {
                f.repo.put_json(
                    "app.test.post",
                    &format!("{i:06}"),
                    &Fixture::post(i, "new"),
                );
            }
            for i in updates {
                let text = format!("edited in step {step}");
                f.repo.put_json(
                    "app.test.post",
                    &format!("{i:06}"),
                    &Fixture::post(i, &text),
                );
            }
            for i in deletes {
                f.repo.delete("app.test.post", &format!("{i:06}"));
            }
            let out = f.commit();
            assert_eq!(
                (
                    out.creates as usize,
                    out.updates as usize,
                    out.deletes as usize
                ),
                expected,
                "step {step}"
            );
            let len = f.repo.records.len() as i64;
            assert_eq!(out.records, len, "step {step}");
            assert_eq!(f.counts(), (len, len), "step {step}");
            let in_commits: i64 = f
                .conn
                .query_row(
                    "SELECT records FROM commits ORDER BY rev DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(in_commits, len, "step {step}");
        }
    }

    #[test]
    fn a_row_already_there_or_already_gone_does_not_throw_the_count_off() {
        let mut f = Fixture::new(10);
        // A row for a record the tree does not hold yet, and one taken away behind its back.
        f.conn
            .execute(
                "INSERT INTO records (repo_id, collection, rkey, cid)
                 SELECT repo_id, collection, '000099', cid FROM records WHERE rkey = '000000'",
                [],
            )
            .unwrap();
        f.conn
            .execute("DELETE FROM records WHERE rkey = '000003'", [])
            .unwrap();
        f.conn.execute("UPDATE repos SET records = 10", []).unwrap();
        f.repo
            .put_json("app.test.post", "000099", &Fixture::post(99, "new"));
        f.repo.delete("app.test.post", "000003");
        let out = f.commit();
        assert_eq!((out.creates, out.deletes), (1, 1));
        // Neither statement changed the number of rows: the count held stays.
        assert_eq!(f.counts(), (10, 10));

        // A repair counts the rows again.
        f.conn
            .execute("DELETE FROM records WHERE rkey = '000004'", [])
            .unwrap();
        let car = f.built.car_bytes();
        let out = reingest_full_car(&mut f.conn, DID, &f.key, &car[..], &mut |_| {}).unwrap();
        assert_eq!(out.records, 10);
        assert_eq!(f.counts(), (10, 10));
    }
}
